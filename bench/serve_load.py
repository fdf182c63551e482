"""Serving under load: rewardkit's server against the hand-written one-forward-per-request server, same model.

    .venv/bin/python bench/serve_load.py [--model smollm2] [--clients 64] [--requests-per-client 1] [--responses 4]

The model (a packaged backbone such as smollm2 or minilm, which gets its seeded head, or a checkpoint path) is
saved once as a rewardkit checkpoint and loaded by both servers: `python -m rewardkit.serve` (its defaults, or
what --serve-args adds) and bench/naive_server.py (plain transformers, fp32, one padded forward per request).
Each server runs alone on loopback (one after the other, so neither takes CPU from the other), gets two warm-up
requests, and then `--clients` concurrent clients (asyncio + one httpx.AsyncClient connection each) send
`--requests-per-client` requests in turn, each one prompt with `--responses` candidates. Prompts are HH-RLHF
harmless-base test prompts and candidates real HH responses drawn (seeded) from the whole file, as in
bench/best_of_n.py; both servers get the same requests. Errors (e.g. 429 from a full queue) are counted, not retried.

Printed: requests, seconds, requests/s, responses/s, p50/p99 latency per server, the throughput ratio, and the
largest difference between the two servers' rewards (rewardkit computes in bf16 by default where the CPU has AMX
and the naive server in fp32, so differences of ~1e-2 are expected then; pass --serve-args "--precision fp32"
where the server has that option to compare like with like).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import device_name, harmless_path

import httpx  # noqa: E402

from rewardkit.data import agreed_split, load_records  # noqa: E402

HERE = Path(__file__).resolve().parent
MAX_PROMPT_CHARS = 2000  # keeps prompt + response under max_length 1024 tokens for SmolLM2 (at a shorter
MAX_RESPONSE_CHARS = 1000  # --max-length both servers truncate: the prompt from the left)


def load_requests(n: int, k: int, seed: int = 0) -> list[dict]:
    """n /score bodies of one HH prompt (chat messages) and k real HH responses each."""
    records = load_records(harmless_path())
    pool = [r.content for rec in records for r in rec.responses
            if r.content.strip() and len(r.content) <= MAX_RESPONSE_CHARS]
    prompts = [rec.prompt for rec in agreed_split(records, "test")
               if sum(len(m["content"]) for m in rec.prompt) <= MAX_PROMPT_CHARS]
    rng = random.Random(seed)
    return [{"prompt": prompts[i % len(prompts)], "responses": rng.sample(pool, k)} for i in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    name: str
    command: list[str]
    port: int
    log: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float) -> dict:
        """Start it and wait for /ready; returns its /info answer (rewardkit's describes the scorer), or {}."""
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        env.pop("REWARDKIT_API_KEY", None)
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"{self.name} server exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=5).status_code == 200:
                    info = httpx.get(f"{self.url}/info", timeout=5)
                    return info.json() if info.status_code == 200 else {}
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self.stop()
        sys.exit(f"{self.name} server was not ready within {timeout:.0f} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Run:
    server: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    rewards: dict[int, list[float]] = field(default_factory=dict)  # request index -> rewards
    errors: dict[str, int] = field(default_factory=dict)  # "HTTP 429: reason" -> count


async def load(url: str, bodies: list[dict], clients: int, timeout: float, run: Run) -> None:
    """`clients` concurrent clients, client c sending bodies c, c + clients, ... one after another."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as http:
        async def client(c: int) -> None:
            for i in range(c, len(bodies), clients):
                t0 = time.perf_counter()
                try:
                    r = await http.post("/score", json=bodies[i])
                except httpx.HTTPError as e:
                    key = f"{type(e).__name__}"
                else:
                    if r.status_code == 200:
                        run.latencies.append(time.perf_counter() - t0)
                        run.rewards[i] = r.json()["rewards"]
                        continue
                    key = f"HTTP {r.status_code}: {r.text[:120]}"
                run.errors[key] = run.errors.get(key, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        run.seconds = time.perf_counter() - t0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


def find_key(obj, key: str):
    """The first value of `key` anywhere in a nested JSON object (the scorer's precision, in /info)."""
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        obj = list(obj.values())
    if isinstance(obj, list):
        for v in obj:
            found = find_key(v, key)
            if found is not None:
                return found
    return None


def report_batches(url: str) -> None:
    """The batches the server formed (its Prometheus histograms, warm-up included), to stderr."""
    samples = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("rewardkit_batch_") and ("_sum " in line or "_count " in line):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    n = samples.get("rewardkit_batch_requests_count", 0)
    if n:
        per = {k: samples[f"rewardkit_batch_{k}_sum"] / n for k in ("requests", "sequences", "tokens")}
        print(f"rewardkit formed {n:.0f} batches: {per['requests']:.1f} requests, {per['sequences']:.1f} "
              f"sequences, {per['tokens']:.0f} tokens each on average", file=sys.stderr)


def compute_ceiling(ckpt: Path, bodies: list[dict], rk_seconds: float, naive_seconds: float) -> str:
    """How close each server runs to this CPU's matrix-product speed, and so what ratio is possible at all.

    Tokens are counted as the servers compute them (after truncation): rewardkit's real tokens, a prompt once
    per request where its batch plan shares prefixes (causal models), the naive server's rows padded to each
    request's longest response. FLOPs are 2 x non-embedding parameters a token (attention's own products left
    out: small at these lengths), against cpu_probe()'s fp32 and bf16 speed.
    """
    from rewardkit.batching import segment_tokens
    from rewardkit.models.rm_scorer import RewardModelScorer
    from rewardkit.models.scorer import ScoreItem
    from rewardkit.precision import cpu_probe

    scorer = RewardModelScorer.from_pretrained(ckpt, precision="fp32")
    encoded = scorer.encode([ScoreItem(b["prompt"], b["responses"]) for b in bodies])
    computed = sum(segment_tokens(group, share=scorer.planner.packed) for group in encoded)
    padded = sum(len(group) * max(len(e.input_ids) for e in group) for group in encoded)
    params = sum(p.numel() for name, p in scorer.model.hf_model.named_parameters() if "embed" not in name)
    probe = cpu_probe()
    naive_rate = 2 * params * padded / naive_seconds / 1e9
    rk_rate = 2 * params * computed / rk_seconds / 1e9
    shared = " (each prompt once: shared prefixes)" if scorer.planner.packed else ""
    return (f"compute: rewardkit {computed} tokens{shared}, the naive server {padded} (padding included); "
            f"{params / 1e6:.1f}M non-embedding parameters; naive {naive_rate:.0f} GFLOP/s "
            f"({naive_rate / probe.fp32_gflops:.0%} of this CPU's fp32 product speed, {probe.fp32_gflops:.0f}), "
            f"rewardkit {rk_rate:.0f} GFLOP/s (bf16 products run at {probe.bf16_gflops:.0f} here). Computing "
            f"these tokens, rewardkit can beat the naive server by at most about "
            f"{probe.bf16_gflops / naive_rate * padded / computed:.1f}x on this machine.")


def bench_server(server: Server, bodies: list[dict], args) -> tuple[Run, dict]:
    info = server.start(args.start_timeout)
    try:
        for body in bodies[:2]:  # warm-up, outside the timing
            httpx.post(f"{server.url}/score", json=body, timeout=args.timeout).raise_for_status()
        run = Run(server.name)
        asyncio.run(load(server.url, bodies, args.clients, args.timeout, run))
        if server.name == "rewardkit":
            report_batches(server.url)
    finally:
        server.stop()
    return run, info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2", help="smollm2, minilm, a backbone or a checkpoint path")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests-per-client", type=int, default=1,
                        help="1 (a burst of --clients requests at once) keeps the default run to a few minutes "
                             "on a 2-core CPU, most of it the naive server; raise it for sustained load")
    parser.add_argument("--responses", type=int, default=4, help="responses per request")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--serve-args", default="", help="extra arguments for `python -m rewardkit.serve`, "
                                                          "e.g. \"--max-delay-ms 10 --max-batch-tokens 16384\"")
    parser.add_argument("--timeout", type=float, default=600.0, help="per-request timeout, seconds")
    parser.add_argument("--start-timeout", type=float, default=600.0, help="seconds to wait for /ready")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n = args.clients * args.requests_per_client
    bodies = load_requests(n, args.responses, args.seed)

    from rewardkit.models import RewardModel

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ckpt = Path(args.model)
        if not (ckpt / "rewardkit.json").is_file():
            print(f"saving {args.model} as a rewardkit checkpoint...", file=sys.stderr)
            ckpt = RewardModel.from_pretrained(args.model, max_length=args.max_length).save_pretrained(tmp / "rm")
        servers = [
            Server("rewardkit", [sys.executable, "-m", "rewardkit.serve", "--model", str(ckpt), "--host",
                                 "127.0.0.1", "--port", "0", *shlex.split(args.serve_args)], 0, tmp / "rk.log"),
            Server("naive", [sys.executable, str(HERE / "naive_server.py"), "--model", str(ckpt), "--port", "0"],
                   0, tmp / "naive.log"),
        ]
        runs, infos = [], []
        for server in servers:
            server.port = free_port()
            server.command[server.command.index("--port") + 1] = str(server.port)
            print(f"{server.name}: starting, then {args.clients} clients x {args.requests_per_client} requests "
                  f"x {args.responses} responses...", file=sys.stderr)
            run, info = bench_server(server, bodies, args)
            runs.append(run)
            infos.append(info)
        ceiling = compute_ceiling(ckpt, bodies, runs[0].seconds, runs[1].seconds)

    rk, naive = runs
    precision = find_key(infos[0], "precision") or "the server's default precision"
    print(f"\n{n} requests of 1 HH-RLHF harmless prompt x {args.responses} responses, {args.clients} concurrent "
          f"clients on loopback, {args.model}, {device_name()}; rewardkit serve {args.serve_args or '(defaults)'}"
          f" computing in {precision}, naive server fp32\n")
    print("| server | requests ok | errors | seconds | requests/s | responses/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for run in runs:
        ok = len(run.latencies)
        print(f"| {run.server} | {ok} | {sum(run.errors.values())} | {run.seconds:.1f} | {ok / run.seconds:.2f} | "
              f"{ok * args.responses / run.seconds:.1f} | {percentile(run.latencies, 50) * 1e3:.0f} | "
              f"{percentile(run.latencies, 99) * 1e3:.0f} |")
    ratio = (len(rk.latencies) / rk.seconds) / (len(naive.latencies) / naive.seconds) if naive.latencies else 0
    print(f"\nthroughput ratio rewardkit / naive: {ratio:.2f}x; p99 latency rewardkit / naive: "
          f"{percentile(rk.latencies, 99) / percentile(naive.latencies, 99):.2f}")
    print(ceiling)
    for run in runs:
        for what, count in run.errors.items():
            print(f"{run.server}: {count} x {what}")
    both = sorted(set(rk.rewards) & set(naive.rewards))
    if both:
        diffs = [abs(a - b) for i in both for a, b in zip(rk.rewards[i], naive.rewards[i])]
        spread = statistics.pstdev([x for i in both for x in naive.rewards[i]])
        note = ": bf16 rounding alone gives ~1e-2 at SmolLM2's scale" if "bf16" in str(precision) else ""
        print(f"rewards, {len(diffs)} responses scored by both: max abs diff {max(diffs):.2e}, mean "
              f"{statistics.fmean(diffs):.2e} (reward std {spread:.3f}; rewardkit {precision} vs naive fp32{note})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
