"""The sweep service: Ray Tune with Optuna (TPE) and ASHA over a method's parameters (tau, mu, beta).

`run(sweep)` turns a `SweepConfig` into a `Tuner` whose trials each fit a `TorchTrainer` over the
one training loop (Train inside Tune, metrics passed up by `TuneReportCallback`), records one
MLflow parent run per sweep and one child run per trial, runs the baselines and the optional
final stage, and returns a `SweepSummary`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from rich.console import Console

from hwd_tune import tracking
from hwd_tune.config import TrainConfig
from hwd_tune.console import active_board
from hwd_tune.console.lines import in_paper_order
from hwd_tune.storage import exists, join
from hwd_tune.sweep.board_feed import BoardFeed
from hwd_tune.sweep.config import (
    SweepConfig,
    TunedBaseline,
    baseline_train_config,
    check_resources,
    final_job_config,
    trial_train_config,
    tuned_baseline_sweep,
)
from hwd_tune.sweep.final_stage import (
    CHAMPION_TAG,
    FinalStageResult,
    candidates,
    register_champion,
    run_final_stage,
)
from hwd_tune.sweep.interruption import Interrupted, graceful_stops
from hwd_tune.sweep.layout import (
    RESTARTS_TAG,
    STOPPED_AT_TAG,
    SWEEP_TAG,
    TRIAL_ID_TAG,
    TRIAL_STATUS_TAG,
    TRIALS_FOLDER,
    TUNE_FOLDER,
    experiment_location,
    sweep_key,
    sweep_storage,
    trial_run_key,
    trial_run_name,
)
from hwd_tune.sweep.predictions import log_final_predictions
from hwd_tune.sweep.restarts import train_unless_code_failed
from hwd_tune.sweep.searcher import (
    build_scheduler,
    build_searcher,
    close_orphaned_optuna_trials,
    optuna_storage,
    tune_domain,
)
from hwd_tune.sweep.summary import (
    JobResult,
    SweepSummary,
    TrialRow,
    TrialStatus,
    TunedBaselineResult,
    adopt_final_winner,
    failure_reason,
    final_stage_rows,
    print_summary,
    ranked_trials,
    status_of,
    summarise,
    trial_error,
    trial_rows,
    trials_view,
    write_report,
)
from hwd_tune.sweep.tuning_split import log_tuning_split
from trainables import checks
from trainables.launch import build_trainer, preflight, resource_plan, run_training

LoopConfigHook = Callable[[Mapping[str, Any]], Mapping[str, Any]]


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
    run_key = trial_run_key(setup.parent_key, trial_id)
    logger = tracking.RunLogger(
        setup.tracking_uri,
        tracking.start_run(
            tracking_uri=setup.tracking_uri,
            experiment=config.tracking.experiment,
            run_key=run_key,
            run_name=trial_run_name(config.method.name, params),
            tags={SWEEP_TAG: sweep.name, TRIAL_ID_TAG: trial_id, "hwd.job": "trial", "hwd.method": config.method.name},
            parent_run_id=setup.parent_run_id,
        ),
    )
    logger.log_params(tracking.flatten_params(config))
    logger.log_system_facts()
    extra = dict(setup.loop_config_hook(params)) if setup.loop_config_hook else None
    trainer = trial_trainer(
        config,
        tracking_uri=setup.tracking_uri,
        mlflow_run_id=logger.run_id,
        name=f"trial-{trial_id}",
        storage_path=setup.trials_storage,
        extra_loop_config=extra,
    )
    # The run is ended by the driver (ChildRunFinisher), the one place that knows how Tune ended
    # the trial: a stop at max_t or by ASHA ends this actor mid-call, racing any status set here.
    train_unless_code_failed(setup.tracking_uri, config.tracking.experiment, run_key, trainer.fit, run_id=logger.run_id)


def trial_trainer(config: TrainConfig, *, name: str, storage_path: str, **build_options: Any):
    """`trainables.launch.build_trainer`'s TorchTrainer, renamed and reporting to Tune."""
    base = build_trainer(config, storage_path=storage_path, **build_options)
    callbacks = [TuneReportCallback()]
    run_config = dataclasses.replace(base.run_config, name=name, callbacks=callbacks)
    return type(base)(
        base.train_loop_per_worker,
        train_loop_config=base.train_loop_config,
        torch_config=base.backend_config,
        scaling_config=base.scaling_config,
        run_config=run_config,
    )


def finish_child_run(logger: tracking.RunLogger, status: TrialStatus, iterations: int, reason: str | None) -> None:
    """Ends a trial's child run: FAILED with its reason, else FINISHED (tagged completed/stopped_early)."""
    tags = {TRIAL_STATUS_TAG: status.replace(" ", "_")}
    if status == "stopped early":
        tags[STOPPED_AT_TAG] = str(iterations)
    logger.set_tags(tags)
    logger.finish("FAILED" if status == "failed" else "FINISHED", reason=reason)


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

    def on_trial_recover(self, iteration: int, trials: list, trial, **info: Any) -> None:
        """Tune restarts the trial from its last checkpoint: its run stays open and counts the restarts."""
        sweep = SweepConfig.model_validate(self.sweep)
        run_id = tracking.find_run_id(
            self.tracking_uri, sweep.train.tracking.experiment, trial_run_key(self.parent_key, trial.trial_id)
        )
        if run_id is not None:
            tracking.RunLogger(self.tracking_uri, run_id).set_tags({RESTARTS_TAG: str(trial.run_metadata.num_failures)})

    def _finish(self, trial, failed: bool) -> None:
        sweep = SweepConfig.model_validate(self.sweep)
        iterations = int((trial.last_result or {}).get("iteration", 0))
        status = status_of(iterations, sweep, failed)
        run_id = tracking.find_run_id(
            self.tracking_uri, sweep.train.tracking.experiment, trial_run_key(self.parent_key, trial.trial_id)
        )
        if run_id is None:
            return  # the trial died before it could create its run
        reason = failure_reason(trial_error(trial)) if failed else None
        finish_child_run(tracking.RunLogger(self.tracking_uri, run_id), status, iterations, reason)


def build_tuner(sweep: SweepConfig, setup: TrialSetup, max_concurrent: int, resume: bool) -> tune.Tuner:
    """A new Tuner, or the killed sweep's one restored (finished trials kept, unfinished resumed)."""
    trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup), {"CPU": sweep.resources.trial_cpus})
    experiment_path = experiment_location(sweep)
    if resume and tune.Tuner.can_restore(experiment_path):
        return tune.Tuner.restore(
            experiment_path, trainable=trainable, resume_unfinished=True, resume_errored=False, restart_errored=False
        )
    return tune.Tuner(
        trainable,
        param_space={name: tune_domain(parameter) for name, parameter in sweep.search.space.items()},
        tune_config=tune.TuneConfig(
            metric=sweep.search.metric,
            mode=sweep.search.mode,
            search_alg=build_searcher(sweep),
            scheduler=build_scheduler(sweep),
            num_samples=sweep.search.num_samples,
            max_concurrent_trials=max_concurrent,
        ),
        run_config=tune.RunConfig(
            name=sweep.name,
            storage_path=join(sweep_storage(sweep), TUNE_FOLDER),
            failure_config=tune.FailureConfig(max_failures=sweep.resources.trial_max_failures, fail_fast=False),
            callbacks=[
                ChildRunFinisher(setup.sweep, setup.tracking_uri, setup.parent_key),
                BoardFeed(budget=trial_budget(sweep), param_names=tuple(sweep.search.space)),
            ],
        ),
    )


def trial_budget(sweep: SweepConfig) -> int:
    """The iterations a trial that is not stopped early reaches: max_iters, or ASHA's max_t."""
    return int(min(sweep.train.schedule.max_iters, sweep.search.scheduler.max_t or sweep.train.schedule.max_iters))


def _check_fresh_start(sweep: SweepConfig, resume: bool) -> None:
    """A new sweep must not mix with an old one of the same name; a resume without Tune state
    (killed before its first save) starts again, dropping the study's unfinished trials."""
    experiment_path = experiment_location(sweep)
    if resume and tune.Tuner.can_restore(experiment_path):
        return
    storage = optuna_storage(sweep)
    names = {study.study_name for study in optuna.get_all_study_summaries(storage)}
    if not resume and (sweep.name in names or exists(experiment_path)):
        raise ValueError(
            f"{sweep.source}: name: a sweep {sweep.name!r} already exists ({experiment_path}, Optuna study in "
            f"{tracking.redact_uri(sweep.search.storage)}); pass --resume to continue it or choose another name"
        )
    if sweep.name in names:
        optuna.delete_study(study_name=sweep.name, storage=storage)


def check_before_start(sweep: SweepConfig, *, teacher_sources: bool = True) -> None:
    """What can be checked of the sweep before Ray starts or a file is written (trainables.checks),
    on each kind of training job it runs; teacher_sources=False when its teacher is trained first."""
    checks.check_before_start(
        sweep_jobs(sweep), source=sweep.source, field_prefix="train.", teacher_sources=teacher_sources
    )


def sweep_jobs(sweep: SweepConfig) -> list[TrainConfig]:
    """One training job of each kind the sweep runs: its first trial, each tuned baseline's, each
    baseline at its defaults, a final-stage retraining. Trials differ only in the sampled params."""
    first = dict(sweep.search.points_to_evaluate[0]) if sweep.search.points_to_evaluate else {}
    jobs = [trial_train_config(sweep, first)]
    for entry in sweep.search.baselines:
        if isinstance(entry, TunedBaseline):
            jobs.append(trial_train_config(tuned_baseline_sweep(sweep, entry), {}))
        else:
            jobs.append(baseline_train_config(sweep, entry))
    if sweep.search.final.top_k:
        jobs.append(final_job_config(sweep, sweep.train.method.name, first, sweep.search.final.seeds[0]))
    return jobs


def run(
    sweep: SweepConfig,
    *,
    resume: bool = False,
    console: Console | None = None,
    loop_config_hook: LoopConfigHook | None = None,
    show_summary: bool = True,
) -> SweepSummary:
    """Runs (or with `resume`, continues) the sweep to the end; Ray must be initialised.

    The search, then each tuned baseline's search, the baselines run at their defaults (unless the
    final stage retrains them), and the final stage. `loop_config_hook(params)` adds keys to a
    run's loop_config (tests: `fail_at_iteration`). Raises `checks.NotStarted` before any trial
    when one trial does not fit the cluster, the sweep exists already or a source cannot be read.
    `show_summary=False` leaves the closing tables to the caller
    (the quickstart shows its own verdict).
    """
    console = console or Console()
    with checks.before_start():
        max_concurrent = check_resources(sweep, ray.cluster_resources())
        tuned_searches = [
            tuned_baseline_sweep(sweep, entry) for entry in sweep.search.baselines if isinstance(entry, TunedBaseline)
        ]
        _print_plan(sweep, max_concurrent, console)
        tracking_uri = tracking.resolve_tracking_uri(sweep.train.tracking.uri, sweep.train.output_dir)
        first_params = dict(sweep.search.points_to_evaluate[0]) if sweep.search.points_to_evaluate else {}
        preflight(trial_train_config(sweep, first_params), tracking_uri)
        for search in (sweep, *tuned_searches):
            _check_fresh_start(search, resume)

    parent = tracking.RunLogger(
        tracking_uri,
        tracking.start_run(
            tracking_uri=tracking_uri,
            experiment=sweep.train.tracking.experiment,
            run_key=sweep_key(sweep),
            run_name=sweep.name,
            tags={SWEEP_TAG: sweep.name, "hwd.job": "sweep", "hwd.method": sweep.train.method.name},
        ),
    )
    parent.log_params(tracking.flatten_params(sweep.model_dump(mode="json")))
    parent.log_system_facts()
    searching = _Searching(parent.run_id, tracking_uri, max_concurrent, resume, loop_config_hook)
    try:
        with graceful_stops():
            summary = _search_and_retrain(sweep, searching, tuned_searches, parent, tracking_uri, max_concurrent)
    except BaseException as error:
        stopped = isinstance(error, KeyboardInterrupt)
        if stopped:
            _kill_running_children(tracking_uri, sweep.train.tracking.experiment, parent.run_id)
        parent.finish("KILLED" if stopped else "FAILED", reason=failure_reason(error))
        raise
    parent.finish("FINISHED")
    if show_summary:
        print_summary(summary, console)
    return summary


def _search_and_retrain(
    sweep: SweepConfig,
    searching: _Searching,
    tuned_searches: list[SweepConfig],
    parent: tracking.RunLogger,
    tracking_uri: str,
    max_concurrent: int,
) -> SweepSummary:
    """The stages of `run` after its checks: search, tuned baselines, baselines, final stage, report.
    A stage stopped by Ctrl-C or SIGTERM raises `Interrupted` before anything is concluded from it."""
    tuning_split = log_tuning_split(sweep, parent)
    trials, experiment_path = searching.search(sweep)
    summary = summarise(sweep, trials, parent.run_id, tracking_uri, experiment_path)
    summary.tuning_split = tuning_split
    summary.mlflow_ui_link = trials_view(sweep, tracking_uri)
    summary.notes += close_orphaned_optuna_trials(sweep, _started_run(sweep, tracking_uri, parent.run_id))
    summary.tuned_baselines = [searching.tuned_baseline(search) for search in tuned_searches]
    final = sweep.search.final
    if not (final.top_k and "baselines" in final.include) and sweep.search.baselines:
        active_board().stage("baselines at their defaults", total=len(sweep.search.baselines))
        summary.baselines = [
            _run_job(method, {}, baseline_train_config(sweep, method), parent.run_id)
            for method in sweep.search.baselines
            if isinstance(method, str)
        ]
    if final.top_k:
        tuned_winners = {tuned.method: tuned.best_params for tuned in summary.tuned_baselines if tuned.best_params}
        summary.final_stage = run_final_stage(
            sweep,
            candidates(sweep, trials, tuned_winners),
            parent_run_id=parent.run_id,
            tracking_uri=tracking_uri,
            max_concurrent=max_concurrent,
            loop_config_hook=searching.loop_config_hook,
        )
        adopt_final_winner(sweep, summary)
        _record_in_study(sweep, summary)
        summary.notes += _final_predictions(sweep, summary.final_stage, parent, tracking_uri)
        _register_champion(sweep, summary, parent, tracking_uri)
    write_report(sweep, summary, parent)
    return summary


def _final_predictions(
    sweep: SweepConfig, final: FinalStageResult, parent: tracking.RunLogger, tracking_uri: str
) -> list[str]:
    """The winner beside CWD in pictures on the parent run; one that cannot be drawn is a note, not a failure."""
    try:
        log_final_predictions(sweep, final, parent, tracking_uri)
    except Exception as error:  # noqa: BLE001 - the sweep's numbers stand without its pictures
        return [f"prediction pictures of the final stage failed: {failure_reason(error)}"]
    return []


def _register_champion(
    sweep: SweepConfig, summary: SweepSummary, parent: tracking.RunLogger, tracking_uri: str
) -> None:
    """The final stage's winner registered as `student-<dataset>-<arch>@champion`, named on the parent run."""
    try:
        summary.champion = register_champion(sweep, summary.final_stage, tracking_uri=tracking_uri)
    except Exception as error:  # noqa: BLE001 - the sweep's results stand without a registered model
        summary.notes.append(f"the champion was not registered: {failure_reason(error)}")
        return
    if summary.champion:
        parent.set_tags({CHAMPION_TAG: summary.champion})


def _kill_running_children(tracking_uri: str, experiment: str, parent_run_id: str) -> None:
    """Marks KILLED the parent's child runs still RUNNING (trials Tune stopped; a resume reopens them)."""
    for run in tracking.find_runs(tracking_uri, experiment, {"mlflow.parentRunId": parent_run_id}, status="RUNNING"):
        tracking.RunLogger(tracking_uri, run.run_id).finish("KILLED", reason="the sweep was interrupted")


def _started_run(sweep: SweepConfig, tracking_uri: str, parent_run_id: str) -> Callable[[dict[str, Any]], str | None]:
    """For an orphaned Optuna trial's params: the child run that trained them, if one exists."""

    def find(params: dict[str, Any]) -> str | None:
        children = tracking.find_runs(
            tracking_uri, sweep.train.tracking.experiment, {"mlflow.parentRunId": parent_run_id}
        )
        for run in children:
            if run.tags.get(SWEEP_TAG) != sweep.name or not params:
                continue
            if all(
                name in run.params and math.isclose(float(run.params[name]), float(value))
                for name, value in params.items()
                if isinstance(value, int | float)
            ):
                return f"MLflow run {run.run_id}, up to iteration {int(run.metrics.get('iteration', 0))}"
        return None

    return find


@dataclass(frozen=True)
class _Searching:
    """What every search of one sweep shares: the parent run, the store, the cluster's room."""

    parent_run_id: str
    tracking_uri: str
    max_concurrent: int
    resume: bool
    loop_config_hook: LoopConfigHook | None

    def search(self, sweep: SweepConfig) -> tuple[list[TrialRow], str]:
        """Runs (or resumes) `sweep`'s Tune search; its trials' child runs nest under the parent run."""
        parent_key = sweep_key(sweep)
        setup = TrialSetup(
            sweep=sweep.model_dump(mode="json"),
            tracking_uri=self.tracking_uri,
            parent_run_id=self.parent_run_id,
            parent_key=parent_key,
            trials_storage=join(sweep_storage(sweep), TRIALS_FOLDER),
            loop_config_hook=self.loop_config_hook,
        )
        trials_text = f"{sweep.search.num_samples} trials of {', '.join(in_paper_order(list(sweep.search.space)))}"
        active_board().stage(f"search {sweep.name}: {trials_text}", sweep.search.num_samples)
        build_tuner(sweep, setup, self.max_concurrent, self.resume).fit()
        experiment_path = experiment_location(sweep)  # a URI on remote storage (ResultGrid's path has no scheme)
        trials = trial_rows(sweep, experiment_path, self.tracking_uri, parent_key)
        stopped = [row.trial_id for row in trials if row.status == "unfinished"]
        if stopped:
            raise Interrupted(f"{sweep.name}: the search was stopped with trials {stopped} unfinished")
        return trials, experiment_path

    def tuned_baseline(self, search: SweepConfig) -> TunedBaselineResult:
        """A tuned baseline's own search (same budget as the main one) and its best params."""
        trials, _ = self.search(search)
        close_orphaned_optuna_trials(search, _started_run(search, self.tracking_uri, self.parent_run_id))
        ranked = ranked_trials(trials, search.search.mode)
        best = ranked[0] if ranked else None
        return TunedBaselineResult(
            method=search.train.method.name,
            sweep_name=search.name,
            best_params=dict(best.params) if best else {},
            best_score=best.score if best else None,
            trials=trials,
        )


def _record_in_study(sweep: SweepConfig, summary: SweepSummary) -> None:
    """The final stage's numbers as user attributes of the Optuna study (optuna-dashboard shows them)."""
    final = summary.final_stage
    study = optuna.load_study(study_name=sweep.name, storage=optuna_storage(sweep))
    study.set_user_attr("final_stage_seeds", final.seeds)
    study.set_user_attr("final_stage_winner", final.winner)
    study.set_user_attr("final_stage", final_stage_rows(final))
    study.set_user_attr(
        "final_stage_comparisons",
        {label: dataclasses.asdict(difference) for label, difference in final.comparisons.items()},
    )


def _print_plan(sweep: SweepConfig, max_concurrent: int, console: Console) -> None:
    plan = resource_plan(sweep.train)
    cluster = ray.cluster_resources()
    console.print(
        f"[bold]resource plan[/bold]: each trial {plan.describe()} + {sweep.resources.trial_cpus:g} CPU for its "
        f"driver; cluster {cluster.get('CPU', 0):g} CPU, {cluster.get('GPU', 0):g} GPU; {max_concurrent} trial(s) "
        f"at once, {sweep.search.num_samples} in all",
        soft_wrap=True,
    )


def _run_job(label: str, params: dict[str, Any], config: TrainConfig, parent_run_id: str) -> JobResult:
    """One plain training run under the parent (a baseline or a final retraining); a failure is recorded."""
    try:
        outcome = run_training(config, parent_run_id=parent_run_id, progress=True)
    except Exception as error:  # noqa: BLE001 - one broken baseline must not lose the sweep's results
        return JobResult(label, params, None, None, error=failure_reason(error))
    metrics = outcome["metrics"]
    best = metrics.get("best_val_miou", metrics.get("val_miou"))
    return JobResult(label, params, None if best is None else float(best), outcome["run_id"])
