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
from typing import TYPE_CHECKING, Any, Literal

import optuna
import yaml
from ray import tune
from rich.console import Console
from rich.table import Table

from hwd_tune import tracking
from hwd_tune.storage import download_folder, join
from hwd_tune.sweep.config import SweepConfig, final_job_config, final_train_config
from hwd_tune.sweep.fidelity import RungCorrelation, noisy_rung_notes, sweep_rung_correlations
from hwd_tune.sweep.layout import (
    BEST_CONFIG_FILE,
    REPORT_FOLDER,
    SWEEP_TAG,
    TRIALS_FOLDER,
    sweep_dir,
    sweep_storage,
    trial_run_key,
)
from hwd_tune.sweep.restarts import TrialNotRestarted
from hwd_tune.sweep.searcher import absolute_storage_url, optuna_storage
from trainables.checkpointing import best_whole_checkpoint_in

if TYPE_CHECKING:  # final_stage builds on this module
    from hwd_tune.sweep.final_stage import FinalStageResult

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
    """A baseline run once at its defaults: what ran, its best val_miou, its MLflow run, or why it failed."""

    label: str  # the baseline's method
    params: dict[str, Any]
    val_miou: float | None
    run_id: str | None
    error: str | None = None


@dataclass(frozen=True)
class TunedBaselineResult:
    """A baseline tuned with its own search: its winning params and score, and its trials."""

    method: str
    sweep_name: str  # `<sweep>-<method>`: its Optuna study and folder
    best_params: dict[str, Any]
    best_score: float | None
    trials: list[TrialRow]


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
    parent_run_id: str
    tracking_uri: str
    best_config_path: Path | None
    optuna_storage: str
    experiment_path: str
    report_dir: Path
    notes: list[str] = field(default_factory=list)  # what could not be made (e.g. a plot)
    tuned_baselines: list[TunedBaselineResult] = field(default_factory=list)
    final_stage: FinalStageResult | None = None  # None: search.final.top_k is 0
    chosen_by: str = "the best search score"  # how best_params were chosen (the final stage: by mean)
    best_trial_checkpoint: Path | None = None  # the best trial's best whole checkpoint (its weights)
    tuning_split: str = ""  # one line: which images the trials were scored on (sweep.tuning_split)
    rung_correlations: list[RungCorrelation] = field(default_factory=list)  # one per ASHA rung
    mlflow_ui_link: str = ""  # the UI's runs table on this sweep's trials (`trials_view`)
    champion: str | None = None  # models:/student-<dataset>-<arch>/<version> of the final stage's winner

    def mlflow_ui_command(self) -> str:
        """How to open the MLflow UI on this sweep's store, bound to the local machine only."""
        return f"mlflow ui --backend-store-uri {tracking.redact_uri(self.tracking_uri)} --host 127.0.0.1 --port 5000"

    def mlflow_ui_hint(self) -> str:
        """The command that starts the UI (none for a tracking server), then the link that opens it
        on the trials' comparison."""
        if self.tracking_uri.startswith(("http://", "https://")) and self.mlflow_ui_link:
            return f"open {self.mlflow_ui_link}"
        link = f" and open {self.mlflow_ui_link}" if self.mlflow_ui_link else ""
        return f"{self.mlflow_ui_command()}{link}"


def trials_view(sweep: SweepConfig, tracking_uri: str) -> str:
    """Saves the MLflow UI view of the sweep's trials (one row each: run name, the searched params,
    val_miou, best first) on its experiment; returns its link on the tracking server, or for a
    local store on the address of `mlflow_ui_command`."""
    metrics = list(dict.fromkeys(["val_miou", sweep.search.metric]))
    fragment = tracking.save_runs_view(
        tracking_uri,
        sweep.train.tracking.experiment,
        key=re.sub(r"[^A-Za-z0-9_-]", "-", f"sweep-{sweep.name}"),
        name=f"sweep {sweep.name}: trials by {sweep.search.metric}",
        search_filter=f"tags.`{SWEEP_TAG}` = '{sweep.name}' and tags.`hwd.job` = 'trial'",
        params=list(sweep.search.space),
        metrics=metrics,
        order_by_metric=sweep.search.metric,
        ascending=sweep.search.mode == "min",
    )
    on_server = tracking_uri.startswith(("http://", "https://"))
    return tracking.ui_link(fragment, tracking.redact_uri(tracking_uri)) if on_server else tracking.ui_link(fragment)


def status_of(iterations: int, sweep: SweepConfig, failed: bool) -> TrialStatus:
    """completed when it reached the budget (max_iters, or ASHA's max_t), else stopped early."""
    if failed:
        return "failed"
    budget = min(sweep.train.schedule.max_iters, sweep.search.scheduler.max_t or math.inf)
    return "completed" if iterations >= budget else "stopped early"


def failure_reason(error: BaseException | str | None) -> str:
    """The innermost `SomeError: message` line of an error (Ray wraps worker errors), at most 500 chars."""
    refused = getattr(error, "cause", error)  # Ray wraps an error raised in a trial in a RayTaskError
    if isinstance(refused, TrialNotRestarted):  # the reason is the attempt that failed, not the refusal
        return failure_reason(refused.error)
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
    ranked = ranked_trials(trials, sweep.search.mode)
    best = ranked[0] if ranked else None
    finals = {row.trial_id: row.score for row in trials if row.status == "completed" and row.score is not None}
    rungs = sweep_rung_correlations(sweep, experiment_path, finals)
    summary = SweepSummary(
        name=sweep.name,
        metric=sweep.search.metric,
        best_params=dict(best.params) if best else {},
        best_val_miou=best.val_miou if best else None,
        best_score=best.score if best else None,
        trials=trials,
        baselines=[],
        parent_run_id=parent_run_id,
        tracking_uri=tracking_uri,
        best_config_path=None,
        optuna_storage=absolute_storage_url(sweep.search.storage),
        experiment_path=experiment_path,
        report_dir=sweep_dir(sweep) / REPORT_FOLDER,
        notes=noisy_rung_notes(rungs),
        rung_correlations=rungs,
    )
    if best is not None:
        run_folder = f"trial-{best.trial_id}"  # on remote storage: copied next to the report
        local = download_folder(
            join(sweep_storage(sweep), TRIALS_FOLDER, run_folder), sweep_dir(sweep) / TRIALS_FOLDER / run_folder
        )
        checkpoint, skipped = best_whole_checkpoint_in(local)
        summary.best_trial_checkpoint = checkpoint
        summary.notes += [f"best trial {best.trial_id}: {note}; its best whole checkpoint is used" for note in skipped]
        if checkpoint is None:
            summary.notes.append(f"best trial {best.trial_id}: no whole checkpoint left (its weights cannot be used)")
    return summary


def ranked_trials(trials: list[TrialRow], mode: str) -> list[TrialRow]:
    """The scored trials that did not fail, best first by the search metric."""
    sign = 1.0 if mode == "max" else -1.0
    scored = [row for row in trials if row.score is not None and row.status != "failed"]
    return sorted(scored, key=lambda row: -sign * row.score)


def adopt_final_winner(sweep: SweepConfig, summary: SweepSummary) -> None:
    """Makes the final stage's winner the sweep's answer: its params, and its mean over seeds."""
    final = summary.final_stage
    if final is None or final.winner is None:
        return
    winner = final.result(final.winner)
    summary.best_params = dict(winner.candidate.params)
    summary.best_val_miou = summary.best_score = winner.stats.mean
    summary.chosen_by = f"the best mean val_miou over seeds {sorted(winner.values)} in the final stage"


def write_best_config(sweep: SweepConfig, summary: SweepSummary) -> Path | None:
    """best_config.yaml: the training job of the best params, ready for `hwd-tune distill`: the
    trials' length, on the whole training split (no image held out), scored on val."""
    if not summary.best_params:
        return None
    final_winner = summary.final_stage is not None and summary.final_stage.winner is not None
    if final_winner:  # the final stage's length and training
        config = final_job_config(sweep, sweep.train.method.name, summary.best_params, seed=None)
    else:
        config = final_train_config(sweep, summary.best_params, max_iters=sweep.train.schedule.max_iters)
    path = sweep_dir(sweep) / BEST_CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    shown = ", ".join(
        f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
        for name, value in summary.best_params.items()
    )
    tuned_on = "the held-out training images" if sweep.search.tune_on == "holdout" else "val"
    scored = "on val, the mean over the final stage's seeds" if final_winner else f"on {tuned_on}"
    header = (
        f"# Best configuration of sweep {sweep.name!r}: {shown}; {sweep.search.metric} "
        f"{summary.best_score:.2f} {scored}\n"
        f"# Chosen by {summary.chosen_by}.\n"
        f"# It trains on the whole training split (no image held out) and reports on val.\n"
        f"# Train it with: hwd-tune distill {path}\n"
    )
    path.write_text(header + yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return path


def write_optuna_plots(sweep: SweepConfig, folder: Path) -> list[str]:
    """Optimisation history, parameter importances, the parallel coordinates of the params against
    the metric, and the tau x beta, mu x beta contours as PNGs.

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
        plots["parallel_coordinate"] = lambda: optuna_plots.plot_parallel_coordinate(
            study, params=list(sweep.search.space), target_name=sweep.search.metric
        )
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
    if summary.final_stage is not None:
        write_final_stage_table(summary.final_stage, folder / "final_stage.csv")
        summary.notes += plot_final_stage(summary.final_stage, folder / "plots" / "final_stage.png")
    parent.log_artifact_dir(folder, "sweep")
    metrics = {f"best_{summary.metric}": summary.best_score} if summary.best_score is not None else {}
    metrics.update(
        {f"baseline_{job.label}_val_miou": job.val_miou for job in summary.baselines if job.val_miou is not None}
    )
    metrics["trials_completed"] = sum(row.status == "completed" for row in summary.trials)
    metrics["trials_stopped_early"] = sum(row.status == "stopped early" for row in summary.trials)
    metrics["trials_failed"] = sum(row.status == "failed" for row in summary.trials)
    for tuned in summary.tuned_baselines:
        if tuned.best_score is not None:
            metrics[f"tuned_baseline_{tuned.method}_best_{summary.metric}"] = tuned.best_score
    if summary.final_stage is not None:
        metrics.update(final_stage_metrics(summary.final_stage))
    for rung in summary.rung_correlations:
        if rung.rho is not None:
            metrics[f"rung_spearman_{rung.iteration}"] = rung.rho
    parent.log_metrics(metrics, step=0)
    parent.set_tags({f"hwd.best.{name}": value for name, value in summary.best_params.items()})


def _summary_record(summary: SweepSummary) -> dict[str, Any]:
    record = dataclasses.asdict(summary)
    record["mlflow_ui"] = summary.mlflow_ui_hint()
    record["tracking_uri"] = tracking.redact_uri(summary.tracking_uri)
    record["optuna_storage"] = tracking.redact_uri(summary.optuna_storage)
    if summary.final_stage is not None:
        record["final_stage_table"] = final_stage_rows(summary.final_stage)
        record["final_verdict"] = final_verdict(summary.final_stage)
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
    if summary.tuning_split:
        console.print(summary.tuning_split)
    if not summary.best_params:
        console.print("[red]no trial reported a result[/red]")
    else:
        shown = ", ".join(
            f"{name} = {value:.4g}" if isinstance(value, float) else f"{name} = {value}"
            for name, value in summary.best_params.items()
        )
        console.print(f"[bold green]best[/bold green]: {shown}: val_miou {_shown(summary.best_val_miou)}")
    if summary.champion:
        console.print(f"champion student: {summary.champion} (alias @champion; hwd-tune export / predict take it)")
    for job in summary.baselines:
        outcome = f"val_miou {_shown(job.val_miou)}" if job.error is None else f"[red]failed[/red]: {job.error}"
        console.print(f"  {job.label} {job.params or ''}: {outcome}")
    for tuned in summary.tuned_baselines:
        console.print(
            f"  tuned baseline {tuned.method}: best {_params_text(tuned.best_params)}: "
            f"{summary.metric} {_shown(tuned.best_score)} over {len(tuned.trials)} trials"
        )
    if summary.final_stage is not None:
        print_final_stage(summary.final_stage, console)
    for rung in summary.rung_correlations:
        console.print(f"ASHA rung at iteration {rung.iteration}: {rung.describe(summary.metric)}")
    if summary.best_config_path:
        console.print(f"best config: {summary.best_config_path} (hwd-tune distill {summary.best_config_path})")
    if summary.best_trial_checkpoint:
        console.print(f"best trial's weights: {summary.best_trial_checkpoint}")
    for note in summary.notes:
        console.print(f"[yellow]note[/yellow]: {note}")
    console.print(f"MLflow parent run {summary.parent_run_id}; the trials side by side: {summary.mlflow_ui_hint()}")
    console.print(
        f"Optuna study {summary.name!r} in {tracking.redact_uri(summary.optuna_storage)} "
        f"(optuna-dashboard {tracking.redact_uri(summary.optuna_storage)})"
    )


def _shown(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def _params_text(params: dict[str, Any]) -> str:
    return (
        ", ".join(
            f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}" for name, value in params.items()
        )
        or "defaults"
    )


# --------------------------------------------------------------------------------------------
# The final stage: table, verdict, metrics, chart
# --------------------------------------------------------------------------------------------
def final_stage_rows(final: FinalStageResult) -> list[dict[str, Any]]:
    """One row per candidate: label, role, params, n, mean, std, 95 % interval, and the per-seed values."""
    rows = []
    for result in final.results:
        stats = result.stats
        rows.append(
            {
                "label": result.candidate.label,
                "role": result.candidate.role,
                "method": result.candidate.method,
                "params": _params_text(result.candidate.params),
                "n": stats.n if stats else 0,
                "mean": stats.mean if stats else math.nan,
                "std": stats.std if stats else math.nan,
                "ci_low": stats.ci_low if stats else math.nan,
                "ci_high": stats.ci_high if stats else math.nan,
                **{f"seed_{seed}": result.values.get(seed, math.nan) for seed in final.seeds},
            }
        )
    return rows


def final_verdict(final: FinalStageResult) -> list[str]:
    """The winner against Table I and each baseline, in words: the paired difference, its 95 %
    interval and p-value, and whether it is beyond the noise the seeds measured."""
    if final.winner is None:
        return ["the final stage has no winner: no run of the tuned method finished"]
    lines = []
    for label, difference in final.comparisons.items():
        if difference.n < 2 or math.isnan(difference.p_value):
            judgement = "cannot be told from noise (fewer than two paired seeds, or identical results)"
        elif difference.beyond_noise():
            judgement = "better, beyond the seed noise" if difference.mean > 0 else "worse, beyond the seed noise"
        else:
            judgement = "not distinguishable from the seed noise"
        lines.append(
            f"{final.winner} vs {label}: {difference.mean:+.2f} mIoU (95 % CI {difference.ci_low:+.2f} to "
            f"{difference.ci_high:+.2f}, paired t-test p = {difference.p_value:.3g}, {difference.n} seeds): {judgement}"
        )
    return lines


def final_stage_metrics(final: FinalStageResult) -> dict[str, float]:
    """Parent-run metrics: each candidate's mean, std and interval; the winner's paired differences."""
    metrics: dict[str, float] = {}
    for row in final_stage_rows(final):
        for key in ("mean", "std", "ci_low", "ci_high"):
            if not math.isnan(row[key]):
                metrics[f"final_{row['label']}_{key}"] = row[key]
    for label, difference in final.comparisons.items():
        metrics[f"final_winner_minus_{label}"] = difference.mean
        if not math.isnan(difference.p_value):
            metrics[f"final_winner_vs_{label}_p_value"] = difference.p_value
    return metrics


def write_final_stage_table(final: FinalStageResult, path: Path) -> None:
    """final_stage.csv: one row per candidate (see `final_stage_rows`), values as Python reprs."""
    import csv

    rows = final_stage_rows(final)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["label"])
        writer.writeheader()
        writer.writerows(rows)


def plot_final_stage(final: FinalStageResult, path: Path) -> list[str]:
    """Each candidate's mean val_miou with its 95 % interval as error bars, and every seed's value."""
    from matplotlib.figure import Figure  # no pyplot: no global state

    rows = [row for row in final_stage_rows(final) if row["n"]]
    if not rows:
        return ["final-stage chart: no finished run to draw"]
    figure = Figure(figsize=(max(4.0, 1.2 * len(rows)), 3.5), dpi=100)
    axes = figure.subplots()
    positions = range(len(rows))
    means = [row["mean"] for row in rows]
    errors = [
        [0.0 if math.isnan(row["ci_low"]) else row["mean"] - row["ci_low"] for row in rows],
        [0.0 if math.isnan(row["ci_high"]) else row["ci_high"] - row["mean"] for row in rows],
    ]
    colours = [
        "tab:green" if row["label"] == final.winner else "tab:blue" if row["role"] != "baseline" else "tab:grey"
        for row in rows
    ]
    axes.bar(positions, means, yerr=errors, capsize=4, color=colours)
    for position, row in zip(positions, rows):
        seeds = [value for key, value in row.items() if key.startswith("seed_") and not math.isnan(value)]
        axes.scatter([position] * len(seeds), seeds, color="black", s=10, zorder=3)
    axes.set_xticks(list(positions), [row["label"] for row in rows])
    axes.set_ylabel("val mIoU (%)")
    axes.set_title(f"Final stage: mean and 95 % interval over seeds {final.seeds}")
    low = min(min(row["ci_low"] if not math.isnan(row["ci_low"]) else row["mean"] for row in rows), min(means))
    axes.set_ylim(bottom=max(0.0, low - 5.0))
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return []


def print_final_stage(final: FinalStageResult, console: Console) -> None:
    """The final-stage table (mean, std, 95 % interval per configuration) and the verdict."""
    table = Table(
        "configuration",
        "params",
        "seeds",
        "mean",
        "std",
        "95 % interval",
        title=f"final stage: every configuration retrained with seeds {final.seeds}",
    )
    for row in final_stage_rows(final):
        interval = "-" if math.isnan(row["ci_low"]) else f"{row['ci_low']:.2f} to {row['ci_high']:.2f}"
        label = f"{row['label']} (winner)" if row["label"] == final.winner else row["label"]
        table.add_row(label, row["params"], str(row["n"]), _shown(row["mean"]), _shown(row["std"]), interval)
    console.print(table)
    for result in final.results:
        for seed, error in result.errors.items():
            console.print(f"  [red]{result.candidate.label} seed {seed} failed[/red]: {error}")
    for line in final_verdict(final):
        console.print(f"  {line}")
