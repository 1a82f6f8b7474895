"""The command line: the methods with the paper's defaults, and exit codes that mean something
(0 finished, 1 failed with one line and a log, 2 bad input; 130 is tested with the sweep's SIGINT)."""

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from hwd_tune.cli import app
from tests.data.layouts import FOLDER_CLASSES, folder_mask, write_folder_dataset, write_label
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


def class_row(output: str, name: str) -> list[str]:
    """The cells of the class table's row for `name`."""
    line = next(line for line in output.splitlines() if f" {name} " in line and "│" in line)
    return [cell.strip() for cell in line.strip("│ ").split("│")]


def test_data_check_prints_sizes_and_pixels_per_class_and_exits_0_on_a_clean_folder(tmp_path):
    written = write_folder_dataset(tmp_path / "data")
    config = tmp_path / "sweep.yaml"  # a sweep file: its train.data section is checked
    config.write_text(
        yaml.safe_dump({"name": "s", "train": {"data": {"name": "folder", "root": str(tmp_path / "data")}}})
    )
    result = CliRunner().invoke(app, ["data", "check", str(config)])
    assert result.exit_code == 0, result.output
    assert "read 4 of 4 train masks and 2 of 2 val masks" in result.output and "no problems found" in result.output
    for split, size in (("train", 4), ("val", 2)):
        assert class_row(result.output, split) == [split, str(size), str(size)]
    masks = {split: [mask for (s, _), (_, mask) in written.items() if s == split] for split in ("train", "val")}
    for class_id, name in enumerate(FOLDER_CLASSES):
        counts = [sum(int((mask == class_id).sum()) for mask in masks[split]) for split in ("train", "val")]
        totals = [sum(mask.size for mask in masks[split]) for split in ("train", "val")]
        assert class_row(result.output, name) == [
            str(class_id),
            name,
            f"{counts[0]:,}",
            f"{100 * counts[0] / totals[0]:.2f}",
            f"{counts[1]:,}",
            f"{100 * counts[1] / totals[1]:.2f}",
        ]


def test_data_check_names_the_broken_files_and_exits_2(tmp_path):
    write_folder_dataset(tmp_path / "data")
    bad = folder_mask(3)
    bad[5, 5] = 42
    write_label(tmp_path / "data" / "masks" / "val" / "e.png", bad)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"data": {"name": "folder", "root": str(tmp_path / "data")}}))
    result = CliRunner().invoke(app, ["data", "check", str(config), "--samples", "1"])
    assert result.exit_code == 2, result.output
    assert "read 1 of 4 train masks and 1 of 2 val masks (evenly spaced" in result.output
    assert "1 problem(s)" in result.output
    assert "label values outside the class ids 0..2 that are not the ignore value 255: found [42]" in result.output
    assert f"{tmp_path / 'data' / 'masks' / 'val' / 'e.png'} (values [42])" in result.output


def test_data_check_exits_2_on_a_bad_config_or_a_missing_dataset(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("data: {name: folder, check_samples: -3}\n")
    result = CliRunner().invoke(app, ["data", "check", str(config)])
    assert result.exit_code == 2 and "check_samples" in result.output
    result = CliRunner().invoke(
        app, ["data", "check", str(config), "--set", "data.check_samples=1", "--set", f"data.root={tmp_path / 'none'}"]
    )
    assert result.exit_code == 2 and "no classes.yaml" in result.output
