"""Pictures of predictions on a fixed few validation images: the same images at every new best, so
a run's pictures can be compared across iterations, and the sweep's winner beside its baseline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from hwd_tune.config import DataConfig
from hwd_tune.data.from_config import info_from_config, validation_set
from hwd_tune.data.palette import Palette, dataset_palette
from hwd_tune.data.panels import render_panel
from hwd_tune.data.transforms import eval_transforms, normalization
from hwd_tune.metrics import predict_scores


@dataclass(frozen=True)
class PredictionSamples:
    """The validation images that pictures are drawn on, with what rendering them needs."""

    indices: list[int]  # positions in the validation set (the held-out images with validate_on "holdout")
    images: list[Tensor]  # uint8 [3, H, W], as stored
    inputs: list[Tensor]  # float [3, H, W], normalised as the model sees them
    masks: list[Tensor]  # int64 [H, W] class ids, ignore = -1
    palette: Palette
    class_names: tuple[str, ...]

    def names(self) -> list[str]:
        """One name per image, `val_<index>`, used as the picture's name in MLflow."""
        return [f"val_{index:04d}" for index in self.indices]


def sample_indices(length: int, count: int) -> list[int]:
    """`count` positions spread evenly over `length` images, first and last included (all when fewer)."""
    if length <= 0 or count <= 0:
        return []
    if count >= length:
        return list(range(length))
    return sorted({round(float(position)) for position in np.linspace(0, length - 1, count)})


def load_prediction_samples(data: DataConfig, count: int) -> PredictionSamples:
    """The first, last and evenly spaced validation images, `count` in all (fewer if the split is smaller)."""
    stored = validation_set(data, normalised=False)
    normalise = eval_transforms(**normalization(data.normalization))
    indices = sample_indices(len(stored), count)
    images, inputs, masks = [], [], []
    for index in indices:
        image, mask = stored[index]
        images.append(torch.as_tensor(image).clone())
        masks.append(torch.as_tensor(mask).clone())
        inputs.append(torch.as_tensor(normalise(image, mask)[0]).clone())
    return PredictionSamples(indices, images, inputs, masks, dataset_palette(data), info_from_config(data).class_names)


def predicted_labels(model: nn.Module, inputs: Tensor, device: torch.device | str = "cpu") -> Tensor:
    """Class ids [H, W] (int64, CPU) that `model` predicts for one normalised image [3, H, W], as
    validation scores it: the logits upsampled to the image's size, then argmax. Mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            batch = inputs.unsqueeze(0).to(device)
            return predict_scores(model, batch, inputs.shape[-2:]).argmax(dim=1)[0].cpu()
    finally:
        model.train(was_training)


def predict_samples(model: nn.Module, samples: PredictionSamples, device: torch.device | str = "cpu") -> list[Tensor]:
    """`model`'s class ids [H, W] for each sample, in order (a frozen teacher's can be kept for the run)."""
    return [predicted_labels(model, inputs, device) for inputs in samples.inputs]


def render_predictions(
    samples: PredictionSamples, columns: Sequence[tuple[str, Sequence[Tensor]]]
) -> dict[str, np.ndarray]:
    """One panel per sample, by name: image | ground truth | each (title, class ids per sample) column."""
    panels = {}
    for position, (name, image, mask) in enumerate(zip(samples.names(), samples.images, samples.masks)):
        shown = [("ground truth", mask)] + [(title, labels[position]) for title, labels in columns]
        panels[name] = render_panel(image, shown, samples.palette, samples.class_names)
    return panels
