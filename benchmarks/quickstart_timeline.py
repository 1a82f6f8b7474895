"""Where a finished quickstart's time went, read back from its MLflow store: one row per run (teacher,
trials, final-stage runs) with its start-up (run created -> first iteration), training and tail, and
the phases (set-up, teacher, search, final stage, report) of the whole command.

Run after `make quickstart` (or any sweep), on a quiet machine for figures worth quoting:
    python benchmarks/quickstart_timeline.py [--tracking-uri sqlite:///outputs/mlflow/mlflow.db]
        [--experiment hwd-tune] [--total-seconds S]   # S: the command's wall time, from `time`

Start-up is estimated from the first logged training step: its time after the run was created,
less that many iterations at the run's own speed (measured between its first and last logged step).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient

STEP_METRIC = "loss/total"  # logged every log_interval by rank 0, from the first iteration on


@dataclass
class RunTimes:
    name: str
    job: str  # teacher, sweep, trial, final, ...
    start: float  # seconds from the first run's start
    end: float
    first_step: int
    first_log: float
    seconds_per_iteration: float

    @property
    def startup(self) -> float:
        """Run created -> its first iteration began (process starts, imports, data and models)."""
        return self.first_log - self.start - self.first_step * self.seconds_per_iteration

    @property
    def training(self) -> float:
        return self.end - self.start - self.startup


def run_times(client: MlflowClient, experiment: str) -> list[RunTimes]:
    """Every run of `experiment`, oldest first, with its timings (runs without training steps: startup 0)."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"no experiment {experiment!r} in this store: pass --experiment")
    runs = sorted(client.search_runs([found.experiment_id], max_results=10_000), key=lambda run: run.info.start_time)
    origin = runs[0].info.start_time / 1000
    rows = []
    for run in runs:
        start, end = run.info.start_time / 1000 - origin, (run.info.end_time or run.info.start_time) / 1000 - origin
        history = sorted(client.get_metric_history(run.info.run_id, STEP_METRIC), key=lambda metric: metric.step)
        first_step, first_log, pace = 0, start, 0.0
        if history:
            first, last = history[0], history[-1]
            first_step, first_log = first.step, first.timestamp / 1000 - origin
            if last.step > first.step:
                pace = (last.timestamp - first.timestamp) / 1000 / (last.step - first.step)
        job = run.data.tags.get("hwd.job", "?")
        rows.append(RunTimes(run.info.run_name, job, start, end, first_step, first_log, pace))
    return rows


def phases(rows: list[RunTimes], total: float | None) -> list[tuple[str, float]]:
    """(phase, seconds): the spans between the first and last run of each kind, and the gaps around them."""
    spans = {}
    for job in ("teacher", "trial", "final"):
        of_job = [row for row in rows if row.job == job]
        if of_job:
            spans[job] = (min(row.start for row in of_job), max(row.end for row in of_job))
    table = []
    last_end = 0.0
    names = {"teacher": "teacher (1 run)", "trial": "search (trials)", "final": "final stage (seeded retraining)"}
    for job, (start, end) in spans.items():
        if start > last_end:
            table.append(
                (f"before the {names[job].split(' (')[0]}: bookkeeping, new Tuner, first actors", start - last_end)
            )
        table.append((names[job], end - start))
        last_end = end
    finish = max(row.end for row in rows)
    table.append(("after the last run: report, plots", finish - last_end))
    if total is not None:
        table.insert(0, ("outside the runs: imports, checks, Ray start; printing, Ray stop", total - finish))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=f"sqlite:///{Path('outputs/mlflow/mlflow.db').resolve()}")
    parser.add_argument("--experiment", default="hwd-tune")  # tracking.experiment's default
    parser.add_argument("--total-seconds", type=float, default=None, help="the command's wall time (from `time`)")
    args = parser.parse_args()
    rows = run_times(MlflowClient(tracking_uri=args.tracking_uri), args.experiment)

    print(f"{'run':44} {'job':8} {'start':>6} {'end':>6} {'start-up':>8} {'train':>6}")
    for row in rows:
        if row.job == "sweep":
            continue  # the parent run spans the whole sweep
        print(f"{row.name[-44:]:44} {row.job:8} {row.start:6.1f} {row.end:6.1f} {row.startup:8.1f} {row.training:6.1f}")
    trained = [row for row in rows if row.job != "sweep"]
    print(
        f"\nruns: {len(trained)}; start-up summed over runs {sum(row.startup for row in trained):.0f} s, "
        f"training {sum(row.training for row in trained):.0f} s (runs overlap: these add up to more than the wall)"
    )
    print()
    for phase, seconds in phases(rows, args.total_seconds):
        print(f"{phase:60} {seconds:6.1f} s")


if __name__ == "__main__":
    main()
