"""Iterations/s of one distillation training step in a plain PyTorch loop vs inside Ray Train.

Run:  python benchmarks/train.py [--quick] [--iters N] [--size S] [--device cpu|cuda]
                                 [--amp none|bf16] [--channels-last]

Both sides train the same HWD config (synthetic data, a teacher checkpoint written here from
random weights: nothing is downloaded) with the same `trainables.loop.train_step`:
(a) "plain": one process builds the student, teacher, distiller, optimiser and data stream
    itself and repeats the body of `train_loop_per_worker` (seed, step, loss bookkeeping);
(b) "ray":   `build_trainer(...).fit()` with one worker runs the real `train_loop_per_worker`.
Both record (iteration, wall clock, process CPU time) through the loop's `timing_file` hook
after every step; iterations/s is measured between iteration `warmup` and `warmup + iters`, so
start-up, the first slow steps and the final validation are left out. Rounds are interleaved
(a b | b a | a b ...) and medians reported, so drifting machine load hits both alike; CPU time
per iteration of the training process is printed too, as it hardly moves with other processes'
load. Target: (b) at most 10 % slower than (a) (the issue's budget for running inside Ray Train).
On GPU the stamps need no extra synchronisation: `train_step` reads the loss's finiteness on
the host every step, so the queue of GPU work never runs more than one step ahead.

CPU (default): 64 px, student deeplabv3_resnet18 x0.25, teacher x0.5, batch 8, 1 torch thread.
CUDA: 512 px, deeplabv3_resnet101 -> deeplabv3_resnet18, batch 8; first images/s of the plain
loop for fp32, bf16 + channels_last and bf16 + channels_last + torch.compile(student), then the
plain-vs-Ray comparison for the precision given by --amp / --channels-last.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray
import torch
from torch.utils.data import DataLoader

from hwd_tune.config import ModelConfig, TrainConfig
from hwd_tune.data.from_config import info_from_config, training_set
from hwd_tune.data.stream import StreamSampler, TrainingStream, mixed_seed
from hwd_tune.losses import build_distiller, total_loss
from hwd_tune.models import feature_channels
from trainables.checkpointing import load_checkpoint
from trainables.loop import (
    LoopContext,
    build_teacher,
    maybe_record_time,
    model_from_config,
    poly_factor,
    train_step,
)

OVERHEAD_TARGET = 0.10  # the issue: Ray Train may cost at most 10 % of the plain loop's speed
NUM_CLASSES = 150  # ADE20K's class count, so the heads and HWD's channel weights have its shape
VAL_SAMPLES = 2  # the one validation at the end of a Ray run (outside the timed window)


@dataclass(frozen=True)
class Setup:
    """The sizes of one benchmark: models, input side, batch, loader processes."""

    device: str
    size: int
    student_arch: str
    student_width: float
    teacher_arch: str
    teacher_width: float
    batch_size: int
    loader_workers: int


CPU_SETUP = Setup("cpu", 64, "deeplabv3_resnet18", 0.25, "deeplabv3_resnet18", 0.5, 8, loader_workers=0)
# Synthetic 512 px samples cost ~25-50 ms each on one core: 10 loader processes keep up with ~200+ images/s.
CUDA_SETUP = Setup("cuda", 512, "deeplabv3_resnet18", 1.0, "deeplabv3_resnet101", 1.0, 8, loader_workers=10)


@dataclass(frozen=True)
class Precision:
    """One GPU speed setting of the student's step."""

    label: str
    amp: str
    channels_last: bool
    compile_student: bool = False


def distillation_config(
    setup: Setup, precision: Precision, teacher_file: Path, output_dir: Path, max_iters: int, name: str
) -> TrainConfig:
    """An HWD run of exactly `max_iters` steps that validates (and checkpoints) only at its end."""
    on_gpu = setup.device == "cuda"
    return TrainConfig.model_validate(
        {
            "job": "distill",
            "name": name,
            "output_dir": str(output_dir),
            "data": {
                "name": "synthetic",
                "crop_size": setup.size,
                "loader_workers": setup.loader_workers,
                "synthetic": {
                    "num_classes": NUM_CLASSES,
                    "image_size": setup.size,
                    "train_samples": 256,
                    "val_samples": VAL_SAMPLES,
                },
            },
            "student": {"arch": setup.student_arch, "width_multiplier": setup.student_width},
            "teacher": {
                "arch": setup.teacher_arch,
                "width_multiplier": setup.teacher_width,
                "source": str(teacher_file),
            },
            "method": {"name": "hwd"},
            "schedule": {
                "max_iters": max_iters,
                "batch_size": setup.batch_size,
                "val_interval": max_iters,
                "log_interval": max_iters,
            },
            "resources": {"num_workers": 1, "cpus_per_worker": 1.0, "gpus_per_worker": 1.0 if on_gpu else 0.0},
            "precision": {"amp": precision.amp, "channels_last": precision.channels_last},
        }
    )


def write_random_teacher(setup: Setup, path: Path) -> Path:
    """Saves the state_dict of a randomly initialised teacher (the speed does not depend on its weights)."""
    teacher = ModelConfig(arch=setup.teacher_arch, width_multiplier=setup.teacher_width)
    torch.manual_seed(0)
    torch.save(model_from_config(teacher, NUM_CLASSES).state_dict(), path)
    return path


def plain_context(config: TrainConfig, device: torch.device, compile_student: bool) -> LoopContext:
    """What `build_context` builds for one worker, without Ray (no DDP, no validation loader)."""
    torch.manual_seed(config.seed)
    info = info_from_config(config.data)
    student = model_from_config(config.student, info.num_classes).to(device)
    if device.type == "cuda" and config.precision.channels_last:
        student = student.to(memory_format=torch.channels_last)
    teacher = build_teacher(config, info.num_classes, Path(config.teacher.source), device)
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
        **config.method.resolved_params().model_dump(),
    ).to(device)
    trainable = [p for p in student.parameters() if p.requires_grad] + list(distiller.student_parameters())
    optimizer = torch.optim.SGD(
        trainable,
        lr=config.optimizer.lr,
        momentum=config.optimizer.momentum,
        weight_decay=config.optimizer.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, poly_factor(config.schedule.max_iters, config.optimizer.poly_power)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=False)  # fp16 is not benchmarked here
    dataset, transforms = training_set(config.data)
    return LoopContext(
        config=config,
        rank=0,
        world_size=1,
        device=device,
        class_names=info.class_names,
        student=torch.compile(student) if compile_student else student,
        teacher=teacher,
        distiller=distiller,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        stream=TrainingStream(dataset, transforms, seed=config.seed),
        val_loader=None,  # type: ignore[arg-type]
    )


def plain_loader(stream: TrainingStream, config: TrainConfig, device: torch.device) -> DataLoader:
    """The batches `training_loader` gives a single worker, without Ray's wrapper."""
    batch = config.schedule.batch_size
    return DataLoader(
        stream,
        batch_size=batch,
        drop_last=True,
        num_workers=config.data.loader_workers,
        sampler=StreamSampler(batch, rank=0, world_size=1, start_iteration=0, stop_iteration=config.schedule.max_iters),
        pin_memory=device.type == "cuda",
    )


def loader_images_per_s(config: TrainConfig, warmup: int) -> float:
    """Images/s of the training DataLoader alone (after `warmup` batches): the ceiling the data sets."""
    dataset, transforms = training_set(config.data)
    stream = TrainingStream(dataset, transforms, seed=config.seed)
    stamps = [time.perf_counter() for _ in plain_loader(stream, config, torch.device("cpu"))]
    return config.schedule.batch_size * (len(stamps) - warmup) / (stamps[-1] - stamps[warmup - 1])


def run_plain(config: TrainConfig, timing_file: Path, compile_student: bool = False) -> dict[str, torch.Tensor]:
    """(a): the body of `train_loop_per_worker` in this process, minus validation and Ray;
    returns the student's final weights."""
    device = torch.device("cuda" if config.resources.gpus_per_worker else "cpu")
    context = plain_context(config, device, compile_student)
    loader = plain_loader(context.stream, config, device)
    loop_config = {"timing_file": str(timing_file)}
    context.student.train()
    context.distiller.train()
    window_terms: dict[str, Any] = {}
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        torch.manual_seed(mixed_seed(mixed_seed(config.seed, 0), context.iteration))
        terms, adversary_terms = train_step(context, images, labels)
        context.iteration += 1
        maybe_record_time(loop_config, context)
        window_terms["total"] = window_terms.get("total", 0.0) + total_loss(terms).float()
        for name, value in {**terms, **adversary_terms}.items():
            window_terms[name] = window_terms.get(name, 0.0) + value.float()
    student = getattr(context.student, "_orig_mod", context.student)  # inside torch.compile's wrapper
    return {key: value.detach().cpu() for key, value in student.state_dict().items()}


def run_ray(config: TrainConfig, timing_file: Path) -> dict[str, torch.Tensor]:
    """(b): the real `train_loop_per_worker` in one Ray Train worker (no MLflow); returns the
    student's final weights from the run's last checkpoint."""
    from trainables.launch import build_trainer

    trainer = build_trainer(
        config,
        tracking_uri=None,
        mlflow_run_id=None,
        storage_path=Path(config.output_dir) / "ray",
        extra_loop_config={"timing_file": str(timing_file)},
    )
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"the Ray Train run failed: {result.error}")
    with result.checkpoint.as_directory() as directory:
        return load_checkpoint(directory)[0]


@dataclass(frozen=True)
class Measurement:
    """Speed of one run over its timed window."""

    iterations_per_s: float  # window iterations / window wall time
    median_step_s: float  # median wall time between consecutive iterations (robust to load spikes)
    cpu_per_step_s: float  # CPU seconds of the training process per iteration (load-insensitive)
    final_weights: dict[str, torch.Tensor]  # the student after the run (both sides must agree)


def read_measurement(timing_file: Path, warmup: int, iters: int) -> tuple[float, float, float]:
    """(iterations/s, median step s, CPU s per step) between iteration `warmup` and `warmup + iters`
    of a file of "iteration wall_seconds cpu_seconds" lines."""
    wall, cpu = {}, {}
    for line in timing_file.read_text().splitlines():
        iteration, wall_seconds, cpu_seconds = line.split()
        wall[int(iteration)], cpu[int(iteration)] = float(wall_seconds), float(cpu_seconds)
    first, last = warmup, warmup + iters
    missing = [i for i in range(first, last + 1) if i not in wall]
    if missing:
        raise ValueError(f"timing file {timing_file}: iterations {missing[:5]} missing; expected {first}..{last}")
    steps = [wall[i + 1] - wall[i] for i in range(first, last)]
    return iters / (wall[last] - wall[first]), statistics.median(steps), (cpu[last] - cpu[first]) / iters


def measure(
    kind: str, setup: Setup, precision: Precision, teacher_file: Path, work_dir: Path, warmup: int, iters: int, tag: str
) -> Measurement:
    """One timed run of kind "plain" or "ray" in a fresh output directory (so Ray never resumes)."""
    output_dir = work_dir / f"{kind}-{tag}"
    output_dir.mkdir(parents=True)
    config = distillation_config(setup, precision, teacher_file, output_dir, warmup + iters, name=f"bench-{tag}")
    timing_file = output_dir / "timing.txt"
    if kind == "plain":
        weights = run_plain(config, timing_file, compile_student=precision.compile_student)
    else:
        weights = run_ray(config, timing_file)
    return Measurement(*read_measurement(timing_file, warmup, iters), final_weights=weights)


def largest_difference(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> float:
    """Largest absolute difference between two state_dicts' floating tensors (inf if keys differ)."""
    if first.keys() != second.keys():
        return float("inf")
    return max(
        (
            float((first[key].double() - second[key].double()).abs().max())
            for key in first
            if first[key].is_floating_point()
        ),
        default=0.0,
    )


def start_ray(setup: Setup, threads: int) -> int:
    """A local Ray whose workers use `threads` torch threads; returns the threads a worker really has."""
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    cpus = 2 if setup.device == "cpu" else max(2, os.cpu_count() or 2)
    ray.init(
        num_cpus=cpus,
        num_gpus=1 if setup.device == "cuda" else 0,
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}},
    )

    @ray.remote(num_cpus=1)
    def worker_threads() -> int:
        return torch.get_num_threads()

    return ray.get(worker_threads.remote())


def check_device(device: str, amp: str, channels_last: bool) -> None:
    """Rejects a CUDA run without CUDA, and GPU-only options on CPU (the loop ignores them there)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            f"--device cuda: no CUDA device is visible to torch {torch.__version__} "
            f"(torch.cuda.is_available() is False); run on a GPU machine or use --device cpu"
        )
    if device == "cpu" and (amp != "none" or channels_last):
        raise SystemExit(
            f"--amp {amp} / --channels-last apply on GPU only (the loop trains fp32 NCHW on CPU); "
            "use them with --device cuda"
        )


def precision_table(setup: Setup, teacher_file: Path, work_dir: Path, warmup: int, iters: int, rounds: int) -> None:
    """GPU: images/s of the plain loop for fp32, bf16 + channels_last, and + torch.compile."""
    variants = [
        Precision("fp32", "none", False),
        Precision("bf16 + channels_last", "bf16", True),
        Precision("bf16 + channels_last + compile", "bf16", True, compile_student=True),
    ]
    samples: dict[str, list[Measurement]] = {variant.label: [] for variant in variants}
    for round_index in range(rounds):
        for number, variant in enumerate(variants):
            tag = f"precision-{number}-round{round_index}"
            samples[variant.label].append(measure("plain", setup, variant, teacher_file, work_dir, warmup, iters, tag))
    base = statistics.median(m.iterations_per_s for m in samples["fp32"])
    config = distillation_config(setup, variants[0], teacher_file, work_dir, warmup + iters, name="loader")
    print(
        f"\ntraining DataLoader alone ({setup.loader_workers} processes): "
        f"{loader_images_per_s(config, warmup):.0f} images/s (a ceiling for the rows below)"
    )
    print(f"{'plain loop, ' + setup.teacher_arch + ' -> ' + setup.student_arch}")
    print(f"{'precision of the student step':<36} {'images/s':>9} {'x fp32':>7}")
    for label, measurements in samples.items():
        rate = statistics.median(m.iterations_per_s for m in measurements)
        print(f"{label:<36} {rate * setup.batch_size:9.1f} {rate / base:7.2f}")


def compare_plain_and_ray(
    setup: Setup, precision: Precision, teacher_file: Path, work_dir: Path, warmup: int, iters: int, rounds: int
) -> dict[str, list[Measurement]]:
    """`rounds` runs of each side, interleaved a b | b a | a b ... so a linear drift in load cancels."""
    samples: dict[str, list[Measurement]] = {"plain": [], "ray": []}
    for round_index in range(rounds):
        order = ("plain", "ray") if round_index % 2 == 0 else ("ray", "plain")
        for kind in order:
            started = time.perf_counter()
            measurement = measure(kind, setup, precision, teacher_file, work_dir, warmup, iters, f"round{round_index}")
            samples[kind].append(measurement)
            print(
                f"  round {round_index + 1} {kind:<5} {measurement.iterations_per_s:7.3f} it/s, median step "
                f"{measurement.median_step_s * 1e3:6.1f} ms, CPU {measurement.cpu_per_step_s * 1e3:6.1f} ms/it "
                f"(whole run {time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    return samples


def print_comparison(samples: dict[str, list[Measurement]], batch_size: int) -> None:
    """Medians of both sides, the overhead of Ray Train against the target, and the weights check."""

    def median_of(kind: str, field: str) -> float:
        return statistics.median(getattr(m, field) for m in samples[kind])

    print(f"\n{'training step (medians)':<26} {'it/s':>7} {'images/s':>9} {'median step ms':>15} {'CPU ms/it':>10}")
    for kind, label in (("plain", "(a) plain PyTorch loop"), ("ray", "(b) Ray Train, 1 worker")):
        rate = median_of(kind, "iterations_per_s")
        print(
            f"{label:<26} {rate:7.3f} {rate * batch_size:9.1f} {median_of(kind, 'median_step_s') * 1e3:15.1f} "
            f"{median_of(kind, 'cpu_per_step_s') * 1e3:10.1f}"
        )
    ratio = median_of("ray", "iterations_per_s") / median_of("plain", "iterations_per_s")
    overhead = 1.0 / ratio - 1.0  # extra wall time per iteration inside Ray Train
    step_overhead = median_of("ray", "median_step_s") / median_of("plain", "median_step_s") - 1.0
    cpu_overhead = median_of("ray", "cpu_per_step_s") / median_of("plain", "cpu_per_step_s") - 1.0
    verdict = "ok" if overhead <= OVERHEAD_TARGET else "MISSED"
    print(
        f"(b)/(a) it/s = {ratio:.3f}: Ray Train overhead {100 * overhead:+.1f} % wall time per iteration "
        f"(target <= {100 * OVERHEAD_TARGET:.0f} %: {verdict}); median steps {100 * step_overhead:+.1f} %, "
        f"CPU per iteration {100 * cpu_overhead:+.1f} %"
    )
    rates = {kind: [round(m.iterations_per_s, 3) for m in values] for kind, values in samples.items()}
    print(f"per-round it/s: {rates}")
    difference = largest_difference(samples["plain"][0].final_weights, samples["ray"][0].final_weights)
    print(f"same training: final student weights of (a) and (b) in round 1 differ by at most {difference:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round, short windows (a smoke run)")
    parser.add_argument("--iters", type=int, default=None, help="timed iterations per run (default 60, quick 15)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed first iterations (default 10, quick 5)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3, quick 1)")
    parser.add_argument("--size", type=int, default=None, help="square image side (default 64 cpu, 512 cuda)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--amp", choices=("none", "bf16"), default="none", help="plain-vs-Ray run, cuda only")
    parser.add_argument("--channels-last", action="store_true", help="plain-vs-Ray run, cuda only")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on both sides (default 1)")
    parser.add_argument("--skip-precision", action="store_true", help="cuda: leave out the precision table")
    args = parser.parse_args()
    check_device(args.device, args.amp, args.channels_last)
    warmup = args.warmup if args.warmup is not None else (5 if args.quick else 10)
    iters = args.iters if args.iters is not None else (15 if args.quick else 60)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    for flag, value, least in (
        ("--iters", iters, 1),
        ("--warmup", warmup, 1),
        ("--rounds", rounds, 1),
        ("--threads", args.threads, 1),
    ):
        if value < least:
            raise SystemExit(f"{flag} must be >= {least}, got {value}")
    setup = CPU_SETUP if args.device == "cpu" else CUDA_SETUP
    if args.size is not None:
        if args.size < 32:
            raise SystemExit(f"--size must be >= 32 (the networks downsample by 8), got {args.size}")
        setup = replace(setup, size=args.size)
    precision = Precision("chosen", args.amp, args.channels_last)

    torch.set_num_threads(args.threads)
    worker_threads = start_ray(setup, args.threads)
    device_name = torch.cuda.get_device_name() if setup.device == "cuda" else "CPU"
    print(
        f"torch {torch.__version__}, {device_name}, {os.cpu_count()} cores visible; torch threads: "
        f"plain {torch.get_num_threads()}, Ray worker {worker_threads}"
    )
    print(
        f"HWD, {setup.student_arch} x{setup.student_width:g} <- {setup.teacher_arch} x{setup.teacher_width:g}, "
        f"{setup.size}x{setup.size}, batch {setup.batch_size}, {NUM_CLASSES} classes, amp {args.amp}, "
        f"channels_last {args.channels_last}; timed iterations {warmup}..{warmup + iters}, {rounds} round(s)"
    )

    with tempfile.TemporaryDirectory(prefix="hwd-bench-train-") as temporary:
        work_dir = Path(temporary)
        teacher_file = write_random_teacher(setup, work_dir / "teacher.pt")
        if setup.device == "cuda" and not args.skip_precision:
            precision_table(setup, teacher_file, work_dir, warmup, iters, rounds)
        samples = compare_plain_and_ray(setup, precision, teacher_file, work_dir, warmup, iters, rounds)
    print_comparison(samples, setup.batch_size)
    ray.shutdown()


if __name__ == "__main__":
    main()
