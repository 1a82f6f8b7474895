"""trainables.checks: what is checked of training jobs before Ray starts or a file is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hwd_tune.config import TeacherConfig
from hwd_tune.models import available_models, build_model
from tests.trainables.helpers import TINY_TEACHER, tiny_config
from trainables import checks
from trainables.checks import StartProblems, check_before_start, registered_teacher_problems


@pytest.fixture
def teacher_file(tmp_path) -> Path:
    """A tiny 4-class teacher state_dict, as tiny_config's teacher section describes it."""
    path = tmp_path / "teacher.pt"
    model = build_model(TINY_TEACHER["arch"], 4, width_multiplier=TINY_TEACHER["width_multiplier"])
    torch.save(model.state_dict(), path)
    return path


def distillation(output: Path, teacher_source: str, **sections):
    """A tiny HWD distillation (or `method=...`) from `teacher_source`."""
    return tiny_config(
        output, **{"job": "distill", "method": {"name": "hwd"}, **sections}, teacher={"source": teacher_source}
    )


def tree(root: Path) -> list[Path]:
    return sorted(root.rglob("*"))


def test_a_good_job_passes_and_nothing_is_written(tmp_path, teacher_file):
    config = distillation(tmp_path / "outputs", str(teacher_file), student={"weights": str(teacher_file)})
    before = tree(tmp_path)
    check_before_start(config)  # student.weights: what fits is loaded, as the loop does
    assert tree(tmp_path) == before


def test_every_problem_of_every_job_is_named_once_with_the_file_and_the_field(tmp_path):
    missing = tmp_path / "teacher.pt"
    jobs = [
        distillation(tmp_path, str(missing), student={"arch": "deeplabv3_resnet9000"}, seed=seed) for seed in (0, 1)
    ]
    with pytest.raises(StartProblems) as raised:
        check_before_start(jobs, source="sweep.yaml", field_prefix="train.")
    assert raised.value.lines == [
        f"sweep.yaml: train.student.arch: unknown model 'deeplabv3_resnet9000'; expected one of {available_models()}",
        f"sweep.yaml: train.teacher.source: teacher source '{missing}': no such file or directory {missing}; "
        f"{tmp_path} holds nothing",
    ]


def test_each_distinct_dataset_and_teacher_is_checked_once(tmp_path, teacher_file, monkeypatch):
    """A plan repeats its dataset and teacher for every student and method: each is checked once."""
    calls = {"data": 0, "teacher": 0}

    def counted(name, check):
        def wrapper(*args):
            calls[name] += 1
            return check(*args)

        return wrapper

    monkeypatch.setattr(checks, "data_problems", counted("data", checks.data_problems))
    monkeypatch.setattr(checks, "teacher_problems", counted("teacher", checks.teacher_problems))
    jobs = [
        distillation(tmp_path, str(teacher_file), student={"arch": arch}, method={"name": method})
        for arch in ("deeplabv3_resnet18", "pspnet_resnet18")
        for method in ("none", "kd", "hwd")
    ]
    check_before_start(jobs)
    assert calls == {"data": 1, "teacher": 1}


def test_the_teacher_is_left_alone_without_distillation_or_when_trained_first(tmp_path):
    missing = str(tmp_path / "teacher.pt")
    check_before_start(tiny_config(tmp_path, job="distill", method={"name": "none"}, teacher={"source": missing}))
    check_before_start(distillation(tmp_path, missing), teacher_sources=False)
    with pytest.raises(StartProblems, match="teacher.source"):
        check_before_start(distillation(tmp_path, missing))


def test_a_teacher_of_another_class_count_is_named_with_the_dataset(tmp_path, teacher_file):
    config = distillation(tmp_path, str(teacher_file), data={"synthetic": {"num_classes": 6}})
    with pytest.raises(StartProblems) as raised:
        check_before_start(config, source="run.yaml")
    (line,) = raised.value.lines
    assert line.startswith(f"run.yaml: teacher.source: checkpoint {teacher_file} does not fit the model")
    assert "checkpoint [4," in line and "vs model [6," in line
    assert line.endswith("expected a deeplabv3_resnet18 (width_multiplier 0.25) for the 6 classes of synthetic")


def test_a_registered_teachers_metadata_is_held_against_the_job():
    teacher = TeacherConfig(arch="deeplabv3_resnet101", width_multiplier=1.0, source="models:/t@best")
    meta = {"arch": "deeplabv3_resnet18", "width_multiplier": "0.25", "num_classes": "4", "iteration": "400"}
    assert registered_teacher_problems(teacher, meta, "ade20k", 150) == [
        ("teacher.source", "'models:/t@best' was trained for 4 classes, dataset 'ade20k' has 150"),
        ("teacher.arch", "'deeplabv3_resnet101', but 'models:/t@best' is a 'deeplabv3_resnet18' teacher"),
        ("teacher.width_multiplier", "1, but 'models:/t@best' has width_multiplier 0.25"),
    ]
    fitting = TeacherConfig(arch="deeplabv3_resnet18", width_multiplier=0.25, source="models:/t@best")
    assert registered_teacher_problems(fitting, meta, "synthetic", 4) == []
    assert registered_teacher_problems(teacher, {}, "ade20k", 150) == []  # a version without meta.json


def test_a_missing_dataset_root_shows_the_expected_layout(tmp_path):
    config = tiny_config(tmp_path, data={"name": "cityscapes", "root": str(tmp_path / "cityscapes")})
    with pytest.raises(StartProblems, match=r"(?s)^data\.root: missing directory .*expected layout under"):
        check_before_start(config)


def test_only_errors_raised_inside_before_start_are_said_not_to_have_started():
    """ "cannot start" (exit 2) is for the last checks; a later error is the run's failure (exit 1)."""
    from trainables.checks import NotStarted, before_start

    missing = FileNotFoundError("no such file or directory: /x/teacher.pt")
    with pytest.raises(NotStarted, match="teacher.pt") as error:
        with before_start():
            raise missing
    assert error.value.__cause__ is missing
    with pytest.raises(RuntimeError):  # not a bad input: passed on unchanged
        with before_start():
            raise RuntimeError("worker died")
    with pytest.raises(FileNotFoundError) as later:  # after the start: not NotStarted
        with before_start():
            pass
        raise FileNotFoundError("checkpoint_000002 vanished")
    assert not isinstance(later.value, NotStarted)
