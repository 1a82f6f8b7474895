"""Sweep files (search_spaces/*.yaml): what to tune, over which ranges, with which resources.

A sweep file holds one full distillation job (`train:`, a `config.TrainConfig`) and the search
around it (`search:`): ranges of the tuned method's parameters, the paper's values to try first,
the ASHA scheduler, the Optuna storage, the baselines and an optional final stage; `resources:`
adds what each trial's driver reserves. This is the schema layer only (pydantic and
yaml.safe_load); `hwd_tune.sweep.service` turns a `SweepConfig` into a Ray Tune `Tuner`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, PrivateAttr, ValidationError, model_validator

from hwd_tune.config import (
    METHOD_PARAMS,
    ConfigError,
    HoldoutConfig,
    StrictModel,
    TrainConfig,
    apply_overrides,
    format_validation_error,
    read_yaml,
)
from hwd_tune.data.holdout import holdout_count
from hwd_tune.storage import OPTUNA_STORAGE_ENV

ParameterValue = bool | int | float | str  # what a method parameter can hold (MethodConfig.params)
RESOURCE_TOLERANCE = 1e-9  # float slack when comparing resource sums (Ray rounds to 1e-4 units)
FileModel = TypeVar("FileModel", bound=StrictModel)  # a file-backed config with a `_source` (sweep, plan)


# --------------------------------------------------------------------------------------------
# The schema
# --------------------------------------------------------------------------------------------
class ParameterRange(StrictModel):
    """One searched parameter: a continuous range (uniform, loguniform), whole numbers from low
    to high, both included (int), or a list of values (choice)."""

    type: Literal["uniform", "loguniform", "int", "choice"]
    low: int | float | None = None
    high: int | float | None = None
    values: list[ParameterValue] | None = None

    @model_validator(mode="after")
    def _check_shape(self) -> ParameterRange:
        if self.type == "choice":
            if self.low is not None or self.high is not None:
                raise ValueError("a choice takes `values`, not low/high")
            if not self.values:
                raise ValueError("a choice needs a non-empty list of `values`")
            if len(set(map(repr, self.values))) != len(self.values):
                raise ValueError(f"choice values must be distinct, got {self.values}")
            return self
        if self.values is not None:
            raise ValueError(f"a {self.type} range takes low and high, not `values`")
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} range needs both low and high")
        if self.type == "int" and not (isinstance(self.low, int) and isinstance(self.high, int)):
            raise ValueError(f"an int range needs whole-number bounds, got low={self.low}, high={self.high}")
        if not self.low < self.high:
            raise ValueError(f"empty or inverted range: low ({self.low}) must be < high ({self.high})")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError(f"a loguniform range needs low > 0, got low={self.low}")
        return self

    def bounds(self) -> dict[str, ParameterValue]:
        """The extreme values, by field name ("low", "high" or "values[i]"): the range is valid for
        a method when every one of them is (the params' constraints are intervals)."""
        if self.type == "choice":
            return {f"values[{index}]": value for index, value in enumerate(self.values)}
        return {"low": self.low, "high": self.high}

    def contains(self, value: Any) -> bool:
        """Whether `value` could be sampled from this range (bounds included)."""
        if self.type == "choice":
            # True == 1 in Python, so a bool only matches a bool
            return any(
                value == allowed and isinstance(value, bool) == isinstance(allowed, bool) for allowed in self.values
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.type == "int" and not isinstance(value, int):
            return False
        return self.low <= value <= self.high

    def describe(self) -> str:
        """Human-readable form for error messages: `loguniform [1, 8]`, `choice [mse, l1]`."""
        if self.type == "choice":
            return f"choice {self.values}"
        return f"{self.type} [{self.low}, {self.high}]"


class SchedulerConfig(StrictModel):
    """ASHA early stopping on the search metric. Counted in training iterations (the `iteration`
    each report carries), not in number of reports."""

    type: Literal["asha", "none"] = "asha"
    grace_period: int | None = Field(None, ge=1)  # None: max_t // 10 (4000 of the paper's 40K)
    reduction_factor: float = Field(3.0, gt=1.0)  # eta; 3 as in Hyperband (Li et al., JMLR 2018)
    max_t: int | None = Field(None, ge=1)  # None: train.schedule.max_iters (filled in at load)


FinalInclude = Literal["table_i", "baselines"]


class FinalStageConfig(StrictModel):
    """Optional last stage: the best `top_k` configurations (and Table I, the baselines) retrained
    with every seed, so the winner is chosen by its mean over seeds, not by one lucky draw."""

    top_k: int = Field(0, ge=0)  # 0: no final stage
    max_iters: int | None = Field(None, ge=1)  # None: train.schedule.max_iters (filled in at load)
    seeds: list[int] = Field([0, 1, 2], min_length=1)  # training seeds: each configuration once per seed
    # also retrained: the paper's point (the first of points_to_evaluate, if any) and the baselines
    include: list[FinalInclude] = ["table_i", "baselines"]


class TunedBaseline(StrictModel):
    """A baseline tuned like the main method: same sampler, scheduler, budget; its own study."""

    name: str  # a method of METHOD_PARAMS, e.g. cwd
    space: dict[str, ParameterRange] = Field(min_length=1)  # its parameters -> ranges (e.g. tau, weight)


BaselineEntry = str | TunedBaseline  # a method run at its published defaults, or one tuned


class TuningHoldout(StrictModel):
    """How many training images trials are scored on when search.tune_on is "holdout" (seed:
    search.seed). A tenth, at most 2000 images: validation stays cheap on ADE20K and COCO-Stuff."""

    fraction: float = Field(0.1, gt=0.0, lt=1.0)  # share of the training split held out of the trials' training
    max_images: int | None = Field(2000, ge=1)  # cap on the count; None: no cap


class SearchConfig(StrictModel):
    """What Optuna (TPE) searches and how: metric, budget, ranges, first points, scheduler."""

    metric: Literal["val_miou", "val_miou_all", "val_pixel_acc"] = "val_miou"  # architecture.md
    mode: Literal["max", "min"] = "max"  # every reported metric is higher-is-better
    num_samples: int = Field(16, ge=1)  # trials in all, points_to_evaluate included
    max_concurrent_trials: int | None = Field(None, ge=1)  # None: as many as the resources fit
    seed: int = 0  # seeds the sampler (TPE, or the grid's order), so a sweep is reproducible
    # tpe: Optuna's TPE; grid: every combination of the `choice` values once (benchmarks/sweep.py)
    sampler: Literal["tpe", "grid"] = "tpe"
    # TPE's random start: trials drawn at random before TPE models the results. None: a quarter of
    # num_samples, 2 to 10. Optuna's own 10 would leave a quickstart-sized sweep entirely random.
    startup_trials: int | None = Field(None, ge=0)
    multivariate: bool = True  # one joint TPE model: tau and beta interact (beta = 1 ignores mu)
    space: dict[str, ParameterRange] = Field(min_length=1)  # parameter of train.method -> range
    points_to_evaluate: list[dict[str, ParameterValue]] = []  # the paper's Table I values first
    scheduler: SchedulerConfig = SchedulerConfig()
    storage: str | None = (
        None  # Optuna storage URL; None: HWD_OPTUNA_STORAGE, else sqlite:///<output_dir>/<name>/optuna.db
    )
    # Table II columns: a name runs at the method's published defaults; {name, space} is tuned too
    baselines: list[BaselineEntry] = ["none", "cwd"]
    final: FinalStageConfig = FinalStageConfig()
    # Which split trials and baselines are scored on. "holdout": training images held out of their
    # training, so the best score is not tuned on the split it is reported on (issue 15); the final
    # stage and best_config.yaml train on every training image and report val. "val": the old way.
    tune_on: Literal["holdout", "val"] = "holdout"
    holdout: TuningHoldout = TuningHoldout()


class SweepResources(StrictModel):
    """What one trial reserves besides its Ray Train workers (train.resources)."""

    # The trial's driver only coordinates its workers, which reserve their own CPUs: a tiny share
    # keeps a 2-core host from deadlocking with every CPU held by idle drivers.
    trial_cpus: float = Field(0.01, ge=0.0)
    # Times Tune restarts a trial that failed (its node or actor lost, or any error) from its last
    # checkpoint, reusing its MLflow run and Optuna trial; -1 = forever, 0 = a failure ends it.
    trial_max_failures: int = Field(2, ge=-1)


class SweepProblems(ValueError):
    """Checks across sections that failed, as (field path, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"{field}: {message}" for field, message in problems))


class SweepConfig(StrictModel):
    """One sweep file: a distillation job, the search around it and the driver's resources."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # names the study and output folder
    train: TrainConfig  # job "distill"; train.method.name is the method being tuned
    search: SearchConfig
    resources: SweepResources = SweepResources()
    _source: str = PrivateAttr("sweep config")  # the file it came from, for error messages

    @model_validator(mode="after")
    def _check_and_resolve(self) -> SweepConfig:
        problems = sweep_problems(self)
        if problems:
            raise SweepProblems(problems)
        scheduler, max_iters = self.search.scheduler, self.train.schedule.max_iters
        max_t = scheduler.max_t or max_iters
        self.search.scheduler = scheduler.model_copy(
            update={"max_t": max_t, "grace_period": scheduler.grace_period or max(1, max_t // 10)}
        )
        if self.search.final.max_iters is None:
            self.search.final = self.search.final.model_copy(update={"max_iters": max_iters})
        if self.search.storage is None:  # HWD_OPTUNA_STORAGE (the image sets it), else sqlite beside the sweep
            default = f"sqlite:///{Path(self.train.output_dir) / self.name / 'optuna.db'}"
            self.search.storage = os.environ.get(OPTUNA_STORAGE_ENV) or default
        return self

    @property
    def source(self) -> str:
        """The file this sweep was loaded from (or "sweep config" when built in code)."""
        return self._source


# --------------------------------------------------------------------------------------------
# Checks across sections (they need train.method to judge search.space)
# --------------------------------------------------------------------------------------------
Problems = list[tuple[str, str]]  # (field path, what is wrong and what is allowed)


def sweep_problems(sweep: SweepConfig) -> Problems:
    """Every inconsistency between `train` and `search`, as (field path, what is allowed)."""
    problems: Problems = []
    if sweep.train.job != "distill":
        message = f"a sweep tunes a distillation: must be 'distill', got {sweep.train.job!r}"
        problems.append(("train.job", message))
    if sweep.train.name is not None:
        message = "must be unset in a sweep: each trial and baseline gets its own run name"
        problems.append(("train.name", message))
    problems += _space_problems(sweep)
    problems += _point_problems(sweep.search)
    problems += _budget_problems(sweep)
    problems += _grid_problems(sweep.search)
    problems += _baseline_problems(sweep)
    problems += _final_problems(sweep.search)
    problems += _holdout_problems(sweep)
    storage = sweep.search.storage
    if storage is not None and "://" not in storage:
        example = "sqlite:///outputs/optuna.db"
        message = f"expected an Optuna storage URL such as {example!r}, got {storage!r}"
        problems.append(("search.storage", message))
    return problems


def _space_problems(sweep: SweepConfig) -> Problems:
    """Each searched parameter belongs to the tuned method and every bound satisfies its params model."""
    return _range_problems(sweep.train.method.name, sweep.train.method.params, sweep.search.space)


def _range_problems(method: str, base_params: Mapping[str, Any], space: Mapping[str, ParameterRange]) -> Problems:
    """Each parameter of `space` must belong to `method` and every bound must satisfy its params
    model (beta in (0, 1], tau > 0, ...), checked by validating the bounds with it."""
    params_model = METHOD_PARAMS[method]
    fields = params_model.model_fields
    problems = []
    for name, parameter_range in space.items():
        field = f"search.space.{name}"
        if name not in fields:
            message = f"not a parameter of method {method!r}; expected one of {sorted(fields)}"
            problems.append((field, message))
            continue
        if fields[name].annotation is int and parameter_range.type in ("uniform", "loguniform"):
            message = f"{name} takes whole numbers: use type 'int' or 'choice', not {parameter_range.type!r}"
            problems.append((f"{field}.type", message))
            continue
        for bound, value in parameter_range.bounds().items():
            try:
                params_model.model_validate({**base_params, name: value})
            except ValidationError as error:
                allowed = "; ".join(item["msg"] for item in error.errors() if item["loc"][:1] == (name,))
                message = f"{value!r} is not allowed for {name} of method {method!r}: {allowed}"
                problems.append((f"{field}.{bound}", message))
    return problems


def _point_problems(search: SearchConfig) -> Problems:
    """Each first point sets every searched parameter to a value inside its range."""
    problems = []
    for index, point in enumerate(search.points_to_evaluate):
        field = f"search.points_to_evaluate[{index}]"
        for name, value in point.items():
            if name not in search.space:
                message = f"not in search.space; expected one of {sorted(search.space)}"
                problems.append((f"{field}.{name}", message))
            elif not search.space[name].contains(value):
                allowed = search.space[name].describe()
                problems.append((f"{field}.{name}", f"{value!r} is outside search.space.{name}: {allowed}"))
        missing = sorted(set(search.space) - set(point))
        if missing:
            problems.append((field, f"missing {missing}: every point sets every parameter of search.space"))
    return problems


def _budget_problems(sweep: SweepConfig) -> Problems:
    """Trial counts and the scheduler's time limits against the training schedule."""
    search, max_iters = sweep.search, sweep.train.schedule.max_iters
    problems = []
    if search.num_samples < len(search.points_to_evaluate):
        points = len(search.points_to_evaluate)
        message = f"{search.num_samples} is fewer than the {points} points_to_evaluate: must be >= {points}"
        problems.append(("search.num_samples", message))
    if search.final.top_k > search.num_samples:
        message = f"{search.final.top_k} exceeds search.num_samples ({search.num_samples})"
        problems.append(("search.final.top_k", f"{message}: must be <= it"))
    scheduler = search.scheduler
    max_t = scheduler.max_t or max_iters
    if max_t > max_iters:
        message = f"{max_t} exceeds train.schedule.max_iters ({max_iters}), where trials stop"
        problems.append(("search.scheduler.max_t", f"{message}: must be <= it"))
    if scheduler.type == "asha" and scheduler.grace_period is not None and scheduler.grace_period > max_t:
        message = f"{scheduler.grace_period} exceeds max_t ({max_t}, default train.schedule.max_iters)"
        problems.append(("search.scheduler.grace_period", f"{message}: must be <= max_t"))
    return problems


def grid_size(search: SearchConfig) -> int | None:
    """How many combinations a grid over search.space has; None when a parameter is not a choice."""
    if any(parameter.type != "choice" for parameter in search.space.values()):
        return None
    return math.prod(len(parameter.values) for parameter in search.space.values())


def startup_trials(search: SearchConfig) -> int:
    """Random trials before TPE takes over: search.startup_trials, else num_samples // 4 in [2, 10]."""
    if search.startup_trials is not None:
        return search.startup_trials
    return min(10, max(2, search.num_samples // 4))


def _grid_problems(search: SearchConfig) -> Problems:
    """A grid sweep (search.sampler: grid) tries each combination of `choice` values exactly once.

    Its first points need no check of their own: every parameter being a choice, the point checks
    (_point_problems) already make each one a grid point.
    """
    if search.sampler != "grid":
        return []
    problems = [
        (
            f"search.space.{name}.type",
            f"a grid sweep (search.sampler: grid) needs type 'choice' with the values to try, got {parameter.type!r}",
        )
        for name, parameter in search.space.items()
        if parameter.type != "choice"
    ]
    size = grid_size(search)
    if size is not None and search.num_samples != size:
        counts = " x ".join(f"{len(parameter.values)} {name}" for name, parameter in search.space.items())
        message = f"a grid sweep runs every combination once: must be {size} ({counts}), got {search.num_samples}"
        problems.append(("search.num_samples", message))
    return problems


def _holdout_problems(sweep: SweepConfig) -> Problems:
    """The sweep alone decides what is held out (search.tune_on, search.holdout); a synthetic
    training split, whose size is known here, must be large enough to hold images out."""
    problems = []
    if sweep.train.data.holdout != HoldoutConfig():
        message = "must be unset in a sweep: search.tune_on and search.holdout set it for trials and baselines"
        problems.append(("train.data.holdout", message))
    data = sweep.train.data
    if sweep.search.tune_on == "holdout" and data.name == "synthetic":
        holdout = sweep.search.holdout
        try:
            holdout_count(data.synthetic.train_samples, holdout.fraction, holdout.max_images)
        except ValueError as error:
            problems.append(("train.data.synthetic.train_samples", f"{error}; or set search.tune_on: val"))
    return problems


def baseline_method(entry: BaselineEntry) -> str:
    """The method name of a baseline entry (a plain name, or a tuned baseline's `name`)."""
    return entry if isinstance(entry, str) else entry.name


def _baseline_problems(sweep: SweepConfig) -> Problems:
    """Baselines are known methods other than the tuned one, each listed once; a tuned baseline's
    space ranges over its own parameters, within what its params model allows."""
    methods = [baseline_method(entry) for entry in sweep.search.baselines]
    problems = []
    for index, (method, entry) in enumerate(zip(methods, sweep.search.baselines)):
        field = f"search.baselines[{index}]" + ("" if isinstance(entry, str) else ".name")
        if method not in METHOD_PARAMS:
            problems.append((field, f"unknown method {method!r}; expected one of {sorted(METHOD_PARAMS)}"))
        elif isinstance(entry, TunedBaseline):
            if method == sweep.train.method.name:
                problems.append((field, f"{method!r} is the method this sweep tunes: a tuned baseline is another one"))
            else:
                problems += [
                    (f"search.baselines[{index}].{sub_field.removeprefix('search.')}", message)
                    for sub_field, message in _range_problems(method, {}, entry.space)
                ]
    if len(set(methods)) != len(methods):
        problems.append(("search.baselines", f"each method at most once, got {methods}"))
    return problems


def _final_problems(search: SearchConfig) -> Problems:
    """Each final-stage seed once (a repeated seed would count one run twice in the statistics)."""
    seeds = search.final.seeds
    return [] if len(set(seeds)) == len(seeds) else [("search.final.seeds", f"each seed at most once, got {seeds}")]


# --------------------------------------------------------------------------------------------
# Loading, resources, and the training jobs a sweep runs
# --------------------------------------------------------------------------------------------
def load(path: str | Path, overrides: Sequence[str] = ()) -> SweepConfig:
    """Validated sweep from a YAML file plus `a.b.c=value` overrides; errors name file and field."""
    return load_validated(SweepConfig, path, overrides)


def load_validated(model: type[FileModel], path: str | Path, overrides: Sequence[str] = ()) -> FileModel:
    """`model` (a sweep or a plan) validated from a YAML file plus overrides, remembering the file
    for later error messages; ConfigError lists every problem as `file: field: message`."""
    raw = read_yaml(path)
    try:
        loaded = model.model_validate(apply_overrides(raw, list(overrides)))
    except ValidationError as error:
        raise ConfigError(describe_problems(error, str(path))) from None
    loaded._source = str(path)
    return loaded


def describe_problems(error: ValidationError, source: str) -> str:
    """One line per problem, `source: field: message`, for schema errors and cross-section ones
    (a sweep's SweepProblems, or any subclass: a plan's PlanProblems)."""
    for problem in error.errors():
        cause = problem.get("ctx", {}).get("error")
        if isinstance(cause, SweepProblems):  # only error then: pydantic runs it on valid fields
            return "\n".join(f"{source}: {field}: {message}" for field, message in cause.problems)
    return format_validation_error(error, source)


def check_resources(sweep: SweepConfig, available: Mapping[str, float]) -> int:
    """How many trials fit at once in `available` (`ray.cluster_resources()`, e.g. {"CPU": 2.0}).

    One trial reserves num_workers * cpus_per_worker + trial_cpus CPUs and num_workers *
    gpus_per_worker GPUs. Raises ConfigError naming the fields when not even one trial fits.
    """
    return concurrent_jobs(
        sweep.train,
        sweep.resources.trial_cpus,
        sweep.search.max_concurrent_trials,
        available,
        source=sweep.source,
        job="trial",
    )


def concurrent_jobs(
    train: TrainConfig, driver_cpus: float, cap: int | None, available: Mapping[str, float], *, source: str, job: str
) -> int:
    """How many training jobs of `train` (plus `driver_cpus` for each Tune driver) fit at once in
    `available`, at most `cap`; ConfigError naming the fields when not even one fits."""
    workers = train.resources
    needed = {
        "CPU": workers.num_workers * workers.cpus_per_worker + driver_cpus,
        "GPU": workers.num_workers * workers.gpus_per_worker,
    }
    fields = {
        "CPU": "train.resources.num_workers x cpus_per_worker + resources.trial_cpus",
        "GPU": "train.resources.num_workers x gpus_per_worker",
    }
    fits = cap or math.inf
    problems = []
    for kind, per_job in needed.items():
        if per_job <= 0:
            continue
        have = float(available.get(kind, 0.0))
        if per_job > have + RESOURCE_TOLERANCE:
            shortage = f"one {job} needs {per_job:g} {kind}s, the cluster has {have:g}"
            problems.append(f"{source}: {fields[kind]}: {shortage}; lower them or add nodes")
        else:
            fits = min(fits, math.floor(have / per_job + RESOURCE_TOLERANCE))
    if problems:
        raise ConfigError("\n".join(problems))
    return int(fits)


def tuning_holdout(sweep: SweepConfig) -> HoldoutConfig:
    """data.holdout of trials and baselines: search.holdout's images (seed search.seed) scored in
    place of val when search.tune_on is "holdout", else off (the whole training split, val)."""
    if sweep.search.tune_on != "holdout":
        return HoldoutConfig()
    holdout = sweep.search.holdout
    return HoldoutConfig(
        fraction=holdout.fraction, max_images=holdout.max_images, seed=sweep.search.seed, validate_on="holdout"
    )


def trial_train_config(sweep: SweepConfig, params: Mapping[str, Any], max_iters: int | None = None) -> TrainConfig:
    """The training job of one trial: train.method.params with the sampled `params` on top, trained
    and scored on the tuning split (`tuning_holdout`); `max_iters` replaces train.schedule.max_iters.

    The final stage retrains on the whole training split and reports val: `final_train_config`.
    """
    method_params = _method_params(sweep, params)
    return _train_config(sweep, sweep.train.method.name, method_params, tuning_holdout(sweep), max_iters=max_iters)


def final_train_config(
    sweep: SweepConfig, params: Mapping[str, Any], *, seed: int | None = None, max_iters: int | None = None
) -> TrainConfig:
    """A trial's job retrained for the final stage: on the whole training split, scored on val,
    search.final.max_iters long (or `max_iters`), with train.seed (or `seed`)."""
    length = sweep.search.final.max_iters if max_iters is None else max_iters
    method_params = _method_params(sweep, params)
    return _train_config(sweep, sweep.train.method.name, method_params, HoldoutConfig(), max_iters=length, seed=seed)


def baseline_train_config(sweep: SweepConfig, method: str) -> TrainConfig:
    """The training job of a baseline: `method` with its published default params, same recipe
    and the same tuning split as the trials it is compared with."""
    if method not in METHOD_PARAMS:
        expected = sorted(METHOD_PARAMS)
        raise ValueError(f"{sweep.source}: unknown baseline method {method!r}; expected one of {expected}")
    return _train_config(sweep, method, {}, tuning_holdout(sweep))


def _method_params(sweep: SweepConfig, params: Mapping[str, Any]) -> dict[str, Any]:
    """train.method.params with the sampled `params` (all in search.space) on top."""
    unknown = sorted(set(params) - set(sweep.search.space))
    if unknown:
        searched = sorted(sweep.search.space)
        raise ValueError(f"{sweep.source}: trial parameters {unknown} are not in search.space {searched}")
    return {**sweep.train.method.params, **{name: _plain(value) for name, value in params.items()}}


def final_job_config(sweep: SweepConfig, method: str, params: Mapping[str, Any], seed: int | None) -> TrainConfig:
    """A final-stage run of any candidate: the tuned method's (`final_train_config`) or a baseline's,
    `method` with `params` on the whole training split, scored on val, search.final.max_iters long,
    trained with `seed` (None keeps train.seed: what a user trains again from best_config.yaml)."""
    if method not in METHOD_PARAMS:
        raise ValueError(f"{sweep.source}: unknown method {method!r}; expected one of {sorted(METHOD_PARAMS)}")
    if method == sweep.train.method.name:
        return final_train_config(sweep, params, seed=seed)
    sampled = {name: _plain(value) for name, value in params.items()}
    return _train_config(sweep, method, sampled, HoldoutConfig(), max_iters=sweep.search.final.max_iters, seed=seed)


def tuned_baseline_sweep(sweep: SweepConfig, baseline: TunedBaseline) -> SweepConfig:
    """The search of a tuned baseline: `<name>-<method>`, the same recipe, sampler, scheduler and
    budget, the baseline's own space and Optuna study; its published defaults are its first point
    when they lie inside that space. No baselines or final stage of its own."""
    raw = sweep.model_dump(mode="json")
    raw["name"] = f"{sweep.name}-{baseline.name}"
    raw["train"]["method"] = {"name": baseline.name, "params": {}}
    search = raw["search"]
    search["space"] = {name: ranged.model_dump(exclude_none=True) for name, ranged in baseline.space.items()}
    defaults = METHOD_PARAMS[baseline.name]().model_dump()
    first = {name: defaults[name] for name in baseline.space}
    inside = all(ranged.contains(first[name]) for name, ranged in baseline.space.items())
    search["points_to_evaluate"] = [first] if inside else []
    search["baselines"] = []
    search["final"] = {"top_k": 0}
    if search["storage"] == f"sqlite:///{Path(sweep.train.output_dir) / sweep.name / 'optuna.db'}":
        search["storage"] = None  # the default: next to the baseline's own sweep folder
    derived = SweepConfig.model_validate(raw)
    derived._source = f"{sweep.source} (search.baselines: {baseline.name})"
    return derived


def _train_config(
    sweep: SweepConfig,
    method: str,
    params: dict[str, Any],
    holdout: HoldoutConfig,
    *,
    max_iters: int | None = None,
    seed: int | None = None,
) -> TrainConfig:
    """sweep.train with another method, params and data.holdout (and length, seed), validated again."""
    raw = sweep.train.model_dump()
    raw["method"] = {"name": method, "params": params}
    raw["data"]["holdout"] = holdout.model_dump()
    if max_iters is not None:
        raw["schedule"]["max_iters"] = max_iters
    if seed is not None:
        raw["seed"] = seed
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, f"{sweep.source} ({method} {params})")) from None


def _plain(value: Any) -> Any:
    """Python scalar of a sampled value (Tune may hand over numpy scalars)."""
    if isinstance(value, bool | int | float | str):
        return value
    return value.item() if hasattr(value, "item") else value
