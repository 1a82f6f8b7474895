"""The searcher without Ray trials: Tune's domains, the seeded TPE, the resumable Optuna searcher,
what it tells the study (PRUNED for ASHA's stops, values at the training iteration) and the
orphaned trials a killed driver leaves in the study."""

from __future__ import annotations

import warnings

import pytest

from hwd_tune.sweep.config import ParameterRange
from hwd_tune.sweep.searcher import (
    build_searcher,
    close_orphaned_optuna_trials,
    iteration_budget,
    optuna_storage,
    tune_domain,
)
from tests.sweep.helpers import PAPER_POINT, tiny_sweep


@pytest.mark.parametrize(
    "parameter, check",
    [
        ({"type": "uniform", "low": -1.0, "high": 2.0}, lambda v: -1.0 <= v <= 2.0),
        ({"type": "loguniform", "low": 0.01, "high": 1.0}, lambda v: 0.01 <= v <= 1.0),
        ({"type": "int", "low": 1, "high": 3}, lambda v: isinstance(v, int) and 1 <= v <= 3),
        ({"type": "choice", "values": ["mse", "l1"]}, lambda v: v in ("mse", "l1")),
    ],
)
def test_tune_domains_sample_inside_the_range_with_the_high_bound_included(parameter, check):
    domain = tune_domain(ParameterRange.model_validate(parameter))
    samples = [domain.sample() for _ in range(200)]
    assert all(check(value) for value in samples)
    if parameter["type"] == "int":
        assert set(samples) == {1, 2, 3}  # Tune's randint excludes its upper bound: high + 1 is passed


def test_close_orphaned_optuna_trials_fails_only_the_running_ones(tmp_path):
    import optuna

    sweep = tiny_sweep(tmp_path, "teacher.pt")
    study = optuna.create_study(study_name=sweep.name, storage=optuna_storage(sweep), direction="maximize")
    study.tell(study.ask(), 12.5)
    study.ask()  # asked for, never told: what a killed driver leaves behind
    notes = close_orphaned_optuna_trials(sweep)
    states = [trial.state.name for trial in optuna.load_study(study_name="tiny", storage=sweep.search.storage).trials]
    assert states == ["COMPLETE", "FAIL"] and "[1]" in notes[0]
    assert close_orphaned_optuna_trials(sweep) == []


@pytest.mark.parametrize("search, startup", [({}, 2), ({"num_samples": 40}, 10), ({"startup_trials": 0}, 0)])
def test_tpe_models_results_after_a_startup_sized_to_the_sweep(tmp_path, search, startup):
    """TPE leaves its random start after `startup` results (not Optuna's fixed 10, which would
    leave a 4-trial sweep random), models the parameters jointly and spreads concurrent trials."""
    sweep = tiny_sweep(tmp_path, "teacher.pt", **search)
    sampler = build_searcher(sweep)._sampler
    assert (sampler._n_startup_trials, sampler._multivariate, sampler._constant_liar) == (startup, True, True)


def test_the_searcher_ignores_results_of_trials_the_study_already_finished(tmp_path):
    """A trial finished just before the driver was killed reports again after --resume: its
    Optuna trial keeps its value, and the plain OptunaSearch would raise on it."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    sweep = tiny_sweep(tmp_path, "teacher.pt")
    space = {name: tune_domain(parameter) for name, parameter in sweep.search.space.items()}
    searcher = build_searcher(sweep)
    searcher.set_search_properties("val_miou", "max", space)
    assert searcher.suggest("trial-a") == PAPER_POINT
    study = optuna.load_study(study_name="tiny", storage=sweep.search.storage)
    study.tell(0, 40.0)  # what the killed driver did before Tune saved its state
    searcher.save(str(tmp_path / "searcher.pkl"))
    searcher.restore(str(tmp_path / "searcher.pkl"))

    final = {"val_miou": 40.0, tune.result.TRAINING_ITERATION: 1}
    searcher.on_trial_result("trial-a", final)
    searcher.on_trial_complete("trial-a", final)
    trial = optuna.load_study(study_name="tiny", storage=sweep.search.storage).trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == 40.0 and trial.intermediate_values == {}

    plain = OptunaSearch(study_name="plain", storage=optuna_storage(sweep))
    plain.set_search_properties("val_miou", "max", space)
    plain.suggest("trial-b")
    optuna.load_study(study_name="plain", storage=sweep.search.storage).tell(0, 40.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        plain.on_trial_result("trial-b", final)


def _driven_searcher(sweep, trial_ids):
    """The sweep's searcher as Tune sets it up, with an Optuna trial asked for each Tune trial."""
    space = {name: tune_domain(parameter) for name, parameter in sweep.search.space.items()}
    searcher = build_searcher(sweep)
    searcher.set_search_properties(sweep.search.metric, sweep.search.mode, space)
    for trial_id in trial_ids:
        searcher.suggest(trial_id)
    return searcher


def _report(iteration, value, metric="val_miou"):
    """A result as Tune passes it on: Tune counts reports in training_iteration, the loop its own iterations."""
    from ray import tune

    return {metric: value, "iteration": iteration, tune.result.TRAINING_ITERATION: iteration // 2}


@pytest.mark.parametrize("mode, pick", [("max", max), ("min", min)])
def test_a_stopped_trial_is_pruned_and_a_full_one_complete_with_its_best_value(tmp_path, mode, pick):
    """Intermediate values sit at the training iteration, once per step; a trial stopped before the
    budget (8) is PRUNED, one that reached it COMPLETE with its best value, an errored one FAIL."""
    import optuna

    sweep = tiny_sweep(tmp_path, "teacher.pt", mode=mode)
    searcher = _driven_searcher(sweep, ["stopped", "full", "broken"])
    stopped = {2: 30.0, 4: 20.0}
    full = {2: 10.0, 4: 50.0, 6: 5.0, 8: 40.0}
    searcher.on_trial_result("stopped", _report(2, stopped[2]))
    searcher.on_trial_complete("stopped", _report(4, stopped[4]))  # ASHA's stop: only this hook sees it
    for iteration in (2, 4, 6):
        searcher.on_trial_result("full", _report(iteration, full[iteration]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna warns when a step is reported twice: it is not
        searcher.on_trial_result("full", _report(6, 99.0))
    searcher.on_trial_complete("full", _report(8, full[8]))
    searcher.on_trial_result("broken", _report(2, 7.0))
    searcher.on_trial_complete("broken", error=True)

    trials = optuna.load_study(study_name="tiny", storage=sweep.search.storage).trials
    states = [trial.state for trial in trials]
    assert states == [optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]
    assert trials[0].intermediate_values == stopped and trials[0].value == stopped[4]  # Optuna: the last value
    assert trials[1].intermediate_values == full and trials[1].value == pick(full.values())
    assert trials[2].intermediate_values == {2: 7.0} and trials[2].value is None


def test_the_budget_is_asha_max_t_when_it_is_below_max_iters(tmp_path):
    import optuna

    from hwd_tune.sweep.summary import status_of

    sweep = tiny_sweep(tmp_path, "teacher.pt", scheduler={"grace_period": 2, "reduction_factor": 2, "max_t": 6})
    full = tiny_sweep(tmp_path / "full", "teacher.pt")
    assert (iteration_budget(sweep), iteration_budget(full)) == (6, 8)
    for budgeted in (sweep, full):  # Optuna's COMPLETE is the summary's "completed"
        budget = iteration_budget(budgeted)
        assert status_of(budget, budgeted, failed=False) == "completed"
        assert status_of(budget - 1, budgeted, failed=False) == "stopped early"
    searcher = _driven_searcher(sweep, ["at-max-t"])
    searcher.on_trial_result("at-max-t", _report(2, 12.0))
    searcher.on_trial_complete("at-max-t", _report(6, 11.0))
    trial = optuna.load_study(study_name="tiny", storage=sweep.search.storage).trials[0]
    assert (trial.state, trial.value, trial.intermediate_values) == (
        optuna.trial.TrialState.COMPLETE,
        12.0,
        {2: 12.0, 6: 11.0},
    )


def test_a_restored_searcher_reads_the_steps_the_killed_driver_told(tmp_path):
    """Told after Tune's last save, step 6 is in the study but not in the saved searcher: the trial,
    restarted from its checkpoint at 4, reports 6 again (another value) and it is not told twice."""
    import optuna

    sweep = tiny_sweep(tmp_path, "teacher.pt")
    searcher = _driven_searcher(sweep, ["resumed"])
    searcher.on_trial_result("resumed", _report(2, 10.0))
    searcher.on_trial_result("resumed", _report(4, 20.0))
    searcher.save(str(tmp_path / "searcher.pkl"))
    searcher.on_trial_result("resumed", _report(6, 30.0))
    searcher.restore(str(tmp_path / "searcher.pkl"))  # the resumed driver
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        searcher.on_trial_result("resumed", _report(6, 31.0))
    searcher.on_trial_complete("resumed", _report(8, 25.0))
    trial = optuna.load_study(study_name="tiny", storage=sweep.search.storage).trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == 30.0
    assert trial.intermediate_values == {2: 10.0, 4: 20.0, 6: 30.0, 8: 25.0}


def test_a_state_saved_before_tune_gave_the_space_still_resumes(tmp_path):
    """A driver killed early can leave a searcher state saved before Tune set its space (seen on the
    cluster: "no search space has been defined" on --resume); the resumed driver's space is kept."""
    sweep = tiny_sweep(tmp_path, "teacher.pt")
    build_searcher(sweep).save(str(tmp_path / "early.pkl"))  # no space, no study yet
    resumed = _driven_searcher(sweep, [])
    resumed.restore(str(tmp_path / "early.pkl"))
    first = resumed.suggest("first")
    assert first == PAPER_POINT  # the paper's point still comes first, drawn from the space
    second = resumed.suggest("second")
    assert set(second) == set(sweep.search.space)
    assert all(sweep.search.space[name].low <= value <= sweep.search.space[name].high for name, value in second.items())


def test_a_grid_sweep_prunes_and_completes_its_points(tmp_path):
    """The grid path: each grid point once, a stopped point PRUNED (still visited), a full one COMPLETE."""
    import optuna

    space = {"tau": {"type": "choice", "values": [2.0, 4.0]}, "mu": {"type": "choice", "values": [0.0]}}
    space["beta"] = {"type": "choice", "values": [0.1]}
    sweep = tiny_sweep(tmp_path, "teacher.pt", sampler="grid", num_samples=2, space=space)
    searcher = _driven_searcher(sweep, ["first", "second"])
    searcher.on_trial_complete("first", _report(2, 5.0))
    searcher.on_trial_result("second", _report(4, 9.0))
    searcher.on_trial_complete("second", _report(8, 8.0))
    trials = optuna.load_study(study_name="tiny", storage=sweep.search.storage).trials
    assert sorted(trial.params["tau"] for trial in trials) == [2.0, 4.0]
    assert [(trial.state.name, trial.value) for trial in trials] == [("PRUNED", 5.0), ("COMPLETE", 9.0)]


def test_a_result_without_the_training_iteration_is_refused(tmp_path):
    sweep = tiny_sweep(tmp_path, "teacher.pt")
    searcher = _driven_searcher(sweep, ["odd"])
    with pytest.raises(ValueError, match=r"trial odd reported val_miou without 'iteration'"):
        searcher.on_trial_result("odd", {"val_miou": 1.0})
    searcher.on_trial_result("odd", {"training_iteration": 1})  # no metric: nothing to tell
