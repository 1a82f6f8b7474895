"""What can be checked of training jobs before Ray starts or a file is written: the model names, the
data, the student's starting weights and the teacher (its source and, where known, its class count).

Every command runs `check_before_start` on the jobs it will run before it starts Ray; what needs
the cluster (resources) or a download (a teacher in MLflow, loaded) follows in `launch.preflight`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from hwd_tune import tracking
from hwd_tune.config import DataConfig, ModelConfig, TeacherConfig, TrainConfig
from hwd_tune.data.from_config import info_from_config, training_set, validation_set
from hwd_tune.models import feature_channels, load_weights
from trainables.loop import build_teacher, model_from_config

Problem = tuple[str, str]  # (field of a training job, what is wrong and what was expected)
_ERRORS = (ValueError, FileNotFoundError)  # what the library layers raise for a bad input


class StartProblems(ValueError):
    """Training jobs that cannot start: one line per problem, `source: field: message`."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("\n".join(lines))


class NotStarted(ValueError):
    """A command stopped by a bad input or environment before it started a run (the CLI exits 2);
    an error raised later is a failure of the run (exit 1, its traceback in the run log)."""


@contextmanager
def before_start() -> Iterator[None]:
    """Marks a command's last checks: a bad-input error raised inside is re-raised as `NotStarted`
    (its cause kept), so "cannot start" is never said of what failed after the start."""
    try:
        yield
    except NotStarted:
        raise
    except _ERRORS as error:
        raise NotStarted(str(error)) from error


def check_before_start(
    configs: TrainConfig | Iterable[TrainConfig],
    *,
    source: str | None = None,
    field_prefix: str = "",
    tracking_uri: str | None = None,
    teacher_sources: bool = True,
) -> None:
    """Raises StartProblems naming everything that would make one of `configs` fail once started.

    Reads the data's files, weights files and the MLflow store (a local one only if it exists);
    creates, downloads and starts nothing. Each distinct model, dataset and teacher is checked once.
    source: the file the jobs come from; field_prefix: where a job sits in it ("train." in a sweep);
    tracking_uri: None for each job's own; teacher_sources=False skips the teacher's source (the
    quickstart trains its teacher first).
    """
    jobs = [configs] if isinstance(configs, TrainConfig) else list(configs)
    problems: dict[Problem, None] = {}  # each once, in the order found
    checked: set[str] = set()

    def first_time(*inputs: Any) -> bool:
        key = json.dumps(inputs, sort_keys=True, default=str)
        if key in checked:
            return False
        checked.add(key)
        return True

    for config in jobs:
        uri = tracking_uri or tracking.resolve_tracking_uri(config.tracking.uri, config.output_dir)
        num_classes = info_from_config(config.data).num_classes  # known by the dataset's name alone
        student, teacher, data = (
            section.model_dump(mode="json") for section in (config.student, config.teacher, config.data)
        )
        found: list[Problem] = []
        for role, model in (("student", config.student), ("teacher", config.teacher)):
            if first_time("arch", role, model.arch):
                found += arch_problems(role, model)
        if config.student.weights and first_time("weights", student, num_classes):
            found += student_weights_problems(config.student, num_classes)
        if first_time("data", data):
            found += data_problems(config.data)
        if teacher_sources and config.method.name != "none" and first_time("teacher", teacher, data, uri):
            found += teacher_problems(config, uri, num_classes)
        problems.update(dict.fromkeys(found))
    if problems:
        where = f"{source}: " if source else ""
        raise StartProblems([f"{where}{field_prefix}{field}: {message}" for field, message in problems])


def arch_problems(role: str, model: ModelConfig) -> list[Problem]:
    """`<role>.arch` must be a model of hwd_tune.models (the loop asks both for their feature widths)."""
    try:
        feature_channels(model.arch)
    except ValueError as error:
        return [(f"{role}.arch", str(error))]
    return []


def student_weights_problems(student: ModelConfig, num_classes: int) -> list[Problem]:
    """`student.weights` must be a readable state_dict (loaded as the loop does: what fits)."""
    if arch_problems("student", student):
        return []  # reported as student.arch
    try:
        load_weights(model_from_config(student, num_classes), student.weights, strict=False)
    except _ERRORS as error:
        return [("student.weights", str(error))]
    return []


def data_problems(data: DataConfig) -> list[Problem]:
    """Both splits of the dataset must be there (a file dataset raises with the expected layout)."""
    try:
        training_set(data)
        validation_set(data)
    except _ERRORS as error:
        return [("data" if data.name == "synthetic" else "data.root", str(error))]
    return []


def teacher_problems(config: TrainConfig, tracking_uri: str, num_classes: int) -> list[Problem]:
    """The teacher's source must exist and fit `teacher` and the dataset's classes: a local file is
    loaded strictly (as the loop does); a registered version is compared by its meta.json."""
    try:
        location = tracking.locate_teacher(config.teacher.source, tracking_uri=tracking_uri)
    except _ERRORS as error:
        return [("teacher.source", str(error))]
    if arch_problems("teacher", config.teacher):
        return []  # reported as teacher.arch
    if location.weights is None:
        return registered_teacher_problems(config.teacher, location.meta, config.data.name, num_classes)
    try:
        build_teacher(config, num_classes, location.weights, device=torch.device("cpu"))
    except _ERRORS as error:
        expected = f"a {config.teacher.arch} (width_multiplier {config.teacher.width_multiplier:g})"
        return [("teacher.source", f"{error}; expected {expected} for the {num_classes} classes of {config.data.name}")]
    return []


def registered_teacher_problems(
    teacher: TeacherConfig, meta: Mapping[str, str], dataset: str, num_classes: int
) -> list[Problem]:
    """What a registered version's meta.json says against the job (each would fail the strict load);
    nothing when the version has no metadata."""
    problems = []
    if "num_classes" in meta and not _same(meta["num_classes"], num_classes):
        message = (
            f"{teacher.source!r} was trained for {meta['num_classes']} classes, dataset {dataset!r} has {num_classes}"
        )
        problems.append(("teacher.source", message))
    if "arch" in meta and meta["arch"] != teacher.arch:
        problems.append(("teacher.arch", f"{teacher.arch!r}, but {teacher.source!r} is a {meta['arch']!r} teacher"))
    if "width_multiplier" in meta and not _same(meta["width_multiplier"], teacher.width_multiplier):
        message = (
            f"{teacher.width_multiplier:g}, but {teacher.source!r} has width_multiplier {meta['width_multiplier']}"
        )
        problems.append(("teacher.width_multiplier", message))
    return problems


def _same(tag: str, value: float) -> bool:
    """Whether a tag's text (MLflow keeps tags as strings) holds the number `value`."""
    try:
        return float(tag) == float(value)
    except ValueError:
        return False
