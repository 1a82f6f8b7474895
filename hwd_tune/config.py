"""Typed configuration with the paper's defaults: the one place where defaults live.

Every field carries the published value and a comment naming its source (method.md = the
project's summary of the paper and the authors' scripts; Table I = the supplementary's table).
Models are strict (`extra="forbid"`), so a misspelt key is an error that names the field.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

IGNORE_INDEX = -1  # the authors' code maps the files' 255 to -1 (method.md, Training recipe)


class StrictModel(BaseModel):
    """Base for all config models: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


# --------------------------------------------------------------------------------------------
# Task loss (every method, teacher training included)
# --------------------------------------------------------------------------------------------
class TaskLossParams(StrictModel):
    """Cross-entropy on the main head plus a weighted auxiliary FCN head (method.md, recipe)."""

    aux_weight: float = Field(0.4, ge=0.0)  # method.md: "plus 0.4 x the auxiliary FCN head's loss"
    ignore_index: int = IGNORE_INDEX


# --------------------------------------------------------------------------------------------
# Distillation methods: one params model per registered distiller (method.md, Baselines table)
# --------------------------------------------------------------------------------------------
class NoDistillationParams(StrictModel):
    """Student only (Table II column "none"): the task loss alone."""


class KDParams(StrictModel):
    """Pixel-wise KD over classes (method.md: T = 1, weight 1.0)."""

    temperature: float = Field(1.0, gt=0.0)
    weight: float = Field(1.0, ge=0.0)


class CWDParams(StrictModel):
    """Channel-wise distillation (method.md: tau = 4, weight 3.0)."""

    tau: float = Field(4.0, gt=0.0)
    weight: float = Field(3.0, ge=0.0)


class HWDParams(StrictModel):
    """Holistic Weighted Distillation, eq. 1 (method.md: tau 4, weight 3.0, MSE on probs, E, beta 0.1)."""

    tau: float = Field(4.0, gt=0.0)  # method.md: hard-coded 4 in the authors' code
    mu: float = 0.0  # Table I: ADE20K 0, Cityscapes 1.0, COCO-Stuff 0.1
    beta: float = Field(0.1, gt=0.0, le=1.0)  # Table I: 0.1
    weight: float = Field(3.0, ge=0.0)  # method.md: loss weight lambda = 3.0
    distance: Literal["mse", "l1", "smooth_l1", "kl"] = "mse"  # method.md: MSE recommended
    process: Literal["exp", "softmax"] = "exp"  # the paper's "E" (published) or "T"
    weight_tau: float = Field(1.0, gt=0.0)  # temperature of process "T"
    on: Literal["probs", "logits"] = "probs"  # what the channel distance compares
    pixel_norm: Literal["none", "n", "sqrt_n", "n2"] = "none"  # published results use none


class DISTParams(StrictModel):
    """DIST: inter/intra-class Pearson correlation, on raw logits (method.md: beta = gamma = 1)."""

    beta: float = Field(1.0, ge=0.0)
    gamma: float = Field(1.0, ge=0.0)
    softmax: bool = False  # the authors found raw logits better on ADE20K
    weight: float = Field(1.0, ge=0.0)


class MGDParams(StrictModel):
    """Masked generative distillation on features (method.md: weight 2e-5, mask ratio 0.75)."""

    weight: float = Field(2e-5, ge=0.0)
    mask_ratio: float = Field(0.75, ge=0.0, lt=1.0)


class SKDParams(StrictModel):
    """Structured KD: pixel KD + pairwise similarity + holistic adversarial (method.md)."""

    kd_weight: float = Field(1.0, ge=0.0)
    kd_temperature: float = Field(1.0, gt=0.0)
    pairwise_weight: float = Field(10.0, ge=0.0)
    adv_weight: float = Field(0.001, ge=0.0)  # generator side of the hinge loss
    discriminator_weight: float = Field(0.1, ge=0.0)  # "D 0.1" in method.md
    discriminator_lr: float = Field(4e-4, gt=0.0)  # the discriminator's own Adam


class IFVDParams(StrictModel):
    """Intra-class feature variation distillation + KD + adversarial (method.md)."""

    kd_weight: float = Field(1.0, ge=0.0)
    kd_temperature: float = Field(1.0, gt=0.0)
    ifv_weight: float = Field(20.0, ge=0.0)
    adv_weight: float = Field(0.001, ge=0.0)
    discriminator_weight: float = Field(0.1, ge=0.0)
    discriminator_lr: float = Field(4e-4, gt=0.0)


class CIRKDParams(StrictModel):
    """Cross-image relational KD (method.md: weights kd 1, mini-batch 1, memory pixel/region 0.1)."""

    kd_weight: float = Field(1.0, ge=0.0)
    kd_temperature: float = Field(1.0, gt=0.0)
    minibatch_pixel_weight: float = Field(1.0, ge=0.0)
    memory_pixel_weight: float = Field(0.1, ge=0.0)
    memory_region_weight: float = Field(0.1, ge=0.0)
    contrast_temperature: float = Field(0.1, gt=0.0)
    contrast_kd_temperature: float = Field(1.0, gt=0.0)
    pixel_memory_size: int = Field(20000, gt=0)
    pixel_contrast_size: int = Field(4096, gt=0)
    region_memory_size: int = Field(2000, gt=0)
    region_contrast_size: int = Field(1024, gt=0)
