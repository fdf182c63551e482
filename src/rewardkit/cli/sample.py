"""`rewardkit sample`: n responses per prompt from a policy, resumable, optionally scored as they come."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from rewardkit.cli.common import (
    BatchTokensOpt, ExampleCommand, FormatOpt, LimitOpt, PrecisionOpt, app, console, load_scorer, progress_bar,
    quiet_transformers, user_errors,
)

PolicyOpt = Annotated[str, typer.Option(
    "--policy", "-p", help="The policy: a causal LM (a directory, a hub id, or the packaged offline 'smollm2'), or "
                           "with --endpoint the served model's name.")]
PromptsOpt = Annotated[Path, typer.Option(
    "--prompts", help="Prompts: a .txt file (one a line), JSONL/JSON/Parquet rows with a 'prompt' (text or "
                      "messages), or any data file rewardkit reads (its records' prompts, e.g. HH-RLHF).")]


def bar_progress(bar):
    """A sampling run's progress (rewardkit.sampling.Progress) drawn on a rich progress bar."""
    from rewardkit.sampling import Progress

    class BarProgress(Progress):
        def __init__(self):
            self.task = None

        def start(self, total_samples: int, done_samples: int) -> None:
            self.task = bar.add_task("sampling", total=total_samples, completed=done_samples)

        def advance(self, samples: int) -> None:
            bar.advance(self.task, samples)

    return BarProgress()


@app.command(cls=ExampleCommand)
def sample(policy: PolicyOpt, prompts: PromptsOpt,
           out: Annotated[Path, typer.Option("--out", "-o", help="JSONL of generic records: one per prompt, its "
                                                                 "n responses and the policy's token ids.")],
           n: Annotated[int, typer.Option("--n", help="Responses per prompt.")] = 4,
           endpoint: Annotated[Optional[str], typer.Option(
               "--endpoint", help="An OpenAI-compatible server's base URL (vLLM, SGLang: http://HOST:PORT/v1); "
                                  "--policy is then the served model's name.")] = None,
           temperature: Annotated[float, typer.Option("--temperature", help="0 is greedy.")] = 1.0,
           top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling: keep the most probable tokens "
                                                                "up to this probability.")] = 1.0,
           max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Tokens per response, at "
                                                                                "most.")] = 256,
           seed: Annotated[int, typer.Option("--seed", help="Each prompt's samples are seeded from (seed, its "
                                                            "id): the same seed gives the same file.")] = 0,
           batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts per generate call (local) or "
                                                                        "written per flush (endpoint).")] = 8,
           score: Annotated[Optional[str], typer.Option(
               "--score", help="Score each record as it is sampled with this model (any --model spec); the "
                               "policy's token ids are scored where the scorer's tokenizer is the policy's.")] = None,
           format: FormatOpt = None, limit: LimitOpt = None, precision: PrecisionOpt = "auto",
           batch_tokens: BatchTokensOpt = 16384,
           tokenizer: Annotated[Optional[str], typer.Option(
               "--tokenizer", help="With --endpoint: the served model's tokenizer (a path, hub id or 'smollm2'), so "
                                   "--score can read the returned token ids.")] = None,
           concurrency: Annotated[int, typer.Option("--concurrency", help="With --endpoint: requests in "
                                                                          "flight.")] = 8,
           max_retries: Annotated[int, typer.Option("--max-retries", help="With --endpoint: retries of a failed "
                                                                          "request, with exponential backoff.")] = 4,
           timeout: Annotated[float, typer.Option("--timeout", help="With --endpoint: seconds per request.")] = 600.0,
           overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False):
    """Sample n responses per prompt from a local causal LM or an OpenAI-compatible endpoint into a generic
    JSONL file (rewardkit score, rerank and eval read it as it is); an interrupted run resumes where it stopped.

    Example: rewardkit sample --policy smollm2 --prompts runs/demo/data/synthetic_test.jsonl --limit 8 --n 4
        --max-new-tokens 32 --out runs/demo/samples.jsonl
    """
    from rewardkit.data.prompts import load_prompts
    from rewardkit.errors import RewardkitError
    from rewardkit.sampling import load_policy, sample as run_sample
    from rewardkit.scoring import partial_path

    with user_errors():
        quiet_transformers()
        if out.exists() and not overwrite:
            raise RewardkitError(f"{out} already exists; pass --overwrite to replace it")
        if tokenizer and not endpoint:
            raise RewardkitError("--tokenizer applies with --endpoint: a local policy has its own tokenizer")
        prompt_list = load_prompts(prompts, format=format, limit=limit)
        options = ({"tokenizer": tokenizer, "concurrency": concurrency, "max_retries": max_retries,
                    "timeout": timeout} if endpoint else {})
        with console.status(f"loading {policy}"):
            loaded = load_policy(policy, endpoint=endpoint, precision=precision, **options)
        scorer = load_scorer(score, None, None, precision, batch_tokens) if score else None
        if partial_path(out).exists():
            console.print(f"resuming from {partial_path(out)}")
        if n == 1:
            console.print("[yellow]note:[/] a record with one response is not read back by score, rerank or eval "
                          "(they need two or more)")
        with progress_bar("sampling", None, unit="samples") as bar:
            summary = run_sample(loaded, prompt_list, out, n=n, temperature=temperature, top_p=top_p,
                                 max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size, score=scorer,
                                 score_name=score, overwrite=overwrite, progress=bar_progress(bar))
        resumed = f" ({summary.resumed} kept from the interrupted run)" if summary.resumed else ""
        scored = f"; scored from {summary.score_input}" if summary.score_input else ""
        console.print(f"wrote {escape(str(summary.output))}: {summary.prompts} prompts x {n} responses{resumed}; "
                      f"{summary.samples} samples in {summary.seconds:.1f} s ({summary.samples_per_second:.2f} "
                      f"samples/s){scored}", highlight=False)
