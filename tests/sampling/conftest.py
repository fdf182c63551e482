"""Fixtures for the sampling tests: a tiny causal policy (the shared tiny Llama), a reward model on the same
backbone and tokenizer, one on another tokenizer, and small prompts files."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # sampling_helpers (tests run with --import-mode=importlib)

from sampling_helpers import QUESTIONS  # noqa: E402


@pytest.fixture(scope="session")
def policy_dir(llama_dir):
    """The tiny Llama (BOS-adding BPE tokenizer, ChatML template) as the policy."""
    return llama_dir


@pytest.fixture(scope="session")
def policy(policy_dir):
    from rewardkit.sampling.local import LocalPolicy

    return LocalPolicy.from_pretrained(policy_dir, precision="fp32")


@pytest.fixture(scope="session")
def same_tok_rm(policy_dir, tmp_path_factory):
    """A reward model on the policy's own backbone and tokenizer: it can read the policy's token ids."""
    from rewardkit.models.reward_model import RewardModel

    return RewardModel.from_pretrained(policy_dir).save_pretrained(tmp_path_factory.mktemp("rm") / "same")


@pytest.fixture(scope="session")
def other_tok_rm(bert_dir, tmp_path_factory):
    """A reward model whose tokenizer is not the policy's (MiniLM's WordPiece): it reads the text."""
    from rewardkit.models.reward_model import RewardModel

    return RewardModel.from_pretrained(bert_dir).save_pretrained(tmp_path_factory.mktemp("rm") / "other")


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "prompt": q}) + "\n" for i, q in enumerate(QUESTIONS)))
    return path
