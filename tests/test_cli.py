"""The command line: every registered method is listed with the paper's defaults."""

from typer.testing import CliRunner

from hwd_tune.cli import app


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
