"""The searcher without Ray trials: Tune's domains, the seeded TPE, the resumable Optuna searcher
and the orphaned trials a killed driver leaves in the study."""

from __future__ import annotations

import pytest

from hwd_tune.sweep.config import ParameterRange
from hwd_tune.sweep.searcher import (
    build_searcher,
    close_orphaned_optuna_trials,
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
