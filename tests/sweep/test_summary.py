"""The summary without Ray trials: the failure reason of a wrapped error, a trial's status by
budget, and the rung correlations' way into the summary, its report, the parent run and the printout."""

from __future__ import annotations

import dataclasses

from hwd_tune.sweep import summary
from tests.sweep.helpers import tiny_sweep


def test_failure_reason_is_the_innermost_error_line():
    wrapped = (
        "ray.train.WorkerGroupError: Training failed due to worker errors:\n[Rank 0 Error Snippet]:\n"
        'Traceback (most recent call last):\n  File "loop.py", line 3\n'
        "RuntimeError: failing on purpose at iteration 2 (loop_config fail_at_iteration test hook)\n"
    )
    assert summary.failure_reason(wrapped) == (
        "RuntimeError: failing on purpose at iteration 2 (loop_config fail_at_iteration test hook)"
    )
    assert summary.failure_reason("no error class here\nsecond") == "no error class here"
    assert len(summary.failure_reason("ValueError: " + "x" * 2000)) == 500


def test_trial_status_counts_the_budget_in_iterations(tmp_path):
    sweep = tiny_sweep(tmp_path, "teacher.pt")  # max_iters 8 = ASHA max_t
    assert summary.status_of(8, sweep, failed=False) == "completed"
    assert summary.status_of(4, sweep, failed=False) == "stopped early"
    assert summary.status_of(8, sweep, failed=True) == "failed"


def best_summary(sweep, tmp_path, **fields) -> summary.SweepSummary:
    """A summary whose best trial is the paper's point with val_miou 42.5 (nothing else ran)."""
    return summary.SweepSummary(
        name=sweep.name,
        metric="val_miou",
        best_params={"tau": 2.0, "mu": 0.5, "beta": 0.25},
        best_val_miou=42.5,
        best_score=42.5,
        trials=[],
        baselines=[],
        parent_run_id="parent",
        tracking_uri="sqlite:///mlflow.db",
        best_config_path=None,
        optuna_storage="sqlite:///optuna.db",
        experiment_path=str(tmp_path / "tune"),
        report_dir=tmp_path / "report",
        **fields,
    )


def test_best_config_trains_on_every_image_and_reports_val(tmp_path):
    from hwd_tune.config import HoldoutConfig, load_train_config

    sweep = tiny_sweep(tmp_path, "teacher.pt", final={"top_k": 1, "max_iters": 6})
    path = summary.write_best_config(sweep, best_summary(sweep, tmp_path))
    header = path.read_text().splitlines()[:4]
    assert header == [
        "# Best configuration of sweep 'tiny': tau=2, mu=0.5, beta=0.25; "
        "val_miou 42.50 on the held-out training images",
        "# Chosen by the best search score.",
        "# It trains on the whole training split (no image held out) and reports on val.",
        f"# Train it with: hwd-tune distill {path}",
    ]
    config = load_train_config(path)
    assert config.data.holdout == HoldoutConfig()  # every training image, validated on val
    assert config.schedule.max_iters == 8  # the trials' length, not the final stage's 6
    assert (config.method.params["tau"], config.method.params["beta"]) == (2.0, 0.25)


def test_the_summary_says_what_the_trials_were_scored_on(tmp_path):
    from rich.console import Console

    sweep = tiny_sweep(tmp_path, "teacher.pt")
    console = Console(record=True, width=200)
    summary.print_summary(best_summary(sweep, tmp_path, tuning_split="tuned on the 6 held out"), console)
    assert "tuned on the 6 held out\n" in console.export_text()


class _RecordingParent:
    """Stands in for the parent run's RunLogger: keeps what write_report logs."""

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}
        self.tags: dict[str, str] = {}

    def log_metrics(self, metrics, step: int) -> None:
        self.metrics.update(metrics)

    def set_tags(self, tags) -> None:
        self.tags.update(tags)

    def log_artifact_dir(self, local_dir, artifact_path: str) -> None:
        pass


def test_rung_correlations_reach_the_summary_the_report_the_parent_run_and_the_printout(tmp_path, monkeypatch):
    import json

    import optuna
    from rich.console import Console

    from hwd_tune.sweep.fidelity import RungCorrelation
    from hwd_tune.sweep.searcher import optuna_storage

    sweep = tiny_sweep(tmp_path, "teacher.pt")
    optuna.create_study(study_name=sweep.name, storage=optuna_storage(sweep), direction="maximize")
    rows = [
        summary.TrialRow(f"t{index}", {"tau": 4.0, "mu": 0.0, "beta": 0.1}, score, score, iterations, status)
        for index, (score, iterations, status) in enumerate(
            [(30.0, 8, "completed"), (20.0, 4, "stopped early"), (25.0, 8, "completed"), (None, 2, "failed")]
        )
    ]
    rungs = [RungCorrelation(2, 5, 0.8), RungCorrelation(4, 5, 0.25)]
    asked = {}

    def hand_made_rungs(sweep_, experiment_path, finals):
        asked.update(finals)
        return rungs

    monkeypatch.setattr(summary, "sweep_rung_correlations", hand_made_rungs)
    result = summary.summarise(sweep, rows, "parent", "sqlite:///mlflow.db", str(tmp_path / "tune"))
    assert asked == {"t0": 30.0, "t2": 25.0}  # the completed trials' scores: what the sweep ranks by
    assert result.rung_correlations == rungs
    noise = (
        "early stopping at iteration 4 is deciding on noise (Spearman ρ = 0.25 over 5 completed trials): "
        "raise grace_period"
    )
    assert [note for note in result.notes if note.startswith("early stopping")] == [noise]  # the rung at 2 is trusted

    parent = _RecordingParent()
    summary.write_report(sweep, result, parent)
    record = json.loads((result.report_dir / "summary.json").read_text())
    assert record["rung_correlations"] == [{"iteration": 2, "n": 5, "rho": 0.8}, {"iteration": 4, "n": 5, "rho": 0.25}]
    assert (parent.metrics["rung_spearman_2"], parent.metrics["rung_spearman_4"]) == (0.8, 0.25)

    console = Console(record=True, width=300)
    summary.print_summary(result, console)
    printed = console.export_text()
    assert (
        "ASHA rung at iteration 2: Spearman ρ = 0.80 between val_miou at the rung and the trial's final score, "
        "over 5 completed trials"
    ) in printed
    assert f"note: {noise}" in printed


def test_the_ui_hint_starts_a_local_ui_and_opens_the_trials_view(tmp_path):
    sweep = tiny_sweep(tmp_path, "teacher.pt")
    link = "http://127.0.0.1:5000/#/experiments/3/runs?viewStateShareKey=sweep-tiny"
    local = best_summary(sweep, tmp_path, mlflow_ui_link=link)
    assert local.mlflow_ui_hint() == (
        f"mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000 and open {link}"
    )
    served = dataclasses.replace(local, tracking_uri="http://mlflow:5000", mlflow_ui_link="http://mlflow:5000/#/x")
    assert served.mlflow_ui_hint() == "open http://mlflow:5000/#/x"
