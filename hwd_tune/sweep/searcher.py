"""The search: Tune's sampling domains, ASHA, and the seeded Optuna searcher whose study lives in
`search.storage` (sqlite `optuna.db` next to the sweep by default), so a sweep can resume, and
which tells the study ASHA's stops as PRUNED trials."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from hwd_tune.sweep.config import ParameterRange, SweepConfig, startup_trials

ITERATION_KEY = "iteration"  # the training iteration each report carries (trainables.loop)


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
        time_attr=ITERATION_KEY,
        max_t=scheduler.max_t,
        grace_period=scheduler.grace_period,
        reduction_factor=scheduler.reduction_factor,
        brackets=1,
    )


# What OptunaSearch.set_search_properties sets: the space, the study over it, the metric and mode.
_SET_BY_TUNE = ("_space", "_ot_study", "_metric", "_mode")


class ResumableOptunaSearch(OptunaSearch):
    """OptunaSearch that tells the study what ASHA did, and survives a driver killed mid-sweep.

    Multi-fidelity: each result is an intermediate value at its training `iteration` (at most once
    per step), not at Tune's count of reports. A trial that reached `budget` is COMPLETE with the
    best `metric` it reported (what the sweep ranks by); one stopped before (by ASHA) is PRUNED,
    its intermediate values kept, so TPE does not take a short run's score for a full one's.

    Resume: a trial finished in the study (storage is written at once) may still be running in the
    Tune state a `--resume` restores; restarted, it reports again, and telling a finished Optuna
    trial raises. Results of trials the study already finished are therefore not passed on.
    Ray offers no public hook for either, so this reads OptunaSearch's `_ot_trials`, `_ot_study`
    and `_completed_trials` (Ray 2.4x); the searcher tests pin what it relies on.
    """

    def __init__(
        self, *args: Any, study_name: str, storage: optuna.storages.BaseStorage, budget: int, **kwargs: Any
    ) -> None:
        super().__init__(*args, study_name=study_name, storage=storage, **kwargs)
        self.budget = budget  # training iterations of a full trial: iteration_budget(sweep)
        self.finished_elsewhere: dict[str, bool] = {}  # Tune trial id -> told before this driver started
        self.reported: dict[str, dict[int, float]] = {}  # Tune trial id -> step -> value in the study

    def restore(self, checkpoint_path: str) -> None:
        """Tune's restore of a killed driver's saved state. A state saved before Tune gave the
        searcher its space (the driver killed early in the sweep) holds no space and no study:
        the ones this driver was just given are kept, else the resumed sweep could not ask for
        its next trial ("no search space has been defined")."""
        given = {name: getattr(self, name, None) for name in _SET_BY_TUNE}
        super().restore(checkpoint_path)
        for name, value in given.items():
            if value is not None and not getattr(self, name, None):
                setattr(self, name, value)
        self.finished_elsewhere = {}  # the saved answers predate the kill: ask the study again
        self.reported = {}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or self._finished_in_study(trial_id):
            return
        self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or self._finished_in_study(trial_id):
            return
        if result:  # the result Tune stopped the trial on reaches only this hook
            self._report(trial_id, result)
        reached = int(result.get(ITERATION_KEY, 0)) if result else 0
        best = best_value(self._reported_steps(trial_id).values(), self.mode)
        if error or (reached >= self.budget and best is None):
            state, value = optuna.trial.TrialState.FAIL, None
        elif reached >= self.budget:
            state, value = optuna.trial.TrialState.COMPLETE, best
        else:
            state, value = optuna.trial.TrialState.PRUNED, None
        try:
            self._ot_study.tell(self._ot_trials[trial_id], value, state=state)
        except RuntimeError:
            # GridSampler stops the study when its last point is told, and Study.stop raises outside
            # study.optimize; the trial's state is stored first (Optuna's tell keeps it in a finally).
            if not isinstance(self._sampler, optuna.samplers.GridSampler):
                raise
        self._completed_trials.add(trial_id)

    def _report(self, trial_id: str, result: dict) -> None:
        """Tells the study `result[metric]` at step `result["iteration"]`, unless that step holds one."""
        if result.get(self.metric) is None:
            return  # Tune may pass a result without the metric (a trial that never reported)
        if ITERATION_KEY not in result:
            raise ValueError(
                f"trial {trial_id} reported {self.metric} without {ITERATION_KEY!r}, the training iteration "
                f"trainables.loop adds to each report; got keys {sorted(result)}"
            )
        step, value = int(result[ITERATION_KEY]), float(result[self.metric])
        steps = self._reported_steps(trial_id)
        if step not in steps:
            self._ot_trials[trial_id].report(value, step)
            steps[step] = value

    def _reported_steps(self, trial_id: str) -> dict[int, float]:
        """The trial's intermediate values, read from the study once per driver (an earlier driver
        may have told some), then kept here."""
        if trial_id not in self.reported:
            self.reported[trial_id] = dict(self._study_trial(trial_id).intermediate_values)
        return self.reported[trial_id]

    def _finished_in_study(self, trial_id: str) -> bool:
        """Whether the study held a final state for this Tune trial when this driver first saw it.

        Checked once per trial: only this driver tells the study, so the answer cannot change."""
        if trial_id not in self.finished_elsewhere:
            if trial_id not in self._ot_trials:
                return False
            self.finished_elsewhere[trial_id] = self._study_trial(trial_id).state.is_finished()
        return self.finished_elsewhere[trial_id]

    def _study_trial(self, trial_id: str) -> optuna.trial.FrozenTrial:
        ot_trial = self._ot_trials[trial_id]
        return ot_trial.study.get_trials(deepcopy=False)[ot_trial.number]


def best_value(values: Iterable[float], mode: str) -> float | None:
    """The highest (mode "max") or lowest ("min") of `values`, NaN skipped; None when none is left."""
    finite = [value for value in values if not math.isnan(value)]
    if not finite:
        return None
    return max(finite) if mode == "max" else min(finite)


def iteration_budget(sweep: SweepConfig) -> int:
    """Training iterations of a full trial: train.schedule.max_iters, or ASHA's max_t if lower."""
    max_iters = sweep.train.schedule.max_iters
    return min(max_iters, sweep.search.scheduler.max_t or max_iters)


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
        metric=search.metric,
        mode=search.mode,
        points_to_evaluate=first_points,
        sampler=sampler,
        study_name=sweep.name,
        storage=optuna_storage(sweep),
        budget=iteration_budget(sweep),
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
