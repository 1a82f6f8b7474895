"""The Ray Train loop on real Ray with gloo workers: DDP equivalence, resume, fault recovery."""

from __future__ import annotations

import re

import pytest
import torch
from mlflow import MlflowClient

from tests.trainables.helpers import tiny_config
from trainables.checkpointing import load_checkpoint
from trainables.launch import build_trainer, run_name, run_training
from trainables.loop import model_from_config

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
    two = fit(
        tiny_config(tmp_path / "two", name="ddp-two", resources={"num_workers": 2, "cpus_per_worker": 0.5}, **common)
    )
    assert one.metrics["iteration"] == two.metrics["iteration"] == 2
    single, parallel = final_weights(one), final_weights(two)
    assert single.keys() == parallel.keys()
    for key in single:
        torch.testing.assert_close(parallel[key], single[key], rtol=1e-4, atol=1e-5, msg=key)
    # ...and the update really happened: the weights left their initial values
    config = tiny_config(tmp_path, **common)
    torch.manual_seed(config.seed)  # the loop's seed for the initial weights
    initial = model_from_config(config.student, config.data.synthetic.num_classes).state_dict()
    changed = [key for key in single if not torch.equal(single[key], initial[key])]
    assert "head.block.4.weight" in changed and len(changed) > 10


def test_killed_worker_is_restarted_and_the_run_equals_an_uninterrupted_one(ray_local, tmp_path):
    """Rank 1 dies at iteration 5; Ray Train restarts the group from the checkpoint of iteration
    4 and the run finishes at iteration 8 with exactly the weights of a run never interrupted
    (data order, augmentation and dropout are functions of seed, rank and iteration)."""
    two_workers = {"resources": {"num_workers": 2, "cpus_per_worker": 0.5, "max_failures": 1}}
    clean = fit(tiny_config(tmp_path / "clean", name="clean", **two_workers))
    marker = tmp_path / "killed-once"
    faulty_config = tiny_config(tmp_path / "faulty", name="faulty", **two_workers)
    faulty = run_training(
        faulty_config, extra_loop_config={"fault_injection": {"rank": 1, "iteration": 5, "marker": str(marker)}}
    )
    assert marker.read_text() == "5"  # the worker really died
    assert faulty["metrics"]["iteration"] == clean.metrics["iteration"] == 8
    expected = final_weights(clean)
    resumed = load_checkpoint(faulty["checkpoint"])[0]
    for key in expected:
        assert torch.equal(resumed[key], expected[key]), key
    client = MlflowClient(faulty["tracking_uri"])
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert [run.info.run_name for run in runs] == ["faulty"]  # one MLflow run, not one per restart
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "val_miou")] == [4, 8]
    assert_each_metric_once_per_step(client, runs[0].info.run_id)


def assert_each_metric_once_per_step(client: MlflowClient, run_id: str) -> None:
    """Every metric history of the run has unique, increasing steps (a restart logs nothing twice)."""
    run = client.get_run(run_id)
    assert {"iteration", "val_miou", "loss/total"} <= set(run.data.metrics)
    for key in run.data.metrics:
        steps = [metric.step for metric in client.get_metric_history(run_id, key)]
        assert steps == sorted(set(steps)), (key, steps)


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(ray_local, tmp_path):
    """An absurd learning rate makes the loss overflow: the run fails naming the iteration and
    the loss terms, and the checkpoint reported before that is intact."""
    config = tiny_config(
        tmp_path, name="diverges", optimizer={"lr": 1e12}, schedule={"max_iters": 30, "val_interval": 1}
    )
    trainer = build_trainer(config, tracking_uri=None, mlflow_run_id=None)
    with pytest.raises(Exception, match=r"non-finite loss at iteration (\d+): \{'ce'") as failure:
        trainer.fit()
    failed_at = int(re.search(r"non-finite loss at iteration (\d+)", str(failure.value)).group(1))
    assert 1 < failed_at <= 30
    checkpoints = sorted(p for p in (tmp_path / "ray" / "diverges").glob("checkpoint_*") if p.is_dir())
    assert checkpoints, "the checkpoints of the good iterations must stay"
    weights, train_state, meta = load_checkpoint(checkpoints[-1])
    assert train_state["iteration"] == meta["iteration"] == failed_at - 1
    assert all(torch.isfinite(value).all() for value in weights.values() if value.is_floating_point())


def test_rerunning_a_finished_run_resumes_instead_of_training_again(ray_local, tmp_path):
    config = tiny_config(tmp_path, schedule={"max_iters": 4, "val_interval": 2})
    first = fit(config)
    again = fit(config)  # same name + storage: Ray Train restores the latest checkpoint
    assert again.metrics["iteration"] == 4
    # nothing trained again: the last validation is reported once more, as it was (for Tune)
    for name in ("val_miou", "val_miou_all", "val_pixel_acc", "best_val_miou"):
        assert again.metrics[name] == first.metrics[name]
    assert torch.equal(final_weights(first)["head.block.4.weight"], final_weights(again)["head.block.4.weight"])
    assert run_name(config).startswith("teacher-synthetic-deeplabv3_resnet18-none-")
    # trainables.trainer: no run of this session started Ray Data's DatasetManager (a process per run)
    from ray.util.state import list_actors

    classes = {actor.class_name for actor in list_actors(limit=10_000, raise_on_missing_output=False)}
    assert "TrainController" in classes and "DatasetManager" not in classes, classes


def damage(checkpoint_dir) -> None:
    """Cuts the weights file of a checkpoint folder in half, as a full disk or a killed copy would."""
    if not checkpoint_dir.is_dir():
        return  # Ray's checkpoint_manager_snapshot.json sits beside the folders
    weights = checkpoint_dir / "model.pt"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def test_damaged_checkpoints_fall_back_to_a_whole_one_or_restart_from_scratch(ray_local, tmp_path):
    """A re-run whose newest checkpoint is cut short resumes from an older whole one beside it; with
    none whole it trains from scratch (reaching the very weights of the first run); a re-run that
    fails leaves the finished run FINISHED. Each case is tagged on the run, naming the files."""
    import shutil

    schedule = {"schedule": {"max_iters": 4, "val_interval": 2}}
    config = tiny_config(tmp_path, name="damaged", **schedule)
    first = run_training(config)
    first_weights = load_checkpoint(first["checkpoint"])[0]
    run_dir = tmp_path / "ray" / "damaged"
    shorter = fit(tiny_config(tmp_path / "short", name="short", schedule={"max_iters": 2, "val_interval": 2}))
    older = run_dir / "checkpoint_0000-00-00_00-00-00.000000"  # sorts before every real one: the oldest
    shutil.copytree(shorter.checkpoint.path, older)
    for checkpoint in run_dir.glob("checkpoint_2*"):  # this run's own checkpoints (timestamped 2026-...)
        damage(checkpoint)

    client = MlflowClient(first["tracking_uri"])
    again = run_training(config)
    assert again["run_id"] == first["run_id"] and again["metrics"]["iteration"] == 4
    run = client.get_run(first["run_id"])
    note = run.data.tags["hwd.checkpoint_fallback"]
    assert note.startswith(f"resumed from {older} (iteration 2) after skipping: checkpoint {first['checkpoint']}")
    assert "model.pt: " in note and "bytes, the manifest says" in note
    assert run.info.status == "FINISHED"
    assert_each_metric_once_per_step(client, first["run_id"])

    for checkpoint in run_dir.glob("checkpoint_*"):
        damage(checkpoint)
    scratch = run_training(config)
    assert (
        client.get_run(first["run_id"])
        .data.tags["hwd.checkpoint_fallback"]
        .startswith("no whole checkpoint, training from scratch; skipped: checkpoint ")
    )
    rebuilt = load_checkpoint(scratch["checkpoint"])[0]
    for key in first_weights:  # training depends only on (seed, rank, iteration): the same weights again
        assert torch.equal(rebuilt[key], first_weights[key]), key

    for checkpoint in run_dir.glob("checkpoint_*"):
        damage(checkpoint)
    with pytest.raises(Exception, match="failing on purpose at iteration 1"):
        run_training(config, extra_loop_config={"fail_at_iteration": 1})
    run = client.get_run(first["run_id"])
    assert run.info.status == "FINISHED"  # what it trained before is still there: not FAILED
    assert "failing on purpose at iteration 1" in run.data.tags["hwd.rerun_failure"]


def test_a_teacher_that_cannot_be_found_leaves_no_cache_or_lock_behind(tmp_path):
    """Found before teacher_cache/ and its lock are made; a local file needs no cache at all."""
    from hwd_tune.tracking import default_tracking_uri
    from trainables.loop import resolve_teacher_weights

    def distillation(source):
        return tiny_config(tmp_path / "outputs", job="distill", method={"name": "hwd"}, teacher={"source": source})

    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        resolve_teacher_weights(distillation(str(tmp_path / "teacher.pt")), None)
    with pytest.raises(ValueError, match="does not exist yet"):
        alias = distillation("models:/teacher-synthetic-deeplabv3_resnet18@best")
        resolve_teacher_weights(alias, default_tracking_uri(tmp_path / "outputs"))
    torch.save({}, tmp_path / "teacher.pt")
    assert resolve_teacher_weights(distillation(str(tmp_path / "teacher.pt")), None) == tmp_path / "teacher.pt"
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "cpus, environ, threads",
    [(0.5, {}, 1), (1.0, {}, 1), (2.9, {}, 2), (8.0, {}, 8), (0.5, {"OMP_NUM_THREADS": "3"}, None)],
)
def test_a_worker_uses_as_many_torch_threads_as_whole_cpus_it_reserved(cpus, environ, threads):
    """Not one per core of the node: two 0.5-CPU trials on 2 cores must not run 4 threads."""
    from trainables.loop import intra_op_threads

    assert intra_op_threads(cpus, environ) == threads
