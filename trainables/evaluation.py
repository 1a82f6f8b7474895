"""Evaluation of a saved checkpoint or a model URI on a dataset's validation split (single process)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from hwd_tune import tracking
from hwd_tune.config import DataConfig, ModelConfig
from hwd_tune.data.from_config import info_from_config, validation_set
from hwd_tune.metrics import evaluate
from hwd_tune.models import load_weights
from trainables.checkpointing import META_FILE, MODEL_FILE, read_meta, verify_checkpoint
from trainables.loop import model_from_config


def evaluate_checkpoint(
    checkpoint: str | Path,
    dataset: str,
    *,
    root: str | None = None,
    flip: bool = False,
    scales: tuple[float, ...] = (1.0,),
    device: str = "cpu",
) -> dict[str, Any]:
    """mIoU (%, both conventions), pixel accuracy and per-class IoU of a checkpoint directory
    (a training checkpoint, or published weights: model.pt and meta.json), verified first."""
    verify_checkpoint(checkpoint, files=(MODEL_FILE, META_FILE))
    meta = read_meta(checkpoint)
    trained = meta.get("config", {})
    # holdout off: the official val split, even for a checkpoint trained with images held out
    data = DataConfig.model_validate({**trained.get("data", {}), "name": dataset, "root": root, "holdout": {}})
    info = info_from_config(data)
    if info.num_classes != meta["num_classes"]:
        raise ValueError(
            f"checkpoint {checkpoint} predicts {meta['num_classes']} classes but dataset {dataset!r} "
            f"has {info.num_classes}"
        )
    model_config = ModelConfig.model_validate(trained.get("student", {"arch": meta["arch"]}))
    model = model_from_config(model_config, info.num_classes)
    load_weights(model, Path(checkpoint) / MODEL_FILE, strict=True)
    model.to(torch.device(device))
    loader = DataLoader(validation_set(data), batch_size=1)
    confusion = evaluate(model, loader, info.num_classes, device=device, flip=flip, scales=scales)
    return {
        "miou": 100 * confusion.miou(),
        "miou_all": 100 * confusion.miou_all_classes(),
        "pixel_acc": 100 * confusion.pixel_accuracy(),
        "iou": [float(v) for v in confusion.iou()],
        "class_names": info.class_names,
    }


def evaluate_model(
    model_uri: str,
    dataset: str,
    *,
    tracking_uri: str | None,
    root: str | None = None,
    flip: bool = False,
    scales: tuple[float, ...] = (1.0,),
    device: str = "cpu",
) -> dict[str, Any]:
    """`evaluate_checkpoint` of a checkpoint directory or a model URI (models:/name@alias,
    models:/name/version, runs:/...), whose files are first downloaded, through the tracking
    server when there is one, into a temporary folder."""
    if not tracking.is_mlflow_source(model_uri):
        return evaluate_checkpoint(model_uri, dataset, root=root, flip=flip, scales=scales, device=device)
    with tempfile.TemporaryDirectory(prefix="hwd-evaluate-") as scratch:
        folder = tracking.resolve_student(model_uri, tracking_uri=tracking_uri, destination=scratch)
        return evaluate_checkpoint(folder, dataset, root=root, flip=flip, scales=scales, device=device)
