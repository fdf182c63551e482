"""The main job end to end on an embedded default: train a reward model, evaluate it before and after.

With the real HH-RLHF data beside the project (../shared/data or $REWARDKIT_DATA) it trains MiniLM on the
harmless-base train split and evaluates on its test split. Without it, it trains on rewardkit's synthetic
preference task, whose gold reward is known, and also reports how well the learned reward recovered it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from rewardkit.data import shared_data_dir, write_canonical_jsonl
from rewardkit.eval import evaluate, spearman, write_report
from rewardkit.models import RewardModel, RewardModelScorer
from rewardkit.train import TrainConfig, train

HH_HARMLESS = Path("hh-rlhf") / "harmless-base" / "test.jsonl.gz"


@dataclass
class DemoPlan:
    name: str
    train_path: Path
    test_path: Path
    train_split: str
    test_split: str
    epochs: int


def plan(out: Path, synthetic_sizes: tuple[int, int] = (1600, 400)) -> DemoPlan:
    """Real data when present, else the synthetic task. The synthetic task is written out as files (as a
    user's data would be) either way: every command's --help example runs on them."""
    from rewardkit.data.synthetic import synthetic_splits

    train_records, test_records = synthetic_splits(*synthetic_sizes, seed=0)
    data = out / "data"
    write_canonical_jsonl(train_records, data / "synthetic_train.jsonl")
    write_canonical_jsonl(test_records, data / "synthetic_test.jsonl")
    shared = shared_data_dir()
    if shared is not None and (shared / HH_HARMLESS).is_file():
        path = shared / HH_HARMLESS
        return DemoPlan("HH-RLHF harmless-base", path, path, "train", "test", epochs=1)
    return DemoPlan("synthetic task (known gold reward)", data / "synthetic_train.jsonl",
                    data / "synthetic_test.jsonl", "all", "all", epochs=2)


def run_demo(out: str | Path = "runs/demo", model: str = "minilm", precision: str = "auto", log=print,
             synthetic_sizes: tuple[int, int] = (1600, 400)) -> dict:
    """Train, evaluate before and after, write reports; returns {"before": report, "after": report, ...}."""
    from rewardkit.data import load_split

    out = Path(out)
    p = plan(out, synthetic_sizes)
    log(f"data: {p.name}: train {p.train_path} ({p.train_split}), test {p.test_path} ({p.test_split})")
    loaded = load_split(p.test_path, p.test_split, skip_bad=True)
    test = loaded.records

    def report_for(reward_model: RewardModel, name: str) -> dict:
        scorer = RewardModelScorer(reward_model, precision=precision)
        results = scorer.score(test)
        report = evaluate(test, results, scorer.describe(), skipped=loaded.skipped)
        report["data"] = {"path": str(p.test_path), "split": p.test_split, "name": p.name}
        gold = [g for r in test for g in r.meta.get("gold", [])]
        if len(gold) == sum(len(r.responses) for r in test):  # synthetic: how much of the gold reward was learned
            from rewardkit.data.synthetic import bayes_accuracy

            learned = [x for res in results for x in res.rewards]
            report["gold"] = {"spearman_with_gold": spearman(learned, gold), "bayes_accuracy": bayes_accuracy(test)}
        write_report(report, out / name)
        return report

    log("evaluating the untrained model ...")
    before = report_for(RewardModel.from_pretrained(model, max_length=256), "before")
    config = TrainConfig(model=model, data=[str(p.train_path)], split=p.train_split, skip_bad=True,
                         eval_data=[str(p.test_path)], eval_split=p.test_split, output=str(out / "train"),
                         epochs=p.epochs, lr=1e-4, batch_size=16, max_length=256, precision=precision)
    if (out / "train").exists():  # the demo owns this directory; a rerun trains anew instead of resuming
        shutil.rmtree(out / "train")
    log(f"training ({config.epochs} epoch(s), batch {config.batch_size}, lr {config.lr}, max length "
        f"{config.max_length}) ...")
    result = train(config)
    after = report_for(RewardModel.from_pretrained(out / "train" / "best"), "report")
    summary = {"before": before, "after": after, "steps": result.steps, "train_seconds": result.train_seconds,
               "records_per_s": result.records_trained / max(result.train_seconds, 1e-9)}
    for line in summary_lines(summary):
        log(line)
    return summary


def summary_lines(summary: dict) -> list[str]:
    before, after = summary["before"], summary["after"]

    def pct(x):
        return "n/a" if x is None else f"{100 * x:5.1f}%"

    def num(x):
        return "n/a" if x is None else f"{x:6.3f}"

    lines = [f"trained in {summary['train_seconds']:.0f}s ({summary['records_per_s']:.1f} pairs/s)",
             f"{'':28}{'before':>10}{'after':>10}",
             f"{'accuracy (ties wrong)':28}{pct(before['accuracy']):>10}{pct(after['accuracy']):>10}",
             f"{'ECE':28}{num(before['ece']):>10}{num(after['ece']):>10}",
             f"{'reward-length Pearson':28}{num(before['length_correlation']['pearson']):>10}"
             f"{num(after['length_correlation']['pearson']):>10}"]
    if "gold" in after:
        lines.append(f"{'Spearman with gold reward':28}{num(before['gold']['spearman_with_gold']):>10}"
                     f"{num(after['gold']['spearman_with_gold']):>10}")
        lines.append(f"ceiling (gold reward's own accuracy on these labels): {pct(after['gold']['bayes_accuracy'])}")
    return lines
