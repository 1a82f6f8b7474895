"""Reproduction plans (search_spaces/plans/*.yaml): datasets x students x methods x seeds of one recipe.

A plan holds the common training recipe (`train:`, a `config.TrainConfig` whose method and seed
the plan sets per run), the datasets with their teachers, the students, the methods (published
defaults, explicit params, or the best config of a sweep) and the seeds. `Plan.cells()` lists every
run and `Plan.train_config(cell)` builds its training job. This is the schema layer only (pydantic
and `read_yaml`); `hwd_tune.reproduce.runner` schedules the runs and `hwd_tune.reproduce.report` reports them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from hwd_tune.config import (
    METHOD_PARAMS,
    ConfigError,
    DataConfig,
    MethodConfig,
    ModelConfig,
    StrictModel,
    TeacherConfig,
    TrainConfig,
    load_train_config,
)
from hwd_tune.sweep.config import (
    ParameterValue,
    SweepProblems,
    SweepResources,
    concurrent_jobs,
    load_validated,
)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # plan names and method labels: tags, folders, run keys
Problems = list[tuple[str, str]]  # (field path, what is wrong and what is allowed)


class Cell(NamedTuple):
    """One run of a plan: which dataset (DataConfig.name), student (arch), method label and seed."""

    dataset: str
    student: str
    method: str  # the method entry's label (default: the method's name)
    seed: int


# --------------------------------------------------------------------------------------------
# The schema
# --------------------------------------------------------------------------------------------
class PlanDataset(StrictModel):
    """A dataset of the plan: a data section merged over train.data (it must name the dataset) and
    the teacher distilled on it, merged over train.teacher."""

    data: dict[str, Any]
    teacher: dict[str, Any] = {}


class PlanMethod(StrictModel):
    """A method column: its published defaults (`name` alone), explicit `params`, or the params of
    a sweep's best config (`params_from`, a TrainConfig YAML such as best_config.yaml)."""

    name: str
    label: str | None = Field(None, pattern=NAME_PATTERN)  # None: the method's name
    params: dict[str, ParameterValue] | None = None
    params_from: str | None = None

    @property
    def shown_label(self) -> str:
        """The label that names this method in cells, tags and the report."""
        return self.label or self.name


class Plan(StrictModel):
    """One reproduction plan: every combination of datasets, students, methods and seeds."""

    name: str = Field(pattern=NAME_PATTERN)  # tags every run; names the output folder and the plan run
    paper: str | None = None  # the published table the report compares with (hwd_tune.reproduce.paper); None: none
    train: TrainConfig  # the common recipe: job "distill", name unset; method and seed set per run
    datasets: list[PlanDataset] = Field(min_length=1)
    students: list[dict[str, Any]] = Field(min_length=1)  # each merged over train.student; names its arch
    methods: list[PlanMethod] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    max_concurrent_runs: int | None = Field(None, ge=1)  # None: as many as the resources fit
    resources: SweepResources = SweepResources()  # what each run's Tune trial reserves besides its workers
    _source: str = PrivateAttr("plan")
    _jobs: dict[tuple[str, str, str], TrainConfig] = PrivateAttr(default_factory=dict)

    @field_validator("train", mode="before")
    @classmethod
    def _method_comes_from_methods(cls, train: Any) -> Any:
        """train.method is set per run from `methods:`; it is validated here as "none" (no teacher needed)."""
        if isinstance(train, Mapping):
            method = train.get("method")
            if method is not None and (
                not isinstance(method, Mapping) or method.get("name") != "none" or method.get("params")
            ):
                raise ValueError("train.method is set per run from `methods:`; leave it out of `train`")
            return {**train, "method": {"name": "none"}}
        return train

    @field_validator("methods", mode="before")
    @classmethod
    def _names_are_entries(cls, methods: Any) -> Any:
        """A bare method name stands for {name: <it>} (its published defaults)."""
        if isinstance(methods, list):
            return [{"name": entry} if isinstance(entry, str) else entry for entry in methods]
        return methods

    @model_validator(mode="after")
    def _check_and_build(self) -> Plan:
        problems, jobs = plan_problems(self)
        if problems:
            raise PlanProblems(problems)
        self._jobs = jobs
        return self

    @property
    def source(self) -> str:
        """The file this plan was loaded from (or "plan" when built in code)."""
        return self._source

    def cells(self) -> list[Cell]:
        """Every run, in the plan's order: datasets, then students, then methods, then seeds."""
        return [Cell(dataset, student, label, seed) for dataset, student, label in self._jobs for seed in self.seeds]

    def train_config(self, cell: Cell) -> TrainConfig:
        """The training job of `cell`: the recipe with its dataset, teacher, student, method and seed.

        train.name stays unset, so `trainables.launch.run_name` names the run by the config's hash.
        """
        key = (cell.dataset, cell.student, cell.method)
        if key not in self._jobs or cell.seed not in self.seeds:
            raise ValueError(f"{self.source}: {cell} is not a cell of plan {self.name!r}")
        return TrainConfig.model_validate({**self._jobs[key].model_dump(), "seed": cell.seed})

    def method_names(self) -> dict[str, str]:
        """The method's name behind each label (e.g. {"hwd-swept": "hwd"}), for the report."""
        return {entry.shown_label: entry.name for entry in self.methods}


class PlanProblems(SweepProblems):
    """Checks across sections that failed, as (field path, message) pairs."""


# --------------------------------------------------------------------------------------------
# Checks across sections, and the training job of every (dataset, student, method)
# --------------------------------------------------------------------------------------------
def plan_problems(plan: Plan) -> tuple[Problems, dict[tuple[str, str, str], TrainConfig]]:
    """Every inconsistency of the plan as (field path, message), and, when there is none, the
    validated job of each (dataset, student, label) with seed 0."""
    problems: Problems = []
    if plan.train.job != "distill":
        problems.append(("train.job", f"a plan runs distillations: must be 'distill', got {plan.train.job!r}"))
    if plan.train.name is not None:
        problems.append(("train.name", "must be unset in a plan: each run is named by its config's hash"))
    if len(set(plan.seeds)) != len(plan.seeds):
        problems.append(("seeds", f"each seed at most once, got {plan.seeds}"))
    problems += _paper_problems(plan.paper)
    datasets, dataset_problems = _datasets(plan)
    students, student_problems = _students(plan)
    methods, method_problems = _methods(plan)
    problems += dataset_problems + student_problems + method_problems
    if problems:
        return problems, {}
    problems += _teacher_problems(plan, datasets, methods)
    if problems:
        return problems, {}
    return _jobs(plan, datasets, students, methods)


def _paper_problems(paper: str | None) -> Problems:
    if paper is None:
        return []
    from hwd_tune.reproduce.paper import table_names  # package data, read once

    tables = table_names()
    if paper not in tables:
        return [
            (
                "paper",
                f"no published table {paper!r} in hwd_tune.reproduce.paper; expected one of {sorted(tables)} or null",
            )
        ]
    return []


def _merged(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `update` on top, sections merged key by key (data.synthetic.image_size alone, etc.)."""
    result = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = _merged(result[key], value)
        else:
            result[key] = value
    return result


def _validated(model: type[StrictModel], raw: Mapping[str, Any], field: str, problems: Problems) -> Any:
    """`model` validated from `raw`, or None with one problem per error, named below `field`."""
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        problems += _error_items(error, field)
        return None


def _error_items(error: ValidationError, field: str) -> Problems:
    """A pydantic error as (field path below `field`, message with the value given) pairs."""
    items = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"])
        got = item.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        items.append((f"{field}.{path}" if path else field, f"{item['msg']}{shown}"))
    return items


def _datasets(plan: Plan) -> tuple[list[tuple[DataConfig, TeacherConfig]], Problems]:
    """Each dataset's data and teacher sections, merged over the recipe's; names must differ."""
    problems: Problems = []
    found = []
    first_index: dict[str, int] = {}
    base_data = plan.train.data.model_dump()
    base_teacher = plan.train.teacher.model_dump()
    for index, entry in enumerate(plan.datasets):
        field = f"datasets[{index}]"
        if "name" not in entry.data:
            problems.append((f"{field}.data.name", "required: which dataset this is (the cells are named by it)"))
            continue
        data = _validated(DataConfig, _merged(base_data, entry.data), f"{field}.data", problems)
        teacher = _validated(TeacherConfig, _merged(base_teacher, entry.teacher), f"{field}.teacher", problems)
        if data is None or teacher is None:
            continue
        duplicate = _repeated(first_index, data.name, index, "datasets", "dataset")
        if duplicate:
            problems.append((f"{field}.data.name", duplicate))
            continue
        found.append((data, teacher))
    return found, problems


def _repeated(first_index: dict[str, int], key: str, index: int, section: str, what: str) -> str | None:
    """The error for entry `index` of `section` when an earlier entry has the same `key` (cells are
    named by it); otherwise records `key` as taken and returns None."""
    if key in first_index:
        return f"{key!r} is also {section}[{first_index[key]}]: each {what} at most once (cells are named by it)"
    first_index[key] = index
    return None


def _students(plan: Plan) -> tuple[list[ModelConfig], Problems]:
    """Each student merged over train.student; archs must differ (the cells are named by them)."""
    problems: Problems = []
    found = []
    first_index: dict[str, int] = {}
    base = plan.train.student.model_dump()
    for index, entry in enumerate(plan.students):
        field = f"students[{index}]"
        if "arch" not in entry:
            problems.append((f"{field}.arch", "required: which network this student is (the cells are named by it)"))
            continue
        student = _validated(ModelConfig, _merged(base, entry), field, problems)
        if student is None:
            continue
        duplicate = _repeated(first_index, student.arch, index, "students", "arch")
        if duplicate:
            problems.append((f"{field}.arch", duplicate))
            continue
        found.append(student)
    return found, problems


def _methods(plan: Plan) -> tuple[list[tuple[str, MethodConfig]], Problems]:
    """Each entry's label and method config (params checked by its params model); labels must differ,
    and two entries must not train the same job."""
    problems: Problems = []
    found: list[tuple[str, MethodConfig]] = []
    label_index: dict[str, int] = {}
    job_index: dict[str, int] = {}
    for index, entry in enumerate(plan.methods):
        field = f"methods[{index}]"
        label = entry.shown_label
        if label in label_index:
            message = (
                f"{label!r} is also the label of methods[{label_index[label]}]: give each entry a distinct `label`"
            )
            problems.append((f"{field}.label", message))
            continue
        label_index[label] = index
        if entry.name not in METHOD_PARAMS:
            message = f"unknown method {entry.name!r}; expected one of {sorted(METHOD_PARAMS)}"
            problems.append((f"{field}.name", message))
            continue
        params = _method_params(entry, field, problems)
        if params is None:
            continue
        resolved = _validated(METHOD_PARAMS[entry.name], params, f"{field}.params", problems)
        if resolved is None:
            continue
        job = f"{entry.name} {resolved.model_dump_json()}"
        if job in job_index:
            other = job_index[job]
            message = (
                f"same method and params as methods[{other}] ({plan.methods[other].shown_label!r}): "
                "both would be one training run; drop one or change its params"
            )
            problems.append((field, message))
            continue
        job_index[job] = index
        found.append((label, MethodConfig(name=entry.name, params=params)))
    return found, problems


def _method_params(entry: PlanMethod, field: str, problems: Problems) -> dict[str, Any] | None:
    """The entry's params: given, read from params_from, or {} (the published defaults)."""
    if entry.params is not None and entry.params_from is not None:
        problems.append((field, "give either `params` or `params_from`, not both"))
        return None
    if entry.params_from is None:
        return dict(entry.params or {})
    path = Path(entry.params_from)
    if not path.is_file():
        message = f"file not found: {path} ({path.resolve()}); expected a sweep's best_config.yaml"
        problems.append((f"{field}.params_from", message))
        return None
    try:
        config = load_train_config(path)
    except ConfigError as error:
        problems.append((f"{field}.params_from", f"not a valid training config: {error}"))
        return None
    if config.job != "distill":
        message = f"{path} is a {config.job!r} job; expected a distillation config (a sweep's best_config.yaml)"
        problems.append((f"{field}.params_from", message))
        return None
    if config.method.name != entry.name:
        message = f"{path} trains method {config.method.name!r}, not {entry.name!r}"
        problems.append((f"{field}.params_from", message))
        return None
    return dict(config.method.params)


def _teacher_problems(
    plan: Plan, datasets: list[tuple[DataConfig, TeacherConfig]], methods: list[tuple[str, MethodConfig]]
) -> Problems:
    """Every dataset needs a teacher source when any method distils."""
    distilling = [label for label, method in methods if method.name != "none"]
    if not distilling:
        return []
    example = "'models:/teacher-ade20k-deeplabv3_resnet101@iter-80k' or a checkpoint file"
    return [
        (
            f"datasets[{index}].teacher.source",
            f"required: methods {distilling} distil from a teacher on {data.name!r}; give {example} "
            "(here or in train.teacher.source)",
        )
        for index, (data, teacher) in enumerate(datasets)
        if not teacher.source
    ]


def _jobs(
    plan: Plan,
    datasets: list[tuple[DataConfig, TeacherConfig]],
    students: list[ModelConfig],
    methods: list[tuple[str, MethodConfig]],
) -> tuple[Problems, dict[tuple[str, str, str], TrainConfig]]:
    """The TrainConfig of every (dataset, student, label), seed 0; what still fails is named by its parts."""
    problems: Problems = []
    jobs: dict[tuple[str, str, str], TrainConfig] = {}
    recipe = plan.train.model_dump()
    for data, teacher in datasets:
        for student in students:
            for label, method in methods:
                raw = {
                    **recipe,
                    "data": data.model_dump(),
                    "teacher": teacher.model_dump(),
                    "student": student.model_dump(),
                    "method": method.model_dump(),
                    "seed": 0,
                }
                try:
                    jobs[(data.name, student.arch, label)] = TrainConfig.model_validate(raw)
                except ValidationError as error:
                    where = f"with dataset {data.name!r}, student {student.arch!r}, method {label!r}"
                    problems += [(field, f"{message} ({where})") for field, message in _error_items(error, "train")]
    return problems, jobs


# --------------------------------------------------------------------------------------------
# Loading and resources
# --------------------------------------------------------------------------------------------
def load(path: str | Path, overrides: Sequence[str] = ()) -> Plan:
    """Validated plan from a YAML file plus `a.b.c=value` overrides; errors name the file and field."""
    return load_validated(Plan, path, overrides)


def check_resources(plan: Plan, available: Mapping[str, float]) -> int:
    """How many runs fit at once in `available` (`ray.cluster_resources()`, e.g. {"CPU": 2.0}).

    One run reserves num_workers * cpus_per_worker + resources.trial_cpus CPUs and num_workers *
    gpus_per_worker GPUs; max_concurrent_runs caps the count. Raises ConfigError naming the fields
    when not even one run fits.
    """
    return concurrent_jobs(
        plan.train, plan.resources.trial_cpus, plan.max_concurrent_runs, available, source=plan.source, job="run"
    )
