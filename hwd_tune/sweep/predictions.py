"""The sweep's answer in pictures: on the same validation images, the teacher, the final stage's
winner and the CWD baseline side by side, logged on the parent run as `sweep/predictions/val_<index>.png`.

Both students are the best checkpoints their runs published (`best_checkpoint/model.pt`), of the
first seed both were trained with, so the two tiles differ by the method and nothing else.
"""

from __future__ import annotations

import tempfile

import torch
from torch import nn

from hwd_tune import tracking
from hwd_tune.data.from_config import info_from_config
from hwd_tune.models import load_weights
from hwd_tune.sweep.config import SweepConfig, final_job_config
from hwd_tune.sweep.final_stage import CandidateResult, FinalStageResult
from trainables.loop import build_teacher, model_from_config, resolve_teacher_weights
from trainables.predictions import load_prediction_samples, predict_samples, render_predictions

PREDICTIONS_FOLDER = "sweep/predictions"  # on the parent run
BASELINE_SHOWN = "cwd"  # the baseline HWD is measured against in the paper


def log_final_predictions(
    sweep: SweepConfig, final: FinalStageResult, parent: tracking.RunLogger, tracking_uri: str
) -> list[str]:
    """Draws and logs the pictures (train.tracking.prediction_images of them); returns the artifact
    paths. Nothing is drawn without a winner or with prediction_images 0."""
    count = sweep.train.tracking.prediction_images
    if not count or final.winner is None:
        return []
    winner = final.result(final.winner)
    baseline = next((result for result in final.results if result.candidate.label == BASELINE_SHOWN), None)
    shared = sorted(set(winner.run_ids) & set(baseline.run_ids)) if baseline is not None else []
    seed = shared[0] if shared else min(winner.run_ids)
    config = final_job_config(sweep, winner.candidate.method, winner.candidate.params, seed)
    num_classes = info_from_config(config.data).num_classes
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    models: list[tuple[str, nn.Module]] = []
    if config.method.name != "none" and config.teacher.source:
        teacher_weights = resolve_teacher_weights(config, tracking_uri)
        models.append(("teacher", build_teacher(config, num_classes, teacher_weights, device)))
    with tempfile.TemporaryDirectory(prefix="hwd-final-predictions-") as cache:
        shown = [(f"{winner.candidate.method} {final.winner}", winner), (BASELINE_SHOWN, baseline)]
        for title, result in shown:
            if result is not None and seed in result.run_ids:
                models.append((title, _best_student(sweep, result, seed, num_classes, tracking_uri, cache).to(device)))
    samples = load_prediction_samples(config.data, count)
    columns = [(title, predict_samples(model, samples, device)) for title, model in models]
    panels = render_predictions(samples, columns)
    return tracking.log_prediction_files(parent, panels, PREDICTIONS_FOLDER)


def _best_student(
    sweep: SweepConfig, result: CandidateResult, seed: int, num_classes: int, tracking_uri: str, cache: str
) -> nn.Module:
    """The student of `result`'s run for `seed`, with the weights that run published as its best."""
    source = f"runs:/{result.run_ids[seed]}/best_checkpoint"
    weights = tracking.resolve_teacher(source, tracking_uri=tracking_uri, cache_dir=cache)  # any run's weights
    student = model_from_config(sweep.train.student, num_classes)
    load_weights(student, weights, strict=True)
    return student
