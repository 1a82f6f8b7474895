"""Teacher training -> registry -> distillation, on real Ray and a real MLflow store."""

from __future__ import annotations

import pytest
import torch
from mlflow import MlflowClient

from hwd_tune.config import ConfigError, load_train_config
from hwd_tune.data.from_config import validation_set
from hwd_tune.metrics import ConfusionMatrix
from hwd_tune.models import build_model
from hwd_tune.tracking import default_tracking_uri
from tests.trainables.helpers import TINY_TEACHER, tiny_config
from trainables.launch import preflight, run_training

pytestmark = pytest.mark.slow

TEACHER_NAME = "teacher-synthetic-deeplabv3_resnet18"


@pytest.fixture(scope="module")
def trained_teacher(ray_local, tmp_path_factory):
    """A tiny teacher trained for 300 iterations with milestones at 150 and 300."""
    output = tmp_path_factory.mktemp("pipeline")
    config = tiny_config(
        output,
        student=dict(TINY_TEACHER),
        teacher={"milestones": [150, 300]},
        schedule={"max_iters": 300, "val_interval": 100, "log_interval": 50},
    )
    return output, config, run_training(config)


def test_teacher_learns_and_is_registered_at_milestones_and_best(trained_teacher):
    output, config, outcome = trained_teacher
    assert outcome["metrics"]["iteration"] == 300
    # well above predicting the most frequent class (background) everywhere
    assert outcome["metrics"]["best_val_miou"] > 1.5 * constant_prediction_miou(config)
    client = MlflowClient(default_tracking_uri(output), registry_uri=default_tracking_uri(output))
    model = client.get_registered_model(TEACHER_NAME)
    assert {"iter-150", "iter-300", "best"} <= set(model.aliases)
    assert int(model.aliases["iter-150"]) != int(model.aliases["iter-300"])
    history = client.get_metric_history(outcome["run_id"], "val_miou")
    assert [m.step for m in history] == [100, 150, 200, 300]
    assert max(m.value for m in history) == pytest.approx(outcome["metrics"]["best_val_miou"])
    run = client.get_run(outcome["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["method"] == "none" and run.data.params["max_iters"] == "300"


def constant_prediction_miou(config) -> float:
    """mIoU (%) of predicting class 0 (the synthetic background) at every pixel of the val set."""
    confusion = ConfusionMatrix(config.data.synthetic.num_classes)
    for _, mask in validation_set(config.data):
        confusion.update(torch.zeros_like(mask)[None], mask[None])
    return 100 * confusion.miou()


def test_distillation_with_hwd_from_the_registry_alias(trained_teacher):
    output, _, _ = trained_teacher
    config = tiny_config(
        output,
        job="distill",
        method={"name": "hwd", "params": {"mu": 0.5, "beta": 0.2}},
        teacher={"source": f"models:/{TEACHER_NAME}@best"},
        schedule={"max_iters": 20, "val_interval": 10, "log_interval": 5},
    )
    outcome = run_training(config)
    assert outcome["metrics"]["iteration"] == 20
    client = MlflowClient(default_tracking_uri(output))
    run = client.get_run(outcome["run_id"])
    assert (run.data.params["tau"], run.data.params["mu"], run.data.params["beta"]) == ("4.0", "0.5", "0.2")
    assert run.data.metrics["loss/hwd"] > 0
    artifacts = {a.path for a in client.list_artifacts(outcome["run_id"])}
    assert {"best_checkpoint", "channel_weights"} <= artifacts


def test_bad_teacher_inputs_fail_before_training(trained_teacher, tmp_path):
    output, _, _ = trained_teacher
    distill = dict(job="distill", method={"name": "hwd"})
    missing_alias = tiny_config(output, teacher={"source": f"models:/{TEACHER_NAME}@iter-999k"}, **distill)
    with pytest.raises(ValueError, match="iter-999k.*best"):
        preflight(missing_alias, default_tracking_uri(output))

    wrong_classes = tmp_path / "five_classes.pt"
    torch.save(
        build_model(TINY_TEACHER["arch"], 5, width_multiplier=TINY_TEACHER["width_multiplier"]).state_dict(),
        wrong_classes,
    )
    with pytest.raises(ValueError, match=r"head\.block\.4\.weight: checkpoint \[5,"):
        preflight(tiny_config(output, teacher={"source": str(wrong_classes)}, **distill), None)

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt.pt"):
        preflight(tiny_config(output, teacher={"source": str(corrupt)}, **distill), None)

    with pytest.raises(ConfigError, match="unknown method 'hdw'"):
        load_train_config(None, ["method.name=hdw", "teacher.source=x.pt"])
