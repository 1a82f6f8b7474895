"""What the prediction pictures cost at a new best: drawing and logging them (the student's forward on
each picture's image, panels, MLflow images into a sqlite store) as a ratio to one validation; the
frozen teacher's predictions are made once per run and shown apart.

Run:  python benchmarks/predictions.py [--setting quickstart|ade20k_like] [--pictures 4] [--repeats 3]

Settings (synthetic images; the models are those of the setting, with random weights):
- quickstart: the quickstart sweep's tiny student and teacher, 96 px images, 32 val images;
- ade20k_like: DeepLabV3-ResNet18 student and -ResNet101 teacher, 512 px images, --val-images
  (default 100; ADE20K's val split has 2000, so its ratio is 20x smaller than printed).
The validation is the loop's: the student alone over the val images (`hwd_tune.metrics.evaluate`).
Medians of `--repeats`, on one process with torch's threads as set (`--threads`).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from hwd_tune import tracking
from hwd_tune.config import DataConfig, ModelConfig
from hwd_tune.data.from_config import validation_set
from hwd_tune.metrics import evaluate
from trainables.loop import model_from_config
from trainables.predictions import load_prediction_samples, predict_samples, render_predictions

SETTINGS = {
    "quickstart": {
        "size": 96,
        "val_images": 32,
        "student": {"arch": "deeplabv3_resnet18", "width_multiplier": 0.125},
        "teacher": {"arch": "deeplabv3_resnet18", "width_multiplier": 0.25},
    },
    "ade20k_like": {
        "size": 512,
        "val_images": 100,
        "student": {"arch": "deeplabv3_resnet18"},
        "teacher": {"arch": "deeplabv3_resnet101"},
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="quickstart")
    parser.add_argument("--pictures", type=int, default=4, help="tracking.prediction_images")
    parser.add_argument("--val-images", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    setting = SETTINGS[args.setting]
    val_images = args.val_images or setting["val_images"]
    data = DataConfig.model_validate(
        {"synthetic": {"num_classes": 6, "image_size": setting["size"], "val_samples": val_images}}
    )
    student = model_from_config(ModelConfig.model_validate(setting["student"]), 6).eval()
    teacher = model_from_config(ModelConfig.model_validate(setting["teacher"]), 6).eval()
    loader = DataLoader(validation_set(data), batch_size=1)

    timings: dict[str, list[tuple[float, float]]] = {"validation": [], "teacher": [], "draw": [], "log": []}

    def timed(phase: str, work):
        wall, cpu = time.perf_counter(), time.process_time()
        result = work()
        timings[phase].append((time.perf_counter() - wall, time.process_time() - cpu))
        return result

    def draw(samples, teacher_labels):
        columns = [("teacher", teacher_labels), ("student", predict_samples(student, samples))]
        return render_predictions(samples, columns)

    with tempfile.TemporaryDirectory() as scratch:
        uri = tracking.default_tracking_uri(Path(scratch))
        run_id = tracking.start_run(tracking_uri=uri, experiment="bench", run_key="bench", run_name="bench")
        logger = tracking.RunLogger(uri, run_id)
        samples = load_prediction_samples(data, args.pictures)  # once per run, as the loop does
        teacher_labels = timed("teacher", lambda: predict_samples(teacher, samples))  # frozen: once per run
        for repeat in range(args.repeats):
            timed("validation", lambda: evaluate(student, loader, 6))
            panels = timed("draw", lambda: draw(samples, teacher_labels))
            timed("log", lambda: tracking.log_prediction_panels(logger, panels, step=repeat + 1))  # noqa: B023
    wall = {phase: statistics.median(w for w, _ in values) for phase, values in timings.items()}
    cpu = {phase: statistics.median(c for _, c in values) for phase, values in timings.items()}
    print(
        f"{args.setting}: {val_images} val images of {setting['size']} px, {args.pictures} pictures, "
        f"{args.threads} thread(s), medians of {args.repeats} (wall ms, this process's CPU ms)"
    )
    labels = {
        "validation": "validation (student over the val split)",
        "teacher": "teacher's predictions, once per run",
        "draw": "each new best: student forward, panels",
        "log": "each new best: MLflow images (PNG + preview)",
    }
    for phase, label in labels.items():
        print(f"  {label:<46} {wall[phase] * 1e3:9.1f} {cpu[phase] * 1e3:9.1f}")
    each_wall, each_cpu = wall["draw"] + wall["log"], cpu["draw"] + cpu["log"]
    print(
        f"  ratio pictures / validation at a new best: {each_wall / wall['validation']:.3f} wall, "
        f"{each_cpu / cpu['validation']:.3f} CPU; the first (with the teacher): "
        f"{(each_wall + wall['teacher']) / wall['validation']:.3f} wall, "
        f"{(each_cpu + cpu['teacher']) / cpu['validation']:.3f} CPU"
    )


if __name__ == "__main__":
    main()
