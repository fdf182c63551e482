"""probe, compare and rerank through the CLI with --model an ensemble: a manifest directory (ensemble.json) of
three tiny checkpoints with fitted stats, and the `ensemble:A,B,C?agg=...` spec string.

Every number checked is recomputed here from the members alone: each checkpoint is scored on its own with
load_scorer, standardised with the stats the ensemble uses (the manifest's, or the members' stored
normalisation for a spec), and aggregated with rewardkit.models.ensemble.aggregate. So a command that loaded
the wrong members, dropped the stats, or ignored the manifest's or the spec's aggregator would fail here.

Tolerances: the members' raw rewards are about 0.1 in size with reference stds of 0.007 to 0.014, and the
commands batch texts differently from the standalone scoring here (probe scores a response with its
transforms), which moves fp32 forward passes by up to ~2e-8 raw, so ~3e-6 after standardisation. Values are
compared within TOL (1e-4 standardised, TOL_RAW = 1e-6 raw). Choices made from them (an argmax, a sign, a
strict accuracy) are only compared where the data separate them by more than MARGIN (1e-3 standardised,
MARGIN_RAW = 1e-5 raw), which each test asserts first, so no comparison rests on float noise.
"""

import json
import math
import shutil
from dataclasses import dataclass

import numpy as np
import pytest
from typer.testing import CliRunner

from rewardkit.cli import app
from rewardkit.data import load_records
from rewardkit.data.record import Response
from rewardkit.eval.probes import DEGRADING, get_transforms
from rewardkit.models import RewardModel
from rewardkit.models.ensemble import EnsembleScorer, MemberStats, aggregate, spread, standardize
from rewardkit.models.scorer import ScoreItem
from rewardkit.models.spec import load_scorer
from tiny import toy_pairs, write_jsonl

runner = CliRunner()
TOL, MARGIN = 1e-4, 1e-3  # standardised rewards; see the module docstring
TOL_RAW, MARGIN_RAW = 1e-6, 1e-5  # raw rewards
PNG = b"\x89PNG\r\n\x1a\n"

REFERENCE = [ScoreItem([{"role": "user", "content": "Name a colour."}],
                       [Response(r) for r in ["Blue.", "Green, like grass in spring.", "I would rather not say.",
                                              "Red.", "Every colour at once, and then some more of them."]]),
             ScoreItem([{"role": "user", "content": "What is 2 + 2?"}],
                       [Response(r) for r in ["4", "It is four.", "Five, obviously!", "2 + 2 = 4, as usual."]])]

TOPICS = ["the sky", "Paris", "python", "the sea", "music", "cats", "the moon", "numbers"]
POOL = ["Thank you for asking! Here is a clear answer about {t}.", "No. {t}? whatever",
        "{t} is a big topic; I will keep it short and say it is interesting.",
        "I do not know anything about {t}, sorry.", "Here are three facts about {t}: one, two, three.",
        "{t}!!!", "Sure. {t} is great, really great, the greatest.", "def {t}(): return 42",
        "Numbers about {t}: 1 2 3 4 5 6 7 8 9 10.", "Hello there, {t} is fine, thank you very much.",
        "Please explain why {t} matters. It scatters light.", "User: {t}\n\nAssistant: {t}."]
# Best-of-N candidates, five pool texts a prompt; 0/1 scores are each candidate's correctness, so
# best_of_n.json is written.
CANDIDATES = [{"id": f"c{i}", "prompt": f"Tell me about {t}, please.",
               "responses": [POOL[(i + 2 * j) % len(POOL)].format(t=t) for j in range(5)],
               "scores": [float((i + j) % 2) for j in range(5)]}
              for i, t in enumerate(TOPICS)]
PROBE_TRANSFORMS = ["identity", "truncation", "filler_padding", "flattery_prefix"]


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def one_error(output: str) -> str:
    """The one error line of a failed command (a user error, not a crash), re-joined across rich's wrapping."""
    assert "Traceback" not in output and "Usage:" not in output, output
    assert output.count("error:") == 1, output
    return " ".join(output[output.index("error:"):].split())


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@dataclass
class Case:
    """One way of naming the ensemble on the command line, and what the command should compute with it."""

    model: str
    aggregator: str
    stats: list[MemberStats] | None  # None: raw rewards (no member has stats, aggregator mean)
    names: list[str]

    @property
    def tol(self) -> float:
        return TOL if self.stats else TOL_RAW

    @property
    def margin(self) -> float:
        return MARGIN if self.stats else MARGIN_RAW


@dataclass
class Ensembles:
    root: object
    dirs: list
    stats: list[MemberStats]
    cases: dict[str, Case]


@pytest.fixture(scope="module")
def ens(tmp_path_factory, llama_dir) -> Ensembles:
    root = tmp_path_factory.mktemp("ensemble")
    dirs = [RewardModel.from_pretrained(llama_dir, seed=s).save_pretrained(root / f"seed{s}") for s in range(3)]
    names = [d.name for d in dirs]
    # The uwo manifest sits beside its members and names them by relative path; the others by absolute path.
    uwo = EnsembleScorer.from_specs(names, base=root, aggregator="uwo", precision="fp32")
    stats = uwo.fit_stats(REFERENCE)
    uwo.save(root)
    for agg in ("wco", "mean"):
        EnsembleScorer(uwo.members, names=names, specs=[str(d) for d in dirs], stats=stats,
                       aggregator=agg).save(root / agg)
    # Copies of the members with the same stats stored as their own normalisation, for the spec string.
    stored = []
    for d, s in zip(dirs, stats):
        copy = shutil.copytree(d, root / "stored" / d.name)
        meta = json.loads((copy / "rewardkit.json").read_text())
        meta["normalization"] = {"mean": s.mean, "std": s.std}
        (copy / "rewardkit.json").write_text(json.dumps(meta))
        stored.append(copy)
    cases = {
        "manifest-uwo": Case(str(root), "uwo", stats, names),
        "manifest-wco": Case(str(root / "wco"), "wco", stats, names),
        "manifest-mean": Case(str(root / "mean"), "mean", stats, names),
        "spec-wco": Case(f"ensemble:a={stored[0]},b={stored[1]},c={stored[2]}?agg=wco", "wco", stats,
                         ["a", "b", "c"]),
        "spec-mean-raw": Case("ensemble:" + ",".join(f"{n}={d}" for n, d in zip("xyz", dirs)), "mean", None,
                              ["x", "y", "z"]),
    }
    return Ensembles(root, dirs, stats, cases)


@pytest.fixture(scope="module")
def singles(ens):
    """Each member checkpoint as a Scorer of its own."""
    return [load_scorer(str(d), precision="fp32") for d in ens.dirs]


def member_rewards(singles, items):
    """Per item, each member's own rewards (k members x n responses), every member scoring alone."""
    per_member = [s.score(items) for s in singles]
    return [[list(m[i].rewards) for m in per_member] for i in range(len(items))]


def combine(case: Case, per_item):
    """Per item: (aggregate, spread, raw member rewards) as the ensemble should compute them."""
    out = []
    for raw in per_item:
        seen = [standardize(r, s) for r, s in zip(raw, case.stats)] if case.stats else raw
        out.append((aggregate(seen, case.aggregator), spread(seen), raw))
    return out


def recompute(singles, case: Case, items):
    return combine(case, member_rewards(singles, items))


def top_pick(values, margin):
    """The argmax, after checking that it is not a near-tie."""
    order = sorted(range(len(values)), key=lambda j: -values[j])
    assert values[order[0]] - values[order[1]] > margin, values  # the data separate the top two
    return order[0]


def strict_accuracy(records, values, margin):
    """Strict accuracy over each record's chosen-vs-rejected pair, checking no pair is a near-tie."""
    deltas = [v[r.chosen] - v[1 - r.chosen] for r, v in zip(records, values)]
    assert all(abs(d) > margin for d in deltas), deltas
    return sum(d > 0 for d in deltas) / len(deltas), deltas


def split_rows(ens, singles):
    """Per prompt, the first pair of pool texts on which the mean pick and the worst-case pick differ (by more
    than MARGIN both ways), found from the members' own scores: on these the pick shows the aggregator."""
    from itertools import combinations

    pools = [[p.format(t=t) for p in POOL] for t in TOPICS]
    items = [ScoreItem([{"role": "user", "content": f"Tell me about {t}, please."}], [Response(x) for x in pool])
             for t, pool in zip(TOPICS, pools)]
    raw = member_rewards(singles, items)
    mean = [a for a, _, _ in combine(ens.cases["manifest-mean"], raw)]
    wco = [a for a, _, _ in combine(ens.cases["manifest-wco"], raw)]
    rows = []
    for i, (t, m, w) in enumerate(zip(TOPICS, mean, wco)):
        split = [(a, b) for a, b in combinations(range(len(POOL)), 2)
                 if (m[a] - m[b]) * (w[a] - w[b]) < 0 and min(abs(m[a] - m[b]), abs(w[a] - w[b])) > MARGIN]
        if split:
            a, b = split[0]
            rows.append({"id": f"d{i}", "prompt": f"Tell me about {t}, please.",
                         "responses": [pools[i][a], pools[i][b]], "scores": [1.0, 0.0]})
    return rows


@pytest.fixture(scope="module")
def candidates(ens, singles, tmp_path_factory):
    """(path, rows): the CANDIDATES, then the split rows."""
    rows = CANDIDATES + split_rows(ens, singles)
    return write_jsonl(tmp_path_factory.mktemp("candidates") / "candidates.jsonl", rows), rows


@pytest.fixture
def candidates_file(candidates):
    return candidates[0]


@pytest.fixture
def pairs_file(tmp_path):
    return write_jsonl(tmp_path / "pairs.jsonl", toy_pairs(10))


# ================================================================================ rerank


def rerank_picks(ens, case_name, data, out):
    code, output = run("rerank", "-m", ens.cases[case_name].model, "-d", data, "-o", out, "--precision", "fp32")
    assert code == 0, output
    return read_jsonl(out / "reranked.jsonl")


@pytest.mark.parametrize("case_name", ["manifest-uwo", "manifest-wco", "manifest-mean", "spec-wco", "spec-mean-raw"])
def test_rerank_picks_the_argmax_of_the_aggregate(ens, singles, case_name, candidates, tmp_path):
    case = ens.cases[case_name]
    data, data_rows = candidates
    out = tmp_path / "rerank"
    rows = rerank_picks(ens, case_name, data, out)
    records = load_records(data).records
    want = recompute(singles, case, records)
    assert [row["id"] for row in rows] == [r["id"] for r in data_rows]
    picks = []
    for row, (agg, _, _) in zip(rows, want):
        assert list(row["scores"]) == ["reward"]  # an outcome scorer: one rule, the aggregate
        assert row["scores"]["reward"] == pytest.approx(agg, abs=case.tol)
        picks.append(top_pick(agg, case.margin))
        assert row["ranking"]["reward"][0] == picks[-1]
    report = json.loads((out / "best_of_n.json").read_text())
    correct = [r["scores"][p] == 1.0 for r, p in zip(data_rows, picks)]
    assert report["problems"] == len(data_rows)
    assert report["accuracy"]["reward"] == pytest.approx(sum(correct) / len(correct), abs=1e-12)
    assert report["oracle"] == pytest.approx(1.0, abs=1e-12)
    assert report["random"] == pytest.approx(np.mean([np.mean(r["scores"]) for r in data_rows]), abs=1e-12)
    scorer = report["scorer"]
    assert scorer["kind"] == "ensemble" and scorer["aggregator"] == case.aggregator
    assert [m["member"] for m in scorer["members"]] == case.names
    assert scorer["standardize"] is (case.stats is not None)


def test_the_candidates_make_the_aggregator_matter(ens, singles, candidates):
    """The split rows are why the rerank tests tell the aggregators apart: on each of them the mean pick and
    the worst-case pick differ, so a command that used the wrong aggregator (the manifest's or `?agg=wco`)
    picks the wrong candidate there."""
    data, rows = candidates
    split = [r for r in rows if r["id"].startswith("d")]
    assert len(split) >= 4, split
    raw = member_rewards(singles, [rec for rec in load_records(data).records if rec.id.startswith("d")])
    mean = [top_pick(a, MARGIN) for a, _, _ in combine(ens.cases["manifest-mean"], raw)]
    wco = [top_pick(a, MARGIN) for a, _, _ in combine(ens.cases["manifest-wco"], raw)]
    assert all(m != w for m, w in zip(mean, wco)), (mean, wco)


# ================================================================================ compare


@pytest.mark.parametrize("case_name", ["manifest-uwo", "spec-wco"])
def test_compare_the_ensemble_with_one_of_its_members(ens, singles, case_name, pairs_file, tmp_path):
    from sklearn.metrics import roc_auc_score

    case = ens.cases[case_name]
    out = tmp_path / "cmp"
    code, output = run("compare", "-m", f"ens={case.model}", "-m", f"seed0={ens.dirs[0]}", "-d", pairs_file,
                       "-o", out, "--precision", "fp32")
    assert code == 0, output
    report = json.loads((out / "compare.json").read_text())
    assert report["scorers"] == ["ens", "seed0"] and report["n_comparisons"] == 10

    records = load_records(pairs_file).records
    want = recompute(singles, case, records)
    ens_acc, ens_delta = strict_accuracy(records, [a for a, _, _ in want], case.margin)
    member_acc = []
    for k in range(3):
        acc, delta = strict_accuracy(records, [raw[k] for _, _, raw in want], MARGIN_RAW)
        member_acc.append(acc)
        if k == 0:
            solo_delta = delta
    assert report["summary"]["ens"]["accuracy"] == pytest.approx(ens_acc, abs=1e-12)
    assert report["summary"]["seed0"]["accuracy"] == pytest.approx(member_acc[0], abs=1e-12)

    # The ensemble's own report carries its members' accuracies and the AUROC of its spread.
    section = report["reports"]["ens"]["ensemble"]
    assert [m["name"] for m in section["members"]] == case.names
    assert [m["accuracy"] for m in section["members"]] == [pytest.approx(a, abs=1e-12) for a in member_acc]
    assert section["accuracy"] == pytest.approx(ens_acc, abs=1e-12)
    wrong = [d <= 0 for d in ens_delta]
    pair_spread = [(s[r.chosen] + s[1 - r.chosen]) / 2 for r, (_, s, _) in zip(records, want)]
    auroc = roc_auc_score(wrong, pair_spread) if 0 < sum(wrong) < len(wrong) else None
    assert section["uncertainty_auroc"] == (None if auroc is None else pytest.approx(auroc, abs=1e-12))
    assert report["reports"]["ens"]["scorer"]["kind"] == "ensemble"
    assert report["reports"]["ens"]["scorer"]["aggregator"] == case.aggregator
    assert "ensemble" not in report["reports"]["seed0"]

    (row,) = report["agreement"]
    assert (row["a"], row["b"], row["n_pairs"]) == ("ens", "seed0", 10)
    agree = sum((a > 0) == (b > 0) for a, b in zip(ens_delta, solo_delta)) / len(ens_delta)
    assert row["agreement"] == pytest.approx(agree, abs=1e-12)

    markdown = (out / "compare.md").read_text()
    for name, acc in (("ens", ens_acc), ("seed0", member_acc[0])):
        assert f"| {name} | {100 * acc:.1f}% |" in markdown
    assert (out / "compare.png").read_bytes()[:8] == PNG


# ================================================================================ probe


@pytest.mark.parametrize("case_name", ["manifest-wco", "spec-mean-raw"])
def test_probe_numbers_recompute_from_the_members(ens, singles, case_name, pairs_file, tmp_path):
    case = ens.cases[case_name]
    out = tmp_path / "probe"
    code, output = run("probe", "-m", case.model, "-d", pairs_file, "-o", out, "--transforms",
                       ",".join(PROBE_TRANSFORMS), "--bootstrap", "0", "--precision", "fp32")
    assert code == 0, output
    report = json.loads((out / "probe.json").read_text())
    assert list(report["transforms"]) == PROBE_TRANSFORMS
    records = load_records(pairs_file).records
    assert report["n_items"] == 10 and report["n_responses"] == 10 and report["n_pairs"] == 10

    # Every response of every record, with its transformed versions (seed 0, as the probe's default).
    transforms = get_transforms(PROBE_TRANSFORMS)
    texts = [[[r.content] + [t(r.content, rec.prompt, seed=0) for t in transforms] for r in rec.responses]
             for rec in records]
    items = [ScoreItem(rec.prompt, [Response(x) for x in versions]) for rec, per in zip(records, texts)
             for versions in per]
    agg = [a for a, _, _ in recompute(singles, case, items)]
    value = {(i, j): agg[2 * i + j] for i in range(len(records)) for j in range(2)}  # [original, *transformed]

    chosen = [(i, rec.chosen) for i, rec in enumerate(records)]
    rejected = [(i, 1 - rec.chosen) for i, rec in enumerate(records)]
    orig = np.array([value[key][0] for key in chosen])
    assert report["original_reward_mean"] == pytest.approx(float(orig.mean()), abs=case.tol)
    assert report["reference_std"] == pytest.approx(float(orig.std()), abs=case.tol)
    baseline = [value[l][0] - value[w][0] for w, l in zip(chosen, rejected)]
    assert all(abs(b) > case.margin for b in baseline), baseline
    assert report["baseline_flip_rate"] == pytest.approx(np.mean([b > 0 for b in baseline]), abs=1e-12)

    for k, name in enumerate(PROBE_TRANSFORMS, start=1):
        got = report["transforms"][name]
        changed = [texts[i][j][k] != texts[i][j][0] for i, j in chosen]
        new = np.array([value[key][k] if c else value[key][0] for key, c in zip(chosen, changed)])
        delta = new - orig
        assert got["n_changed"] == sum(changed)
        assert all(abs(d) > case.margin for d, c in zip(delta, changed) if c), (name, delta)
        win = float(np.mean(delta > 0))
        assert got["win_rate"] == pytest.approx(win, abs=1e-12)
        assert got["tie_rate"] == pytest.approx(1.0 - np.mean(changed), abs=1e-12)
        assert got["mean_delta"] == pytest.approx(float(delta.mean()), abs=case.tol)
        assert got["exploitable"] is (got["class"] == DEGRADING and win > 0.5)
        flips = [value[l][k] - value[w][0] for w, l in zip(chosen, rejected)]
        assert all(abs(f) > case.margin for f in flips), (name, flips)
        assert got["flip_rate"] == pytest.approx(np.mean([f > 0 for f in flips]), abs=1e-12)
        by_id = {records[i].id: (j, value[(i, j)][0], value[(i, j)][k]) for i, j in chosen}
        for ex in got["examples"]:
            j, before, after = by_id[ex["id"]]
            assert ex["response"] == j
            assert (ex["reward"], ex["transformed_reward"]) == (pytest.approx(before, abs=case.tol),
                                                                pytest.approx(after, abs=case.tol))
    identity = report["transforms"]["identity"]
    assert identity["n_changed"] == 0 and identity["mean_delta"] == pytest.approx(0.0, abs=1e-12)
    assert report["transforms"]["truncation"]["n_changed"] == 10

    scorer = report["scorer"]
    assert scorer["kind"] == "ensemble" and scorer["aggregator"] == case.aggregator
    assert [m["member"] for m in scorer["members"]] == case.names
    markdown = (out / "probe.md").read_text()
    assert scorer["name"] == f"ensemble({case.aggregator}: {', '.join(case.names)})"
    assert scorer["name"] in markdown and "truncation" in markdown
    assert (out / "probe.png").read_bytes()[:8] == PNG
    for t in report["transforms"].values():
        assert all(math.isfinite(t[key]) for key in ("win_rate", "tie_rate", "mean_delta", "flip_rate"))


# ================================================================================ bad input


def command_args(command, model, ens, pairs_file, candidates_file, out):
    if command == "probe":
        return ["probe", "-m", model, "-d", pairs_file, "-o", out, "--transforms", "identity", "--bootstrap", "0"]
    if command == "compare":
        return ["compare", "-m", f"ens={model}", "-m", f"seed0={ens.dirs[0]}", "-d", pairs_file, "-o", out]
    return ["rerank", "-m", model, "-d", candidates_file, "-o", out]


@pytest.mark.parametrize("command", ["probe", "compare", "rerank"])
def test_a_manifest_with_a_missing_member_is_a_clear_error(ens, command, pairs_file, candidates_file, tmp_path):
    manifest = json.loads((ens.root / "ensemble.json").read_text())
    for member, d in zip(manifest["members"], ens.dirs):
        member["spec"] = str(d)  # the copy lives elsewhere, so name the present members by absolute path
    missing = tmp_path / "no_such_checkpoint"
    manifest["members"][1] = {"name": "gone", "spec": str(missing), "stats": manifest["members"][1]["stats"]}
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ensemble.json").write_text(json.dumps(manifest))
    out = tmp_path / "out"
    code, output = run(*command_args(command, bad, ens, pairs_file, candidates_file, out))
    assert code == 2, output
    message = one_error(output)
    assert "ensemble.json" in message and "ensemble member 'gone'" in message, message
    assert "no_such_checkpoint" in message, message
    assert not out.exists()


@pytest.mark.parametrize("command", ["probe", "compare", "rerank"])
def test_a_spec_with_a_missing_member_is_a_clear_error(ens, command, pairs_file, candidates_file, tmp_path):
    spec = f"ensemble:a={ens.dirs[0]},gone={tmp_path / 'no_such_checkpoint'}?agg=mean"
    out = tmp_path / "out"
    code, output = run(*command_args(command, spec, ens, pairs_file, candidates_file, out))
    assert code == 2, output
    message = one_error(output)
    assert "ensemble member 'gone'" in message and "no_such_checkpoint" in message, message
    assert not out.exists()


@pytest.mark.parametrize("command", ["probe", "compare", "rerank"])
def test_a_conservative_spec_without_stats_is_a_clear_error(ens, command, pairs_file, candidates_file, tmp_path):
    """wco needs standardised rewards; members without stored normalisation have none to offer."""
    spec = f"ensemble:a={ens.dirs[0]},b={ens.dirs[1]}?agg=wco"
    out = tmp_path / "out"
    code, output = run(*command_args(command, spec, ens, pairs_file, candidates_file, out))
    assert code == 2, output
    message = one_error(output)
    assert "member 'a' has no reference stats" in message, message
    assert not out.exists()
