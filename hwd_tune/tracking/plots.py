"""The tables and pictures a run logs as artifacts: per-class IoU (CSV, Markdown, bar chart) and the
HWD channel weights over training (heatmap). Matplotlib without pyplot: no global state, no GUI."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def write_class_iou_csv(path: Path, values: np.ndarray, class_names: Sequence[str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class_id", "class_name", "iou"])
        for class_id, (name, value) in enumerate(zip(class_names, values)):
            writer.writerow([class_id, name, repr(float(value))])


def write_class_iou_markdown(path: Path, values: np.ndarray, class_names: Sequence[str], step: int) -> None:
    present = values[~np.isnan(values)]
    mean = float(present.mean()) if present.size else math.nan
    lines = [
        f"# Per-class IoU at iteration {step}",
        "",
        f"Mean over the {present.size} classes present: {mean:.4f}",
        "",
        "| id | class | IoU |",
        "|---:|:------|----:|",
    ]
    for class_id, (name, value) in enumerate(zip(class_names, values)):
        shown = "n/a" if math.isnan(value) else f"{value:.4f}"
        lines.append(f"| {class_id} | {str(name).replace('|', '/')} | {shown} |")
    path.write_text("\n".join(lines) + "\n")


def plot_class_iou(path: Path, values: np.ndarray, class_names: Sequence[str], step: int) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    count = len(values)
    figure = Figure(figsize=(min(max(6.0, 0.18 * count), 40.0), 4.0), dpi=100)
    axes = figure.subplots()
    absent = np.isnan(values)
    axes.bar(np.arange(count), np.where(absent, 0.0, values), color=np.where(absent, "lightgrey", "tab:blue"))
    axes.set_xticks(np.arange(count), [str(name) for name in class_names], rotation=90, fontsize=6)
    axes.set_ylabel("IoU")
    axes.set_title(f"Per-class IoU at iteration {step} (grey: class absent)")
    figure.tight_layout()
    figure.savefig(path)


def plot_channel_weights(path: Path, iterations: list[int], table: np.ndarray, class_names: Sequence[str]) -> None:
    from matplotlib.figure import Figure

    steps, classes = table.shape
    figure = Figure(figsize=(min(max(6.0, 0.15 * classes), 40.0), min(max(3.0, 0.25 * steps), 20.0)), dpi=100)
    axes = figure.subplots()
    image = axes.imshow(table, aspect="auto", interpolation="nearest", cmap="viridis")
    axes.set_xticks(np.arange(classes), [str(name) for name in class_names], rotation=90, fontsize=6)
    shown_rows = np.unique(np.linspace(0, steps - 1, num=min(steps, 20)).round().astype(int)) if steps else []
    axes.set_yticks(shown_rows, [str(iterations[row]) for row in shown_rows], fontsize=6)
    axes.set_xlabel("class (channel)")
    axes.set_ylabel("iteration")
    axes.set_title("HWD channel weights over training")
    figure.colorbar(image, ax=axes, label="weight")
    figure.tight_layout()
    figure.savefig(path)
