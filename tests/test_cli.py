"""The command line: every registered method is listed with the paper's defaults."""

from typer.testing import CliRunner

from hwd_tune.cli import app


def test_methods_lists_every_distiller_with_paper_defaults():
    result = CliRunner().invoke(app, ["methods"])
    assert result.exit_code == 0, result.output
    assert "none" in result.output


def test_quickstart_says_not_yet_available_and_fails():
    result = CliRunner().invoke(app, ["quickstart"])
    assert result.exit_code == 2
    assert "not yet available" in result.output
