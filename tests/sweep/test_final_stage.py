"""The final stage: which configurations it retrains, how it judges the winner (without Ray), and a
real sweep with a tuned baseline whose driver is killed in the final stage and resumed (slow)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from hwd_tune.sweep import service
from hwd_tune.sweep.final_stage import Candidate, CandidateResult, candidates, judge
from hwd_tune.sweep.summary import TrialRow, final_verdict
from tests.sweep.helpers import PAPER_POINT, kill_driver_once, tiny_sweep


def row(trial_id: str, score: float | None, status: str = "completed", **params) -> TrialRow:
    return TrialRow(trial_id, params, score, score, 8, status)


def test_candidates_are_the_top_k_then_table_i_then_the_baselines(tmp_path):
    sweep = tiny_sweep(
        tmp_path,
        "teacher.pt",
        baselines=["none", {"name": "cwd", "space": {"tau": {"type": "uniform", "low": 1.0, "high": 8.0}}}],
        final={"top_k": 2, "seeds": [0, 1]},
    )
    trials = [
        row("a", 40.0, tau=1.0),
        row("b", 55.0, tau=2.0),
        row("c", None, tau=3.0),
        row("d", 60.0, "failed", tau=4.0),
        row("e", 50.0, "stopped early", tau=5.0),
    ]
    chosen = candidates(sweep, trials, {"cwd": {"tau": 2.5}})
    assert [(c.label, c.method, c.params, c.role) for c in chosen] == [
        ("top-1", "hwd", {"tau": 2.0}, "tuned"),
        ("top-2", "hwd", {"tau": 5.0}, "tuned"),  # stopped early but scored: ranked by its score
        ("table_i", "hwd", PAPER_POINT, "table_i"),
        ("none", "none", {}, "baseline"),
        ("cwd", "cwd", {"tau": 2.5}, "baseline"),  # the tuned baseline's winner
    ]
    assert [c.label for c in candidates(sweep, trials, {})] == ["top-1", "top-2", "table_i", "none"]  # no cwd winner
    only = tiny_sweep(tmp_path, "teacher.pt", final={"top_k": 1, "include": []})
    assert [c.label for c in candidates(only, trials, {})] == ["top-1"]


def result(label: str, role: str, values: dict[int, float]) -> CandidateResult:
    return CandidateResult(Candidate(label, "hwd" if role != "baseline" else label, {}, role), dict(values))


def test_the_winner_is_the_tuned_configuration_with_the_best_mean_compared_on_paired_seeds():
    top1 = result("top-1", "tuned", {0: 50.0, 1: 49.0, 2: 51.0})  # mean 50.0
    top2 = result("top-2", "tuned", {0: 52.0, 1: 50.0, 2: 50.5})  # mean 50.83: the winner, though top-1 led the search
    table_i = result("table_i", "table_i", {0: 49.0, 1: 48.5, 2: 50.0})
    cwd = result("cwd", "baseline", {0: 54.0, 1: 52.5, 2: 53.0})  # better, but a baseline never wins
    none = result("none", "baseline", {1: 30.0})  # one seed in common only
    final = judge([top1, top2, table_i, cwd, none], [0, 1, 2], "max")
    assert final.winner == "top-2" and set(final.comparisons) == {"table_i", "cwd", "none"}
    a, b = [52.0, 50.0, 50.5], [49.0, 48.5, 50.0]
    assert final.comparisons["table_i"].mean == pytest.approx(np.mean(np.subtract(a, b)))
    assert final.comparisons["table_i"].p_value == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert final.comparisons["cwd"].mean < 0 and final.comparisons["none"].n == 1
    verdict = final_verdict(final)
    assert verdict[0].startswith("top-2 vs table_i: +1.67 mIoU (95 % CI")
    assert "worse, beyond the seed noise" in verdict[1]  # -2.33 +- 0.29 on 3 seeds: p = 0.005
    assert "cannot be told from noise" in verdict[2]
    assert judge([top1, table_i], [0, 1, 2], "min").winner == "table_i"  # lower is better then
    assert judge([cwd], [0, 1, 2], "max").winner is None


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """A tiny teacher's weights (random: the test checks bookkeeping and statistics, not accuracy)."""
    import torch

    from hwd_tune.config import ModelConfig
    from tests.trainables.helpers import TINY_TEACHER
    from trainables.loop import model_from_config

    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    torch.save(model_from_config(ModelConfig.model_validate(TINY_TEACHER), 4).state_dict(), path)
    return str(path)


def _finished_final_runs(tracking_uri: str) -> dict[str, list]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("tests")
    if experiment is None:
        return {}
    runs = client.search_runs([experiment.experiment_id], "tags.`hwd.job` = 'final'")
    return {
        run.info.run_id: [m.step for m in client.get_metric_history(run.info.run_id, "loss/total")]
        for run in runs
        if run.info.status == "FINISHED"
    }


@pytest.mark.slow
def test_a_final_stage_with_a_tuned_baseline_resumes_after_a_kill_and_reports_seed_statistics(
    ray_local, tmp_path, teacher_file
):
    import optuna
    from mlflow import MlflowClient

    sweep = tiny_sweep(
        tmp_path,
        teacher_file,
        num_samples=2,
        scheduler={"type": "none"},
        baselines=[{"name": "cwd", "space": {"tau": {"type": "loguniform", "low": 1.0, "high": 8.0}}}],
        final={"top_k": 1, "seeds": [0, 1], "include": ["table_i", "baselines"]},
    )
    tracking_uri = sweep.train.tracking.uri
    happened = lambda: bool(_finished_final_runs(tracking_uri))  # noqa: E731
    kill_driver_once(sweep, happened, "final-stage run finished", timeout_s=420)
    finished_before = _finished_final_runs(tracking_uri)

    summary = service.run(sweep, resume=True)

    final = summary.final_stage
    labels = [outcome.candidate.label for outcome in final.results]
    assert labels[0] == "top-1" and labels[1:] == ["table_i", "cwd"]
    client = MlflowClient(tracking_uri=tracking_uri)
    parent = client.get_run(summary.parent_run_id)
    runs = client.search_runs([parent.info.experiment_id], "tags.`hwd.job` = 'final'")
    # each configuration and seed ran once (equal configurations share their runs), all finished
    by_name = {}
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.run_name not in by_name, "a final-stage run was duplicated"
        by_name[run.info.run_name] = run
    expected_runs = {
        (tuple(sorted(o.candidate.params.items())), o.candidate.method, seed) for o in final.results for seed in (0, 1)
    }
    assert len(by_name) == len(expected_runs)
    # runs finished before the kill were not trained again
    for run_id, steps in finished_before.items():
        assert [m.step for m in client.get_metric_history(run_id, "loss/total")] == steps
    # the statistics, recomputed with numpy/scipy from what MLflow holds
    values = {}
    for outcome in final.results:
        values[outcome.candidate.label] = {
            seed: client.get_run(outcome.run_ids[seed]).data.metrics["best_val_miou"] for seed in (0, 1)
        }
        assert client.get_run(outcome.run_ids[0]).data.params["seed"] == "0"
        assert client.get_run(outcome.run_ids[1]).data.params["seed"] == "1"
        data = [values[outcome.candidate.label][seed] for seed in (0, 1)]
        mean, std = np.mean(data), np.std(data, ddof=1)
        assert outcome.stats.mean == pytest.approx(mean) and outcome.stats.std == pytest.approx(std, abs=1e-9)
        if std > 0:
            low, high = stats.t.interval(0.95, 1, loc=mean, scale=std / math.sqrt(2))
            assert (outcome.stats.ci_low, outcome.stats.ci_high) == (pytest.approx(low), pytest.approx(high))
        assert parent.data.metrics[f"final_{outcome.candidate.label}_mean"] == pytest.approx(mean)
    means = {label: np.mean(list(v.values())) for label, v in values.items() if label != "cwd"}
    assert final.winner == max(means, key=means.get)
    for label, difference in final.comparisons.items():
        a = [values[final.winner][seed] for seed in (0, 1)]
        b = [values[label][seed] for seed in (0, 1)]
        assert difference.mean == pytest.approx(np.mean(np.subtract(a, b)))
        if np.std(np.subtract(a, b)) > 0:
            assert difference.p_value == pytest.approx(stats.ttest_rel(a, b).pvalue)
    # the tuned baseline: its own study with num_samples trials, CWD's default tried first
    assert [tuned.method for tuned in summary.tuned_baselines] == ["cwd"]
    study = optuna.load_study(study_name="tiny-cwd", storage=f"sqlite:///{tmp_path}/tiny-cwd/optuna.db")
    assert len(study.trials) == 2 and study.trials[0].params == {"tau": 4.0}
    assert final.result("cwd").candidate.params == summary.tuned_baselines[0].best_params
    # the answer: the winner's params, chosen by mean, in best_config.yaml and the study's attributes
    winner = final.result(final.winner)
    assert summary.best_params == winner.candidate.params and summary.best_val_miou == pytest.approx(winner.stats.mean)
    text = summary.best_config_path.read_text()
    assert "Chosen by the best mean val_miou over seeds [0, 1] in the final stage" in text
    main_study = optuna.load_study(study_name="tiny", storage=summary.optuna_storage)
    assert main_study.user_attrs["final_stage_winner"] == final.winner
    assert (summary.report_dir / "final_stage.csv").is_file()
    assert (summary.report_dir / "plots" / "final_stage.png").is_file()
    # the winner beside CWD in pictures on the parent run, one per val image (4 of the 8)
    assert not [note for note in summary.notes if "prediction pictures" in note], summary.notes
    pictures = [info.path for info in client.list_artifacts(parent.info.run_id, "sweep/predictions")]
    assert pictures == [f"sweep/predictions/val_{index:04d}.png" for index in (0, 2, 5, 7)]
