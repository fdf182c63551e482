"""The reward server users hand-write today, as the baseline for bench/serve_load.py.

One request -> tokenize that request's responses -> one padded forward pass of a plain transformers
AutoModelForSequenceClassification (fp32) -> JSON. No batching across requests, no prefix sharing, no queue
limits. The endpoint is an `async def` that calls the model directly, as most FastAPI model-serving examples do,
so requests run one at a time; that is also the stronger of the two usual hand-written variants on a CPU (a plain
`def` endpoint runs up to 40 forwards at once in FastAPI's thread pool, each with its own intra-op threads, and
oversubscribes the cores).

Same /score shape as `rewardkit serve` for text input: {"prompt", "responses"} -> {"rewards"}, or {"items": [...]}
-> {"items": [{"rewards"}, ...]}; plus /health and /ready.

    .venv/bin/python bench/naive_server.py --model DIR --port 8001

DIR is a rewardkit checkpoint (a plain sequence-classification checkpoint with a tokenizer also works). Texts are
rendered as rewardkit renders them, so the two servers' scores can be compared: the chat template when the
checkpoint has one (the rendering's trailing newline dropped, so the score is read at the end-of-turn token), else
the tokenizer's sentence-pair encoding (encoders such as MiniLM).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402


def load(model_dir: str, device: str):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    meta_file = Path(model_dir) / "rewardkit.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.truncation_side = "left"  # keep the response end, where the score is read
    return tok, model, meta


def make_app(model_dir: str, device: str = "cpu") -> FastAPI:
    tok, model, meta = load(model_dir, device)
    chat = meta.get("text_mode", "chat" if tok.chat_template else "pair") == "chat"
    max_length = meta.get("max_length", 1024)
    # Llama-style tokenizers add a BOS that chat templates often leave out; rewardkit adds it too.
    ids = tok("a")["input_ids"]
    bos = tok.bos_token if tok.bos_token_id is not None and ids and ids[0] == tok.bos_token_id else ""
    app = FastAPI(title="naive reward server")

    def messages(prompt) -> list[dict[str, str]]:
        return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt

    def score(prompt, responses: list[str]) -> list[float]:
        if chat:
            texts = [tok.apply_chat_template(messages(prompt) + [{"role": "assistant", "content": r}],
                                             tokenize=False).rstrip("\n") for r in responses]
            texts = [t if t.startswith(bos) else bos + t for t in texts]
            enc = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt",
                      add_special_tokens=False)
        else:
            msgs = messages(prompt)
            text = msgs[0]["content"] if len(msgs) == 1 else "\n\n".join(
                f"{m['role'].capitalize()}: {m['content']}" for m in msgs)
            enc = tok([text] * len(responses), responses, padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
        with torch.inference_mode():
            return model(**enc.to(device)).logits[:, 0].float().tolist()

    @app.post("/score")
    async def score_endpoint(request: Request):
        body = await request.json()
        try:
            if "items" in body:
                return {"items": [{"rewards": score(it["prompt"], it["responses"])} for it in body["items"]]}
            return {"rewards": score(body["prompt"], body["responses"])}
        except (KeyError, TypeError, ValueError) as e:
            return JSONResponse({"detail": f"bad request: {e}"}, 400)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        return {"status": "ready"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="naive reward server: one forward pass per request")
    parser.add_argument("--model", required=True, help="a rewardkit checkpoint directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    uvicorn.run(make_app(args.model, args.device), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
