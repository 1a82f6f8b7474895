"""The command line: the methods with the paper's defaults, and exit codes that mean something
(0 finished, 1 failed with one line and a log, 2 bad input; 130 is tested with the sweep's SIGINT)."""

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from hwd_tune.cli import app
from tests.trainables.helpers import tiny_config


def test_methods_lists_every_distiller_with_paper_defaults():
    result = CliRunner().invoke(app, ["methods"])
    assert result.exit_code == 0, result.output
    assert "none" in result.output


def test_train_commands_report_config_errors_with_the_field_and_exit_2(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("schedule: {max_iters: 0}\nteacher: {source: t.pt}\n")
    result = CliRunner().invoke(app, ["distill", str(config)])
    assert result.exit_code == 2
    assert "schedule.max_iters" in result.output and "greater than or equal to 1" in result.output


def test_sweep_command_reports_a_bad_sweep_file(tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text("name: x\nsearch: {num_samples: 0}\n")
    result = CliRunner().invoke(app, ["sweep", str(config)])
    assert result.exit_code == 2
    assert "num_samples" in result.output


@pytest.mark.slow
def test_a_run_that_fails_while_training_exits_1_with_one_line_and_a_log(ray_local, tmp_path, monkeypatch):
    """An absurd learning rate: the loss overflows inside a Ray worker. The command prints the cause
    in one line (no Ray traceback) and where the whole traceback went, and exits 1."""
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "teacher.yaml"
    raw = tiny_config(tmp_path, name="diverges", optimizer={"lr": 1e12}, schedule={"max_iters": 20, "val_interval": 1})
    config.write_text(yaml.safe_dump(raw.model_dump(mode="json")))
    result = CliRunner().invoke(app, ["train-teacher", str(config)])
    assert result.exit_code == 1, result.output
    failure = [line for line in result.output.splitlines() if line.startswith("failed: ")]
    assert len(failure) == 1 and "NonFiniteLossError: non-finite loss at iteration" in failure[0]
    log = Path(result.output.split("full traceback: ", 1)[1].split()[0])
    assert log.is_file() and log.parent == (tmp_path / ".hwd-tune" / "logs").resolve()
    assert "Traceback (most recent call last)" in log.read_text()
    assert "Traceback" not in result.output
