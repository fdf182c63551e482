"""WARM with a safety check: average members' weights only if they are linearly connected (METHODS §5.2).

For each member i > 0, accuracy is measured along alpha * theta_0 + (1 - alpha) * theta_i at alpha in
{0, .25, .5, .75, 1}. If an interior point falls below both of its endpoints, the two members are not in one
basin (typically: not fine-tuned from the same initialisation) and averaging is refused with the numbers.
Otherwise the mean of all members' weights is written as an ordinary checkpoint, with its own accuracy on the
same data, and a report (warm_report.json, .md, .png) beside the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rewardkit.data.record import PreferenceRecord
from rewardkit.errors import RewardkitError
from rewardkit.eval.evaluate import evaluate
from rewardkit.models.scorer import ScoreItem
from rewardkit.models.warm import average, check_same_shapes, interpolate

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def dips(path: Sequence[tuple[float, float]]) -> list[float]:
    """The interior alphas whose accuracy is below both endpoints' ((alpha, accuracy) pairs, sorted by alpha)."""
    floor = min(path[0][1], path[-1][1])
    return [alpha for alpha, acc in path[1:-1] if acc < floor]


def warm_average(members: Sequence[str], records: Sequence[PreferenceRecord], output: str | Path, *,
                 alphas: Sequence[float] = ALPHAS, precision: str = "fp32",
                 on_point: Callable[[str, float, float], None] | None = None) -> dict[str, Any]:
    """Check the interpolation paths, average, save; returns the report. Raises RewardkitError (nothing
    written) when members differ in architecture or a path dips."""
    from rewardkit.models.reward_model import RewardModel
    from rewardkit.models.rm_scorer import RewardModelScorer

    if len(members) < 2:
        raise RewardkitError("weight averaging needs at least two members")
    if not any(rec.comparisons() for rec in records):
        raise RewardkitError("the evaluation data has no labelled comparisons to check the interpolation on")
    alphas = sorted(set(alphas) | {0.0, 1.0})
    models = []
    for path in members:
        model = RewardModel.from_pretrained(path)
        model.merge_lora()  # a LoRA member is averaged as its merged weights
        models.append(model)
    names = [str(m) for m in members]
    for name, model in zip(names[1:], models[1:]):
        if model.meta.objectives != models[0].meta.objectives:
            raise RewardkitError(f"{name}: objectives {model.meta.objectives}, {names[0]}'s "
                                 f"{models[0].meta.objectives}")
    states = [{k: v.detach().clone() for k, v in m.model.state_dict().items()} for m in models]
    check_same_shapes(states, names)
    work = models[0]
    scorer = RewardModelScorer(work, precision=precision)
    items = [ScoreItem(r.prompt, r.responses) for r in records]

    def accuracy(state) -> float:
        work.model.load_state_dict(state)
        return evaluate(records, scorer.score(items))["accuracy"]

    endpoint = {0: accuracy(states[0])}
    paths = []
    for i in range(1, len(states)):
        endpoint[i] = accuracy(states[i])
        path = []
        for alpha in alphas:
            acc = endpoint[0] if alpha == 1.0 else endpoint[i] if alpha == 0.0 else accuracy(
                interpolate(states[0], states[i], alpha))
            path.append((alpha, acc))
            if on_point is not None:
                on_point(names[i], alpha, acc)
        paths.append({"a": names[0], "b": names[i], "path": [{"alpha": a, "accuracy": acc} for a, acc in path],
                      "dips": dips(path)})
    report = {"members": [{"member": n, "accuracy": endpoint[i]} for i, n in enumerate(names)],
              "paths": paths, "n_records": len(records), "alphas": alphas}
    bad = [p for p in paths if p["dips"]]
    if bad:
        p = bad[0]
        table = ", ".join(f"{q['alpha']:g}: {100 * q['accuracy']:.1f}%" for q in p["path"])
        raise RewardkitError(
            f"not averaging: {p['b']} is not linearly connected to {p['a']} (accuracy along "
            f"alpha*{p['a']} + (1-alpha)*{p['b']}: {table}; alpha {p['dips']} below both ends). WARM needs members "
            "fine-tuned from the same initialisation")
    averaged = average(states)
    report["average_accuracy"] = accuracy(averaged)
    output = Path(output)
    work.meta.training = {"warm": {"members": names, "accuracy_on": len(records)}}
    work.save_pretrained(output)
    write_warm_report(report, output)
    return report


def write_warm_report(report: dict[str, Any], out_dir: Path) -> None:
    from rewardkit.io import atomic_write_json, atomic_write_text

    atomic_write_json(out_dir / "warm_report.json", report)
    lines = ["# Weight-averaged reward model (WARM)", "",
             f"Accuracy of the average on {report['n_records']} records: "
             f"{100 * report['average_accuracy']:.2f}%.", "", "| member | accuracy |", "|---|---|"]
    lines += [f"| {m['member']} | {100 * m['accuracy']:.2f}% |" for m in report["members"]]
    lines += ["", "Accuracy along alpha * a + (1 - alpha) * b:", "",
              "| a | b | " + " | ".join(f"alpha {a:g}" for a in report["alphas"]) + " |",
              "|---|---|" + "---|" * len(report["alphas"])]
    lines += [f"| {p['a']} | {p['b']} | " + " | ".join(f"{100 * q['accuracy']:.2f}%" for q in p["path"]) + " |"
              for p in report["paths"]]
    lines += ["", "![Accuracy along the interpolation paths](warm_paths.png)"]
    atomic_write_text(out_dir / "warm_report.md", "\n".join(lines) + "\n")
    _plot(report, out_dir / "warm_paths.png")


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for p in report["paths"]:
        ax.plot([q["alpha"] for q in p["path"]], [q["accuracy"] for q in p["path"]], marker="o",
                label=f"{Path(p['a']).parent.name or p['a']} to {Path(p['b']).parent.name or p['b']}")
    ax.axhline(report["average_accuracy"], color="black", linestyle="--", linewidth=1, label="average of all")
    ax.set_xlabel("alpha (1 = first member)")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
