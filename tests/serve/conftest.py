"""Fixtures for the server tests: a tiny reward model checkpoint (with normalization stats), the library
scorer on it, and the real server on it in a subprocess."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # serve_helpers (tests run with --import-mode=importlib)

from serve_helpers import API_KEY, MAX_BODY, MAX_LENGTH, NORMALIZATION, ServerProcess  # noqa: E402


@pytest.fixture(scope="session")
def rm_dir(llama_dir, tmp_path_factory):
    """A saved reward model on the tiny Llama backbone, with normalization stats in rewardkit.json."""
    from rewardkit.models import RewardModel

    model = RewardModel.from_pretrained(llama_dir)
    model.meta.normalization = dict(NORMALIZATION)
    return model.save_pretrained(tmp_path_factory.mktemp("rm") / "model")


@pytest.fixture(scope="session")
def rm_scorer(rm_dir):
    """The library's scorer on the same checkpoint, configured as the server is."""
    from rewardkit.models import RewardModelScorer

    return RewardModelScorer.from_pretrained(rm_dir, precision="fp32", max_length=MAX_LENGTH)


@pytest.fixture(scope="session")
def rm_server(rm_dir, tmp_path_factory):
    server = ServerProcess(["--model", str(rm_dir), "--api-key", API_KEY, "--precision", "fp32",
                            "--max-length", str(MAX_LENGTH), "--max-body-bytes", str(MAX_BODY)],
                           tmp_path_factory.mktemp("rm-server") / "server.log")
    yield server
    server.stop()
