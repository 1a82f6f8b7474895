"""What the checkpoint manifest costs: save_checkpoint (each file hashed with SHA-256 after writing, renamed
into place, manifest) against plain torch.save of the same three files, as a ratio in one process.

Run:  python benchmarks/checkpoint.py [--arch deeplabv3_resnet18] [--repeats 5]

The state is a real student's: its weights, and SGD momentum buffers of the same size in the
training state, as the loop writes them. Medians of `--repeats` writes each, alternated so both
see the same disk cache.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from hwd_tune.models import build_model
from trainables.checkpointing import checkpoint_problems, save_checkpoint


def plain_save(directory: Path, model_state: dict, train_state: dict, meta: dict) -> None:
    """The baseline: the three files written with torch.save / json, no hashing, no fsync."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model_state, directory / "model.pt")
    torch.save(train_state, directory / "train_state.pt")
    (directory / "meta.json").write_text(json.dumps(meta))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="deeplabv3_resnet18")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model = build_model(args.arch, num_classes=150)
    model_state = model.state_dict()
    train_state = {
        "iteration": 1000,
        "optimizer": {"state": {i: {"momentum_buffer": p.detach().clone()} for i, p in enumerate(model.parameters())}},
    }
    meta = {"arch": args.arch, "iteration": 1000}
    size_mb = sum(t.numel() * t.element_size() for t in model_state.values()) * 2 / 1e6
    timings = {"plain": [], "manifest": [], "verify": []}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            started = time.perf_counter()
            plain_save(Path(scratch) / f"plain{repeat}", model_state, train_state, meta)
            timings["plain"].append(time.perf_counter() - started)
            started = time.perf_counter()
            target = save_checkpoint(
                Path(scratch) / f"manifest{repeat}", model_state=model_state, train_state=train_state, meta=meta
            )
            timings["manifest"].append(time.perf_counter() - started)
            started = time.perf_counter()
            assert checkpoint_problems(target) == []
            timings["verify"].append(time.perf_counter() - started)
    median = {name: statistics.median(values) for name, values in timings.items()}
    print(f"{args.arch}: checkpoint of ~{size_mb:.0f} MB (weights + momentum), medians of {args.repeats}")
    print(f"  plain torch.save        {median['plain'] * 1e3:8.1f} ms")
    ratio = median["manifest"] / median["plain"]
    print(f"  with manifest (SHA-256) {median['manifest'] * 1e3:8.1f} ms   ratio {ratio:.2f}x")
    verify_ratio = median["verify"] / median["plain"]
    print(f"  verify before restore   {median['verify'] * 1e3:8.1f} ms   ratio to the plain write {verify_ratio:.2f}x")


if __name__ == "__main__":
    main()
