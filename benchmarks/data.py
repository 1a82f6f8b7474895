"""Throughput of the evaluation and input side on one CPU thread, printed as a table.

Sections: confusion-matrix updates (vs a naive per-class loop in the same run), the training
transforms on a Cityscapes-size image, the synthetic generator, and each model's forward pass.
A section whose module is missing is skipped with a message. Run:
    python benchmarks/data.py [--quick] [--size 512]
Figures on a shared machine are noisy: compare the ratios printed in one run, not across runs.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from hwd_tune.metrics import ConfusionMatrix

IGNORE_INDEX = -1


@dataclass
class Row:
    section: str
    item: str
    value: str
    note: str = ""


def median_seconds(run: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of `run()` over `repeats` calls after `warmup` untimed calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def optional_module(name: str) -> object | None:
    """The imported module, or None when it does not exist (yet)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


# -------------------------------------------------------------------------------------------
# Confusion matrix
# -------------------------------------------------------------------------------------------
def naive_per_class_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Baseline: TP, FP, FN from three masks per class, one Python iteration per class."""
    valid = target != IGNORE_INDEX
    iou = torch.full((num_classes,), float("nan"), dtype=torch.float64)
    for c in range(num_classes):
        is_pred, is_target = (pred == c) & valid, target == c
        true_positive = (is_pred & is_target).sum().item()
        false_positive = (is_pred & ~is_target).sum().item()
        false_negative = (~is_pred & is_target).sum().item()
        union = true_positive + false_positive + false_negative
        if union:
            iou[c] = true_positive / union
    return iou


def bench_confusion(quick: bool) -> list[Row]:
    num_classes, shape = 150, (8, 512, 512)
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, num_classes, shape, generator=generator)
    target[torch.rand(shape, generator=generator) < 0.1] = IGNORE_INDEX
    pred = torch.randint(0, num_classes, shape, generator=generator)
    pixels = target.numel()

    confusion = ConfusionMatrix(num_classes)
    fast = median_seconds(lambda: confusion.update(pred, target), repeats=3 if quick else 10)
    naive = median_seconds(lambda: naive_per_class_iou(pred, target, num_classes), repeats=1 if quick else 3, warmup=0)

    single = ConfusionMatrix(num_classes)
    single.update(pred, target)
    baseline_iou = naive_per_class_iou(pred, target, num_classes)
    agree = torch.allclose(single.iou(), baseline_iou, equal_nan=True)
    where = "8x512x512, K=150, 10% ignored"
    return [
        Row(
            "confusion",
            "ConfusionMatrix.update",
            f"{pixels / fast / 1e6:.1f} Mpixel/s",
            f"{where}; {fast * 1e3:.1f} ms/update (target >= 20)",
        ),
        Row("confusion", "naive per-class loop", f"{pixels / naive / 1e6:.1f} Mpixel/s", f"{naive * 1e3:.0f} ms/batch"),
        Row("confusion", "ratio update / naive", f"{naive / fast:.1f}x", "IoU agree" if agree else "IoU DISAGREE"),
    ]


# -------------------------------------------------------------------------------------------
# Data: training transforms and the synthetic generator
# -------------------------------------------------------------------------------------------
def bench_transforms(quick: bool) -> list[Row]:
    data = optional_module("hwd_tune.data")
    if data is None or not hasattr(data, "train_transforms"):
        return [Row("transforms", "train_transforms", "skipped", "hwd_tune.data lacks it")]
    from torchvision import tv_tensors

    transforms = data.train_transforms()  # defaults: scale 0.5-2.0, crop 512, flip, normalise
    image = tv_tensors.Image(torch.randint(0, 256, (3, 1024, 2048), dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.randint(0, 19, (1024, 2048), dtype=torch.int64))
    # the random scale changes the cost per call, so take many calls
    seconds = median_seconds(lambda: transforms(image, mask), repeats=5 if quick else 30)
    return [
        Row(
            "transforms",
            "train_transforms() 1024x2048",
            f"{1 / seconds:.1f} images/s",
            f"{seconds * 1e3:.0f} ms/image (median), scale 0.5-2, crop 512",
        )
    ]


def bench_synthetic(quick: bool) -> list[Row]:
    data = optional_module("hwd_tune.data")
    if data is None or not hasattr(data, "SyntheticShapes"):
        return [Row("synthetic", "SyntheticShapes", "skipped", "hwd_tune.data lacks it")]
    rows = []
    for size in (None, 512):  # its default size (the quickstart's), and a training crop's
        count = (8 if quick else 32) if size is None else (2 if quick else 8)
        options = {} if size is None else {"image_size": size}
        dataset = data.SyntheticShapes(count, **options)
        start = time.perf_counter()
        for index in range(count):
            image, _ = dataset[index]
        seconds = (time.perf_counter() - start) / count
        shown = "x".join(str(d) for d in image.shape[-2:])
        rows.append(
            Row(
                "synthetic",
                f"SyntheticShapes item {shown}",
                f"{1 / seconds:.0f} images/s",
                f"{seconds * 1e3:.1f} ms/image over {count} items",
            )
        )
    return rows


# -------------------------------------------------------------------------------------------
# Models: forward time and size
# -------------------------------------------------------------------------------------------
def bench_models(quick: bool, size: int) -> list[Row]:
    models = optional_module("hwd_tune.models")
    if models is None or not hasattr(models, "build_model"):
        return [Row("models", "build_model", "skipped", "hwd_tune.models missing")]
    rows = []
    image = torch.randn(1, 3, size, size)
    for name in models.available_models():
        model = models.build_model(name, num_classes=150).eval()
        parameters = sum(p.numel() for p in model.parameters())

        def forward(model: torch.nn.Module = model) -> None:  # this iteration's model
            with torch.inference_mode():
                model(image)

        seconds = median_seconds(forward, repeats=1 if quick else 3)
        rows.append(
            Row(
                "models",
                f"{name} forward {size}x{size}",
                f"{seconds * 1e3:.0f} ms",
                f"{parameters / 1e6:.2f} M parameters (with aux head if any), batch 1",
            )
        )
    return rows


def print_table(rows: list[Row]) -> None:
    headers = ("section", "item", "value", "note")
    cells = [headers] + [(r.section, r.item, r.value, r.note) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(3)]
    for index, row in enumerate(cells):
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3])
        if index == 0:
            print("  ".join("-" * width for width in widths) + "  " + "-" * 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--size", type=int, default=512, help="square input side for the models")
    parser.add_argument("--skip-models", action="store_true", help="leave out the model section")
    args = parser.parse_args()
    if args.size < 32:
        parser.error(f"--size must be at least 32, got {args.size}")

    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = bench_confusion(args.quick) + bench_transforms(args.quick) + bench_synthetic(args.quick)
    if not args.skip_models:
        rows += bench_models(args.quick, args.size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU")
    print_table(rows)


if __name__ == "__main__":
    main()
