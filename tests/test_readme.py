"""The README is the front door: it stays short, every link in it and in docs/ resolves, and its quickstart
runs for real.

The quickstart test reads the shell block between `<!-- quickstart -->` and `<!-- /quickstart -->` in
README.md and runs its commands one by one in a temporary directory, with the venv's `rewardkit`:

- `make demo` is the README's first command (set up .venv, run the demo). The test already runs inside the
  venv, and the full demo trains MiniLM for minutes, so it stands in with the demo's own data step
  (`rewardkit.demo.plan`), which writes the synthetic task to runs/demo/data/ as `make demo` does (with fewer
  records);
  `. .venv/bin/activate` is a no-op for the same reason.
- `rewardkit ...` lines run as written, except that `-m minilm` becomes a tiny random BERT (the conftest
  fixture, with MiniLM's real tokenizer) and a few flags are appended so the whole block takes well under a
  minute on 2 cores: few training steps, short sequences, fewer records.
- `rewardkit serve ... &` starts the server as a subprocess on a free loopback port (instead of 8000) and waits
  for its /health; each `curl` line is run against that port (with curl, or urllib where curl is missing);
  `kill %1` stops the server with SIGTERM, as the shell would.

A quickstart line the test does not know how to run fails the test, so the README and this test move together.
Nothing here uses the network beyond loopback.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "serve"))  # serve_helpers (--import-mode=importlib)
from serve_helpers import free_port, wait_ready  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_README_LINES = 250

# The synthetic task `make demo` writes, smaller (train, test records): same generator, same files.
SYNTHETIC_SIZES = (200, 100)
# Appended to each quickstart command so it runs in seconds on a tiny model (a later option wins in Click).
SHRINK = {
    "train": ["--set", "max_steps=3", "--max-length", "128"],
    "eval": ["--limit", "100"],
    "probe": ["--limit", "20", "--bootstrap", "100"],
    "score": ["--limit", "50"],
}


# ------------------------------------------------------------------------------------------------ size


def test_readme_is_at_most_250_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


# ----------------------------------------------------------------------------------------------- links


def without_code(text: str) -> str:
    """Markdown with fenced code blocks and inline code removed (links there are not links)."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*~]|<[^>]+>", "", heading).strip().lower()  # GitHub keeps underscores
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    for match in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.M):
        base = slug(match.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def relative_links(path: Path) -> list[str]:
    text = without_code(path.read_text(encoding="utf-8"))
    targets = re.findall(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)
    targets += re.findall(r"^\s*\[[^\]]+\]:\s*(\S+)", text, flags=re.M)  # reference-style definitions
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, flags=re.I)]  # http:, mailto:, ...


def test_the_docs_pages_exist():
    names = {p.name for p in DOCS}
    for page in ("data.md", "training.md", "evaluation.md", "probes.md", "multiobjective.md",
                 "process-rewards.md", "serving.md", "speed.md", "BENCHMARKS.md"):
        assert page in names


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page):
    links = relative_links(page)
    if page == README:
        assert links, "README.md should link to its docs"
    problems = []
    for link in links:
        target, _, anchor = link.partition("#")
        dest = (page.parent / target).resolve() if target else page
        if not dest.exists():
            problems.append(f"{link}: {dest} does not exist")
            continue
        if ROOT not in dest.parents and dest != ROOT:
            problems.append(f"{link}: points outside the repository")
        if anchor:
            if dest.suffix != ".md":
                problems.append(f"{link}: an anchor into a file that is not Markdown")
            elif anchor not in anchors(dest):
                problems.append(f"{link}: no heading with anchor #{anchor} in {dest.name}")
    assert not problems, "\n".join(problems)


def test_slug_follows_github():
    assert slug("Length de-biasing while training (ODIN)") == "length-de-biasing-while-training-odin"
    assert slug("`torch.compile`") == "torchcompile"
    assert slug("AMD EPYC CPU without AMX (2 cores)") == "amd-epyc-cpu-without-amx-2-cores"


# ------------------------------------------------------------------------------------------ quickstart


def quickstart_lines() -> list[str]:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- quickstart -->\s*```(?:bash|sh|shell)\n(.*?)```\s*<!-- /quickstart -->", text, re.S)
    assert match, "README.md needs its quickstart as a bash block between <!-- quickstart --> and <!-- /quickstart -->"
    lines = [line.strip() for line in match.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def python_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "README.md has no Python example"
    return blocks[0]


def http(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def run_curl(args: list[str], port: int, cwd: Path) -> str:
    """A curl line of the quickstart against the test's server: curl itself where installed, else the same
    request (its -H headers and -d body, POST when there is a body) through urllib."""
    args = [a.replace("localhost:8000", f"127.0.0.1:{port}") for a in args]
    if shutil.which("curl"):
        proc = subprocess.run(["curl", "--fail-with-body", "--max-time", "60", *args[1:]], cwd=cwd,
                              capture_output=True, text=True, timeout=90)
        assert proc.returncode == 0, f"{shlex.join(args)} -> {proc.returncode}: {proc.stdout} {proc.stderr}"
        return proc.stdout
    url, headers, body = None, {}, None
    rest = iter(args[1:])
    for arg in rest:
        if arg == "-H":
            key, _, value = next(rest).partition(":")
            headers[key.strip()] = value.strip()
        elif arg == "-d":
            body = next(rest).encode()
        elif not arg.startswith("-"):
            url = arg
    assert url is not None, args
    status, text = http(url if "://" in url else f"http://{url}", body, headers)
    assert status == 200, f"{shlex.join(args)} -> {status}: {text}"
    return text


def wait_healthy(port: int, proc: subprocess.Popen, log: Path) -> None:
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, timeout=120.0)
    except (RuntimeError, TimeoutError) as e:
        raise AssertionError(f"rewardkit serve: {e}:\n{log.read_text()[-3000:]}") from None


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def rewardkit_args(args: list[str], tiny_model: Path) -> list[str]:
    """The quickstart's rewardkit command with the venv's executable, the tiny model for minilm, and the
    shrinking flags appended."""
    args = list(args)
    for i, arg in enumerate(args[:-1]):
        if arg in ("-m", "--model") and args[i + 1] == "minilm":
            args[i + 1] = str(tiny_model)
    exe = Path(sys.executable).with_name("rewardkit")
    return [str(exe), *args[1:], *SHRINK.get(args[1], [])]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory, bert_dir):
    """Run the README's quickstart once; the record of what each step gave."""
    from rewardkit.demo import plan

    work = tmp_path_factory.mktemp("quickstart")
    env = {**os.environ, "REWARDKIT_DATA": str(work / "no-shared-data"), "COLUMNS": "200",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    record: dict = {"dir": work, "steps": [], "http": {}, "started": time.perf_counter()}
    server: subprocess.Popen | None = None
    port = free_port()
    try:
        for line in quickstart_lines():
            for part in (p.strip() for p in line.split("&&")):
                args = shlex.split(part, comments=True)
                if not args:
                    continue
                background = args[-1] == "&"
                args = args[:-1] if background else args
                if args[:2] == ["make", "demo"]:
                    # the demo's data step: runs/demo/data/synthetic_*.jsonl (fewer records than its 1600 / 400)
                    plan(work / "runs" / "demo", synthetic_sizes=SYNTHETIC_SIZES)
                elif args[0] in (".", "source") and args[1:] == [".venv/bin/activate"]:
                    pass  # already in the venv
                elif args[0] == "rewardkit" and background:
                    assert args[1] == "serve", f"only `rewardkit serve` runs in the background: {part}"
                    argv = rewardkit_args(args, bert_dir)
                    argv[argv.index("--port") + 1] = str(port)
                    log = work / "serve.log"
                    server = subprocess.Popen(argv, cwd=work, env=env, stdout=log.open("wb"),
                                              stderr=subprocess.STDOUT)
                    wait_healthy(port, server, log)
                elif args[0] == "rewardkit":
                    argv = rewardkit_args(args, bert_dir)
                    start = time.perf_counter()
                    proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=600)
                    assert proc.returncode == 0, f"{part}\n-> exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
                    record["steps"].append((args[1], round(time.perf_counter() - start, 1)))
                elif args[0] == "curl":
                    assert server is not None, f"{part}: no server started"
                    path = next(a for a in args if "localhost:8000" in a).split("localhost:8000", 1)[1]
                    record["http"][path] = run_curl(args, port, work)
                elif args == ["kill", "%1"]:
                    assert server is not None, "kill %1 without a background job"
                    record["serve_exit"] = stop(server)
                else:
                    raise AssertionError(f"the quickstart test does not know how to run: {part}")
        record["seconds"] = round(time.perf_counter() - record["started"], 1)
        print(f"quickstart ran in {record['seconds']} s: {record['steps']}")
        yield record
    finally:
        if server is not None:
            stop(server)


def test_quickstart_trains_evaluates_and_serves(quickstart):
    work = quickstart["dir"]
    ran = [name for name, _ in quickstart["steps"]]
    assert ran[:2] == ["train", "eval"], ran
    assert (work / "runs" / "rm" / "best" / "rewardkit.json").is_file()
    report = json.loads((work / "runs" / "rm" / "eval" / "report.json").read_text())
    assert 0 <= report["accuracy"] <= 1 and report["n"] > 0
    assert (work / "runs" / "rm" / "eval" / "report.md").is_file()
    if "probe" in ran:
        probe = json.loads((work / "runs" / "rm" / "probe" / "probe.json").read_text())
        assert "truncation" in probe["transforms"]
    assert json.loads(quickstart["http"]["/health"]) == {"status": "ok"}
    scored = json.loads(quickstart["http"]["/score"])
    assert len(scored["rewards"]) == 2 and all(math.isfinite(r) for r in scored["rewards"])
    assert quickstart.get("serve_exit") is not None, "the quickstart should stop its server (kill %1)"


def test_readme_python_example_runs(quickstart):
    work = quickstart["dir"]
    code = python_example()
    assert "from rewardkit import" in code
    proc = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "REWARDKIT_DATA": str(work / "no-shared-data")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    outputs = re.findall(r"write_report\(.*?\"([^\"]+)\"\)", code)
    assert outputs and (work / outputs[0] / "report.json").is_file()
