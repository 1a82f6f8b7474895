"""One interface for every distillation method: a registry of distillers built by name.

A distiller turns the student's and teacher's outputs and the labels into a dict of named,
already weighted loss terms (`{"ce": ..., "aux": ..., "hwd": ...}`); the training loop sums
them and logs each by name, and never branches on the method.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Generic, TypeVar

import torch
from pydantic import BaseModel, ValidationError
from torch import Tensor, nn

from hwd_tune.config import METHOD_PARAMS, TaskLossParams, format_validation_error
from hwd_tune.losses.task import TaskLoss
from hwd_tune.outputs import SegOutput

P = TypeVar("P", bound=BaseModel)


class Distiller(nn.Module, Generic[P]):
    """Base class: task loss on the student plus the method's distillation terms.

    Subclasses implement `distill()`. Modules that train together with the student (MGD's
    generator, CIRKD's projector) are ordinary submodules and appear in
    `student_parameters()`. Adversaries with their own optimiser (SKD/IFVD discriminators)
    live under `self.adversary`, are left out of `student_parameters()` and are updated by
    `adversary_step()`, which the loop calls after the student's optimiser step.
    """

    name: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = True

    def __init__(
        self,
        params: P,
        *,
        num_classes: int,
        feature_channels: tuple[int, int],
        task: TaskLoss,
    ) -> None:
        super().__init__()
        self.params = params
        self.num_classes = num_classes
        self.feature_channels = feature_channels
        self.task = task
        self.adversary: nn.Module | None = None
        # The adversary's own optimiser; the loop applies the same learning-rate schedule to it.
        self.adversary_optimizer: torch.optim.Optimizer | None = None

    def forward(self, student: SegOutput, teacher: SegOutput | None, labels: Tensor) -> dict[str, Tensor]:
        """Named, weighted loss terms for one batch; labels are [N, H, W] with ignore = -1."""
        terms = self.task(student, labels)
        if self.needs_teacher:
            if teacher is None:
                raise ValueError(f"distiller {self.name!r} needs the teacher's outputs, got None")
            terms.update(self.distill(student, teacher, labels))
        return terms

    def distill(self, student: SegOutput, teacher: SegOutput, labels: Tensor) -> dict[str, Tensor]:
        """The method's own weighted terms (without the task loss)."""
        raise NotImplementedError

    def student_parameters(self) -> Iterator[nn.Parameter]:
        """Trainable parameters that the student's optimiser updates (adversary excluded)."""
        for name, parameter in self.named_parameters():
            if parameter.requires_grad and not name.startswith("adversary."):
                yield parameter

    def adversary_step(self, student: SegOutput, teacher: SegOutput, labels: Tensor) -> dict[str, Tensor]:
        """Updates the method's adversary, if any; returns its detached loss terms for logging."""
        return {}


_REGISTRY: dict[str, tuple[type[Distiller], type[BaseModel]]] = {}

D = TypeVar("D", bound=type[Distiller])


def register_distiller(name: str, params: type[BaseModel]) -> Callable[[D], D]:
    """Class decorator: makes `build_distiller(name, ...)` build this class with `params`."""

    def decorate(cls: D) -> D:
        if METHOD_PARAMS.get(name) is not params:
            raise ValueError(f"distiller {name!r} must use hwd_tune.config.METHOD_PARAMS[{name!r}] as its params")
        if name in _REGISTRY:
            raise ValueError(f"distiller {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = (cls, params)
        return cls

    return decorate


def available_distillers() -> list[str]:
    """Names accepted by `build_distiller`, sorted."""
    return sorted(_REGISTRY)


def distiller_params(name: str) -> type[BaseModel]:
    """The pydantic params model (with the paper's defaults) of the distiller `name`."""
    return _lookup(name)[1]


def _lookup(name: str) -> tuple[type[Distiller], type[BaseModel]]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown distillation method {name!r}; expected one of {available_distillers()}")
    return _REGISTRY[name]


def build_distiller(
    name: str,
    *,
    num_classes: int,
    feature_channels: tuple[int, int] = (0, 0),
    aux_weight: float = TaskLossParams().aux_weight,
    ignore_index: int = TaskLossParams().ignore_index,
    **params: Any,
) -> Distiller:
    """Builds the distiller registered as `name`.

    feature_channels: (student, teacher) channels of `SegOutput.features`, used by methods
    that project or compare features (MGD, CIRKD). `params` are the method's own settings
    (see `hwd_tune.config`), validated strictly: a misspelt or out-of-range value raises a
    ValueError naming the method and the field.
    """
    cls, params_model = _lookup(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    try:
        validated = params_model.model_validate(params)
        task_params = TaskLossParams(aux_weight=aux_weight, ignore_index=ignore_index)
    except ValidationError as error:
        problems = format_validation_error(error, f"distiller {name!r}")
        raise ValueError(f"invalid parameters for distiller {name!r}:\n{problems}") from None
    task = TaskLoss(aux_weight=task_params.aux_weight, ignore_index=task_params.ignore_index)
    return cls(
        validated,
        num_classes=num_classes,
        feature_channels=tuple(feature_channels),
        task=task,
    )
