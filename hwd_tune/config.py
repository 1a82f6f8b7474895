"""Typed configuration with the paper's defaults: the one place where defaults live.

Every field carries the published value and a comment naming its source (method.md = the
project's summary of the paper and the authors' scripts; Table I = the supplementary's table).
Models are strict (`extra="forbid"`), so a misspelt key is an error that names the field.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hwd_tune.storage import resolve_output_dir, resolve_storage

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
    discriminator_beta1: float = Field(0.9, ge=0.0, lt=1.0)  # train_skd.py: Adam betas 0.9, 0.99
    discriminator_beta2: float = Field(0.99, ge=0.0, lt=1.0)
    discriminator_width: int = Field(64, ge=2)  # authors' --adv-conv-dim 64 (first conv's channels)


class IFVDParams(StrictModel):
    """Intra-class feature variation distillation + KD + adversarial (method.md)."""

    kd_weight: float = Field(1.0, ge=0.0)
    kd_temperature: float = Field(1.0, gt=0.0)
    ifv_weight: float = Field(20.0, ge=0.0)
    adv_weight: float = Field(0.001, ge=0.0)
    discriminator_weight: float = Field(0.1, ge=0.0)
    discriminator_lr: float = Field(4e-4, gt=0.0)
    discriminator_beta1: float = Field(0.9, ge=0.0, lt=1.0)  # train_ifvd.py: Adam betas 0.9, 0.99
    discriminator_beta2: float = Field(0.99, ge=0.0, lt=1.0)
    discriminator_width: int = Field(64, ge=2)  # authors' --adv-conv-dim 64 (first conv's channels)


class CIRKDParams(StrictModel):
    """Cross-image relational KD (method.md: weights kd 1, mini-batch 1, memory pixel/region 0.1)."""

    kd_weight: float = Field(1.0, ge=0.0)
    kd_temperature: float = Field(1.0, gt=0.0)
    minibatch_pixel_weight: float = Field(1.0, ge=0.0)
    memory_pixel_weight: float = Field(0.1, ge=0.0)
    memory_region_weight: float = Field(0.1, ge=0.0)
    contrast_temperature: float = Field(0.1, gt=0.0)
    contrast_kd_temperature: float = Field(1.0, gt=0.0)
    pixel_memory_size: int = Field(20000, gt=0)  # per class (train_cirkd.py defaults)
    pixel_contrast_size: int = Field(4096, gt=0)  # in all; per class size // classes + 1
    region_memory_size: int = Field(2000, gt=0)  # per class
    region_contrast_size: int = Field(1024, gt=0)  # in all; per class size // classes + 1
    pixel_update_per_class: int = Field(16, gt=0)  # authors' pixel_update_freq (per image, class)
    sampling_seed: int = Field(0, ge=0)  # equal on all workers, so DDP workers keep identical banks


METHOD_PARAMS: dict[str, type[StrictModel]] = {
    "none": NoDistillationParams,
    "kd": KDParams,
    "cwd": CWDParams,
    "hwd": HWDParams,
    "dist": DISTParams,
    "mgd": MGDParams,
    "skd": SKDParams,
    "ifvd": IFVDParams,
    "cirkd": CIRKDParams,
}
"""Every distillation method of Table II and the params model holding its published defaults."""


# --------------------------------------------------------------------------------------------
# Training job (teacher training and distillation share one schema and one loop)
# --------------------------------------------------------------------------------------------
class SyntheticDataParams(StrictModel):
    """Size of the built-in synthetic dataset (quickstart and tests: no files needed)."""

    num_classes: int = Field(6, ge=2)
    image_size: int = Field(64, ge=16)
    train_samples: int = Field(512, ge=1)
    val_samples: int = Field(64, ge=1)
    seed: int = 0


class HoldoutConfig(StrictModel):
    """Training images held out of training to validate on (hwd_tune.data.holdout); off by default.

    Why (issue 15): a sweep that tunes on the validation split and reports it too overstates the
    best score, so its trials train without these images and are scored on them instead.
    """

    fraction: float = Field(0.0, ge=0.0, lt=1.0)  # share of the training images; 0 = off (the published recipe)
    max_images: int | None = Field(None, ge=1)  # cap on the count (keeps validation cheap on big datasets)
    seed: int = 0  # fixes which images: a pure function of (count of images, fraction, max_images, seed)
    validate_on: Literal["val", "holdout"] = "val"  # the split validation scores: official val, or these images

    @model_validator(mode="after")
    def _check_on(self) -> HoldoutConfig:
        if self.validate_on == "holdout" and self.fraction == 0:
            raise ValueError(
                "validate_on 'holdout' needs images held out: set fraction in (0, 1), got fraction 0 (off)"
            )
        return self


ColourChannel = Annotated[int, Field(ge=0, le=255)]
Colour = tuple[ColourChannel, ColourChannel, ColourChannel]


class FolderClassesConfig(StrictModel):
    """Classes of a "folder" dataset (the schema of <root>/classes.yaml); a field set in the
    config's `data.folder` overrides the same field of the file."""

    classes: list[str] | None = None  # names in index order: mask value k is class k
    ignore_index: int | None = Field(None, ge=0, le=65535)  # mask value for "not labelled" (default 255)
    palette: list[Colour] | None = None  # [r, g, b] of each class, for RGB masks (exact match)
    ignore_color: Colour | None = None  # [r, g, b] that RGB masks use for "not labelled"


class DataConfig(StrictModel):
    """Which dataset, where, and the training augmentation (method.md, Training recipe)."""

    name: Literal["ade20k", "cityscapes", "cocostuff", "cocostuff_182", "voc", "folder", "synthetic"] = "synthetic"
    root: str | None = None  # dataset directory; unused for "synthetic"
    folder: FolderClassesConfig | None = None  # name "folder": overrides <root>/classes.yaml
    check_samples: int = Field(200, ge=0)  # masks per split checked (before training a folder); 0 = all
    crop_size: int | tuple[int, int] = 512  # method.md: random crop 512 x 512 (h, w allowed)
    scale_range: tuple[float, float] = (0.5, 2.0)  # method.md: random scale 0.5-2.0
    normalization: Literal["imagenet", "authors_bgr"] = "imagenet"  # authors_bgr for their weights
    loader_workers: int = Field(2, ge=0)  # DataLoader processes per Ray Train worker
    synthetic: SyntheticDataParams = SyntheticDataParams()
    holdout: HoldoutConfig = HoldoutConfig()  # off: train on the whole training split, validate on val

    @field_validator("root")
    @classmethod
    def _absolute_root(cls, root: str | None) -> str | None:
        """Relative roots are made absolute where the config is loaded: Ray's workers run in
        another working directory, where a relative path would point elsewhere."""
        if root is None or "://" in root:
            return root
        return os.path.abspath(os.path.expanduser(root))

    @model_validator(mode="after")
    def _check_folder_block(self) -> DataConfig:
        if self.folder is not None and self.name != "folder":
            raise ValueError(f"data.folder describes a 'folder' dataset, but data.name is {self.name!r}")
        return self


class ModelConfig(StrictModel):
    """A network from `hwd_tune.models.build_model`, optionally with weights to start from."""

    arch: str = "deeplabv3_resnet18"  # Table II students: deeplabv3_resnet18/_mobilenetv2, pspnet_resnet18
    width_multiplier: float = Field(1.0, gt=0.0)  # < 1 only for tiny CPU models (quickstart, tests)
    aux: bool = True  # method.md: aux FCN head on layer3 (MobileNetV2 DeepLabV3 has none)
    weights: str | None = None  # ImageNet backbone or full checkpoint file; None = random init
    norm: Literal["batchnorm", "none"] = "batchnorm"  # "none" only for exact equivalence checks
    dropout: bool = True  # the heads' dropout (0.1, as the authors'); off for equivalence checks


class TeacherConfig(ModelConfig):
    """The frozen teacher: an MLflow registry URI (models:/name@alias), a file, or a run artifact."""

    arch: str = "deeplabv3_resnet101"  # method.md: DeepLabV3-ResNet101 teachers
    source: str | None = None  # where its weights come from (required for distillation)
    milestones: list[int] = [80000, 160000]  # method.md: teachers trained to 80K and 160K iterations


class MethodConfig(StrictModel):
    """The distillation method by name and its own parameters (validated by its params model)."""

    name: str = "hwd"
    params: dict[str, float | int | str | bool] = {}

    @model_validator(mode="after")
    def _check_params(self) -> MethodConfig:
        if self.name not in METHOD_PARAMS:
            raise ValueError(f"unknown method {self.name!r}; expected one of {sorted(METHOD_PARAMS)}")
        try:
            METHOD_PARAMS[self.name].model_validate(self.params)
        except ValidationError as error:
            raise ValueError(format_validation_error(error, f"params of method {self.name!r}")) from None
        return self

    def resolved_params(self) -> StrictModel:
        """The method's params with the paper's defaults filled in."""
        return METHOD_PARAMS[self.name].model_validate(self.params)


class OptimizerConfig(StrictModel):
    """SGD with poly decay (method.md: lr 0.01, momentum 0.9, wd 1e-4, power 0.9 in the code)."""

    lr: float = Field(0.01, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    poly_power: float = Field(0.9, ge=0.0)


class ScheduleConfig(StrictModel):
    """How long to train and how often to validate (method.md: 40K iterations, val every 400)."""

    max_iters: int = Field(40000, ge=1)
    batch_size: int = Field(8, ge=1)  # method.md: 8 in total across workers
    val_interval: int = Field(400, ge=1)
    log_interval: int = Field(50, ge=1)


class ResourcesConfig(StrictModel):
    """Ray Train workers and what each reserves; fractional CPUs avoid deadlocks on small hosts."""

    num_workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0.0)
    gpus_per_worker: float = Field(0.0, ge=0.0)
    max_failures: int = Field(0, ge=-1)  # worker restarts from the latest checkpoint; -1 = forever


class TrackingConfig(StrictModel):
    """Where MLflow records runs; MLFLOW_TRACKING_URI in the environment wins over `uri`."""

    uri: str | None = None  # None: sqlite store + artifact folder under output_dir/mlflow
    experiment: str = "hwd-tune"
    prediction_images: int = Field(4, ge=0)  # val images pictured with their predictions at each new best; 0 = off
    system_metrics_interval_s: float = Field(5.0, ge=0.0)  # seconds between CPU/memory/GPU samples; 0 = off


class PrecisionConfig(StrictModel):
    """Speed options on GPU; ignored (fp32, NCHW) on CPU."""

    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    sync_batchnorm: bool = False


class TrainConfig(StrictModel):
    """One training job: a teacher (method "none", no teacher) or a distillation run."""

    job: Literal["teacher", "distill"] = "distill"
    name: str | None = None  # run name; None: derived from the config, so a re-run resumes
    seed: int = 0
    deterministic: bool = False  # deterministic algorithms (slower), for resume-equivalence checks
    # local folder for reports, the default MLflow/Optuna sqlite stores; relative: under HWD_OUTPUT_DIR if set
    output_dir: str = Field("outputs", validate_default=True)
    # where Ray keeps trials and checkpoints: a folder, a shared mount or s3://, gs://; None: HWD_STORAGE,
    # else output_dir (one machine only: every node of a cluster must see it, ray#37177)
    storage: str | None = Field(None, validate_default=True)
    data: DataConfig = DataConfig()
    student: ModelConfig = ModelConfig()
    teacher: TeacherConfig = TeacherConfig()
    method: MethodConfig = MethodConfig()
    task: TaskLossParams = TaskLossParams()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    resources: ResourcesConfig = ResourcesConfig()
    precision: PrecisionConfig = PrecisionConfig()
    tracking: TrackingConfig = TrackingConfig()

    @field_validator("output_dir")
    @classmethod
    def _resolve_output_dir(cls, value: str) -> str:
        return resolve_output_dir(value)

    @field_validator("storage")
    @classmethod
    def _resolve_storage(cls, value: str | None) -> str | None:
        return resolve_storage(value)

    @model_validator(mode="after")
    def _check_consistency(self) -> TrainConfig:
        if self.schedule.batch_size % self.resources.num_workers:
            raise ValueError(
                f"schedule.batch_size ({self.schedule.batch_size}) must be divisible by "
                f"resources.num_workers ({self.resources.num_workers}): it is the total batch"
            )
        if self.job == "teacher" and self.method.name != "none":
            raise ValueError(
                f"job 'teacher' trains without a teacher: method.name must be 'none', got {self.method.name!r}"
            )
        if self.job == "distill" and self.method.name != "none" and not self.teacher.source:
            raise ValueError(
                "teacher.source is required for distillation: a registry URI such as "
                "'models:/teacher-ade20k-deeplabv3_resnet101@iter-80k' or a checkpoint file"
            )
        return self


# --------------------------------------------------------------------------------------------
# Loading YAML files with `--set key=value` overrides
# --------------------------------------------------------------------------------------------
class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file, the field and the value."""


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Returns a copy of `raw` with `a.b.c=value` overrides set (values parsed as YAML scalars)."""
    result = copy.deepcopy(raw)
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {override!r} must look like 'section.field=value'")
        *parents, leaf = key.strip().split(".")
        node = result
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {override!r}: {part!r} is a value, not a section")
            node = child
        node[leaf] = safe_load_yaml(text) if text.strip() else None
    return result


def format_validation_error(error: ValidationError, source: str) -> str:
    """One line per problem: `source: field.path: message (got value)`."""
    lines = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        got = problem.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{source}: {field}: {problem['msg']}{shown}")
    return "\n".join(lines)


class _SafeLoaderYaml12Booleans(yaml.SafeLoader):
    """yaml.SafeLoader that reads only true/false as booleans (YAML 1.2), so a key such as
    HWD's `on:` or a value `no` stays a string instead of turning into True/False."""


_SafeLoaderYaml12Booleans.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SafeLoaderYaml12Booleans.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def safe_load_yaml(text: str) -> Any:
    """Like yaml.safe_load (no arbitrary objects), with YAML 1.2 booleans (see above)."""
    loader = _SafeLoaderYaml12Booleans(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Reads a YAML mapping with `safe_load_yaml`; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        loaded = safe_load_yaml(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(loaded).__name__}")
    return loaded


def load_train_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """Validated training config from a YAML file (or defaults when None) plus overrides."""
    raw = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "config"
    try:
        return TrainConfig.model_validate(apply_overrides(raw, list(overrides)))
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None
