"""How fast the data check reads a folder dataset: images/s of `check_data` on a generated folder
(every mask, and the default sample that runs before training), and of `hwd-tune data check` end to end.

Run:  python benchmarks/data_check.py [--images 2000] [--size 64] [--classes 19] [--rgb] [--repeats 3]

The folder (images/masks layout, JPEG images, PNG class-id masks with a few ignored pixels; with
--rgb, RGB masks and a palette) is written to a temporary directory; 90 % train, 10 % val.
Medians of `--repeats` runs, after one untimed run that warms the page cache.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from hwd_tune.config import DataConfig
from hwd_tune.data.from_config import check_data


def write_dataset(root: Path, images: int, size: int, classes: int, rgb: bool) -> None:
    """`images` image/mask pairs of size x size under root, and its classes.yaml."""
    rng = np.random.default_rng(0)
    palette = [[int(v) for v in rng.integers(0, 256, 3)] for _ in range(classes)]
    palette_array = np.asarray(palette, dtype=np.uint8)
    for index in range(images):
        split = "val" if index % 10 == 9 else "train"
        mask = np.repeat(np.repeat(rng.integers(0, classes, (8, 8)), size // 8, 0), size // 8, 1).astype(np.uint8)
        pixels = (palette_array[mask] // 2 + rng.integers(0, 64, (size, size, 3))).astype(np.uint8)
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "masks" / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / "images" / split / f"{index:05d}.jpg", quality=90)
        if rgb:
            Image.fromarray(palette_array[mask]).save(root / "masks" / split / f"{index:05d}.png")
        else:
            mask[0, :4] = 255
            Image.fromarray(mask).save(root / "masks" / split / f"{index:05d}.png")
    spec = {"classes": [f"class{k}" for k in range(classes)], "ignore_index": 255}
    (root / "classes.yaml").write_text(yaml.safe_dump({**spec, **({"palette": palette} if rgb else {})}))


def timed(function, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds (this process) of `repeats` calls, after one untimed call.

    CPU time is printed too because a shared machine's wall time varies with its load.
    """
    function()
    wall, cpu = [], []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        function()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--rgb", action="store_true", help="RGB masks matched to a palette")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "data"
        started = time.perf_counter()
        write_dataset(root, args.images, args.size, args.classes, args.rgb)
        print(
            f"wrote {args.images} {args.size}x{args.size} images + {'RGB' if args.rgb else 'class-id'} masks "
            f"in {time.perf_counter() - started:.1f} s"
        )
        data = DataConfig(name="folder", root=str(root))
        report = check_data(data, samples=0)
        assert report.ok, report.error_message()

        every, every_cpu = timed(lambda: check_data(data, samples=0), args.repeats)
        print(
            f"  check_data, every mask          {every:6.2f} s wall {args.images / every:6.0f} images/s; "
            f"{every_cpu:6.2f} s CPU {args.images / every_cpu:6.0f} images/s"
        )
        sampled, sampled_cpu = timed(lambda: check_data(data), args.repeats)
        read = sum(scan.scanned for scan in check_data(data).splits)
        print(
            f"  check_data, default sample      {sampled:6.2f} s wall {read / sampled:6.0f} images/s; "
            f"{sampled_cpu:6.2f} s CPU ({read} masks read)"
        )
        config = Path(scratch) / "train.yaml"
        config.write_text(yaml.safe_dump({"data": {"name": "folder", "root": str(root)}}))
        command = [sys.executable, "-m", "hwd_tune.cli", "data", "check", str(config), "--samples", "0"]
        cli, _ = timed(lambda: subprocess.run(command, check=True, capture_output=True), args.repeats)
        print(f"  hwd-tune data check --samples 0 {cli:6.2f} s wall {args.images / cli:6.0f} images/s (with start-up)")


if __name__ == "__main__":
    main()
