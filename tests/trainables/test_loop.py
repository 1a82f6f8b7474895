"""The Ray Train loop on real Ray with gloo workers: DDP equivalence, resume, fault recovery."""

from __future__ import annotations

import torch
import pytest

from tests.trainables.helpers import tiny_config
from trainables.checkpointing import MODEL_FILE, load_checkpoint
from trainables.launch import build_trainer, run_name

pytestmark = pytest.mark.slow


def final_weights(result) -> dict[str, torch.Tensor]:
    with result.checkpoint.as_directory() as directory:
        return load_checkpoint(directory)[0]


def fit(config, **kwargs):
    return build_trainer(config, tracking_uri=None, mlflow_run_id=None, **kwargs).fit()


def test_two_workers_of_batch_2_make_the_same_update_as_one_worker_of_batch_4(ray_local, tmp_path):
    """Without BatchNorm and dropout, DDP's gradient average over 2 x 2 images equals the
    gradient of one worker on the 4 images (same stream positions). Tolerance 1e-5: only the
    order of float sums differs."""
    common = {"student": {"norm": "none", "dropout": False}, "schedule": {"max_iters": 2, "val_interval": 2}}
    one = fit(tiny_config(tmp_path / "one", name="ddp-one", **common))
    two = fit(tiny_config(tmp_path / "two", name="ddp-two", resources={"num_workers": 2, "cpus_per_worker": 0.5},
                          **common))
    assert one.metrics["iteration"] == two.metrics["iteration"] == 2
    single, parallel = final_weights(one), final_weights(two)
    initial = tiny_config(tmp_path, student={"norm": "none"})
    assert single.keys() == parallel.keys()
    moved = 0
    for key in single:
        torch.testing.assert_close(parallel[key], single[key], rtol=1e-4, atol=1e-5, msg=key)
        moved += 1
    assert moved > 10


def test_killed_worker_is_restarted_and_the_run_equals_an_uninterrupted_one(ray_local, tmp_path):
    """Rank 1 dies at iteration 5; Ray Train restarts the group from the checkpoint of iteration
    4 and the run finishes at iteration 8 with exactly the weights of a run never interrupted
    (data order, augmentation and dropout are functions of seed, rank and iteration)."""
    two_workers = {"resources": {"num_workers": 2, "cpus_per_worker": 0.5, "max_failures": 1}}
    clean = fit(tiny_config(tmp_path / "clean", name="clean", **two_workers))
    marker = tmp_path / "killed-once"
    faulty = fit(
        tiny_config(tmp_path / "faulty", name="faulty", **two_workers),
        extra_loop_config={"fault_injection": {"rank": 1, "iteration": 5, "marker": str(marker)}},
    )
    assert marker.read_text() == "5"  # the worker really died
    assert faulty.metrics["iteration"] == clean.metrics["iteration"] == 8
    expected, resumed = final_weights(clean), final_weights(faulty)
    for key in expected:
        assert torch.equal(resumed[key], expected[key]), key


def test_rerunning_a_finished_run_resumes_instead_of_training_again(ray_local, tmp_path):
    config = tiny_config(tmp_path, schedule={"max_iters": 4, "val_interval": 2})
    first = fit(config)
    again = fit(config)  # same name + storage: Ray Train restores the latest checkpoint
    assert again.metrics["iteration"] == 4
    assert torch.equal(final_weights(first)["head.block.4.weight"], final_weights(again)["head.block.4.weight"])
    assert run_name(config).startswith("teacher-synthetic-deeplabv3_resnet18-none-")
