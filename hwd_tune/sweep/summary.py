"""What a sweep returns and leaves behind: one row per trial, the best params, `best_config.yaml`,
Optuna's plots, how far ASHA's rungs agree with the end, the report folder logged on the parent
run, and the table printed at the end."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml
from ray import tune
from rich.console import Console
from rich.table import Table

from hwd_tune import tracking
from hwd_tune.sweep.config import SweepConfig, trial_train_config
from hwd_tune.sweep.fidelity import RungCorrelation, noisy_rung_notes, sweep_rung_correlations
from hwd_tune.sweep.layout import BEST_CONFIG_FILE, REPORT_FOLDER, sweep_dir, trial_run_key
from hwd_tune.sweep.searcher import absolute_storage_url, optuna_storage

TrialStatus = Literal["completed", "stopped early", "failed", "unfinished"]


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
    rung_correlations: list[RungCorrelation] = field(default_factory=list)  # one per ASHA rung

    def mlflow_ui_command(self) -> str:
        """How to open the MLflow UI on this sweep's store, bound to the local machine only."""
        return f"mlflow ui --backend-store-uri {tracking.redact_uri(self.tracking_uri)} --host 127.0.0.1 --port 5000"


def status_of(iterations: int, sweep: SweepConfig, failed: bool) -> TrialStatus:
    """completed when it reached the budget (max_iters, or ASHA's max_t), else stopped early."""
    if failed:
        return "failed"
    budget = min(sweep.train.schedule.max_iters, sweep.search.scheduler.max_t or math.inf)
    return "completed" if iterations >= budget else "stopped early"


def failure_reason(error: BaseException | str | None) -> str:
    """The innermost `SomeError: message` line of an error (Ray wraps worker errors), at most 500 chars."""
    text = str(error) if error is not None else "unknown error"
    causes = re.findall(r"^\s*((?:[\w.]+\.)?\w*(?:Error|Exception)\b:.*)$", text, flags=re.MULTILINE)
    reason = causes[-1].strip() if causes else (text.strip().splitlines() or ["unknown error"])[0]
    return reason if len(reason) <= 500 else reason[:497] + "..."


def trial_error(trial) -> BaseException | str | None:
    try:
        return trial.get_pickled_error() or trial.get_error()
    except Exception:  # noqa: BLE001 - an unreadable error file must not stop the sweep
        return None


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
            status_of(int(last.get("iteration", 0)), sweep, failed)
            if trial.status in ("TERMINATED", "ERROR")
            else "unfinished"
        )
        rows.append(
            TrialRow(
                trial_id=trial.trial_id,
                params={name: _plain(trial.config.get(name)) for name in sweep.search.space},
                val_miou=_column_best(history, "val_miou", "max"),
                score=_column_best(history, sweep.search.metric, sweep.search.mode),
                iterations=int(last.get("iteration", 0)),
                status=status,
                reason=failure_reason(trial_error(trial)) if failed else None,
                run_id=tracking.find_run_id(
                    tracking_uri, sweep.train.tracking.experiment, trial_run_key(parent_key, trial.trial_id)
                ),
            )
        )
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


def summarise(
    sweep: SweepConfig, trials: list[TrialRow], parent_run_id: str, tracking_uri: str, experiment_path: str
) -> SweepSummary:
    """The best trial by search.metric (failed and unscored trials excluded) and the sweep's places."""
    scored = [row for row in trials if row.score is not None and row.status != "failed"]
    sign = 1.0 if sweep.search.mode == "max" else -1.0
    best = max(scored, key=lambda row: sign * row.score) if scored else None
    finals = {row.trial_id: row.score for row in trials if row.status == "completed" and row.score is not None}
    rungs = sweep_rung_correlations(sweep, experiment_path, finals)
    return SweepSummary(
        name=sweep.name,
        metric=sweep.search.metric,
        best_params=dict(best.params) if best else {},
        best_val_miou=best.val_miou if best else None,
        best_score=best.score if best else None,
        trials=trials,
        baselines=[],
        final=[],
        parent_run_id=parent_run_id,
        tracking_uri=tracking_uri,
        best_config_path=None,
        optuna_storage=absolute_storage_url(sweep.search.storage),
        experiment_path=experiment_path,
        report_dir=sweep_dir(sweep) / REPORT_FOLDER,
        notes=noisy_rung_notes(rungs),
        rung_correlations=rungs,
    )


def write_best_config(sweep: SweepConfig, summary: SweepSummary) -> Path | None:
    """best_config.yaml: the training job of the best params, ready for `hwd-tune distill`."""
    if not summary.best_params:
        return None
    config = trial_train_config(sweep, summary.best_params)
    path = sweep_dir(sweep) / BEST_CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    shown = ", ".join(
        f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
        for name, value in summary.best_params.items()
    )
    header = (
        f"# Best configuration of sweep {sweep.name!r}: {shown}; {sweep.search.metric} "
        f"{summary.best_score:.2f}\n# Train it with: hwd-tune distill {path}\n"
    )
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
    plots: dict[str, Callable[[], Any]] = {
        "optimization_history": lambda: optuna_plots.plot_optimization_history(study)
    }
    notes = []
    if len(completed) >= 2:
        plots["param_importances"] = lambda: optuna_plots.plot_param_importances(study)
        for first, second in (("tau", "beta"), ("mu", "beta")):
            if first in sweep.search.space and second in sweep.search.space:
                plots[f"contour_{first}_{second}"] = lambda pair=(first, second): optuna_plots.plot_contour(
                    study, params=list(pair)
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


def write_report(sweep: SweepConfig, summary: SweepSummary, parent: tracking.RunLogger) -> None:
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
    metrics.update(
        {f"baseline_{job.label}_val_miou": job.val_miou for job in summary.baselines if job.val_miou is not None}
    )
    metrics["trials_completed"] = sum(row.status == "completed" for row in summary.trials)
    metrics["trials_stopped_early"] = sum(row.status == "stopped early" for row in summary.trials)
    metrics["trials_failed"] = sum(row.status == "failed" for row in summary.trials)
    for rung in summary.rung_correlations:
        if rung.rho is not None:
            metrics[f"rung_spearman_{rung.iteration}"] = rung.rho
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
    table = Table(
        "trial",
        *summary.best_params.keys() or ("params",),
        "val_miou",
        "iterations",
        "status",
        title=f"sweep {summary.name}",
    )
    for row in summary.trials:
        values = [
            f"{row.params[name]:.4g}" if isinstance(row.params.get(name), float) else str(row.params.get(name))
            for name in (summary.best_params or {"params": None})
        ]
        status = row.status + (f": {row.reason}" if row.reason else "")
        table.add_row(row.trial_id, *values, _shown(row.val_miou), str(row.iterations), status)
    console.print(table)
    if not summary.best_params:
        console.print("[red]no trial reported a result[/red]")
    else:
        shown = ", ".join(
            f"{name} = {value:.4g}" if isinstance(value, float) else f"{name} = {value}"
            for name, value in summary.best_params.items()
        )
        console.print(f"[bold green]best[/bold green]: {shown}: val_miou {_shown(summary.best_val_miou)}")
    for job in summary.baselines + summary.final:
        outcome = f"val_miou {_shown(job.val_miou)}" if job.error is None else f"[red]failed[/red]: {job.error}"
        console.print(f"  {job.label} {job.params or ''}: {outcome}")
    for rung in summary.rung_correlations:
        console.print(f"ASHA rung at iteration {rung.iteration}: {rung.describe(summary.metric)}")
    if summary.best_config_path:
        console.print(f"best config: {summary.best_config_path} (hwd-tune distill {summary.best_config_path})")
    for note in summary.notes:
        console.print(f"[yellow]note[/yellow]: {note}")
    console.print(f"MLflow parent run {summary.parent_run_id}; open the UI with: {summary.mlflow_ui_command()}")
    console.print(
        f"Optuna study {summary.name!r} in {tracking.redact_uri(summary.optuna_storage)} "
        f"(optuna-dashboard {tracking.redact_uri(summary.optuna_storage)})"
    )


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
