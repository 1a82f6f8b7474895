"""Is the synthetic dataset a useful testbed? Teacher vs student alone vs student + HWD/CWD.

A measurement, not the product's training loop (that is `trainables/`): a plain single-process
PyTorch loop at tiny sizes that shows (1) a small network reaches high mIoU on SyntheticShapes
in minutes on a CPU and (2) a smaller student gains from distillation. Prints mIoU (%) per run.

    python benchmarks/synthetic_distillation.py [--iters 300] [--methods none,cwd,hwd]
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch
from torch.utils.data import DataLoader

from hwd_tune.data import SyntheticShapes, eval_transforms, normalization, train_transforms
from hwd_tune.losses import build_distiller, total_loss
from hwd_tune.metrics import evaluate
from hwd_tune.models import build_model, feature_channels, freeze_teacher

NUM_CLASSES = 6  # overridden by --classes


def loaders(image_size: int, batch_size: int, seed: int) -> tuple[DataLoader, DataLoader]:
    norm = normalization("imagenet")
    train = SyntheticShapes(
        2048,
        image_size=image_size,
        num_classes=NUM_CLASSES,
        seed=seed,
        split="train",
        transforms=train_transforms(image_size, (0.75, 1.5), **norm),
    )
    val = SyntheticShapes(
        128,
        image_size=image_size,
        num_classes=NUM_CLASSES,
        seed=seed,
        split="val",
        transforms=eval_transforms(**norm),
    )
    generator = torch.Generator().manual_seed(seed)
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True, drop_last=True, generator=generator),
        DataLoader(val, batch_size=16),
    )


def train(model, distiller, teacher, loader, iters: int, lr: float) -> None:
    parameters = list(model.parameters()) + list(distiller.student_parameters())
    optimizer = torch.optim.SGD(parameters, lr=lr, momentum=0.9, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: (1 - i / iters) ** 0.9)
    model.train()
    distiller.train()
    for images, labels in itertools.islice(itertools.cycle(loader), iters):
        student_out = model(images)
        with torch.no_grad():
            teacher_out = teacher(images) if teacher is not None else None
        loss = total_loss(distiller(student_out, teacher_out, labels))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()


def miou(model, loader) -> float:
    return 100 * evaluate(model, loader, NUM_CLASSES).miou()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--teacher-iters", type=int, default=600)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--methods", default="none,cwd,hwd")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--teacher-width", type=float, default=0.5)
    parser.add_argument("--student-width", type=float, default=0.125)
    parser.add_argument("--lr", type=float, default=0.02)
    args = parser.parse_args()
    global NUM_CLASSES
    NUM_CLASSES = args.classes
    torch.set_num_threads(args.threads)
    train_loader, val_loader = loaders(args.image_size, 8, args.seed)

    torch.manual_seed(args.seed)
    teacher_arch, teacher_width = "deeplabv3_resnet18", args.teacher_width
    student_arch, student_width = "deeplabv3_resnet18", args.student_width
    teacher = build_model(teacher_arch, NUM_CLASSES, width_multiplier=teacher_width)
    start = time.perf_counter()
    train(teacher, build_distiller("none", num_classes=NUM_CLASSES), None, train_loader, args.teacher_iters, lr=args.lr)
    print(
        f"teacher {teacher_arch} x{teacher_width}: {miou(teacher, val_loader):.2f} mIoU "
        f"({args.teacher_iters} iters, {time.perf_counter() - start:.0f} s)",
        flush=True,
    )
    teacher = freeze_teacher(teacher)

    channels = (feature_channels(student_arch, student_width), feature_channels(teacher_arch, teacher_width))
    for method in args.methods.split(","):
        torch.manual_seed(args.seed)
        student = build_model(student_arch, NUM_CLASSES, width_multiplier=student_width)
        distiller = build_distiller(method, num_classes=NUM_CLASSES, feature_channels=channels)
        start = time.perf_counter()
        train(student, distiller, teacher if method != "none" else None, train_loader, args.iters, lr=args.lr)
        print(
            f"student {student_arch} x{student_width} + {method}: {miou(student, val_loader):.2f} mIoU "
            f"({args.iters} iters, {time.perf_counter() - start:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
