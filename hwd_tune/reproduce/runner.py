"""Reproduces a plan: its runs as Ray Train jobs scheduled by Ray Tune, finished ones skipped, then the report.

`reproduce(plan)` opens the plan's MLflow run (run key `plan-<name>`), skips every cell whose run
FINISHED earlier (same config hash, same plan), runs the others through a Tune grid (FIFO, as many
at once as the resources fit; a failed run is recorded and the others go on), each trial calling
`trainables.launch.run_training` with the cell's tags and logging the run's cost, and finally
writes the report (`hwd_tune.reproduce.report`). With the sweep wing, the only code that imports
ray.tune.

Where things go: Tune's experiment in `<train.storage>/plans/<name>/tune/` (storage: a shared
folder or s3://, gs://; the output folder by default), the report in
`<train.output_dir>/plans/<name>/report/` (report.md, report.html, report.png). Each run keeps its
checkpoints where run_training puts them (`<train.storage>/ray/<run name>/`), so a run interrupted
earlier resumes from them.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import ray
import yaml
from ray import tune
from rich.console import Console
from rich.table import Table

from hwd_tune import tracking
from hwd_tune.config import TrainConfig
from hwd_tune.console import active_board
from hwd_tune.reproduce.plan import Cell, Plan, check_resources
from hwd_tune.reproduce.report import write_plan_report
from hwd_tune.storage import join, ray_storage_root
from hwd_tune.sweep.board_feed import BoardFeed, JobLabel
from hwd_tune.sweep.interruption import Interrupted, graceful_stops, unfinished
from hwd_tune.sweep.restarts import train_unless_code_failed
from hwd_tune.sweep.summary import failure_reason
from trainables import checks
from trainables.launch import pinned_to_driver, preflight, resource_plan, run_key, run_name, run_training

PLANS_FOLDER = "plans"  # under train.output_dir: one folder per plan
TUNE_FOLDER = "tune"  # Tune's experiment of the plan
REPORT_FOLDER = "report"  # report.md, report.html, report.png
PLAN_JOB = "plan"  # tag hwd.job of the plan's own run

logger = logging.getLogger(__name__)

CellStatus = Literal["finished earlier", "finished", "failed"]
LoopConfigHook = Callable[[Cell], Mapping[str, Any]]


# --------------------------------------------------------------------------------------------
# What a reproduction returns
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CellOutcome:
    """One cell after a reproduction: its run, how it ended this time, its result and cost."""

    cell: Cell
    status: CellStatus  # "finished earlier": skipped, not trained again
    run_id: str | None
    best_val_miou: float | None
    train_seconds: float | None
    gpu_hours: float | None
    reason: str | None = None  # why it failed


@dataclass
class ReproduceSummary:
    """Everything a reproduction did, for the command line and for tests."""

    plan_name: str
    plan_run_id: str
    tracking_uri: str
    outcomes: list[CellOutcome]
    skipped: list[Cell]  # finished earlier in MLflow: not run again
    scheduled: list[Cell]  # handed to the Tuner (empty: no Tuner was built)
    plan_dir: Path
    report: Any = None  # hwd_tune.reproduce.report.PlanReport, None if the report could not be written
    report_error: str | None = None

    @property
    def failed(self) -> list[Cell]:
        return [outcome.cell for outcome in self.outcomes if outcome.status == "failed"]

    def outcome(self, cell: Cell) -> CellOutcome:
        for outcome in self.outcomes:
            if outcome.cell == cell:
                return outcome
        raise KeyError(f"{cell} is not a cell of plan {self.plan_name!r}")


# --------------------------------------------------------------------------------------------
# Names, places and tags
# --------------------------------------------------------------------------------------------
def plan_dir(plan: Plan) -> Path:
    """`<train.output_dir>/plans/<name>`, absolute: Tune's experiment and the report live below it."""
    return (Path(plan.train.output_dir) / PLANS_FOLDER / plan.name).resolve()


def plan_storage(plan: Plan) -> str:
    """`<train.storage>/plans/<name>` (a folder or URI; the output folder by default): the plan's Tune experiment."""
    return join(ray_storage_root(plan.train.storage, plan.train.output_dir), PLANS_FOLDER, plan.name)


def plan_run_key(plan: Plan) -> str:
    """The plan run's key: one MLflow run per plan name, reopened by every reproduce and report."""
    return f"plan-{plan.name}"


def plan_tracking(plan: Plan) -> tuple[str, str]:
    """(tracking URI, experiment) of the plan and of all its runs."""
    return tracking.resolve_tracking_uri(plan.train.tracking.uri, plan.train.output_dir), plan.train.tracking.experiment


def cell_tags(plan: Plan, cell: Cell, config: TrainConfig) -> dict[str, str]:
    """The tags that tie a run to its plan and cell; the report and the skipping read them."""
    return {
        tracking.PLAN_TAG: plan.name,
        tracking.PLAN_DATASET_TAG: cell.dataset,
        tracking.PLAN_STUDENT_TAG: cell.student,
        tracking.PLAN_METHOD_TAG: cell.method,
        tracking.PLAN_SEED_TAG: str(cell.seed),
        tracking.CONFIG_HASH_TAG: run_key(config),
    }


def cell_key(cell: Cell) -> str:
    """The cell as the one string Tune's grid holds: `dataset/student/label/seed`."""
    return f"{cell.dataset}/{cell.student}/{cell.method}/{cell.seed}"


# --------------------------------------------------------------------------------------------
# Which cells are done
# --------------------------------------------------------------------------------------------
def finished_runs(plan: Plan, tracking_uri: str) -> dict[Cell, tracking.FoundRun]:
    """The FINISHED run of each cell that has one: tagged with this plan and the cell's config hash.

    Matching by hash, not by the cell tags, keeps a run whose label was renamed (same training job).
    A local store that does not exist yet holds none and is not created here.
    """
    if tracking.missing_local_store(tracking_uri) is not None:
        return {}
    experiment = plan.train.tracking.experiment
    by_hash = {
        run.tags.get(tracking.CONFIG_HASH_TAG): run
        for run in tracking.find_runs(tracking_uri, experiment, {tracking.PLAN_TAG: plan.name}, status="FINISHED")
    }
    found = {}
    for cell in plan.cells():
        run = by_hash.get(run_key(plan.train_config(cell)))
        if run is not None:
            found[cell] = run
    return found


def _retag_renamed(plan: Plan, finished: Mapping[Cell, tracking.FoundRun], tracking_uri: str) -> None:
    """A finished run whose cell tags differ (a label renamed in the plan) gets the current ones."""
    for cell, run in finished.items():
        tags = cell_tags(plan, cell, plan.train_config(cell))
        if any(run.tags.get(key) != value for key, value in tags.items()):
            tracking.RunLogger(tracking_uri, run.run_id).set_tags(tags)


# --------------------------------------------------------------------------------------------
# One Tune trial = one cell
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CellJobs:
    """What every trial needs (sent once to the object store): each cell's job and tags by cell key."""

    cells: dict[str, Cell]
    configs: dict[str, dict[str, Any]]  # TrainConfig.model_dump(mode="json")
    tags: dict[str, dict[str, str]]
    plan_run_id: str
    tracking_uri: str
    loop_config_hook: LoopConfigHook | None = None  # test hook: extra loop_config per cell


def run_cell(trial_config: dict[str, Any], jobs: CellJobs) -> None:
    """Tune's trial function: trains (or resumes) one cell's run under the plan run, then logs its cost.

    Runs on a Tune trial actor holding only resources.trial_cpus; run_training's TorchTrainer
    reserves the workers. Errors propagate to Tune, which records them; the other cells go on.
    """
    key = trial_config["cell"]
    cell, config = jobs.cells[key], TrainConfig.model_validate(jobs.configs[key])
    extra = dict(jobs.loop_config_hook(cell) or {}) if jobs.loop_config_hook else None

    def train_and_log_cost() -> dict[str, Any]:
        started = time.perf_counter()
        try:
            return run_training(config, parent_run_id=jobs.plan_run_id, tags=jobs.tags[key], extra_loop_config=extra)
        finally:
            try:
                log_cost(config, jobs.tracking_uri, time.perf_counter() - started)
            except Exception as error:  # noqa: BLE001 - a cost not logged must not fail a trained run
                logger.warning("could not log the training cost of %s: %s", cell_key(cell), failure_reason(error))

    outcome = train_unless_code_failed(
        jobs.tracking_uri, config.tracking.experiment, run_name(config), train_and_log_cost
    )
    metrics = outcome["metrics"]
    tune.report(
        {"best_val_miou": float(metrics.get("best_val_miou", math.nan)), "iteration": int(metrics.get("iteration", 0))}
    )


def log_cost(config: TrainConfig, tracking_uri: str, seconds: float) -> None:
    """Adds this fit's wall time to the run's `train_seconds` and logs `gpu_hours` from it (step 0).

    Summed over attempts, so a run resumed after a failure shows all it cost; GPU-hours are
    train_seconds x workers x gpus_per_worker / 3600 (0 on CPU).
    """
    run_id = tracking.find_run_id(tracking_uri, config.tracking.experiment, run_name(config))
    if run_id is None:
        return  # it failed before its run was created: nothing was trained
    total = tracking.latest_metrics(tracking_uri, run_id).get("train_seconds", 0.0) + seconds
    workers = resource_plan(config)
    gpu_hours = total * workers.num_workers * workers.gpus_per_worker / 3600.0
    tracking.RunLogger(tracking_uri, run_id).log_metrics({"train_seconds": total, "gpu_hours": gpu_hours}, step=0)


def build_tuner(plan: Plan, cells: list[Cell], jobs: CellJobs, max_concurrent: int) -> tune.Tuner:
    """A grid over `cells`, FIFO, at most `max_concurrent` at once; a failed trial does not stop the others."""
    trainable = tune.with_resources(tune.with_parameters(run_cell, jobs=jobs), {"CPU": plan.resources.trial_cpus})
    return tune.Tuner(
        trainable,
        param_space={"cell": tune.grid_search([cell_key(cell) for cell in cells])},
        tune_config=tune.TuneConfig(
            # Reused trial actors: each new one costs seconds of imports (torch, mlflow) for a driver
            # that only waits on its TorchTrainer.
            num_samples=1,
            max_concurrent_trials=max_concurrent,
            reuse_actors=True,
            trial_dirname_creator=lambda trial: f"{trial.trial_id}-{_safe(trial.config['cell'])}",
        ),
        run_config=tune.RunConfig(
            name=TUNE_FOLDER,
            storage_path=plan_storage(plan),
            failure_config=tune.FailureConfig(max_failures=plan.resources.trial_max_failures, fail_fast=False),
            callbacks=[BoardFeed(budget=None, job_key="cell", jobs=_cell_labels(cells, jobs))],
        ),
    )


def _cell_labels(cells: list[Cell], jobs: CellJobs) -> dict[str, JobLabel]:
    """How the screen names each cell's trial: its key, HWD's params, its iterations."""
    labels = {}
    for cell in cells:
        config = TrainConfig.model_validate(jobs.configs[cell_key(cell)])
        params = {name: value for name, value in config.method.params.items() if name in ("tau", "mu", "beta")}
        labels[cell_key(cell)] = JobLabel(cell_key(cell), params, config.schedule.max_iters)
    return labels


def _safe(text: str) -> str:
    """`text` usable as a folder name: letters, digits, `._-`; others become `_`."""
    return "".join(char if char.isalnum() or char in "._-" else "_" for char in text)[:100]


# --------------------------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------------------------
def reproduce(
    plan: Plan, *, console: Console | None = None, loop_config_hook: LoopConfigHook | None = None
) -> ReproduceSummary:
    """Runs every cell of `plan` not finished earlier, then writes the report; Ray must be initialised.

    Raises `checks.NotStarted` (resources, data, teacher) before any run starts.
    `loop_config_hook(cell)` adds keys to a run's loop_config (tests: `fail_at_iteration`).
    """
    console = console or Console()
    tracking_uri, experiment = plan_tracking(plan)
    cells = plan.cells()
    finished = finished_runs(plan, tracking_uri)
    remaining = [cell for cell in cells if cell not in finished]
    max_concurrent = 0
    if remaining:
        with checks.before_start():
            max_concurrent = min(check_resources(plan, ray.cluster_resources()), len(remaining))
            _preflight(plan, remaining, tracking_uri)
    console.print(
        f"[bold]plan {plan.name}[/bold]: {len(cells)} runs, {len(finished)} finished earlier, {len(remaining)} to run"
        + (f", {max_concurrent} at once; each {resource_plan(plan.train).describe()}" if remaining else "")
    )

    plan_run = tracking.RunLogger(
        tracking_uri,
        tracking.start_run(
            tracking_uri=tracking_uri,
            experiment=experiment,
            run_key=plan_run_key(plan),
            run_name=plan.name,
            tags={"hwd.job": PLAN_JOB, tracking.PLAN_TAG: plan.name},
        ),
    )
    try:
        _log_plan(plan, plan_run)
        _retag_renamed(plan, finished, tracking_uri)
        errors: dict[Cell, str] = {}
        if remaining:
            jobs = _cell_jobs(plan, remaining, plan_run.run_id, tracking_uri, loop_config_hook)
            active_board().stage(f"plan {plan.name}: {len(remaining)} runs", len(remaining))
            with graceful_stops():
                results = build_tuner(plan, remaining, jobs, max_concurrent).fit()
            if unfinished(results, "best_val_miou"):
                raise Interrupted(f"plan {plan.name}: stopped with runs unfinished")
            errors = _trial_errors(results, jobs)
        summary = ReproduceSummary(
            plan_name=plan.name,
            plan_run_id=plan_run.run_id,
            tracking_uri=tracking_uri,
            outcomes=_outcomes(plan, set(finished), errors, tracking_uri),
            skipped=list(finished),
            scheduled=remaining,
            plan_dir=plan_dir(plan),
        )
        try:
            summary.report = write_report(plan, plan_run_id=plan_run.run_id)
        except Exception as error:  # noqa: BLE001 - the runs are in MLflow; `hwd-tune report` can retry
            summary.report_error = failure_reason(error)
    except BaseException as error:
        plan_run.finish("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED", reason=failure_reason(error))
        raise
    _finish_plan_run(plan_run, summary)
    active_board().end_stage()
    print_summary(summary, console)
    return summary


def check_before_start(plan: Plan) -> None:
    """What can be checked of the runs still to do before Ray starts or a file is written
    (trainables.checks): each distinct student, dataset and teacher once."""
    tracking_uri, _ = plan_tracking(plan)
    finished = finished_runs(plan, tracking_uri)
    jobs: dict[tuple[str, str, str], TrainConfig] = {}  # one seed of each (dataset, student, method)
    for cell in plan.cells():
        job = (cell.dataset, cell.student, cell.method)
        if cell not in finished and job not in jobs:
            jobs[job] = plan.train_config(cell)
    checks.check_before_start(jobs.values(), source=plan.source)


def _preflight(plan: Plan, remaining: list[Cell], tracking_uri: str) -> None:
    """Each dataset's files and teacher, checked once before anything starts (on its first distilling cell)."""
    checked: dict[str, TrainConfig] = {}
    for cell in remaining:
        config, current = plan.train_config(cell), checked.get(cell.dataset)
        if current is None or (current.method.name == "none" and config.method.name != "none"):
            checked[cell.dataset] = config
    for dataset, config in checked.items():
        try:
            preflight(config, tracking_uri)
        except (ValueError, FileNotFoundError) as error:
            kind = FileNotFoundError if isinstance(error, FileNotFoundError) else ValueError
            raise kind(f"{plan.source}: dataset {dataset!r}: {error}") from None


def _log_plan(plan: Plan, plan_run: tracking.RunLogger) -> None:
    """The plan as params (a changed plan keeps its first values, new ones as tags) and as plan.yaml."""
    dumped = plan.model_dump(mode="json")
    plan_run.log_params(tracking.flatten_params(dumped))
    plan_run.log_system_facts()
    with tempfile.TemporaryDirectory(prefix="hwd-plan-") as scratch:
        (Path(scratch) / "plan.yaml").write_text(yaml.safe_dump(dumped, sort_keys=False))
        plan_run.log_artifact_dir(scratch, "plan")


def _cell_jobs(
    plan: Plan, cells: list[Cell], plan_run_id: str, tracking_uri: str, hook: LoopConfigHook | None
) -> CellJobs:
    """Each cell's job, with the tracking URI and an absolute output_dir baked in (not in the config
    hash), so trial actors log and checkpoint where the driver looks, whatever their directory."""
    configs, tags = {}, {}
    for cell in cells:
        config = plan.train_config(cell)
        tags[cell_key(cell)] = cell_tags(plan, cell, config)
        configs[cell_key(cell)] = pinned_to_driver(config, tracking_uri).model_dump(mode="json")
    return CellJobs(
        cells={cell_key(cell): cell for cell in cells},
        configs=configs,
        tags=tags,
        plan_run_id=plan_run_id,
        tracking_uri=tracking_uri,
        loop_config_hook=hook,
    )


def _trial_errors(results: Any, jobs: CellJobs) -> dict[Cell, str]:
    """The failure reason of each trial that failed, by cell (its MLflow run may not exist)."""
    errors = {}
    for result in results:
        if result.error is not None:
            errors[jobs.cells[result.config["cell"]]] = failure_reason(result.error)
    return errors


def _outcomes(plan: Plan, skipped: set[Cell], errors: Mapping[Cell, str], tracking_uri: str) -> list[CellOutcome]:
    """Every cell's run as MLflow now holds it (found by the plan tag and the config hash)."""
    runs = {
        run.tags.get(tracking.CONFIG_HASH_TAG): run
        for run in tracking.find_runs(tracking_uri, plan.train.tracking.experiment, {tracking.PLAN_TAG: plan.name})
    }
    outcomes = []
    for cell in plan.cells():
        run = runs.get(run_key(plan.train_config(cell)))
        metrics = run.metrics if run else {}
        if cell in skipped:
            status: CellStatus = "finished earlier"
        else:
            status = "finished" if run is not None and run.status == "FINISHED" and cell not in errors else "failed"
        reason = None
        if status == "failed":
            reason = errors.get(cell) or (run.tags.get(tracking.FAILURE_REASON_TAG) if run else None) or "not run"
        outcomes.append(
            CellOutcome(
                cell=cell,
                status=status,
                run_id=run.run_id if run else None,
                best_val_miou=metrics.get("best_val_miou"),
                train_seconds=metrics.get("train_seconds"),
                gpu_hours=metrics.get("gpu_hours"),
                reason=reason,
            )
        )
    return outcomes


def _finish_plan_run(plan_run: tracking.RunLogger, summary: ReproduceSummary) -> None:
    """FINISHED when every cell has a finished run; else FAILED, naming the failed cells (re-run to retry)."""
    counts = {
        "plan_runs": len(summary.outcomes),
        "plan_runs_finished_earlier": len(summary.skipped),
        "plan_runs_finished": sum(outcome.status == "finished" for outcome in summary.outcomes),
        "plan_runs_failed": len(summary.failed),
    }
    plan_run.log_metrics(counts, step=0)
    if not summary.failed:
        plan_run.finish("FINISHED")
        return
    names = ", ".join(cell_key(cell) for cell in summary.failed)
    plan_run.finish("FAILED", reason=f"{len(summary.failed)} of {len(summary.outcomes)} runs failed: {names}")


# --------------------------------------------------------------------------------------------
# Report and console output
# --------------------------------------------------------------------------------------------
def write_report(plan: Plan, *, plan_run_id: str | None):
    """The plan's report from MLflow into `<plan dir>/report/` (and onto the plan run, if given).

    Returns `hwd_tune.reproduce.report.PlanReport`; cells without a finished run are shown as missing.
    """
    tracking_uri, experiment = plan_tracking(plan)
    return write_plan_report(
        plan_name=plan.name,
        cells=[tuple(cell) for cell in plan.cells()],
        tracking_uri=tracking_uri,
        experiment=experiment,
        output_dir=plan_dir(plan) / REPORT_FOLDER,
        paper_table=plan.paper,
        plan_run_id=plan_run_id,
        label_methods=plan.method_names(),
    )


def report_from_mlflow(plan: Plan, *, console: Console | None = None):
    """`hwd-tune report`: the report from what MLflow holds, into `<plan dir>/report/` and onto the
    plan run (issue 9: the report is logged to the plan's MLflow run); nothing is trained."""
    console = console or Console()
    tracking_uri, experiment = plan_tracking(plan)
    plan_run_id = tracking.find_run_id(tracking_uri, experiment, plan_run_key(plan))
    written = write_report(plan, plan_run_id=plan_run_id)
    print_report(written, console)
    return written


def print_summary(summary: ReproduceSummary, console: Console) -> None:
    """The cells' table (status, best val mIoU, train time), then the report."""
    table = Table(
        "dataset",
        "student",
        "method",
        "seed",
        "status",
        "best val_miou",
        "train s",
        "MLflow run",
        title=f"plan {summary.plan_name}",
    )
    for outcome in summary.outcomes:
        status = outcome.status + (f": {outcome.reason}" if outcome.reason else "")
        table.add_row(
            *map(str, outcome.cell),
            status,
            _shown(outcome.best_val_miou, ".2f"),
            _shown(outcome.train_seconds, ".0f"),
            outcome.run_id or "-",
        )
    console.print(table)
    if summary.report is not None:
        print_report(summary.report, console)
    else:
        console.print(f"[red]report not written[/red]: {summary.report_error}; retry with hwd-tune report")
    if summary.failed:
        console.print(
            f"[red]{len(summary.failed)} run(s) failed[/red]; run the same command again to retry "
            "them (finished runs are skipped, interrupted ones resume from their checkpoints)"
        )
    console.print(
        f"MLflow plan run {summary.plan_run_id}; open the UI with: mlflow ui --backend-store-uri "
        f"{tracking.redact_uri(summary.tracking_uri)} --host 127.0.0.1 --port 5000"
    )


def print_report(written: Any, console: Console) -> None:
    """The report's Markdown as plain text (no markup, lines not wrapped: it stays valid Markdown)."""
    console.print(written.text, markup=False, highlight=False, soft_wrap=True)
    console.print(f"report: {written.markdown_path}, {written.html_path}, {written.chart_path}")


def _shown(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)
