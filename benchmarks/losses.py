"""Forward+backward time of every distillation loss at the ADE20K shape, as ratios to CWD.

Run:  MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 python benchmarks/losses.py [--quick]

Shape: batch 8, 150 classes, 64x64 logits (512x512 crops at output stride 8), labels 512x512;
features [8, 128, 64, 64] (student) and [8, 256, 64, 64] (teacher) for feature-based methods.
Rounds are interleaved (A B C ... A B C ...) and medians reported, so drifting machine load
hits every loss alike. Feature distillers registered by other modules (MGD, SKD, IFVD, CIRKD)
each run in a child process under a memory cap, interleaved with CWD there, so one that needs
too much memory at this shape is reported as skipped instead of taking the machine down.
Also compares our vectorised pixel counting with the authors' loop.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from hwd_tune.losses import available_distillers, build_distiller
from hwd_tune.losses.cwd import CWDLoss
from hwd_tune.losses.dist import DISTLoss
from hwd_tune.losses.hwd import HWDLoss, class_pixel_counts, nearest_resize_labels
from hwd_tune.losses.kd import KDLoss
from hwd_tune.outputs import SegOutput

BATCH, CLASSES, LOGIT_SIZE, LABEL_SIZE = 8, 150, 64, 512
STUDENT_FEATURES, TEACHER_FEATURES = 128, 256
LOGIT_METHODS = {"none", "cwd", "hwd", "kd", "dist"}  # timed directly below, not via their distiller
MALLOC_NOTE = (
    "Run with MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824: otherwise glibc\n"
    "returns the ~20 MB buffers to the OS between calls and timings vary 0.7-1.3x."
)
# Targets from the project brief: HWD within 1.25x of CWD (aim 1.10x), pixel_norm "n" within 1.5x.
TARGETS = {"hwd": 1.25, "hwd pixel_norm=n": 1.5}
MIN_LOOP_SPEEDUP = 20.0


@dataclass
class Inputs:
    student_logits: Tensor
    teacher_logits: Tensor
    labels: Tensor
    student_features: Tensor
    teacher_features: Tensor


def make_inputs() -> Inputs:
    generator = torch.Generator().manual_seed(0)
    logits = (BATCH, CLASSES, LOGIT_SIZE, LOGIT_SIZE)
    return Inputs(
        student_logits=torch.randn(logits, generator=generator),
        teacher_logits=2.0 * torch.randn(logits, generator=generator),
        labels=torch.randint(-1, CLASSES, (BATCH, LABEL_SIZE, LABEL_SIZE), generator=generator),
        student_features=torch.randn(BATCH, STUDENT_FEATURES, LOGIT_SIZE, LOGIT_SIZE, generator=generator),
        teacher_features=torch.randn(BATCH, TEACHER_FEATURES, LOGIT_SIZE, LOGIT_SIZE, generator=generator),
    )


def plain_cwd(student_logits: Tensor, teacher_logits: Tensor, tau: float = 4.0) -> Tensor:
    """CWD written the obvious eager way (softmax teacher, log-softmax student, kl_div sum)."""
    n, c = student_logits.shape[:2]
    student_log_probs = F.log_softmax(student_logits.reshape(n, c, -1) / tau, dim=-1)
    with torch.no_grad():
        teacher_probs = F.softmax(teacher_logits.reshape(n, c, -1) / tau, dim=-1)
    return F.kl_div(student_log_probs, teacher_probs, reduction="sum") * tau**2 / (n * c)


def authors_loop_counts(resized_labels: Tensor, num_classes: int) -> Tensor:
    """Pixel counting as the authors' code does it: a Python loop over images and classes."""
    counts = torch.ones(resized_labels.shape[0], num_classes)
    for image in range(resized_labels.shape[0]):
        for klass in range(num_classes):
            counts[image, klass] += torch.sum(resized_labels[image] == klass)
    return counts


def logit_loss_step(loss_fn: Callable[..., Tensor], inputs: Inputs, with_labels: bool = False) -> Callable[[], None]:
    """One forward+backward of a logit loss on a fresh leaf copy of the student's logits."""

    def step() -> None:
        student = inputs.student_logits.detach().requires_grad_()
        extra = (inputs.labels,) if with_labels else ()
        loss_fn(student, inputs.teacher_logits, *extra).backward()

    return step


def distiller_step(name: str, inputs: Inputs) -> Callable[[], None]:
    """One forward+backward of a registered distiller's own terms (task loss left out)."""
    distiller = build_distiller(name, num_classes=CLASSES, feature_channels=(STUDENT_FEATURES, TEACHER_FEATURES))
    distiller.train()

    def step() -> None:
        logits = inputs.student_logits.detach().requires_grad_()
        features = inputs.student_features.detach().requires_grad_()
        student = SegOutput(logits, None, features)
        teacher = SegOutput(inputs.teacher_logits, None, inputs.teacher_features)
        distiller.zero_grad(set_to_none=True)
        terms = distiller.distill(student, teacher, inputs.labels)
        torch.stack([term for term in terms.values()]).sum().backward()

    return step


def time_interleaved(steps: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median seconds per step over `rounds` interleaved rounds (after one warm-up round)."""
    for step in steps.values():
        step()
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def time_distiller_here(name: str, rounds: int, budget_s: float) -> dict[str, float | str]:
    """In the child: seconds per step of distiller `name` and of CWD, interleaved (medians)."""
    inputs = make_inputs()
    step = distiller_step(name, inputs)
    start = time.perf_counter()
    step()
    seconds = time.perf_counter() - start
    if seconds > budget_s:
        return {"skipped": f"one step took {seconds:.1f} s (> {budget_s:.0f} s budget)"}
    rounds = max(3, min(rounds, int(60 / seconds)))
    return time_interleaved({"cwd": logit_loss_step(CWDLoss(4.0), inputs), name: step}, rounds)


def time_distiller_in_child(name: str, args: argparse.Namespace) -> dict[str, float | str]:
    """Runs `time_distiller_here` in a child process capped at `args.max_memory_gb` of address space."""
    cap = int(args.max_memory_gb * 2**30)
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child-distiller",
        name,
        "--threads",
        str(args.threads),
        "--rounds",
        str(args.rounds),
    ]
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=args.child_timeout_s,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)),
        )
    except subprocess.TimeoutExpired:
        return {"skipped": f"no result within {args.child_timeout_s} s"}
    if result.returncode != 0:
        last_line = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
        return {"skipped": f"failed under a {args.max_memory_gb:g} GB cap: {last_line[:160]}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="logit losses only, few rounds: < 30 s")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 25, quick 5)")
    parser.add_argument("--max-memory-gb", type=float, default=6.0, help="address-space cap of each child")
    parser.add_argument("--child-timeout-s", type=int, default=300)
    parser.add_argument("--child-distiller", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.rounds = args.rounds or (5 if args.quick else 25)
    torch.set_num_threads(args.threads)
    if args.child_distiller:
        print(json.dumps(time_distiller_here(args.child_distiller, args.rounds, budget_s=30.0)))
        return

    print(MALLOC_NOTE)
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        print("WARNING: MALLOC_MMAP_THRESHOLD_ is not set in this run.")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.rounds} rounds, medians")
    print(f"logits [{BATCH}, {CLASSES}, {LOGIT_SIZE}, {LOGIT_SIZE}], labels [{BATCH}, {LABEL_SIZE}, {LABEL_SIZE}]\n")

    inputs = make_inputs()
    steps: dict[str, Callable[[], None]] = {
        "cwd": logit_loss_step(CWDLoss(4.0), inputs),
        "cwd plain eager (script)": logit_loss_step(plain_cwd, inputs),
        "hwd": logit_loss_step(HWDLoss(), inputs, with_labels=True),
        "hwd pixel_norm=n": logit_loss_step(HWDLoss(pixel_norm="n"), inputs, with_labels=True),
        "kd": logit_loss_step(KDLoss(1.0), inputs),
        "dist": logit_loss_step(DISTLoss(), inputs),
    }
    medians = time_interleaved(steps, args.rounds)
    baseline = medians["cwd"]
    print(f"{'loss (forward+backward)':<30} {'ms':>9} {'x CWD':>7}  target")
    for name, seconds in medians.items():
        target = TARGETS.get(name)
        verdict = "" if target is None else f"<= {target:.2f}x  {'ok' if seconds / baseline <= target else 'MISSED'}"
        print(f"{name:<30} {seconds * 1e3:9.2f} {seconds / baseline:7.3f}  {verdict}")

    feature_methods = [name for name in available_distillers() if name not in LOGIT_METHODS]
    if args.quick:
        print(f"(--quick: feature distillers {feature_methods} are timed only in the full run)")
    for name in [] if args.quick else feature_methods:
        result = time_distiller_in_child(name, args)
        label = f"{name} (distiller terms)*"
        if "skipped" in result:
            print(f"{label:<30} skipped: {result['skipped']}")
        else:
            ratio = result[name] / result["cwd"]
            print(
                f"{label:<30} {result[name] * 1e3:9.2f} {ratio:7.3f}  "
                f"(* own process, CWD there {result['cwd'] * 1e3:.2f} ms)"
            )

    size = (LOGIT_SIZE, LOGIT_SIZE)
    resized = nearest_resize_labels(inputs.labels, size)
    counting = time_interleaved(
        {
            "loop": lambda: authors_loop_counts(resized, CLASSES),
            "bincount": lambda: class_pixel_counts(resized, CLASSES),
            "resize": lambda: nearest_resize_labels(inputs.labels, size),
        },
        rounds=max(3, args.rounds // 2),
    )
    same = torch.equal(authors_loop_counts(resized, CLASSES).double(), class_pixel_counts(resized, CLASSES))
    loop_s, ours_s = counting["loop"], counting["bincount"]
    speedup = loop_s / ours_s
    print(f"\npixel counting on labels resized to 64x64 -> counts [8, 150], identical results: {same}")
    print(f"{'authors loop over N x C':<30} {loop_s * 1e3:9.2f} ms")
    print(
        f"{'ours (one bincount)':<30} {ours_s * 1e3:9.2f} ms   {speedup:.0f}x faster "
        f"(target >= {MIN_LOOP_SPEEDUP:.0f}x {'ok' if speedup >= MIN_LOOP_SPEEDUP else 'MISSED'})"
    )
    print(f"{'(shared) nearest resize':<30} {counting['resize'] * 1e3:9.2f} ms   512x512 -> 64x64, both need it")
    with_loop = medians["hwd"] + counting["resize"] + loop_s
    print(
        f"hwd with the loop counting ~ {with_loop * 1e3:.1f} ms vs hwd pixel_norm=n "
        f"{medians['hwd pixel_norm=n'] * 1e3:.1f} ms ({with_loop / medians['hwd pixel_norm=n']:.2f}x)"
    )


if __name__ == "__main__":
    main()
