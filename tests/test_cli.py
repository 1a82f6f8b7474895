"""The command line: the methods with the paper's defaults, and exit codes that mean something
(0 finished, 1 failed with one line and a log, 2 bad input; 130 is tested with the sweep's SIGINT)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from hwd_tune.cli import app
from tests.data.layouts import FOLDER_CLASSES, folder_mask, write_folder_dataset, write_label
from tests.sweep.helpers import tiny_sweep
from tests.trainables.helpers import TINY_STUDENT, TINY_TEACHER, register_in_new_store, tiny_config

LOCAL_RAY_TRAIN_SETTINGS = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
USER_ENVIRONMENT = dict(os.environ)  # at collection, before any test starts Ray


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
    in one line (no Ray traceback) and where the whole traceback went (the run's log), and exits 1."""
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "teacher.yaml"
    raw = tiny_config(tmp_path, name="diverges", optimizer={"lr": 1e12}, schedule={"max_iters": 20, "val_interval": 1})
    config.write_text(yaml.safe_dump(raw.model_dump(mode="json")))
    result = CliRunner().invoke(app, ["train-teacher", str(config)])
    assert result.exit_code == 1, result.output
    failure = [line for line in result.output.splitlines() if line.startswith("failed: ")]
    assert len(failure) == 1 and "NonFiniteLossError: non-finite loss at iteration" in failure[0]
    log = Path(result.output.split("full traceback: ", 1)[1].split()[0])
    assert log.is_file() and log.parent == (Path(raw.output_dir) / "logs").resolve()
    assert log.name.endswith("-train-teacher.log")
    assert "Traceback (most recent call last)" in log.read_text()
    assert "Traceback" not in result.output
    # the local Ray (started by start_local_ray) runs with Ray Train's settings for one machine
    for name, value in LOCAL_RAY_TRAIN_SETTINGS.items():
        assert os.environ[name] == USER_ENVIRONMENT.get(name, value)


# --------------------------------------------------------------------------------------------
# Nothing starts on a bad input: each command checks its jobs before Ray starts or a file is written
# --------------------------------------------------------------------------------------------
UNKNOWN_ARCH = "deeplabv3_resnet9000"
TEACHER_ALIAS = "models:/teacher-synthetic-deeplabv3_resnet18@best"


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """Outside every test's working directory: a tiny 4-class teacher file, one with 5 classes, and an
    MLflow store where that teacher is registered (aliases best) with its meta.json."""
    from hwd_tune.models import build_model

    root = tmp_path_factory.mktemp("teachers")
    files = {}
    for classes in (4, 5):
        files[classes] = root / f"teacher_{classes}_classes.pt"
        torch.save(build_model(**_tiny_teacher(classes)).state_dict(), files[classes])
    checkpoint = root / "checkpoint"
    checkpoint.mkdir()
    shutil.copy(files[4], checkpoint / "model.pt")
    meta = {"arch": TINY_TEACHER["arch"], "width_multiplier": TINY_TEACHER["width_multiplier"], "num_classes": 4}
    (checkpoint / "meta.json").write_text(json.dumps({**meta, "iteration": 8}))
    uri = register_in_new_store(root / "store", checkpoint, TINY_TEACHER["arch"], "best")
    return {"files": files, "store": uri}


def _tiny_teacher(num_classes: int) -> dict:
    return {
        "name": TINY_TEACHER["arch"],
        "num_classes": num_classes,
        "width_multiplier": TINY_TEACHER["width_multiplier"],
    }


def _yaml_file(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def _train_file(tmp_path: Path, teachers: dict, **sections) -> Path:
    """A tiny distillation from the 4-class teacher file, with `sections` changed."""
    distill = {"job": "distill", "method": {"name": "hwd"}, "teacher": {"source": str(teachers["files"][4])}}
    raw = tiny_config(tmp_path / "outputs", **{**distill, **sections})
    return _yaml_file(tmp_path / "run.yaml", raw.model_dump(mode="json"))


def _sweep_file(tmp_path: Path, teachers: dict, section: str, **changes) -> Path:
    raw = tiny_sweep(tmp_path / "outputs", str(teachers["files"][4])).model_dump(mode="json")
    raw["train"][section].update(changes)
    return _yaml_file(tmp_path / "sweep.yaml", raw)


def _plan_file(tmp_path: Path, teachers: dict, **changes) -> Path:
    raw = yaml.safe_load((Path(__file__).parents[1] / "search_spaces" / "plans" / "quickstart.yaml").read_text())
    raw["train"]["output_dir"] = str(tmp_path / "outputs")
    raw["datasets"][0]["teacher"]["source"] = str(teachers["files"][4])
    return _yaml_file(tmp_path / "plan.yaml", {**raw, **changes})


# Each case: the command line it builds under tmp_path (its working directory), and what the message
# must name: the file, the field and the value.
BAD_INPUTS = {
    "train: unknown student arch": lambda tmp, t: (
        ["train-teacher", str(_train_file(tmp, t, student={"arch": UNKNOWN_ARCH}))],
        ["run.yaml: student.arch: unknown model 'deeplabv3_resnet9000'", "'deeplabv3_resnet18'"],
    ),
    "train: unknown teacher arch": lambda tmp, t: (
        ["distill", str(_train_file(tmp, t, teacher={"arch": UNKNOWN_ARCH, "source": str(t["files"][4])}))],
        ["run.yaml: teacher.arch: unknown model 'deeplabv3_resnet9000'", "'pspnet_resnet18'"],
    ),
    "sweep: unknown student arch": lambda tmp, t: (
        ["sweep", str(_sweep_file(tmp, t, "student", arch=UNKNOWN_ARCH))],
        ["sweep.yaml: train.student.arch: unknown model 'deeplabv3_resnet9000'; expected one of"],
    ),
    "sweep: unknown teacher arch": lambda tmp, t: (
        ["sweep", str(_sweep_file(tmp, t, "teacher", arch=UNKNOWN_ARCH))],
        ["sweep.yaml: train.teacher.arch: unknown model 'deeplabv3_resnet9000'; expected one of"],
    ),
    "missing teacher file": lambda tmp, t: (
        ["distill", str(_train_file(tmp, t, teacher={"source": str(tmp / "teachers" / "t.pt")}))],
        ["run.yaml: teacher.source: teacher source", "teachers/t.pt': no such file or directory"],
    ),
    "teacher directory without model.pt": lambda tmp, t: (
        ["distill", str(_train_file(tmp, t, teacher={"source": str(t["files"][4].parent)}))],
        ["run.yaml: teacher.source:", f"directory {t['files'][4].parent} has no model.pt; it holds"],
    ),
    "teacher with another class count": lambda tmp, t: (
        ["distill", str(_train_file(tmp, t, teacher={"source": str(t["files"][5])}))],
        ["run.yaml: teacher.source: checkpoint", "teacher_5_classes.pt does not fit", "the 4 classes of synthetic"],
    ),
    "models:/ alias, no store yet": lambda tmp, t: (
        ["distill", str(_train_file(tmp, t, teacher={"source": TEACHER_ALIAS}))],
        [f"run.yaml: teacher.source: teacher source '{TEACHER_ALIAS}' is not registered", "does not exist yet"],
    ),
    "models:/ alias not registered in the store": lambda tmp, t: (
        [
            "distill",
            str(_train_file(tmp, t, teacher={"source": "models:/teacher-ade20k-x@best"}, tracking={"uri": t["store"]})),
        ],
        [
            "run.yaml: teacher.source: teacher source 'models:/teacher-ade20k-x@best': no registered model",
            "registered models: ['teacher-synthetic-deeplabv3_resnet18']",
        ],
    ),
    "models:/ alias of another arch": lambda tmp, t: (
        [
            "distill",
            str(
                _train_file(
                    tmp, t, teacher={"source": TEACHER_ALIAS, "width_multiplier": 0.25}, tracking={"uri": t["store"]}
                )
            ),
            "--set",
            "teacher.arch=deeplabv3_resnet101",
        ],
        [f"run.yaml: teacher.arch: 'deeplabv3_resnet101', but '{TEACHER_ALIAS}' is a 'deeplabv3_resnet18' teacher"],
    ),
    "runs:/ of no run": lambda tmp, t: (
        [
            "distill",
            str(_train_file(tmp, t, teacher={"source": "runs:/0123abcd/model.pt"}, tracking={"uri": t["store"]})),
        ],
        ["run.yaml: teacher.source: teacher source 'runs:/0123abcd/model.pt': run '0123abcd' not found"],
    ),
    "missing dataset root": lambda tmp, t: (
        ["train-teacher", str(_train_file(tmp, t, data={"name": "ade20k", "root": str(tmp / "ade")}))],
        [f"run.yaml: data.root: missing directory {tmp / 'ade'}", "expected layout under"],
    ),
    "missing student weights": lambda tmp, t: (
        ["train-teacher", str(_train_file(tmp, t, student={**TINY_STUDENT, "weights": str(tmp / "student.pt")}))],
        [f"run.yaml: student.weights: checkpoint file not found: {tmp / 'student.pt'}"],
    ),
    "plan: unknown student arch": lambda tmp, t: (
        ["reproduce", str(_plan_file(tmp, t, students=[{"arch": UNKNOWN_ARCH}], methods=["none", "kd"]))],
        ["plan.yaml: student.arch: unknown model 'deeplabv3_resnet9000'; expected one of"],
    ),
}


def _tree(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_a_bad_input_exits_2_naming_it_before_ray_starts_or_a_file_is_written(case, teachers, tmp_path, monkeypatch):
    import ray

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ray_was_up = ray.is_initialized()  # the session's Ray of an earlier test: see the fresh process below
    connects = []

    def connect_ray(address):
        connects.append(address)
        raise RuntimeError("Ray would start here")

    monkeypatch.setattr("trainables.launch.connect_ray", connect_ray)
    argv, expected = BAD_INPUTS[case](tmp_path, teachers)
    before = _tree(tmp_path)
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, result.output
    for text in expected:
        assert text in result.output
    assert connects == [] and ray.is_initialized() == ray_was_up
    assert _tree(tmp_path) == before  # no outputs/, teacher_cache/.lock, MLflow store or log
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_bad_inputs_start_no_ray_in_a_fresh_process(teachers, tmp_path):
    """The whole table in a process where no test ran before, with the real connect_ray: Ray stays down."""
    runs = []
    for index, build in enumerate(BAD_INPUTS.values()):
        folder = tmp_path / str(index)
        folder.mkdir()
        runs.append({"cwd": str(folder), "argv": build(folder, teachers)[0]})
    script = (
        "import json, os, sys\n"
        "import ray\n"
        "from typer.testing import CliRunner\n"
        "from hwd_tune.cli import app\n"
        "results = []\n"
        "for run in json.loads(sys.argv[1]):\n"
        "    os.chdir(run['cwd'])\n"
        "    result = CliRunner().invoke(app, run['argv'])\n"
        "    results.append([result.exit_code, ray.is_initialized()])\n"
        "print(json.dumps(results))\n"
    )
    env = {key: value for key, value in os.environ.items() if key not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env["PYTHONPATH"] = str(Path(__file__).parents[1])
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(runs)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results == [[2, False]] * len(BAD_INPUTS), dict(zip(BAD_INPUTS, results))
    assert all(not (Path(run["cwd"]) / "outputs").exists() for run in runs)


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
