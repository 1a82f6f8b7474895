"""The search: Tune's sampling domains, ASHA, and the seeded Optuna searcher whose study lives in
`search.storage` (sqlite `optuna.db` next to the sweep by default), so a sweep can resume."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from hwd_tune.sweep.config import ParameterRange, SweepConfig, startup_trials


def optuna_storage(sweep: SweepConfig) -> optuna.storages.BaseStorage:
    """The Optuna storage of search.storage (sqlite folders are created; relative paths made absolute)."""
    url = absolute_storage_url(sweep.search.storage)
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(url)


def absolute_storage_url(url: str) -> str:
    """`sqlite:///relative/x.db` as `sqlite:////abs/relative/x.db` (the trials and a resume agree)."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url[len(prefix) :].startswith("/"):
        return prefix + str(Path(url[len(prefix) :]).resolve())
    return url


def tune_domain(parameter: ParameterRange):
    """The Tune sampling domain of one searched parameter (Optuna's TPE reads it)."""
    if parameter.type == "uniform":
        return tune.uniform(parameter.low, parameter.high)
    if parameter.type == "loguniform":
        return tune.loguniform(parameter.low, parameter.high)
    if parameter.type == "int":
        return tune.randint(parameter.low, parameter.high + 1)  # Tune's upper bound is exclusive
    return tune.choice(list(parameter.values))


def build_scheduler(sweep: SweepConfig):
    """ASHA on the search metric, counted in training iterations (the loop reports `iteration`)."""
    scheduler = sweep.search.scheduler
    if scheduler.type == "none":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="iteration",
        max_t=scheduler.max_t,
        grace_period=scheduler.grace_period,
        reduction_factor=scheduler.reduction_factor,
        brackets=1,
    )


class ResumableOptunaSearch(OptunaSearch):
    """OptunaSearch that survives a driver killed between finishing a trial and saving Tune's state.

    Such a trial is complete in the Optuna study (storage is written at once) but still running in
    the Tune state a `--resume` restores; restarted, it reports its final result again, and
    OptunaSearch would report it to a finished Optuna trial, which raises. Results of trials the
    study already finished are therefore not passed on (nothing is lost: the study holds them).
    Ray offers no public hook for this, so the Tune-trial -> Optuna-trial map is read from
    OptunaSearch's `_ot_trials`; if a future Ray renames it, this behaves as OptunaSearch does.
    """

    def __init__(self, *args: Any, study_name: str, storage: optuna.storages.BaseStorage, **kwargs: Any) -> None:
        super().__init__(*args, study_name=study_name, storage=storage, **kwargs)
        self.finished_elsewhere: dict[str, bool] = {}  # Tune trial id -> told before this driver started

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self.finished_elsewhere = {}  # the saved answers predate the kill: ask the study again

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if not self._finished_in_study(trial_id):
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if not self._finished_in_study(trial_id):
            super().on_trial_complete(trial_id, result, error)

    def _finished_in_study(self, trial_id: str) -> bool:
        """Whether the study held a final state for this Tune trial when this driver first saw it.

        Checked once per trial: only this driver tells the study, so the answer cannot change."""
        if trial_id not in self.finished_elsewhere:
            ot_trial = getattr(self, "_ot_trials", {}).get(trial_id)
            if ot_trial is None or trial_id in getattr(self, "_completed_trials", ()):
                return False
            state = ot_trial.study.get_trials(deepcopy=False)[ot_trial.number].state
            self.finished_elsewhere[trial_id] = state.is_finished()
        return self.finished_elsewhere[trial_id]


def build_searcher(sweep: SweepConfig) -> OptunaSearch:
    """Seeded TPE over search.space, the paper's points first, the study kept in search.storage.

    TPE starts modelling after `startup_trials(search)` results (Optuna's default of 10 is meant
    for long sweeps); the paper's points count among them.

    With search.sampler "grid", Optuna's GridSampler runs each combination once in a seeded order.
    Its first points are not enqueued: GridSampler gives no grid point to an enqueued trial, so
    one combination would run twice and another never; they are grid points, so they run anyway.
    """
    search = sweep.search
    if search.sampler == "grid":
        grid = {name: list(parameter.values) for name, parameter in search.space.items()}
        sampler, first_points = optuna.samplers.GridSampler(search_space=grid, seed=search.seed), None
    else:
        with warnings.catch_warnings():  # multivariate and constant_liar are "experimental" in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=search.seed,
                n_startup_trials=startup_trials(search),
                multivariate=search.multivariate,
                constant_liar=True,  # trials running side by side are not all drawn at the same spot
            )
        first_points = [dict(point) for point in search.points_to_evaluate] or None
    return ResumableOptunaSearch(
        points_to_evaluate=first_points,
        sampler=sampler,
        study_name=sweep.name,
        storage=optuna_storage(sweep),
    )


def close_orphaned_optuna_trials(
    sweep: SweepConfig, ran_as: Callable[[dict[str, Any]], str | None] | None = None
) -> list[str]:
    """Marks FAIL the Optuna trials still RUNNING once every Tune trial has ended: ones the searcher
    asked for after Tune last saved its state, before the driver was killed, which Tune never
    resumes. `ran_as(params)` names what such a trial left (e.g. its MLflow run) if it started: only
    trials that left nothing are said never to have run."""
    study = optuna.load_study(study_name=sweep.name, storage=optuna_storage(sweep))
    orphans = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    never_ran, started = [], []
    for trial in orphans:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        trace = ran_as(trial.params) if ran_as else None
        if trace is None:
            never_ran.append(trial.number)
        else:
            started.append(f"{trial.number} ({trace})")
    notes = []
    if never_ran:
        notes.append(
            f"Optuna trials {never_ran} were asked for before the driver was killed but never ran: marked FAIL"
        )
    if started:
        notes.append(
            f"Optuna trials {', '.join(started)} started before the driver was killed, after Tune last saved its "
            "state, so Tune could not resume them: marked FAIL"
        )
    return notes
