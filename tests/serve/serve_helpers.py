"""Test helpers for the server: scorers whose rewards name their request, and ways to run a real server.

`python -m rewardkit.serve --model python:serve_helpers:NAME` builds the scorers below in a server subprocess
(PYTHONPATH holds this directory).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from rewardkit.models.scorer import ScoreResult

API_KEY = "test-key-0123456789"
MAX_LENGTH = 128
MAX_BODY = 65536
NORMALIZATION = {"mean": -0.1, "std": 0.02}

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def echo_reward(prompt, response) -> float:
    """A reward that says which request it came from: the response is a number, the prompt's last word
    another; a reward handed to the wrong request does not match what that request expects."""
    return float(response.content) + int(prompt[-1]["content"].split()[-1]) / 1000


class GatedScorer:
    """Scores with echo_reward, but each call first waits for `gate` (tests hold it shut to fill the queue)
    and records the items it got."""

    def __init__(self):
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def score(self, items):
        with self.lock:
            self.calls.append(len(items))
        self.entered.set()
        if not self.gate.wait(30):
            raise RuntimeError("gate never opened")
        return [ScoreResult(rewards=[echo_reward(it.prompt, r) for r in it.responses]) for it in items]

    def describe(self):
        return {"name": "gated", "kind": "test"}


class SlowScorer:
    """Takes `seconds` per call; touches the file named by $SLOW_SCORER_MARK when a call starts, so a test
    knows a request is in flight."""

    def __init__(self, seconds: float = 1.5):
        self.seconds = seconds

    def score(self, items):
        mark = os.environ.get("SLOW_SCORER_MARK")
        if mark:
            Path(mark).write_text("scoring")
        time.sleep(self.seconds)
        return [ScoreResult(rewards=[echo_reward(it.prompt, r) for r in it.responses]) for it in items]

    def describe(self):
        return {"name": "slow", "kind": "test"}


def slow() -> SlowScorer:
    return SlowScorer()


def echo_request(i: int, n: int = 3) -> tuple[dict, list[float]]:
    """Request i and the rewards that belong to it."""
    responses = [str(10 * i + k) for k in range(n)]
    return ({"prompt": f"request number {i}", "responses": responses},
            [float(r) + i / 1000 for r in responses])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout} s")


class ServerProcess:
    """`python -m rewardkit.serve ARGS` on a free loopback port; stderr (the JSON request log) goes to a file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        pythonpath = os.pathsep.join([str(HERE), str(REPO / "tests"), str(REPO / "src"),
                                      os.environ.get("PYTHONPATH", "")])
        full_env = {**os.environ, "PYTHONPATH": pythonpath, "HF_HUB_OFFLINE": "1",
                    "TOKENIZERS_PARALLELISM": "false", **(env or {})}
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rewardkit.serve", "--port", str(self.port), *args],
            stdout=self._log, stderr=subprocess.STDOUT, env=full_env)
        try:
            wait_ready(self.url, self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"server did not start:\n{self.log()[-3000:]}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request_log(self, until, timeout: float = 15.0) -> list[dict]:
        """The JSON request-log lines, once `until(lines)` holds: the server writes a request's line after the
        response has gone out, so a client that just got its answer may read the log before the line is there."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [json.loads(x) for x in self.log().splitlines() if x.startswith('{"event": "request"')]
            if until(lines) or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@contextmanager
def server_in_thread(app):
    """Run an app under a real uvicorn server on a loopback port, in this process (so a test can reach into
    the scorer), and stop it gracefully afterwards."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, timeout_graceful_shutdown=10))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, timeout=30)
        yield url
    finally:
        server.should_exit = True
        thread.join(30)
