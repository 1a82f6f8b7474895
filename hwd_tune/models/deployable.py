"""A checkpoint as a deployable network: model.pt + meta.json rebuilt into a module whose forward
gives logits and class maps at the input's size, as evaluation computes them.

Only plain files are read (meta.json as JSON, model.pt with `torch.load(..., weights_only=True)`),
so loading runs no pickled code. The same module is what TorchScript and ONNX files are made from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import Tensor, nn

from hwd_tune.config import ModelConfig
from hwd_tune.models.checkpoint import CHECKPOINT_FILE, load_weights
from hwd_tune.models.from_config import model_from_config

META_FILE = "meta.json"  # what the weights are: arch, width, num_classes, the training config
DEFAULT_NORMALIZATION = "imagenet"  # hwd_tune.config.DataConfig.normalization's default


class ClassMapNetwork(nn.Module):
    """images [N, 3, H, W] (normalised) -> (logits [N, K, H, W] float32, class map [N, H, W] int64).

    The main head's logits are upsampled bilinearly (align_corners=True) to the input size, as
    `hwd_tune.metrics.predict_scores` does, so the class map is the prediction validation scores.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.network(images).logits
        logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=True)
        return logits, logits.argmax(dim=1)


@dataclass(frozen=True)
class DeployableStudent:
    """A checkpoint's network in eval mode, with what a caller needs to feed it."""

    network: ClassMapNetwork
    num_classes: int
    normalization: str  # name in hwd_tune.data.transforms.NORMALIZATIONS the inputs must follow
    dataset: str
    arch: str
    meta: dict[str, Any]


def read_checkpoint_meta(directory: str | Path) -> dict[str, Any]:
    """meta.json of a checkpoint directory, checked for the fields a network is rebuilt from."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{directory} has no {META_FILE}: expected an hwd-tune checkpoint (model.pt + meta.json)"
        )
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {path}: {error}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    num_classes = meta.get("num_classes")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"{path}: num_classes must be an int >= 1, got {num_classes!r}")
    if not isinstance(meta.get("arch"), str):
        raise ValueError(f"{path}: arch must be a model name, got {meta.get('arch')!r}")
    return meta


def load_deployable(directory: str | Path) -> DeployableStudent:
    """The network of a checkpoint directory (model.pt + meta.json), weights loaded strictly, in eval mode."""
    directory = Path(directory)
    meta = read_checkpoint_meta(directory)
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    described = config.get("student") or {
        key: meta[key] for key in ("arch", "width_multiplier", "aux") if meta.get(key) is not None
    }
    try:
        model_config = ModelConfig.model_validate({**described, "weights": None})
    except ValidationError as error:
        raise ValueError(f"{directory / META_FILE}: the student it describes is invalid: {error}") from None
    network = model_from_config(model_config, meta["num_classes"])
    load_weights(network, directory / CHECKPOINT_FILE, strict=True)
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    return DeployableStudent(
        network=ClassMapNetwork(network).eval(),
        num_classes=meta["num_classes"],
        normalization=str(data.get("normalization", DEFAULT_NORMALIZATION)),
        dataset=str(meta.get("dataset", data.get("name", "unknown"))),
        arch=model_config.arch,
        meta=meta,
    )


@torch.inference_mode()
def class_maps(student: DeployableStudent, images: Tensor) -> Tensor:
    """Class map [N, H, W] int64 of normalised images [N, 3, H, W] (float32)."""
    return student.network(images)[1]
