"""Datasets by name: `build_dataset("ade20k", root=..., split="val")` and `dataset_info(name)`.

Each dataset class registers itself with `@register_dataset(name)` and provides a classmethod
`info(**kwargs) -> DatasetInfo`, so the class count and names are known without the files.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch.utils.data import Dataset

from hwd_tune.config import IGNORE_INDEX


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a metric need to know about a dataset's labels."""

    num_classes: int
    class_names: tuple[str, ...]
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} entries, expected num_classes={self.num_classes}"
            )


_REGISTRY: dict[str, type[Dataset]] = {}

D = TypeVar("D", bound=type[Dataset])


def register_dataset(name: str) -> Callable[[D], D]:
    """Class decorator: `build_dataset(name, ...)` builds this class; it must define `info()`.

    The class's `needs_root` attribute (default True) says whether it reads files under `root`.
    """

    def decorate(cls: D) -> D:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} is registered twice")
        if not callable(getattr(cls, "info", None)):
            raise ValueError(f"dataset class {cls.__name__} must define a classmethod info()")
        _REGISTRY[name] = cls
        return cls

    return decorate


def available_datasets() -> list[str]:
    """Names accepted by `build_dataset` and `dataset_info`, sorted."""
    return sorted(_REGISTRY)


def _lookup(name: str) -> type[Dataset]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; expected one of {available_datasets()}")
    return _REGISTRY[name]


def _check_arguments(name: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Raises a ValueError naming the dataset and the argument when `function` cannot take them."""
    try:
        inspect.signature(function).bind(*args, **kwargs)
    except TypeError as error:
        raise ValueError(f"invalid arguments for dataset {name!r}: {error}") from None


def dataset_info(name: str, **kwargs: Any) -> DatasetInfo:
    """Class count, names and ignore index of `name`, without reading images or labels.

    kwargs go to the class's `info()`: the synthetic dataset takes `num_classes`, the folder one
    `root` and `classes` (it reads <root>/classes.yaml).
    """
    cls = _lookup(name)
    _check_arguments(name, cls.info, **kwargs)
    return cls.info(**kwargs)


def build_dataset(
    name: str,
    *,
    root: str | None = None,
    split: str = "train",
    transforms: Callable[..., Any] | None = None,
    **kwargs: Any,
) -> Dataset:
    """The dataset `name` for `split`; samples are `(Image [3, H, W], Mask [H, W] int64)`.

    `root` is required for datasets read from files and must be None for the synthetic one;
    `transforms(image, mask)` (e.g. `train_transforms()`) is applied to every sample.
    """
    cls = _lookup(name)
    if getattr(cls, "needs_root", True):
        if root is None:
            raise ValueError(f"dataset {name!r} reads files: root is required, got None")
        args: tuple[Any, ...] = (root,)
    else:
        if root is not None:
            raise ValueError(f"dataset {name!r} is generated, it takes no root (got {root!r})")
        args = ()
    kwargs = {"split": split, "transforms": transforms, **kwargs}
    _check_arguments(name, cls, *args, **kwargs)
    return cls(*args, **kwargs)
