"""ASHA stops weak trials (PRUNED in the Optuna study), and a grid sweep visits every combination
once: real Ray, Optuna, MLflow.

Early stopping is made certain rather than likely: the teacher is a real checkpoint whose
classifiers have zero weights and a bias favouring class 1, so it says "class 1" at every pixel.
Pixel-wise KD pulls a student's class decision towards it: with KD weight >= 3 the tiny student
predicts class 1 everywhere from its first validation on (measured: 4 seeds, weights 3-30,
iterations 2-10), a val_miou computed below from the labels alone, while the student alone
(weight 0) is at or above the majority-class score. HWD cannot serve here: its softmax over
pixels per channel ignores a per-channel offset, so it cannot carry a class decision, and an
absurd HWD weight wrecks training only for a few iterations and differently per seed.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from torch import nn

from hwd_tune.config import ModelConfig, TrainConfig
from hwd_tune.data.from_config import validation_set
from hwd_tune.sweep import searcher, service
from hwd_tune.sweep.config import SweepConfig, trial_train_config
from tests.trainables.helpers import TINY_TEACHER, tiny_config
from trainables.loop import model_from_config

NUM_CLASSES = 4  # tiny_config's synthetic dataset
TEACHER_CLASS = 1  # what the constant teacher predicts at every pixel
GOOD, BAD = 0.0, (10.0, 30.0)  # KD weights: the student alone, then pulled to the teacher's class


@pytest.fixture(scope="module")
def constant_teacher(tmp_path_factory) -> str:
    """model.pt of the tiny teacher whose 1x1 classifiers (main and aux) output the logits
    [0, 10, 0, 0] at every pixel: zero weights, a bias favouring TEACHER_CLASS."""
    teacher = model_from_config(ModelConfig(**TINY_TEACHER), NUM_CLASSES)
    classifiers = [
        module for module in teacher.modules() if isinstance(module, nn.Conv2d) and module.out_channels == NUM_CLASSES
    ]
    assert len(classifiers) == 2  # main head and auxiliary FCN head
    with torch.no_grad():
        for classifier in classifiers:
            classifier.weight.zero_()
            classifier.bias.zero_()
            classifier.bias[TEACHER_CLASS] = 10.0
    path = tmp_path_factory.mktemp("constant_teacher") / "model.pt"
    torch.save(teacher.state_dict(), path)
    return str(path)


def tiny_train(output_dir: Path, teacher: str, method: dict, **schedule) -> TrainConfig:
    """tiny_config's 48 px job distilling from `teacher` (the `train` section of a sweep)."""
    return tiny_config(
        output_dir,
        job="distill",
        method=method,
        teacher={**TINY_TEACHER, "source": teacher},
        schedule={"batch_size": 4, **schedule},
        tracking={"experiment": "tests", "uri": f"sqlite:///{output_dir}/mlflow/mlflow.db"},
    )


def constant_prediction_miou(trial: TrainConfig, predicted_class: int) -> float:
    """val_miou (0-100) of a model predicting `predicted_class` at every pixel, from the labels of
    the images the trial validates on (its held-out training images): its IoU is (its pixels) /
    (all pixels), every other class scores 0, and the mean runs over the classes in the labels or
    the prediction."""
    labels = np.concatenate([np.asarray(label).ravel() for _, label in validation_set(trial.data)])
    labels = labels[(labels >= 0) & (labels < NUM_CLASSES)]
    present = set(np.unique(labels).tolist()) | {predicted_class}
    return 100.0 * float(np.mean(labels == predicted_class)) / len(present)


# --------------------------------------------------------------------------------------------
# ASHA
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_asha_stops_the_trials_below_the_cutoff_at_the_first_rung(ray_local, tmp_path, constant_teacher):
    from mlflow import MlflowClient

    # One trial at a time, in the listed order: the student alone first, then two KD weights
    # that make it copy the constant teacher. Validations every 2 iterations; ASHA's one rung at 4
    # (the second validation; max_t = 8 ends every trial, it is no rung).
    train = tiny_train(
        tmp_path, constant_teacher, {"name": "kd", "params": {}}, max_iters=8, val_interval=2, log_interval=4
    )
    sweep = SweepConfig.model_validate(
        {
            "name": "asha",
            "train": train.model_dump(mode="json"),
            "search": {
                "num_samples": 3,
                "max_concurrent_trials": 1,
                "seed": 0,
                "baselines": [],
                "space": {"weight": {"type": "choice", "values": [GOOD, *BAD]}},
                "points_to_evaluate": [{"weight": GOOD}, *({"weight": weight} for weight in BAD)],
                "scheduler": {"type": "asha", "grace_period": 4, "reduction_factor": 2},
            },
        }
    )
    summary = service.run(sweep)

    good, *bad = summary.trials
    copy_teacher = constant_prediction_miou(trial_train_config(sweep, {"weight": GOOD}), TEACHER_CLASS)
    assert 0.0 < copy_teacher < 10.0  # class 1 covers few pixels: a clearly worse score
    assert [row.params["weight"] for row in summary.trials] == [GOOD, *BAD]
    assert (good.status, good.iterations) == ("completed", 8)
    assert good.val_miou > copy_teacher + 5.0
    for row in bad:  # at the rung, below the cutoff (the good trial's score; then the median)
        assert (row.status, row.iterations) == ("stopped early", 4)
        assert row.val_miou == pytest.approx(copy_teacher, abs=1e-6)
    assert summary.best_params == {"weight": GOOD}

    client = MlflowClient(tracking_uri=summary.tracking_uri)
    parent = client.get_run(summary.parent_run_id)
    assert parent.data.metrics["trials_stopped_early"] == 2.0
    assert parent.data.metrics["trials_completed"] == 1.0
    good_run = client.get_run(good.run_id)
    assert good_run.data.tags["hwd.trial_status"] == "completed"
    assert "hwd.stopped_at_iteration" not in good_run.data.tags
    for row in bad:
        child = client.get_run(row.run_id)
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == summary.parent_run_id
        assert child.data.tags["hwd.trial_status"] == "stopped_early"
        assert child.data.tags["hwd.stopped_at_iteration"] == "4"
        first = client.get_metric_history(row.run_id, "val_miou")[0]
        assert (first.step, first.value) == (2, pytest.approx(copy_teacher, abs=1e-6))

    # Optuna holds each trial's validations at their training iterations (not Tune's report count
    # 1, 2, ...): the stopped trials PRUNED at the rung, the full one COMPLETE with its best value.
    # The MLflow history is cut where Tune stopped the trial: its worker may validate once more
    # before Ray ends it, which neither Tune nor Optuna sees.
    study = optuna.load_study(study_name=sweep.name, storage=searcher.optuna_storage(sweep))
    told = {trial.params["weight"]: trial for trial in study.trials}
    for row in summary.trials:
        trial = told[row.params["weight"]]
        logged = client.get_metric_history(row.run_id, "val_miou")
        history = {metric.step: metric.value for metric in logged if metric.step <= row.iterations}
        assert trial.intermediate_values == pytest.approx(history)
        if row is good:
            assert sorted(history) == [2, 4, 6, 8]
            assert trial.state == optuna.trial.TrialState.COMPLETE
            assert trial.value == pytest.approx(max(history.values()))
            assert trial.value == pytest.approx(good.val_miou)
        else:
            assert sorted(history) == [2, 4]
            assert trial.state == optuna.trial.TrialState.PRUNED

    # one completed trial: too few for the rank correlation of the rung at 4
    assert [(rung.iteration, rung.n, rung.rho) for rung in summary.rung_correlations] == [(4, 1, None)]
    report = json.loads((summary.report_dir / "summary.json").read_text())
    assert report["rung_correlations"] == [{"iteration": 4, "n": 1, "rho": None}]
    assert not any(name.startswith("rung_spearman") for name in parent.data.metrics)


# --------------------------------------------------------------------------------------------
# Grid
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_grid_sweep_runs_each_combination_exactly_once(ray_local, tmp_path, constant_teacher):
    from mlflow import MlflowClient

    grid = {"tau": [2.0, 4.0], "beta": [0.1, 0.5]}
    train = tiny_train(
        tmp_path, constant_teacher, {"name": "hwd", "params": {}}, max_iters=2, val_interval=2, log_interval=2
    )
    sweep = SweepConfig.model_validate(
        {
            "name": "grid",
            "train": train.model_dump(mode="json"),
            "search": {
                "sampler": "grid",
                "num_samples": 4,
                "max_concurrent_trials": 2,
                "seed": 0,
                "baselines": [],
                "space": {name: {"type": "choice", "values": values} for name, values in grid.items()},
                # a first point in the grid must not make its combination run twice (and another never)
                "points_to_evaluate": [{"tau": 4.0, "beta": 0.1}],
                "scheduler": {"type": "none"},
            },
        }
    )
    summary = service.run(sweep)

    expected = Counter(itertools.product(grid["tau"], grid["beta"]))
    visited = Counter((row.params["tau"], row.params["beta"]) for row in summary.trials)
    assert visited == expected  # all four, each once
    assert all((row.status, row.iterations) == ("completed", 2) for row in summary.trials)

    study = optuna.load_study(study_name=sweep.name, storage=searcher.optuna_storage(sweep))
    assert Counter((trial.params["tau"], trial.params["beta"]) for trial in study.trials) == expected
    assert all(trial.state == optuna.trial.TrialState.COMPLETE for trial in study.trials)
    by_params = {(row.params["tau"], row.params["beta"]): row for row in summary.trials}
    for trial in study.trials:  # one validation each: the study's value is the trial's val_miou
        assert trial.value == pytest.approx(by_params[trial.params["tau"], trial.params["beta"]].val_miou)

    client = MlflowClient(tracking_uri=summary.tracking_uri)
    for (tau, beta), row in by_params.items():
        params = client.get_run(row.run_id).data.params
        assert (float(params["tau"]), float(params["beta"])) == (tau, beta)
