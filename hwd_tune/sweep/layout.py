"""The sweep service: Ray Tune with Optuna (TPE) and ASHA over a method's parameters (tau, mu, beta).

With hwd_tune/reproduce.py, one of the two modules that import ray.tune. `run(sweep)` turns a `SweepConfig` into a `Tuner` whose
trials each fit a `TorchTrainer` over the one training loop (Train inside Tune, metrics passed up
by `TuneReportCallback`), records one MLflow parent run per sweep and one child run per trial,
runs the baselines and the optional final stage, and returns a `SweepSummary`.

Where things go, under `<train.output_dir>/<sweep name>/`: `tune/` (Tune's experiment state, what
`--resume` restores), `trials/` (each trial's Ray Train run, named by trial id so a resumed trial
continues from its checkpoint), `report/` (plots, tables, the sweep file) and `best_config.yaml`;
the Optuna study lives in `search.storage` (sqlite `optuna.db` there by default).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
import ray
import yaml
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch
from rich.console import Console
from rich.table import Table

from hwd_tune import tracking
from hwd_tune.config import TrainConfig
from hwd_tune.sweep_config import (
    ParameterRange,
    SweepConfig,
    baseline_train_config,
    check_resources,
    startup_trials,
    trial_train_config,
)
from trainables.launch import build_trainer, preflight, resource_plan, run_training

TUNE_FOLDER = "tune"  # Tune's experiment state: what --resume restores
TRIALS_FOLDER = "trials"  # each trial's Ray Train run (checkpoints), named by trial id
REPORT_FOLDER = "report"  # plots and tables, also logged on the parent run
BEST_CONFIG_FILE = "best_config.yaml"
SWEEP_TAG = "hwd.sweep"
TRIAL_ID_TAG = "hwd.trial_id"
TRIAL_STATUS_TAG = "hwd.trial_status"  # completed | stopped_early | failed
STOPPED_AT_TAG = "hwd.stopped_at_iteration"
# Fields that do not change what a sweep searches: a re-run differing only in these continues it.
_NOT_IN_SWEEP_KEY = ("resources",)
_NOT_IN_TRAIN_KEY = ("resources", "tracking", "output_dir")

TrialStatus = Literal["completed", "stopped early", "failed", "unfinished"]
LoopConfigHook = Callable[[Mapping[str, Any]], Mapping[str, Any]]


# --------------------------------------------------------------------------------------------
# What a sweep returns
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrialRow:
    """One trial: its sampled params, best reported val_miou and search metric, how far it got."""

    trial_id: str
    params: dict[str, Any]
    val_miou: float | None  # best over its validations (0-100); None if it never validated
    score: float | None  # best value of search.metric (equals val_miou for the default metric)
    iterations: int  # training iterations it reached
    status: TrialStatus
    reason: str | None = None  # why it failed
    run_id: str | None = None  # its MLflow child run


@dataclass(frozen=True)
class JobResult:
    """A baseline or final-stage run: what ran, its best val_miou, its MLflow run, or why it failed."""

    label: str  # the baseline's method, or "final-<rank>" for the final stage
    params: dict[str, Any]
    val_miou: float | None
    run_id: str | None
    error: str | None = None


@dataclass
class SweepSummary:
    """Everything a sweep produced, for the command line and for tests."""

    name: str
    metric: str
    best_params: dict[str, Any]
    best_val_miou: float | None
    best_score: float | None
    trials: list[TrialRow]
    baselines: list[JobResult]
    final: list[JobResult]
    parent_run_id: str
    tracking_uri: str
    best_config_path: Path | None
    optuna_storage: str
    experiment_path: str
    report_dir: Path
    notes: list[str] = field(default_factory=list)  # what could not be made (e.g. a plot)

    def mlflow_ui_command(self) -> str:
        """How to open the MLflow UI on this sweep's store, bound to the local machine only."""
        return f"mlflow ui --backend-store-uri {tracking.redact_uri(self.tracking_uri)} --host 127.0.0.1 --port 5000"


# --------------------------------------------------------------------------------------------
# Names and places
# --------------------------------------------------------------------------------------------
def sweep_dir(sweep: SweepConfig) -> Path:
    """`<train.output_dir>/<name>`, absolute: every file of the sweep lives below it."""
    return (Path(sweep.train.output_dir) / sweep.name).resolve()


def sweep_key(sweep: SweepConfig) -> str:
    """The parent run's key: the name plus a hash of what is searched (not where it runs)."""
    content = sweep.model_dump(mode="json", exclude=set(_NOT_IN_SWEEP_KEY))
    for name in _NOT_IN_TRAIN_KEY:
        content["train"].pop(name, None)
    content["search"].pop("storage", None)
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:10]
    return f"sweep-{sweep.name}-{digest}"


def trial_run_key(parent_key: str, trial_id: str) -> str:
    """A trial's child-run key: found again after a resume, since Tune keeps trial ids."""
    return f"{parent_key}-{trial_id}"


def optuna_storage(sweep: SweepConfig) -> optuna.storages.BaseStorage:
    """The Optuna storage of search.storage (sqlite folders are created; relative paths made absolute)."""
    url = absolute_storage_url(sweep.search.storage)
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(url)


def absolute_storage_url(url: str) -> str:
    """`sqlite:///relative/x.db` as `sqlite:////abs/relative/x.db` (the trials and a resume agree)."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url[len(prefix):].startswith("/"):
        return prefix + str(Path(url[len(prefix):]).resolve())
    return url


# --------------------------------------------------------------------------------------------
# The search: Optuna space, ASHA, Tuner
# --------------------------------------------------------------------------------------------
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
        time_attr="iteration", max_t=scheduler.max_t, grace_period=scheduler.grace_period,
        reduction_factor=scheduler.reduction_factor, brackets=1,
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
                seed=search.seed, n_startup_trials=startup_trials(search), multivariate=search.multivariate,
                constant_liar=True,  # trials running side by side are not all drawn at the same spot
            )
        first_points = [dict(point) for point in search.points_to_evaluate] or None
    return ResumableOptunaSearch(
        points_to_evaluate=first_points,
        sampler=sampler,
        study_name=sweep.name,
        storage=optuna_storage(sweep),
    )


@dataclass(frozen=True)
class TrialSetup:
    """What every trial needs besides its sampled params (sent once to the object store)."""

    sweep: dict[str, Any]  # SweepConfig.model_dump(mode="json")
    tracking_uri: str
    parent_run_id: str
    parent_key: str
    trials_storage: str
    loop_config_hook: LoopConfigHook | None = None  # test hook: extra loop_config per trial


def run_trial(params: dict[str, Any], setup: TrialSetup) -> None:
    """Tune's trial function: one distillation job with `params`, logged to the trial's child run.

    Runs on a Tune trial actor that holds only resources.trial_cpus; the TorchTrainer's workers
    reserve their own. The Train run is named by the trial id, so a restored trial resumes it.
    Errors propagate to Tune, which records them; the sweep goes on (FailureConfig fail_fast=False).
    """
    sweep = SweepConfig.model_validate(setup.sweep)
    config = trial_train_config(sweep, params)
    trial_id = tune.get_context().get_trial_id()
    logger = tracking.RunLogger(setup.tracking_uri, tracking.start_run(
        tracking_uri=setup.tracking_uri, experiment=config.tracking.experiment,
        run_key=trial_run_key(setup.parent_key, trial_id), run_name=f"{sweep.name}-{trial_id}",
        tags={SWEEP_TAG: sweep.name, TRIAL_ID_TAG: trial_id, "hwd.job": "trial", "hwd.method": config.method.name},
        parent_run_id=setup.parent_run_id,
    ))
    logger.log_params(tracking.flatten_params(config))
    logger.log_system_facts()
    extra = dict(setup.loop_config_hook(params)) if setup.loop_config_hook else None
    trainer = trial_trainer(config, tracking_uri=setup.tracking_uri, mlflow_run_id=logger.run_id,
                            name=f"trial-{trial_id}", storage_path=setup.trials_storage, extra_loop_config=extra)
    # The run is ended by the driver (ChildRunFinisher), the one place that knows how Tune ended
    # the trial: a stop at max_t or by ASHA ends this actor mid-call, racing any status set here.
    trainer.fit()


def trial_trainer(config: TrainConfig, *, name: str, storage_path: str, **build_options: Any):
    """`trainables.launch.build_trainer`'s TorchTrainer, renamed and reporting to Tune."""
    base = build_trainer(config, storage_path=storage_path, **build_options)
    callbacks = [TuneReportCallback()]
    run_config = dataclasses.replace(base.run_config, name=name, callbacks=callbacks)
    return type(base)(
        base.train_loop_per_worker, train_loop_config=base.train_loop_config, torch_config=base.backend_config,
        scaling_config=base.scaling_config, run_config=run_config,
    )


def _status_of(iterations: int, sweep: SweepConfig, failed: bool) -> TrialStatus:
    """completed when it reached the budget (max_iters, or ASHA's max_t), else stopped early."""
    if failed:
        return "failed"
    budget = min(sweep.train.schedule.max_iters, sweep.search.scheduler.max_t or math.inf)
    return "completed" if iterations >= budget else "stopped early"


def finish_child_run(logger: tracking.RunLogger, status: TrialStatus, iterations: int, reason: str | None) -> None:
    """Ends a trial's child run: FAILED with its reason, else FINISHED (tagged completed/stopped_early)."""
    tags = {TRIAL_STATUS_TAG: status.replace(" ", "_")}
    if status == "stopped early":
        tags[STOPPED_AT_TAG] = str(iterations)
    logger.set_tags(tags)
    logger.finish("FAILED" if status == "failed" else "FINISHED", reason=reason)


def failure_reason(error: BaseException | str | None) -> str:
    """The innermost `SomeError: message` line of an error (Ray wraps worker errors), at most 500 chars."""
    text = str(error) if error is not None else "unknown error"
    causes = re.findall(r"^\s*((?:[\w.]+\.)?\w*(?:Error|Exception)\b:.*)$", text, flags=re.MULTILINE)
    reason = causes[-1].strip() if causes else (text.strip().splitlines() or ["unknown error"])[0]
    return reason if len(reason) <= 500 else reason[:497] + "..."


class ChildRunFinisher(tune.Callback):
    """Driver-side: ends each trial's child run when Tune ends the trial (ASHA's stops kill the
    trial actor before it can), with status completed / stopped early / failed and the reason.

    The workers of a stopped trial are freed by Ray Train's PlacementGroupCleaner, which needs
    the dashboard's State API (see trainables.launch.start_local_ray)."""

    def __init__(self, sweep: dict[str, Any], tracking_uri: str, parent_key: str) -> None:
        self.sweep = sweep
        self.tracking_uri = tracking_uri
        self.parent_key = parent_key

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._finish(trial, failed=False)

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._finish(trial, failed=True)

    def _finish(self, trial, failed: bool) -> None:
        sweep = SweepConfig.model_validate(self.sweep)
        iterations = int((trial.last_result or {}).get("iteration", 0))
        status = _status_of(iterations, sweep, failed)
        run_id = tracking.find_run_id(self.tracking_uri, sweep.train.tracking.experiment,
                             trial_run_key(self.parent_key, trial.trial_id))
        if run_id is None:
            return  # the trial died before it could create its run
        reason = failure_reason(_trial_error(trial)) if failed else None
        finish_child_run(tracking.RunLogger(self.tracking_uri, run_id), status, iterations, reason)


def _trial_error(trial) -> BaseException | str | None:
    try:
        return trial.get_pickled_error() or trial.get_error()
    except Exception:  # noqa: BLE001 - an unreadable error file must not stop the sweep
        return None


def build_tuner(sweep: SweepConfig, setup: TrialSetup, max_concurrent: int, resume: bool) -> tune.Tuner:
    """A new Tuner, or the killed sweep's one restored (finished trials kept, unfinished resumed)."""
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, setup=setup), {"CPU": sweep.resources.trial_cpus}
    )
    experiment_path = str(sweep_dir(sweep) / TUNE_FOLDER / sweep.name)
    if resume and tune.Tuner.can_restore(experiment_path):
        return tune.Tuner.restore(experiment_path, trainable=trainable, resume_unfinished=True,
                                  resume_errored=False, restart_errored=False)
    return tune.Tuner(
        trainable,
        param_space={name: tune_domain(parameter) for name, parameter in sweep.search.space.items()},
        tune_config=tune.TuneConfig(
            metric=sweep.search.metric, mode=sweep.search.mode, search_alg=build_searcher(sweep),
            scheduler=build_scheduler(sweep), num_samples=sweep.search.num_samples,
            max_concurrent_trials=max_concurrent,
        ),
        run_config=tune.RunConfig(
            name=sweep.name, storage_path=str(sweep_dir(sweep) / TUNE_FOLDER),
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            callbacks=[ChildRunFinisher(setup.sweep, setup.tracking_uri, setup.parent_key)],
        ),
    )


def _check_fresh_start(sweep: SweepConfig, resume: bool) -> None:
    """A new sweep must not mix with an old one of the same name; a resume without Tune state
    (killed before its first save) starts again, dropping the study's unfinished trials."""
    experiment_path = sweep_dir(sweep) / TUNE_FOLDER / sweep.name
    if resume and tune.Tuner.can_restore(str(experiment_path)):
        return
    storage = optuna_storage(sweep)
    names = {study.study_name for study in optuna.get_all_study_summaries(storage)}
    if not resume and (sweep.name in names or experiment_path.exists()):
        raise ValueError(
            f"{sweep.source}: name: a sweep {sweep.name!r} already exists ({experiment_path}, Optuna study in "
            f"{tracking.redact_uri(sweep.search.storage)}); pass --resume to continue it or choose another name"
        )
    if sweep.name in names:
        optuna.delete_study(study_name=sweep.name, storage=storage)


# --------------------------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------------------------
def run(
    sweep: SweepConfig,
    *,
    resume: bool = False,
    console: Console | None = None,
    loop_config_hook: LoopConfigHook | None = None,
) -> SweepSummary:
    """Runs (or with `resume`, continues) the sweep to the end; Ray must be initialised.

    `loop_config_hook(params)` adds keys to a trial's loop_config (tests: `fail_at_iteration`).
    Raises ConfigError before any trial when one trial does not fit the cluster.
    """
    console = console or Console()
    max_concurrent = check_resources(sweep, ray.cluster_resources())
    _print_plan(sweep, max_concurrent, console)
    tracking_uri = tracking.resolve_tracking_uri(sweep.train.tracking.uri, sweep.train.output_dir)
    first_params = dict(sweep.search.points_to_evaluate[0]) if sweep.search.points_to_evaluate else {}
    preflight(trial_train_config(sweep, first_params), tracking_uri)
    _check_fresh_start(sweep, resume)

    parent_key = sweep_key(sweep)
    parent = tracking.RunLogger(tracking_uri, tracking.start_run(
        tracking_uri=tracking_uri, experiment=sweep.train.tracking.experiment, run_key=parent_key,
        run_name=sweep.name, tags={SWEEP_TAG: sweep.name, "hwd.job": "sweep", "hwd.method": sweep.train.method.name},
    ))
    parent.log_params(tracking.flatten_params(sweep.model_dump(mode="json")))
    parent.log_system_facts()
    setup = TrialSetup(
        sweep=sweep.model_dump(mode="json"), tracking_uri=tracking_uri, parent_run_id=parent.run_id,
        parent_key=parent_key, trials_storage=str(sweep_dir(sweep) / TRIALS_FOLDER), loop_config_hook=loop_config_hook,
    )
    try:
        results = build_tuner(sweep, setup, max_concurrent, resume).fit()
        trials = trial_rows(sweep, results.experiment_path, tracking_uri, parent_key)
        summary = _summarise(sweep, trials, parent.run_id, tracking_uri, results.experiment_path)
        summary.notes += close_orphaned_optuna_trials(sweep)
        summary.baselines = [_run_job(method, {}, baseline_train_config(sweep, method), parent.run_id)
                             for method in sweep.search.baselines]
        summary.final = _final_stage(sweep, trials, parent.run_id)
        _report(sweep, summary, parent)
    except BaseException as error:
        parent.finish("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED", reason=failure_reason(error))
        raise
    parent.finish("FINISHED")
    print_summary(summary, console)
    return summary


def close_orphaned_optuna_trials(sweep: SweepConfig) -> list[str]:
    """Marks FAIL the Optuna trials still RUNNING once every Tune trial has ended: ones the searcher
    asked for after Tune last saved its state, before the driver was killed (never run)."""
    study = optuna.load_study(study_name=sweep.name, storage=optuna_storage(sweep))
    orphans = [trial.number for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))]
    for number in orphans:
        study.tell(number, state=optuna.trial.TrialState.FAIL)
    if not orphans:
        return []
    return [f"Optuna trials {orphans} were asked for before the driver was killed but never ran: marked FAIL"]


def _print_plan(sweep: SweepConfig, max_concurrent: int, console: Console) -> None:
    plan = resource_plan(sweep.train)
    console.print(
        f"[bold]resource plan[/bold]: each trial {plan.describe()} + {sweep.resources.trial_cpus:g} CPU for its "
        f"driver; cluster {ray.cluster_resources()}; {max_concurrent} trial(s) at once, "
        f"{sweep.search.num_samples} in all"
    )


def trial_rows(sweep: SweepConfig, experiment_path: str, tracking_uri: str, parent_key: str) -> list[TrialRow]:
    """One row per Tune trial, in creation order, with its best metrics from its report history."""
    analysis = tune.ExperimentAnalysis(experiment_path)
    tables = analysis.trial_dataframes
    rows = []
    for trial in sorted(analysis.trials, key=lambda trial: _creation_order(trial)):
        history = tables.get(trial.trial_id)
        last = trial.last_result or {}
        failed = trial.status == "ERROR"
        status: TrialStatus = (
            _status_of(int(last.get("iteration", 0)), sweep, failed) if trial.status in ("TERMINATED", "ERROR")
            else "unfinished"
        )
        rows.append(TrialRow(
            trial_id=trial.trial_id,
            params={name: _plain(trial.config.get(name)) for name in sweep.search.space},
            val_miou=_column_best(history, "val_miou", "max"),
            score=_column_best(history, sweep.search.metric, sweep.search.mode),
            iterations=int(last.get("iteration", 0)),
            status=status,
            reason=failure_reason(_trial_error(trial)) if failed else None,
            run_id=tracking.find_run_id(tracking_uri, sweep.train.tracking.experiment, trial_run_key(parent_key, trial.trial_id)),
        ))
        row = rows[-1]
        if row.reason and row.run_id:  # Tune writes the error after its on_trial_error callbacks
            tracking.RunLogger(tracking_uri, row.run_id).set_tags({"hwd.failure_reason": row.reason})
    return rows


def _creation_order(trial) -> tuple[int, str]:
    """Tune's experiment tag starts with the trial's number in creation order (`3_beta=...`)."""
    number = re.match(r"(\d+)", str(getattr(trial, "experiment_tag", "") or ""))
    return (int(number.group(1)) if number else 0, trial.trial_id)


def _column_best(history, column: str, mode: str) -> float | None:
    if history is None or column not in getattr(history, "columns", ()):
        return None
    values = history[column].dropna()
    if values.empty:
        return None
    return float(values.max() if mode == "max" else values.min())


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _summarise(
    sweep: SweepConfig, trials: list[TrialRow], parent_run_id: str, tracking_uri: str, experiment_path: str
) -> SweepSummary:
    """The best trial by search.metric (failed and unscored trials excluded) and the sweep's places."""
    scored = [row for row in trials if row.score is not None and row.status != "failed"]
    sign = 1.0 if sweep.search.mode == "max" else -1.0
    best = max(scored, key=lambda row: sign * row.score) if scored else None
    return SweepSummary(
        name=sweep.name, metric=sweep.search.metric,
        best_params=dict(best.params) if best else {}, best_val_miou=best.val_miou if best else None,
        best_score=best.score if best else None, trials=trials, baselines=[], final=[],
        parent_run_id=parent_run_id, tracking_uri=tracking_uri, best_config_path=None,
        optuna_storage=absolute_storage_url(sweep.search.storage), experiment_path=experiment_path,
        report_dir=sweep_dir(sweep) / REPORT_FOLDER,
    )


def _run_job(label: str, params: dict[str, Any], config: TrainConfig, parent_run_id: str) -> JobResult:
    """One plain training run under the parent (a baseline or a final retraining); a failure is recorded."""
    try:
        outcome = run_training(config, parent_run_id=parent_run_id)
    except Exception as error:  # noqa: BLE001 - one broken baseline must not lose the sweep's results
        return JobResult(label, params, None, None, error=failure_reason(error))
    metrics = outcome["metrics"]
    best = metrics.get("best_val_miou", metrics.get("val_miou"))
    return JobResult(label, params, None if best is None else float(best), outcome["run_id"])


def _final_stage(sweep: SweepConfig, trials: list[TrialRow], parent_run_id: str) -> list[JobResult]:
    """Retrains the top_k trials' params at final.max_iters (search.final)."""
    top_k = sweep.search.final.top_k
    if not top_k:
        return []
    sign = 1.0 if sweep.search.mode == "max" else -1.0
    ranked = sorted((row for row in trials if row.score is not None and row.status != "failed"),
                    key=lambda row: -sign * row.score)
    return [
        _run_job(f"final-{rank}", row.params, trial_train_config(sweep, row.params, sweep.search.final.max_iters),
                 parent_run_id)
        for rank, row in enumerate(ranked[:top_k], start=1)
    ]


# --------------------------------------------------------------------------------------------
# Report: best config, plots, tables, parent run
# --------------------------------------------------------------------------------------------
def write_best_config(sweep: SweepConfig, summary: SweepSummary) -> Path | None:
    """best_config.yaml: the training job of the best params, ready for `hwd-tune distill`."""
    if not summary.best_params:
        return None
    config = trial_train_config(sweep, summary.best_params)
    path = sweep_dir(sweep) / BEST_CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    shown = ", ".join(f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
                      for name, value in summary.best_params.items())
    header = (f"# Best configuration of sweep {sweep.name!r}: {shown}; {sweep.search.metric} "
              f"{summary.best_score:.2f}\n# Train it with: hwd-tune distill {path}\n")
    path.write_text(header + yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return path


def write_optuna_plots(sweep: SweepConfig, folder: Path) -> list[str]:
    """Optimisation history, parameter importances and the tau x beta, mu x beta contours as PNGs.

    Returns notes on the plots that could not be made (importances need >= 2 completed trials).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as pyplot
    from optuna.visualization import matplotlib as optuna_plots

    study = optuna.load_study(study_name=sweep.name, storage=optuna_storage(sweep))
    completed = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE]
    plots: dict[str, Callable[[], Any]] = {"optimization_history": lambda: optuna_plots.plot_optimization_history(study)}
    notes = []
    if len(completed) >= 2:
        plots["param_importances"] = lambda: optuna_plots.plot_param_importances(study)
        for first, second in (("tau", "beta"), ("mu", "beta")):
            if first in sweep.search.space and second in sweep.search.space:
                plots[f"contour_{first}_{second}"] = (
                    lambda pair=(first, second): optuna_plots.plot_contour(study, params=list(pair))
                )
    else:
        notes.append(f"parameter importances and contours need >= 2 completed trials, the study has {len(completed)}")
    folder.mkdir(parents=True, exist_ok=True)
    for name, plot in plots.items():
        try:
            axes = plot()
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
            figure.savefig(folder / f"{name}.png", dpi=100, bbox_inches="tight")
            pyplot.close(figure)
        except Exception as error:  # noqa: BLE001 - a plot that cannot be drawn is a note, not a failure
            notes.append(f"plot {name} failed: {failure_reason(error)}")
    return notes


def _report(sweep: SweepConfig, summary: SweepSummary, parent: tracking.RunLogger) -> None:
    """Writes the best config, plots, trial table and the sweep file; logs them on the parent run."""
    summary.best_config_path = write_best_config(sweep, summary)
    folder = summary.report_dir
    folder.mkdir(parents=True, exist_ok=True)
    summary.notes += write_optuna_plots(sweep, folder / "plots")
    (folder / "sweep.yaml").write_text(yaml.safe_dump(sweep.model_dump(mode="json"), sort_keys=False))
    space = {name: parameter.model_dump(exclude_none=True) for name, parameter in sweep.search.space.items()}
    (folder / "search_space.json").write_text(json.dumps(space, indent=2))
    (folder / "summary.json").write_text(json.dumps(_summary_record(summary), indent=2, default=str))
    if summary.best_config_path:
        (folder / BEST_CONFIG_FILE).write_text(summary.best_config_path.read_text())
    parent.log_artifact_dir(folder, "sweep")
    metrics = {f"best_{summary.metric}": summary.best_score} if summary.best_score is not None else {}
    metrics.update({f"baseline_{job.label}_val_miou": job.val_miou for job in summary.baselines if job.val_miou is not None})
    metrics["trials_completed"] = sum(row.status == "completed" for row in summary.trials)
    metrics["trials_stopped_early"] = sum(row.status == "stopped early" for row in summary.trials)
    metrics["trials_failed"] = sum(row.status == "failed" for row in summary.trials)
    parent.log_metrics(metrics, step=0)
    parent.set_tags({f"hwd.best.{name}": value for name, value in summary.best_params.items()})


def _summary_record(summary: SweepSummary) -> dict[str, Any]:
    record = dataclasses.asdict(summary)
    record["mlflow_ui"] = summary.mlflow_ui_command()
    record["tracking_uri"] = tracking.redact_uri(summary.tracking_uri)
    record["optuna_storage"] = tracking.redact_uri(summary.optuna_storage)
    return record


def print_summary(summary: SweepSummary, console: Console) -> None:
    """The trial table, the best params against the baselines, and where to look next."""
    table = Table("trial", *summary.best_params.keys() or ("params",), "val_miou", "iterations", "status",
                  title=f"sweep {summary.name}")
    for row in summary.trials:
        values = [f"{row.params[name]:.4g}" if isinstance(row.params.get(name), float) else str(row.params.get(name))
                  for name in (summary.best_params or {"params": None})]
        status = row.status + (f": {row.reason}" if row.reason else "")
        table.add_row(row.trial_id, *values, _shown(row.val_miou), str(row.iterations), status)
    console.print(table)
    if not summary.best_params:
        console.print("[red]no trial reported a result[/red]")
    else:
        shown = ", ".join(f"{name} = {value:.4g}" if isinstance(value, float) else f"{name} = {value}"
                          for name, value in summary.best_params.items())
        console.print(f"[bold green]best[/bold green]: {shown}: val_miou {_shown(summary.best_val_miou)}")
    for job in summary.baselines + summary.final:
        outcome = f"val_miou {_shown(job.val_miou)}" if job.error is None else f"[red]failed[/red]: {job.error}"
        console.print(f"  {job.label} {job.params or ''}: {outcome}")
    if summary.best_config_path:
        console.print(f"best config: {summary.best_config_path} (hwd-tune distill {summary.best_config_path})")
    for note in summary.notes:
        console.print(f"[yellow]note[/yellow]: {note}")
    console.print(f"MLflow parent run {summary.parent_run_id}; open the UI with: {summary.mlflow_ui_command()}")
    console.print(f"Optuna study {summary.name!r} in {tracking.redact_uri(summary.optuna_storage)} "
                  f"(optuna-dashboard {tracking.redact_uri(summary.optuna_storage)})")


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
