"""The one training loop (`train_loop_per_worker`) for teacher training and distillation.

Ray Train runs it on every worker. It reads everything from its config dict, resumes from
`ray.train.get_checkpoint()` at the top, validates every `val_interval` iterations with an
all-reduced confusion matrix and reports `val_miou` (with a checkpoint) to Ray Train / Tune.
A teacher is a student with the "none" distiller; the loop never branches on the method.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import tempfile
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from filelock import FileLock
from torch import Tensor, nn
from torch.utils.data import DataLoader

from hwd_tune.config import TrainConfig
from hwd_tune.data.from_config import info_from_config, training_set, validation_set
from hwd_tune.data.stream import StreamSampler, TrainingStream, mixed_seed
from hwd_tune.losses import Distiller, build_distiller, total_loss
from hwd_tune.metrics import evaluate
from hwd_tune.models import feature_channels, freeze_teacher, load_weights, model_from_config
from hwd_tune.outputs import SegOutput
from trainables.checkpointing import (
    CorruptCheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from trainables.hooks import LoopHooks
from trainables.predictions import PredictionSamples, load_prediction_samples, predict_samples, render_predictions

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stops and its last good checkpoint stays."""


@dataclass
class LoopContext:
    """Everything one worker trains with, built once at the top of the loop."""

    config: TrainConfig
    rank: int
    world_size: int
    device: torch.device
    class_names: tuple[str, ...]
    student: nn.Module  # DDP-wrapped when world_size > 1
    teacher: nn.Module | None
    distiller: Distiller
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    stream: TrainingStream
    val_loader: DataLoader
    iteration: int = 0
    best_miou: float = -1.0
    channel_weight_history: list[tuple[int, list[float]]] = field(default_factory=list)
    restore_notes: list[str] = field(default_factory=list)  # damaged checkpoints skipped at restore


def poly_factor(max_iters: int, power: float):
    """lr multiplier at step i: (1 - i / max_iters) ** power (method.md: power 0.9 in the code)."""
    return lambda step: max(0.0, 1.0 - step / max_iters) ** power


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def average_gradients(parameters: list[nn.Parameter], world_size: int) -> None:
    """Averages the gradients of modules outside DDP (a distiller's generator or projector)."""
    if world_size == 1 or not dist.is_initialized():
        return
    for parameter in parameters:
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)
            parameter.grad.div_(world_size)


def resolve_teacher_weights(config: TrainConfig, tracking_uri: str | None) -> Path:
    """Local file of the teacher's weights; registry downloads happen once per node (file lock).
    The source is found first, so a missing one leaves no teacher_cache/ or lock file behind."""
    from hwd_tune import tracking

    location = tracking.locate_teacher(config.teacher.source, tracking_uri=tracking_uri)
    if location.weights is not None:
        return location.weights  # a local file: nothing to download
    cache_dir = Path(config.output_dir).resolve() / "teacher_cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_dir / ".lock")):
        return tracking.resolve_teacher(config.teacher.source, tracking_uri=tracking_uri, cache_dir=cache_dir)


def build_teacher(config: TrainConfig, num_classes: int, weights: Path, device: torch.device) -> nn.Module:
    """The frozen teacher with its weights (strict load: a class-count mismatch is an error)."""
    teacher = model_from_config(config.teacher, num_classes)
    load_weights(teacher, weights, strict=True)
    channels_last = device.type == "cuda" and config.precision.channels_last
    return freeze_teacher(teacher.to(device), channels_last=channels_last)


def intra_op_threads(cpus_per_worker: float, environ: Mapping[str, str] = os.environ) -> int | None:
    """Threads for torch's CPU kernels in a worker: its whole reserved CPUs, at least one; None when
    the user set OMP_NUM_THREADS (torch follows it). Ray 2.60 no longer sets OMP_NUM_THREADS, and
    torch would start a thread per core of the node: two 0.5-CPU trials on 2 cores ran 4 threads,
    a quarter as fast, half the CPU time spent in the kernel switching them."""
    if environ.get("OMP_NUM_THREADS"):
        return None
    return max(1, math.floor(cpus_per_worker))


def build_context(loop_config: dict[str, Any]) -> LoopContext:
    """Datasets, student (+DDP), frozen teacher, distiller, optimiser and schedule of one worker."""
    config = TrainConfig.model_validate(loop_config["train"])
    threads = intra_op_threads(config.resources.cpus_per_worker)
    if threads is not None:
        torch.set_num_threads(threads)
    train_context = ray.train.get_context()
    rank, world_size = train_context.get_world_rank(), train_context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(config.seed)  # identical initial weights on every worker
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)

    info = info_from_config(config.data)
    student = model_from_config(config.student, info.num_classes)
    if config.student.weights:
        load_weights(student, config.student.weights, strict=False)
    if config.precision.sync_batchnorm and world_size > 1:
        student = nn.SyncBatchNorm.convert_sync_batchnorm(student)
    if device.type == "cuda" and config.precision.channels_last:
        student = student.to(memory_format=torch.channels_last)

    teacher = None
    method = config.method.resolved_params()
    if config.method.name != "none":
        weights = resolve_teacher_weights(config, loop_config.get("tracking_uri"))
        teacher = build_teacher(config, info.num_classes, weights, device)
    channels = (
        feature_channels(config.student.arch, config.student.width_multiplier),
        feature_channels(config.teacher.arch, config.teacher.width_multiplier),
    )
    distiller = build_distiller(
        config.method.name,
        num_classes=info.num_classes,
        feature_channels=channels,
        aux_weight=config.task.aux_weight,
        ignore_index=config.task.ignore_index,
        **method.model_dump(),
    ).to(device)

    student = ray.train.torch.prepare_model(student)  # DDP when world_size > 1
    trainable = [p for p in student.parameters() if p.requires_grad] + list(distiller.student_parameters())
    optimizer = torch.optim.SGD(
        trainable,
        lr=config.optimizer.lr,
        momentum=config.optimizer.momentum,
        weight_decay=config.optimizer.weight_decay,
    )
    schedule = poly_factor(config.schedule.max_iters, config.optimizer.poly_power)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and config.precision.amp == "fp16")

    dataset, transforms = training_set(config.data)
    stream = TrainingStream(dataset, transforms, seed=config.seed)
    val_set = validation_set(config.data)
    val_indices = list(range(rank, len(val_set), world_size))  # each worker a disjoint share
    val_loader = DataLoader(
        torch.utils.data.Subset(val_set, val_indices), batch_size=1, num_workers=min(config.data.loader_workers, 2)
    )
    return LoopContext(
        config=config,
        rank=rank,
        world_size=world_size,
        device=device,
        class_names=info.class_names,
        student=student,
        teacher=teacher,
        distiller=distiller,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        stream=stream,
        val_loader=val_loader,
    )


def restore_newest_whole(context: LoopContext, latest: ray.train.Checkpoint) -> dict[str, Any] | None:
    """Restores the newest checkpoint that verifies, `latest` first, then the older ones beside it
    (Ray keeps the best and the latest); returns its meta.json, or None when none is whole: the run
    then starts from scratch instead of failing on the same damaged files at every retry. What was
    skipped is kept in `context.restore_notes` (rank 0 tags the MLflow run with it)."""
    skipped = []
    for candidate in [latest, *older_checkpoints(latest)]:
        try:
            meta = restore(context, candidate)
        except (CorruptCheckpointError, FileNotFoundError) as error:
            skipped.append(str(error))
            continue
        if skipped:
            context.restore_notes.append(
                f"resumed from {candidate.path} (iteration {context.iteration}) after skipping: " + " | ".join(skipped)
            )
        return meta
    context.restore_notes.append("no whole checkpoint, training from scratch; skipped: " + " | ".join(skipped))
    return None


def older_checkpoints(latest: ray.train.Checkpoint) -> list[ray.train.Checkpoint]:
    """The run's other checkpoint folders beside `latest` (same storage, local or remote), newest first."""
    import pyarrow.fs

    parent, _, name = str(latest.path).rstrip("/").rpartition("/")
    filesystem = latest.filesystem
    try:
        entries = filesystem.get_file_info(pyarrow.fs.FileSelector(parent))
    except (OSError, ValueError):
        return []
    folders = sorted(
        (entry.path for entry in entries if entry.type == pyarrow.fs.FileType.Directory),
        key=lambda path: path.rpartition("/")[2],
        reverse=True,
    )
    return [
        ray.train.Checkpoint(path=path, filesystem=filesystem)
        for path in folders
        if path.rpartition("/")[2].startswith("checkpoint_") and path.rpartition("/")[2] != name
    ]


def restore(context: LoopContext, checkpoint: ray.train.Checkpoint) -> dict[str, Any]:
    """Continues from a Ray Train checkpoint at its exact iteration (weights, optimiser, RNG...);
    returns the checkpoint's meta.json (the metrics of the validation that wrote it). The files are
    verified and loaded before any state changes (CorruptCheckpointError otherwise)."""
    with checkpoint.as_directory() as directory:
        model_state, train_state, meta = load_checkpoint(directory)
    unwrap(context.student).load_state_dict(model_state)
    context.distiller.load_state_dict(train_state["distiller"])
    context.optimizer.load_state_dict(train_state["optimizer"])
    context.scheduler.load_state_dict(train_state["scheduler"])
    context.scaler.load_state_dict(train_state["scaler"])
    restore_rng_state(train_state["rng"])
    context.iteration = int(train_state["iteration"])
    context.best_miou = float(train_state["best_miou"])
    context.channel_weight_history = [(int(i), list(w)) for i, w in train_state.get("channel_weights", [])]
    return meta


VALIDATION_METRICS = ("val_miou", "val_miou_all", "val_pixel_acc")  # what `validate` returns


def report_finished_run(context: LoopContext, meta: dict[str, Any]) -> None:
    """A run restarted after its last iteration (a sweep driver killed before it saved the trial's
    end) trains nothing: it reports its last validation again, so Tune and ASHA see how it ended."""
    metrics = {name: float(meta[name]) for name in VALIDATION_METRICS if name in meta}
    ray.train.report({**metrics, "best_val_miou": context.best_miou, "iteration": context.iteration})


def training_loader(context: LoopContext) -> DataLoader:
    """Batches of this worker for the remaining iterations, in the run's fixed order."""
    config = context.config
    per_worker = config.schedule.batch_size // context.world_size
    sampler = StreamSampler(
        per_worker,
        rank=context.rank,
        world_size=context.world_size,
        start_iteration=context.iteration,
        stop_iteration=config.schedule.max_iters,
    )
    loader = DataLoader(
        context.stream,
        batch_size=per_worker,
        sampler=sampler,
        num_workers=config.data.loader_workers,
        pin_memory=context.device.type == "cuda",
        drop_last=True,
        persistent_workers=False,
    )
    return ray.train.torch.prepare_data_loader(loader, add_dist_sampler=False)


def autocast(context: LoopContext):
    """Mixed precision on GPU when configured; a no-op on CPU."""
    amp = context.config.precision.amp
    if context.device.type != "cuda" or amp == "none":
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def train_step(context: LoopContext, images: Tensor, labels: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """One optimiser step: (detached loss terms of the student, the adversary's logged terms)."""
    if context.device.type == "cuda" and context.config.precision.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with autocast(context):
        student_out: SegOutput = context.student(images)
        teacher_out = None
        if context.teacher is not None:
            with torch.no_grad():
                teacher_out = context.teacher(images)
        terms = context.distiller(student_out, teacher_out, labels)
        loss = total_loss(terms)
    if not torch.isfinite(loss):
        values = {name: float(value) for name, value in terms.items()}
        raise NonFiniteLossError(
            f"non-finite loss at iteration {context.iteration + 1}: {values}; the last good checkpoint is kept"
        )
    context.optimizer.zero_grad(set_to_none=True)
    context.scaler.scale(loss).backward()
    average_gradients(list(context.distiller.student_parameters()), context.world_size)
    context.scaler.step(context.optimizer)
    context.scaler.update()
    context.scheduler.step()
    adversary_terms: dict[str, Tensor] = {}
    if context.distiller.adversary_optimizer is not None:
        decay = context.scheduler.get_last_lr()[0] / context.config.optimizer.lr  # same poly decay
        for group in context.distiller.adversary_optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * decay
        adversary_terms = context.distiller.adversary_step(student_out, teacher_out, labels)
    return {name: value.detach() for name, value in terms.items()}, adversary_terms


def validate(context: LoopContext) -> tuple[dict[str, float], list[float]]:
    """Validation metrics (mIoU in %, the paper's scale) over all workers, and per-class IoU."""
    num_classes = len(context.class_names)
    confusion = evaluate(
        unwrap(context.student),
        context.val_loader,
        num_classes,
        device=context.device,
        ignore_index=context.config.task.ignore_index,
    )
    confusion.all_reduce()
    iou = [float(v) for v in confusion.iou()]
    metrics = {
        "val_miou": 100.0 * confusion.miou(),
        "val_miou_all": 100.0 * confusion.miou_all_classes(),
        "val_pixel_acc": 100.0 * confusion.pixel_accuracy(),
    }
    return {name: (0.0 if math.isnan(value) else value) for name, value in metrics.items()}, iou


def checkpoint_meta(context: LoopContext, metrics: dict[str, float]) -> dict[str, Any]:
    """meta.json: what the weights are, so `evaluate` and the registry can rebuild the model."""
    config = context.config
    return {
        "arch": config.student.arch,
        "width_multiplier": config.student.width_multiplier,
        "aux": config.student.aux,
        "num_classes": len(context.class_names),
        "dataset": config.data.name,
        "method": config.method.name,
        "iteration": context.iteration,
        **metrics,
        "config": config.model_dump(mode="json"),
    }


def write_checkpoint(context: LoopContext, directory: Path, metrics: dict[str, float]) -> Path:
    """Saves model.pt, train_state.pt and meta.json of the current state into `directory`."""
    train_state = {
        "iteration": context.iteration,
        "best_miou": context.best_miou,
        "optimizer": context.optimizer.state_dict(),
        "scheduler": context.scheduler.state_dict(),
        "scaler": context.scaler.state_dict(),
        "distiller": context.distiller.state_dict(),
        "rng": capture_rng_state(),
        "channel_weights": context.channel_weight_history,
    }
    return save_checkpoint(
        directory,
        model_state=unwrap(context.student).state_dict(),
        train_state=train_state,
        meta=checkpoint_meta(context, metrics),
    )


class RankZeroTracker:
    """MLflow logging of rank 0 (a no-op elsewhere, or when the run is not tracked).

    Each metric is logged once per step: a run restarted from an earlier checkpoint (a worker
    lost before its newest checkpoint was saved) trains the same steps again with the same values,
    and steps up to what the run already holds are not logged a second time.
    """

    def __init__(self, context: LoopContext, loop_config: dict[str, Any]) -> None:
        self.logger = None
        self.tracking_uri = loop_config.get("tracking_uri")
        self.run_id = loop_config.get("mlflow_run_id")
        self.last_steps: dict[str, int] = {}
        self.system_metrics = None  # MLflow's monitor thread, while it samples
        self.prediction_samples: PredictionSamples | None = None
        self.teacher_labels: list[Tensor] | None = None
        if context.rank == 0 and self.run_id:
            from hwd_tune import tracking

            self.tracking = tracking
            self.logger = tracking.RunLogger(self.tracking_uri, self.run_id)
            self.last_steps = self.logger.last_steps()
            self.logged_through = self.last_steps.get("val_miou", -1)  # validations an earlier attempt logged
            if context.restore_notes:
                self.logger.set_tags({"hwd.checkpoint_fallback": " || ".join(context.restore_notes)})
            settings = context.config.tracking
            if settings.prediction_images:
                self.prediction_samples = load_prediction_samples(context.config.data, settings.prediction_images)
            if settings.system_metrics_interval_s:
                node = {"ip": ray.util.get_node_ip_address(), "hostname": socket.gethostname()}
                self.system_metrics = tracking.start_system_metrics(
                    self.tracking_uri, self.run_id, interval_s=settings.system_metrics_interval_s, node=node
                )

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if not self.logger:
            return
        new = {key: value for key, value in metrics.items() if step > self.last_steps.get(key, -1)}
        if new:
            self.logger.log_metrics(new, step=step)
            self.last_steps.update(dict.fromkeys(new, step))

    def on_validation(self, context: LoopContext, iou: list[float], checkpoint_dir: Path, improved: bool) -> None:
        """Per-class IoU of each new best; a teacher's milestone versions go to the registry."""
        if not self.logger:
            return
        if improved:
            self.logger.log_class_iou(iou, context.class_names, step=context.iteration)
        if improved and self.prediction_samples is not None and context.iteration > self.logged_through:
            self.log_predictions(context, self.prediction_samples)
        config = context.config
        if config.job == "teacher" and context.iteration in config.teacher.milestones:
            self.tracking.register_teacher(
                tracking_uri=self.tracking_uri,
                run_id=self.run_id,
                checkpoint_dir=checkpoint_dir,
                dataset=config.data.name,
                arch=config.student.arch,
                aliases=[self.tracking.milestone_alias(context.iteration)],
            )

    def log_predictions(self, context: LoopContext, samples: PredictionSamples) -> None:
        """Pictures of the fixed val images: image | truth | teacher (if any) | the student now."""
        if context.teacher is not None and self.teacher_labels is None:  # frozen: predicted once per run
            self.teacher_labels = predict_samples(context.teacher, samples, context.device)
        columns = [("teacher", self.teacher_labels)] if self.teacher_labels is not None else []
        columns.append(("student", predict_samples(unwrap(context.student), samples, context.device)))
        self.tracking.log_prediction_panels(self.logger, render_predictions(samples, columns), step=context.iteration)

    def finish(self, context: LoopContext) -> None:
        if self.logger and context.channel_weight_history:
            iterations = [i for i, _ in context.channel_weight_history]
            weights = [w for _, w in context.channel_weight_history]
            self.logger.log_channel_weights(iterations, weights, context.class_names)

    def close(self) -> None:
        """Stops the system metrics (their last samples are flushed); also when the loop fails."""
        if self.system_metrics is not None:
            self.system_metrics.finish()
            self.system_metrics = None


def is_validation_iteration(context: LoopContext) -> bool:
    """Every val_interval, at the end, and at a teacher's registry milestones."""
    config, iteration = context.config, context.iteration
    milestone = config.job == "teacher" and iteration in config.teacher.milestones
    return iteration % config.schedule.val_interval == 0 or iteration == config.schedule.max_iters or milestone


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point. loop_config: {"train": TrainConfig dict, "tracking_uri", "mlflow_run_id"}."""
    context = build_context(loop_config)
    checkpoint = ray.train.get_checkpoint()
    schedule = context.config.schedule
    if checkpoint is not None:
        meta = restore_newest_whole(context, checkpoint)
        for note in context.restore_notes:
            logger.warning("rank %d: %s", context.rank, note)
        if meta is not None and context.iteration >= schedule.max_iters:
            report_finished_run(context, meta)
            return
    tracker = RankZeroTracker(context, loop_config)
    try:
        train_iterations(context, tracker, LoopHooks.from_loop_config(loop_config, context.rank))
    finally:
        tracker.close()


def train_iterations(context: LoopContext, tracker: RankZeroTracker, hooks: LoopHooks) -> None:
    """From the context's iteration to max_iters: steps, logs, validations and checkpoints."""
    schedule = context.config.schedule
    global_batch = schedule.batch_size

    context.student.train()
    context.distiller.train()
    window_terms: dict[str, Tensor] = {}
    window_start, window_iters = time.perf_counter(), 0
    for images, labels in training_loader(context):
        hooks.before_step(context.iteration)
        # Dropout and the distillers' random draws depend only on (seed, rank, iteration), so a
        # resumed run repeats exactly what an uninterrupted one would have drawn.
        torch.manual_seed(mixed_seed(mixed_seed(context.config.seed, context.rank), context.iteration))
        terms, adversary_terms = train_step(context, images, labels)
        context.iteration += 1
        hooks.after_step(context.iteration)
        window_iters += 1
        window_terms["total"] = window_terms.get("total", 0.0) + total_loss(terms).float()
        for name, value in {**terms, **adversary_terms}.items():
            window_terms[name] = window_terms.get(name, 0.0) + value.float()

        if context.iteration % schedule.log_interval == 0 or context.iteration == schedule.max_iters:
            elapsed = time.perf_counter() - window_start
            losses = {f"loss/{name}": float(total) / window_iters for name, total in window_terms.items()}
            weights = getattr(context.distiller, "last_channel_weights", None)
            if weights is not None:
                context.channel_weight_history.append((context.iteration, weights.float().cpu().tolist()))
            tracker.log_metrics(
                {
                    **losses,
                    "lr": context.scheduler.get_last_lr()[0],
                    "images_per_s": global_batch * window_iters / max(elapsed, 1e-9),
                    "iteration": context.iteration,
                },
                step=context.iteration,
            )
            window_terms, window_start, window_iters = {}, time.perf_counter(), 0

        if is_validation_iteration(context):
            metrics, iou = validate(context)
            improved = metrics["val_miou"] > context.best_miou
            context.best_miou = max(context.best_miou, metrics["val_miou"])
            report = {**metrics, "best_val_miou": context.best_miou, "iteration": context.iteration}
            tracker.log_metrics({**metrics, "best_val_miou": context.best_miou}, step=context.iteration)
            with tempfile.TemporaryDirectory() as temporary:
                checkpoint_dir = Path(temporary)
                if context.rank == 0:
                    write_checkpoint(context, checkpoint_dir, metrics)
                    tracker.on_validation(context, iou, checkpoint_dir, improved)
                ray.train.report(
                    report,
                    checkpoint=ray.train.Checkpoint.from_directory(temporary) if context.rank == 0 else None,
                )
            context.student.train()
            window_start = time.perf_counter()
    tracker.finish(context)
