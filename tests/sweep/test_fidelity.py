"""Spearman's ρ of ASHA's rungs on hand-made histories, against scipy.stats.spearmanr and against
the values Ray's own ASHA bracket records at each rung."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest
from scipy import stats

from hwd_tune.sweep import fidelity
from hwd_tune.sweep.fidelity import RungCorrelation
from tests.sweep.helpers import tiny_sweep


@pytest.mark.parametrize(
    "grace_period, reduction_factor, max_t, expected",
    [
        (4, 2, 8, [4]),  # tests/sweep/test_asha.py: 8 is max_t, where trials end, not a rung
        (50, 3, 150, [50]),  # search_spaces/quickstart.yaml
        (4000, 3.0, 40000, [4000, 12000, 36000]),  # the ADE20K sweeps
        (2, 2, 8, [2, 4]),
        (4, 1.5, 20, [4, 6, 9, 13.5]),
        (8, 2, 8, []),
    ],
)
def test_asha_rungs_are_ray_asha_milestones_below_max_t(grace_period, reduction_factor, max_t, expected):
    from ray.tune.schedulers.async_hyperband import _Bracket  # Ray's own rungs, as the reference

    bracket = _Bracket(min_t=grace_period, max_t=max_t, reduction_factor=reduction_factor, s=0)
    milestones = sorted(milestone for milestone, _ in bracket._rungs if milestone < max_t)
    rungs = fidelity.asha_rungs(grace_period, reduction_factor, max_t)
    assert rungs == expected == pytest.approx(milestones)
    assert all(isinstance(rung, int) for rung in rungs if float(rung).is_integer())


HISTORIES = {  # trial -> iteration -> value: validations every 2, every 3, every 5 iterations
    "every-2": {2: 10.0, 4: 20.0, 6: 25.0, 8: 30.0, 10: 31.0, 12: 33.0},
    "every-3": {3: 11.0, 6: 12.0, 9: 19.0, 12: 21.0},
    "every-5": {5: 15.0, 10: 18.0},  # jumps over the rung at 2 straight into the one at 4
}


def test_the_value_at_a_rung_is_the_one_ray_asha_records_there():
    """rung_value gives, for each rung, the value Ray's ASHA bracket records (and decides on) for
    the trial: its first report in [rung, next rung); a trial whose report jumps a rung has none."""
    from ray.tune.schedulers.async_hyperband import _Bracket

    grace_period, reduction_factor, max_t = 2, 2, 12
    rungs = fidelity.asha_rungs(grace_period, reduction_factor, max_t)
    assert rungs == [2, 4, 8]
    bracket = _Bracket(min_t=grace_period, max_t=max_t, reduction_factor=reduction_factor, s=0)
    for trial_id, history in HISTORIES.items():
        trial = SimpleNamespace(trial_id=trial_id)
        for iteration, value in sorted(history.items()):
            if iteration < max_t:  # ASHA stops a trial at max_t before asking its bracket
                bracket.on_result(trial, iteration, value)
    recorded = {milestone: values for milestone, values in bracket._rungs}
    for rung, next_rung in zip(rungs, [*rungs[1:], max_t]):
        ours = {
            trial_id: value
            for trial_id, history in HISTORIES.items()
            if (value := fidelity.rung_value(history, rung, next_rung)) is not None
        }
        assert ours == recorded[rung]
    assert fidelity.rung_value(HISTORIES["every-5"], 2, 4) is None and "every-5" not in recorded[2]


def test_rung_correlations_match_scipy_spearman_with_ties():
    histories = {
        "a": {4: 10.0, 8: 12.0, 16: 40.0},
        "b": {4: 10.0, 8: 20.0, 16: 35.0},  # ties "a" at the rung at 4
        "c": {4: 30.0, 8: 25.0, 16: 30.0},
        "d": {4: 5.0, 8: 30.0, 16: 45.0},
        "e": {4: 25.0, 8: 8.0, 16: 20.0},
        "stopped": {4: 1.0},  # not completed: in no pair
    }
    finals = {"a": 40.0, "b": 35.0, "c": 30.0, "d": 45.0, "e": 30.0}  # "c" and "e" tie at the end
    correlations = fidelity.rung_correlations(histories, finals, [4, 8], max_t=16)

    completed = sorted(finals)
    at_4 = stats.spearmanr([histories[t][4] for t in completed], [finals[t] for t in completed]).statistic
    at_8 = stats.spearmanr([histories[t][8] for t in completed], [finals[t] for t in completed]).statistic
    assert [(rung.iteration, rung.n) for rung in correlations] == [(4, 5), (8, 5)]
    assert correlations[0].rho == pytest.approx(at_4) and correlations[1].rho == pytest.approx(at_8)
    # by hand, Pearson's r of the average ranks: rung 4 (2.5, 2.5, 5, 1, 4), finals (4, 3, 1.5, 5, 1.5)
    assert at_4 == pytest.approx(-9 / 9.5)
    assert correlations[0].describe("val_miou") == (
        "Spearman ρ = -0.95 between val_miou at the rung and the trial's final score, over 5 completed trials"
    )


def test_too_few_completed_trials_give_no_rank_correlation():
    histories = {"a": {4: 1.0, 8: 2.0}, "b": {4: 3.0, 8: 4.0}, "c": {4: 5.0}}
    correlations = fidelity.rung_correlations(histories, {"a": 2.0, "b": 4.0}, [4], max_t=8)
    assert correlations == [RungCorrelation(4, 2, None)]
    assert correlations[0].describe("val_miou") == "not enough completed trials (2, need 3) for a rank correlation"
    no_trials = fidelity.rung_correlations({}, {}, [4, 12], max_t=36)
    assert no_trials == [RungCorrelation(4, 0, None), RungCorrelation(12, 0, None)]


def test_values_that_all_tie_give_no_rank_correlation():
    histories = {trial: {4: 0.0, 8: value} for trial, value in zip("abc", (1.0, 2.0, 3.0))}
    correlations = fidelity.rung_correlations(histories, {"a": 1.0, "b": 2.0, "c": 3.0}, [4], max_t=8)
    assert correlations == [RungCorrelation(4, 3, None)]
    assert "tie" in correlations[0].describe("val_miou")


def test_a_rung_below_the_threshold_is_flagged_as_noise():
    correlations = [
        RungCorrelation(4, 5, -0.3),
        RungCorrelation(12, 5, 0.49),
        RungCorrelation(36, 4, 0.5),  # at the threshold: trusted
        RungCorrelation(108, 2, None),
    ]
    assert fidelity.noisy_rung_notes(correlations) == [
        "early stopping at iteration 4 is deciding on noise (Spearman ρ = -0.30 over 5 completed trials): "
        "raise grace_period",
        "early stopping at iteration 12 is deciding on noise (Spearman ρ = 0.49 over 5 completed trials): "
        "raise grace_period",
    ]


def test_metric_history_reads_a_tune_result_table_keeping_each_steps_first_value():
    table = pd.DataFrame(
        {
            "iteration": [2, 4, 4, 6, 8],  # a restarted trial reported 4 again
            "val_miou": [10.0, 20.0, 21.0, math.nan, 30.0],
            "training_iteration": [1, 2, 3, 4, 5],
        }
    )
    assert fidelity.metric_history(table, "val_miou") == {2: 10.0, 4: 20.0, 8: 30.0}
    assert fidelity.metric_history(table, "val_pixel_acc") == {}
    assert fidelity.metric_history(None, "val_miou") == {}


def test_a_sweep_without_asha_has_no_rungs(tmp_path):
    sweep = tiny_sweep(tmp_path, "teacher.pt", scheduler={"type": "none"})
    assert fidelity.sweep_rung_correlations(sweep, str(tmp_path / "never-read"), {"a": 1.0}) == []


def test_a_scheduler_without_a_rung_below_max_t_has_no_correlation():
    """grace_period = max_t (ASHA on, nothing stopped early): no rung, nothing to correlate."""
    assert fidelity.asha_rungs(10, 3.0, 10) == []
    assert fidelity.rung_correlations({"a": {10: 1.0}}, {"a": 1.0}, [], max_t=10) == []
