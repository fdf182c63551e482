"""Shared fixtures: tiny random Hugging Face models and tokenizers, built locally (see tiny.py)."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tiny import make_bpe_tokenizer, minilm_path, save_bert_backbone, save_causal_backbone  # noqa: E402


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
