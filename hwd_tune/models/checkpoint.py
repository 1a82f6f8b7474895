"""Loads weights into a model: the authors' full-model and ImageNet backbone files, our checkpoints.

Accepted sources (all read with `torch.load(..., weights_only=True)`):
- a full-model state_dict (`deeplabv3_resnet101_citys_best_model.pth`, our `model.pt`), keys
  `pretrained.*`, `head.*`, `auxlayer.*`, possibly under a DDP `module.` prefix;
- an ImageNet backbone file (`resnet18-imagenet.pth`, `mobilenetv2-imagenet.pth`) whose keys
  lack the `pretrained.` prefix: loaded into the backbone only, its classifier keys skipped;
- a checkpoint directory holding `model.pt`, or an in-memory state_dict.
A strict load never loads part of a file: any missing, unexpected or wrong-shape key is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "model.pt"  # the model's state_dict inside one of our checkpoint directories
DDP_PREFIX = "module."
MODEL_PREFIXES = ("pretrained.", "head.", "auxlayer.")  # top-level names of a full model's keys
OPTIONAL_BUFFER_SUFFIX = "num_batches_tracked"  # absent from older files; torch keeps its own

StateSource = str | PathLike | Mapping[str, Tensor]


@dataclass
class LoadReport:
    """What `load_weights` did. Keys are the model's names (after prefix mapping)."""

    source: str
    kind: Literal["full", "backbone"]
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model (in scope) but not the file
    unexpected: list[str] = field(default_factory=list)  # in the file but not the model
    mismatched: list[str] = field(default_factory=list)  # "key: checkpoint [..] vs model [..]"
    ignored: list[str] = field(default_factory=list)  # ImageNet classifier keys, skipped on purpose

    @property
    def complete(self) -> bool:
        """True when every key in scope was loaded and nothing unknown was in the file."""
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self) -> str:
        """Human-readable list of missing, unexpected and wrong-shape keys."""
        parts = []
        for title, keys in (
            ("wrong shape", self.mismatched),
            ("missing from the checkpoint", self.missing),
            ("unexpected in the checkpoint", self.unexpected),
        ):
            if keys:
                parts.append(f"{title} ({len(keys)}): " + ", ".join(keys))
        return "; ".join(parts)


def load_weights(model: nn.Module, source: StateSource, strict: bool = True) -> LoadReport:
    """Loads `source` (file, checkpoint directory or state_dict) into `model` and reports what happened.

    strict=True raises ValueError listing every missing, unexpected and wrong-shape key and leaves
    the model untouched; strict=False loads the keys that fit and logs a warning about the rest.
    """
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    source_name, state = _read_state_dict(source)
    state = _strip_ddp_prefix(state)

    model_state = model.state_dict()
    kind: Literal["full", "backbone"] = "full"
    ignored: list[str] = []
    backbone_prefix = getattr(model, "backbone_key_prefix", None)
    if backbone_prefix is not None and not any(key.startswith(MODEL_PREFIXES) for key in state):
        kind = "backbone"
        classifier_prefixes = tuple(getattr(model, "imagenet_classifier_prefixes", ()))
        ignored = sorted(key for key in state if key.startswith(classifier_prefixes))
        state = {
            backbone_prefix + key: value for key, value in state.items() if not key.startswith(classifier_prefixes)
        }

    report = _compare(source_name, kind, state, model_state, ignored)
    if kind == "backbone":
        report.missing = [key for key in report.missing if key.startswith(backbone_prefix)]

    if strict and not report.complete:
        raise ValueError(f"checkpoint {source_name} does not fit the model ({kind} load): {report.problems()}")
    loadable = {key: state[key] for key in report.loaded}
    model.load_state_dict(loadable, strict=False)
    if not report.complete:
        logger.warning("partial load of %s (%s): skipped %s", source_name, kind, report.problems())
    return report


def _compare(
    source_name: str,
    kind: Literal["full", "backbone"],
    state: Mapping[str, Tensor],
    model_state: Mapping[str, Tensor],
    ignored: list[str],
) -> LoadReport:
    report = LoadReport(source=source_name, kind=kind, ignored=ignored)
    for key, value in state.items():
        if key not in model_state:
            report.unexpected.append(key)
        elif value.shape != model_state[key].shape:
            report.mismatched.append(f"{key}: checkpoint {list(value.shape)} vs model {list(model_state[key].shape)}")
        else:
            report.loaded.append(key)
    report.missing = [key for key in model_state if key not in state and not key.endswith(OPTIONAL_BUFFER_SUFFIX)]
    return report


def _read_state_dict(source: StateSource) -> tuple[str, dict[str, Tensor]]:
    """(name for messages, state_dict) from a path, a checkpoint directory or a mapping."""
    if isinstance(source, Mapping):
        return "<state_dict>", _validated(dict(source), "<state_dict>")
    if not isinstance(source, (str, PathLike)):
        raise ValueError(f"checkpoint must be a path or a state_dict, got {type(source).__name__}")
    path = Path(source)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and torch errors alike: not a readable state_dict
        raise ValueError(f"cannot read checkpoint {path}: {type(error).__name__}: {error}") from error
    return str(path), _validated(loaded, str(path))


def _validated(loaded: object, source_name: str) -> dict[str, Tensor]:
    if not isinstance(loaded, Mapping):
        raise ValueError(
            f"checkpoint {source_name} holds a {type(loaded).__name__}, expected a plain state_dict (dict of tensors)"
        )
    not_tensors = [str(key) for key, value in loaded.items() if not isinstance(value, Tensor)]
    if not_tensors:
        raise ValueError(
            f"checkpoint {source_name} is not a plain state_dict: entries {not_tensors[:5]} are not tensors"
        )
    return dict(loaded)


def _strip_ddp_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Removes the `module.` prefix that a DistributedDataParallel wrapper adds to every key."""
    if state and all(key.startswith(DDP_PREFIX) for key in state):
        return {key[len(DDP_PREFIX) :]: value for key, value in state.items()}
    return state
