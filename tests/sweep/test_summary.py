"""The summary without Ray trials: the failure reason of a wrapped error, a trial's status by
budget, and the rung correlations' way into the summary, its report, the parent run and the printout."""

from __future__ import annotations

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
