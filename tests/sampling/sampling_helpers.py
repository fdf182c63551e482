"""Test helpers for policy sampling: prompts, reading a JSONL file, a fake OpenAI-compatible (vLLM-like) server on loopback, and a free port.

The fake server answers POST /v1/chat/completions with `n` choices whose text is a pure function of the request
(its last message, its seed and the choice's index), so the same request always gets the same reply. With a
tokenizer it also returns token ids the way vLLM does: `prompt_token_ids` and each choice's `token_ids` when
asked with `return_token_ids`, and "token_id:ID" log-prob tokens when asked with `return_tokens_as_token_ids`.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

QUESTIONS = ["What is the capital of France?", "Tell me about the sea.", "Why is the sky blue?",
             "Say hello.", "Explain reward models.", "Count to three.", "Name a colour.", "What is 2 + 3?",
             "Describe a cat.", "Write one word."]


def read_rows(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def free_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakePolicyServer:
    """fail: statuses to answer the next requests with (then normally); down_after: answer this many requests
    normally, then 503 for ever; openai_only: reject vLLM's token-id fields with a 400, as OpenAI does."""

    def __init__(self, tokenizer=None, *, openai_only: bool = False):
        self.tokenizer = tokenizer
        self.openai_only = openai_only
        self.requests: list[dict] = []
        self.fail: list[int] = []
        self.down_after: int | None = None
        self.answered = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    status = server.fail.pop(0) if server.fail else None
                    if status is None and server.down_after is not None and server.answered >= server.down_after:
                        status = 503
                    if status is None:
                        server.answered += 1
                if self.path != "/v1/chat/completions":
                    return self.reply(404, {"error": {"message": f"no route {self.path}"}})
                if status is not None:
                    return self.reply(status, {"error": {"message": "the engine is overloaded"}})
                if server.openai_only and any(k in body for k in ("return_token_ids", "return_tokens_as_token_ids")):
                    field = "return_token_ids" if "return_token_ids" in body else "return_tokens_as_token_ids"
                    return self.reply(400, {"error": {"message": f"Unrecognized request argument supplied: {field}"}})
                self.reply(200, server.completion(body))

            def reply(self, status, payload):
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @staticmethod
    def text_for(body: dict, k: int) -> str:
        question = body["messages"][-1]["content"]
        return f"Answer {k} to {question[:24]} (seed {body.get('seed', 0) % 997})"

    def completion(self, body: dict) -> dict:
        choices = []
        for k in range(body.get("n", 1)):
            text = self.text_for(body, k)
            choice = {"index": k, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
            if self.tokenizer is not None:
                ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
                if body.get("return_token_ids"):
                    choice["token_ids"] = ids
                if body.get("logprobs"):
                    as_ids = body.get("return_tokens_as_token_ids")
                    tokens = [f"token_id:{t}" if as_ids else self.tokenizer.convert_ids_to_tokens(t) for t in ids]
                    choice["logprobs"] = {"content": [{"token": t, "logprob": -0.5 - 0.01 * i, "top_logprobs": []}
                                                      for i, t in enumerate(tokens)]}
            choices.append(choice)
        reply = {"id": "chatcmpl-fake", "object": "chat.completion", "model": body["model"], "choices": choices}
        if self.tokenizer is not None and body.get("return_token_ids"):
            reply["prompt_token_ids"] = self.tokenizer.apply_chat_template(
                body["messages"], add_generation_prompt=True, tokenize=True, return_dict=False)
        return reply

    def __enter__(self) -> FakePolicyServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def length_scorer():
    """A Scorer for `python:sampling_helpers:length_scorer`: a response's reward is its length in characters."""
    from rewardkit.models.scorer import FunctionScorer

    return FunctionScorer(lambda prompt, response: float(len(response.content)), name="length")
