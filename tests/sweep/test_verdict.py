"""hwd_tune.sweep.verdict: the quickstart's closing table and the sentence judging the tuned HWD."""

import math
import statistics

from rich.console import Console
from scipy import stats

from hwd_tune.sweep.final_stage import Candidate, CandidateResult, judge
from hwd_tune.sweep.verdict import verdict_sentence, verdict_table

SEEDS = [0, 1, 2]


def final_stage(values: dict[str, list[float]]):
    """A judged final stage from per-seed values of top-1, table_i, none and cwd."""
    roles = {"top-1": "tuned", "table_i": "table_i", "none": "baseline", "cwd": "baseline"}
    params = {"top-1": {"tau": 2.5, "mu": 0.75, "beta": 0.05}, "table_i": {"tau": 4.0, "mu": 0.0, "beta": 0.1}}
    outcomes = [
        CandidateResult(
            Candidate(label, "hwd" if roles[label] != "baseline" else label, params.get(label, {}), roles[label]),
            values=dict(zip(SEEDS, values[label])),
        )
        for label in values
    ]
    return judge(outcomes, SEEDS, "max")


def half_width(values: list[float]) -> float:
    """The 95 % t-interval's half width, computed here independently of hwd_tune.sweep.statistics."""
    return stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def test_a_tuned_hwd_ahead_on_every_seed_beats_cwd_and_table_i_beyond_the_noise():
    values = {
        "top-1": [52.0, 53.0, 54.1],
        "table_i": [50.0, 51.1, 52.0],  # 2 below on every seed, give or take 0.1
        "none": [45.0, 46.0, 47.2],
        "cwd": [49.0, 50.1, 51.0],
    }
    final = final_stage(values)
    assert final.winner == "top-1"
    assert verdict_sentence(final) == "The tuned HWD beats CWD and HWD at the Table I point beyond the seed noise."
    console = Console(record=True, width=120)
    console.print(verdict_table(final))
    names = ("HWD, tuned", "HWD, Table I point", "student alone", "CWD")
    rows = {name: line for line in console.export_text().splitlines() for name in names if line.startswith(f" {name} ")}
    assert list(rows) == list(names)  # in the final stage's order, a row each
    none = values["none"]
    assert f"{statistics.mean(none):.2f} ± {half_width(none):.2f}" in rows["student alone"]
    cwd_differences = [tuned - cwd for tuned, cwd in zip(values["top-1"], values["cwd"])]
    assert f"{statistics.mean(cwd_differences):+.2f} ± {half_width(cwd_differences):.2f}" in rows["CWD"]
    assert "τ 2.5, μ 0.75, β 0.05" in rows["HWD, tuned"]


def test_differences_within_the_seed_noise_are_said_to_be_indistinguishable():
    final = final_stage(
        {
            "top-1": [52.0, 50.0, 53.0],
            "table_i": [51.0, 51.5, 52.0],
            "none": [40.0, 41.0, 42.0],
            "cwd": [50.0, 52.5, 51.0],
        }
    )
    assert final.winner == "top-1"
    sentence = verdict_sentence(final)
    assert sentence.startswith("The tuned HWD cannot be told apart from CWD or from HWD at the Table I point")
    assert "the noise that 3 seeds measure" in sentence


def test_when_table_i_wins_the_sentence_says_no_tuned_setting_did_better():
    final = final_stage(
        {
            "top-1": [40.0, 41.0, 42.5],
            "table_i": [50.0, 51.0, 52.2],
            "none": [39.0, 40.0, 41.0],
            "cwd": [45.0, 46.0, 47.1],
        }
    )
    assert final.winner == "table_i"
    assert verdict_sentence(final) == (
        "HWD at the Table I point (no tuned setting did better) beats CWD beyond the seed noise."
    )
