"""A tiny student checkpoint folder (model.pt + meta.json, as the loop writes them) and the
reference class maps the deploy tests compare against, computed by evaluation's own path."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor

from hwd_tune.config import ModelConfig
from hwd_tune.metrics import predict_scores
from hwd_tune.models import load_weights, model_from_config
from tests.trainables.helpers import TINY_STUDENT, tiny_config

NUM_CLASSES = 4


def write_student(folder: Path, seed: int = 0, num_classes: int = NUM_CLASSES) -> Path:
    """A checkpoint folder of a tiny random student on the synthetic dataset (48 px, 4 classes)."""
    torch.manual_seed(seed)
    model = model_from_config(ModelConfig(**TINY_STUDENT), num_classes)
    with torch.no_grad():  # BatchNorm running stats away from 0/1, so eval mode matters
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "model.pt")
    config = tiny_config(folder.parent, job="distill", method={"name": "hwd"}, teacher={"source": "teacher.pt"})
    meta = {
        "arch": TINY_STUDENT["arch"],
        "width_multiplier": TINY_STUDENT["width_multiplier"],
        "aux": True,
        "num_classes": num_classes,
        "dataset": "synthetic",
        "method": "hwd",
        "iteration": 8,
        "val_miou": 12.5,
        "config": config.model_dump(mode="json"),
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def reference_class_maps(checkpoint: Path, images: Tensor, num_classes: int = NUM_CLASSES) -> Tensor:
    """argmax of evaluation's scores (`predict_scores`) of the model built from model.pt: [N, H, W]."""
    model = model_from_config(ModelConfig(**TINY_STUDENT), num_classes)
    load_weights(model, checkpoint / "model.pt", strict=True)
    with torch.inference_mode():
        return predict_scores(model.eval(), images, images.shape[-2:]).argmax(dim=1)


@contextmanager
def fluent_mlflow_store(tracking_uri: str) -> Iterator[None]:
    """MLflow's fluent API (`mlflow.pyfunc.load_model("models:/...")`) pointed at `tracking_uri`, then
    put back: `mlflow.set_tracking_uri` also sets MLFLOW_TRACKING_URI, which later tests would inherit."""
    import mlflow

    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
