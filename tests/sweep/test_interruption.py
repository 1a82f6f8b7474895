"""Ctrl-C is a first-class stop: a sweep interrupted by SIGINT exits 130 with the line that resumes
it, loses nothing (its runs KILLED, its Optuna trials still open, no best_config.yaml from
unfinished trials), and `--resume` finishes it with every result told to Optuna (slow: real Ray;
the interrupted driver is a process of its own with its own Ray, the resume runs on the session's)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from hwd_tune.cli import app
from tests.sweep.helpers import tiny_sweep

REPO = Path(__file__).resolve().parents[2]
TRIALS = 3


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "hwd_tune.cli", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _validated_children(client, experiment_id: str) -> list:
    runs = client.search_runs([experiment_id], "tags.`hwd.job` = 'trial'")
    return [run for run in runs if "val_miou" in run.data.metrics]


@pytest.mark.slow
def test_sigint_stops_a_sweep_resumably_and_resume_finishes_it(ray_local, tmp_path, monkeypatch):
    import optuna
    import torch
    from mlflow import MlflowClient

    from hwd_tune.config import ModelConfig
    from tests.trainables.helpers import TINY_TEACHER
    from trainables.loop import model_from_config

    teacher = tmp_path / "teacher.pt"
    torch.save(model_from_config(ModelConfig.model_validate(TINY_TEACHER), 4).state_dict(), teacher)
    # 3 trials, 2 at a time: at the interrupt two are (usually) running and one has not started
    sweep = tiny_sweep(tmp_path, str(teacher), num_samples=TRIALS, scheduler={"type": "none"})
    raw = sweep.model_dump(mode="json")
    raw["train"]["schedule"]["max_iters"] = 16  # long enough to be stopped in the middle
    sweep_file = tmp_path / "tiny.yaml"
    sweep_file.write_text(yaml.safe_dump(raw))
    tracking_uri = raw["train"]["tracking"]["uri"]

    driver = subprocess.Popen(
        _cli("sweep", str(sweep_file)),
        cwd=tmp_path,
        env=_env(),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        client = MlflowClient(tracking_uri)
        while True:
            assert driver.poll() is None, "the sweep ended before it could be interrupted"
            assert time.monotonic() < deadline, "no trial validated within 300 s"
            experiment = client.get_experiment_by_name("tests")
            if experiment is not None and _validated_children(client, experiment.experiment_id):
                break
            time.sleep(0.3)
        driver.send_signal(signal.SIGINT)  # what Ctrl-C sends the driver
        output, _ = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 130, output[-3000:]
    assert f"hwd-tune sweep {sweep_file} --resume" in output
    assert "Tuner.restore(" not in output
    parent = client.search_runs([experiment.experiment_id], "tags.`hwd.job` = 'sweep'")[0]
    assert parent.info.status == "KILLED"
    children = client.search_runs([experiment.experiment_id], "tags.`hwd.job` = 'trial'")
    assert children and not [run for run in children if run.info.status == "RUNNING"]
    assert not (tmp_path / "tiny" / "best_config.yaml").exists()  # nothing concluded from unfinished trials
    study = optuna.load_study(study_name="tiny", storage=raw["search"]["storage"])
    assert not [trial for trial in study.trials if trial.state == optuna.trial.TrialState.FAIL]

    # The resume runs the same command in this process, on the session's Ray: what is under test is
    # that it finishes the interrupted sweep, and a second Ray start would only cost time.
    monkeypatch.chdir(tmp_path)
    resumed = CliRunner().invoke(app, ["sweep", str(sweep_file), "--resume"], terminal_width=200)
    assert resumed.exit_code == 0, resumed.output[-3000:]
    assert "never ran" not in resumed.output
    study = optuna.load_study(study_name="tiny", storage=raw["search"]["storage"])
    states = [trial.state for trial in study.trials]
    assert len(states) == TRIALS and all(state == optuna.trial.TrialState.COMPLETE for state in states), states
    children = {
        run.data.tags["hwd.trial_id"]: run
        for run in client.search_runs([experiment.experiment_id], "tags.`hwd.job` = 'trial'")
    }
    assert len(children) == TRIALS and all(run.info.status == "FINISHED" for run in children.values())
    best_by_runs = max(run.data.metrics["best_val_miou"] for run in children.values())
    assert sorted(trial.value for trial in study.trials) == pytest.approx(
        sorted(run.data.metrics["best_val_miou"] for run in children.values())
    )  # each trial told its real result
    assert study.best_value == pytest.approx(best_by_runs)
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["best_val_miou"] == pytest.approx(best_by_runs)
    assert (tmp_path / "tiny" / "best_config.yaml").is_file()
