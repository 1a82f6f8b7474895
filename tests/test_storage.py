"""Ray's storage setting (hwd_tune/storage.py) as every command sees it: s3:// kept as a URI down
to Ray's RunConfig, environment defaults, and relative paths refused inside a Ray job."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hwd_tune import storage
from hwd_tune.cli import app
from hwd_tune.reproduce.plan import load as load_plan
from hwd_tune.reproduce.runner import plan_storage
from hwd_tune.sweep.config import final_job_config, load, trial_train_config
from hwd_tune.sweep.layout import experiment_location, sweep_storage
from tests.sweep.helpers import PAPER_POINT
from tests.trainables.helpers import tiny_config
from trainables.launch import build_trainer, pinned_to_driver, run_name

REPO = Path(__file__).resolve().parents[1]
TEACHER_FILE = REPO / "search_spaces/train/quickstart_teacher.yaml"
SWEEP_FILE = REPO / "search_spaces/quickstart.yaml"
PLAN_FILE = REPO / "search_spaces/plans/quickstart.yaml"
BUCKET = "s3://hwd-bucket/team/runs"


@pytest.fixture(autouse=True)
def _no_storage_environment(monkeypatch):
    for name in (storage.STORAGE_ENV, storage.OUTPUT_DIR_ENV, storage.OPTUNA_STORAGE_ENV, storage.RAY_JOB_DRIVER_ENV):
        monkeypatch.delenv(name, raising=False)


def test_join_keeps_a_uri_scheme_and_its_query_options():
    assert storage.join("s3://bucket/a/", "b", "c") == "s3://bucket/a/b/c"
    assert storage.join("s3://bucket?endpoint_override=x", "b") == "s3://bucket/b?endpoint_override=x"
    assert storage.join("/data/runs", "b") == "/data/runs/b"


def test_storage_root_is_the_uri_as_is_or_an_absolute_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.ray_storage_root(BUCKET, "outputs") == BUCKET
    assert storage.ray_storage_root("gs://b/x", "outputs") == "gs://b/x"
    assert storage.ray_storage_root(None, "outputs") == str(tmp_path / "outputs")
    assert storage.ray_storage_root("shared/ray", "outputs") == str(tmp_path / "shared/ray")


def test_s3_storage_reaches_ray_unchanged_for_distill_and_train_teacher(tmp_path):
    for job in ("teacher", "distill"):
        sections = (
            {} if job == "teacher" else {"job": "distill", "method": {"name": "hwd"}, "teacher": {"source": "t.pt"}}
        )
        config = tiny_config(tmp_path, storage=BUCKET, **sections)
        trainer = build_trainer(config, tracking_uri=None, mlflow_run_id=None)
        assert trainer.run_config.storage_path == f"{BUCKET}/ray"
        assert trainer.run_config.name == run_name(config)
        assert pinned_to_driver(config, "sqlite:///x.db").storage == BUCKET


def test_a_run_keeps_its_key_whatever_its_storage(tmp_path):
    # where a run is kept is not what it trains: moving storage resumes the same run
    assert run_name(tiny_config(tmp_path, storage=BUCKET)) == run_name(tiny_config(tmp_path))


def test_default_storage_is_the_output_folder_as_before(tmp_path):
    trainer = build_trainer(tiny_config(tmp_path), tracking_uri=None, mlflow_run_id=None)
    assert trainer.run_config.storage_path == str(tmp_path / "ray")


def test_s3_storage_holds_the_sweep_its_trials_and_final_stage(tmp_path):
    sweep = load(SWEEP_FILE, [f"train.output_dir={tmp_path}", f"train.storage={BUCKET}"])
    assert sweep_storage(sweep) == f"{BUCKET}/{sweep.name}"
    assert experiment_location(sweep) == f"{BUCKET}/{sweep.name}/tune/{sweep.name}"
    assert trial_train_config(sweep, dict(PAPER_POINT)).storage == BUCKET
    final = final_job_config(sweep, sweep.train.method.name, dict(PAPER_POINT), 1)
    assert final.storage == BUCKET
    assert build_trainer(final, tracking_uri=None, mlflow_run_id=None).run_config.storage_path == f"{BUCKET}/ray"


def test_s3_storage_holds_a_reproduction_plan(tmp_path):
    plan = load_plan(PLAN_FILE, [f"train.output_dir={tmp_path}", f"train.storage={BUCKET}"])
    assert plan_storage(plan) == f"{BUCKET}/plans/{plan.name}"
    cell = plan.cells()[0]
    assert plan.train_config(cell).storage == BUCKET


def test_environment_defaults_of_the_image(tmp_path, monkeypatch):
    monkeypatch.setenv(storage.STORAGE_ENV, BUCKET)
    monkeypatch.setenv(storage.OUTPUT_DIR_ENV, str(tmp_path / "volume"))
    monkeypatch.setenv(storage.OPTUNA_STORAGE_ENV, "postgresql+psycopg://u:p@10.0.0.1:5432/optuna")
    sweep = load(SWEEP_FILE)  # its own output_dir is the relative "outputs"
    assert sweep.train.output_dir == str(tmp_path / "volume" / "outputs")
    assert sweep.train.storage == BUCKET
    assert sweep.search.storage == "postgresql+psycopg://u:p@10.0.0.1:5432/optuna"
    explicit = load(SWEEP_FILE, ["search.storage=sqlite:////tmp/own.db", "train.storage=/mnt/shared"])
    assert (explicit.search.storage, explicit.train.storage) == ("sqlite:////tmp/own.db", "/mnt/shared")


def test_unknown_scheme_and_bucketless_uri_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown filesystem scheme 'ftp'"):
        tiny_config(tmp_path, storage="ftp://host/x")
    with pytest.raises(ValueError, match="names no bucket"):
        tiny_config(tmp_path, storage="s3:///x")


def _write_distill_config(tmp_path: Path) -> Path:
    path = tmp_path / "distill.yaml"
    path.write_text("method:\n  name: hwd\nteacher:\n  source: teacher.pt\n")
    return path


@pytest.mark.parametrize(
    ("command", "config", "field"),
    [
        ("train-teacher", TEACHER_FILE, ""),
        ("distill", None, ""),
        ("sweep", SWEEP_FILE, "train."),
        ("reproduce", PLAN_FILE, "train."),
    ],
)
def test_relative_paths_inside_a_ray_job_are_refused_by_every_command(command, config, field, tmp_path, monkeypatch):
    """In a `ray job submit` driver a relative storage or output_dir would land in the uploaded
    working dir that Ray deletes: exit 2 naming the field and the variable to set, before any run."""
    monkeypatch.chdir(tmp_path)
    config = config or _write_distill_config(tmp_path)
    monkeypatch.setenv(storage.RAY_JOB_DRIVER_ENV, "{}")
    cases = [
        ([f"{field}storage=ray-results", f"{field}output_dir=/abs/out"], f"{field}storage", "HWD_STORAGE"),
        ([f"{field}output_dir=outputs"], f"{field}output_dir", "HWD_OUTPUT_DIR"),
    ]
    for sets, named, variable in cases:
        argv = [command, str(config)] + [arg for value in sets for arg in ("--set", value)]
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 2, result.output
        assert named in result.output and variable in result.output and "Ray job" in result.output
    assert not (tmp_path / "ray-results").exists() and not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("command", ["train-teacher", "sweep", "reproduce"])
def test_s3_storage_in_a_ray_job_with_the_image_variables_passes_the_config_checks(command, tmp_path, monkeypatch):
    files = {"train-teacher": TEACHER_FILE, "sweep": SWEEP_FILE, "reproduce": PLAN_FILE}
    monkeypatch.setenv(storage.RAY_JOB_DRIVER_ENV, "{}")
    monkeypatch.setenv(storage.STORAGE_ENV, BUCKET)
    monkeypatch.setenv(storage.OUTPUT_DIR_ENV, str(tmp_path))
    if command == "train-teacher":
        from hwd_tune.config import load_train_config

        loaded = load_train_config(files[command])
        assert (loaded.storage, loaded.output_dir) == (BUCKET, str(tmp_path / "outputs"))
    elif command == "sweep":
        assert load(files[command]).train.storage == BUCKET
    else:
        assert load_plan(files[command]).train.storage == BUCKET


@pytest.mark.slow
def test_train_teacher_keeps_its_checkpoints_in_s3_and_publishes_the_best_from_there(tmp_path):
    """`hwd-tune train-teacher` with storage s3://: every checkpoint is an object in the bucket,
    nothing of Ray's lands in output_dir, and the weights logged on the MLflow run are those of a
    checkpoint downloaded from S3 (byte for byte)."""
    import hashlib
    import os
    import subprocess
    import sys

    import yaml

    from tests.s3_server import s3_endpoint

    config = tiny_config(tmp_path / "out", storage="s3://hwd-runs/team")
    config_file = tmp_path / "teacher.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    with s3_endpoint("hwd-runs") as s3:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("RAY_", "HWD_", "MLFLOW_"))}
        env.update(s3.env())
        env["PYTHONPATH"] = str(REPO)
        command = [sys.executable, "-m", "hwd_tune.cli", "train-teacher", str(config_file)]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=420, cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        prefix = f"team/ray/{run_name(config)}/"
        keys = s3.keys("hwd-runs", prefix)
        relative = [key[len(prefix) :] for key in keys]
        # checkpoint folders only: Ray's checkpoint_manager_snapshot.json sits beside them
        checkpoints = sorted({rel.split("/")[0] for rel in relative if rel.startswith("checkpoint_") and "/" in rel})
        assert checkpoints, keys
        for folder in checkpoints:
            assert {f"{prefix}{folder}/{name}" for name in ("model.pt", "train_state.pt", "meta.json")} <= set(keys)
        remote_models = {
            hashlib.sha256(
                s3.client().get_object(Bucket="hwd-runs", Key=f"{prefix}{folder}/model.pt")["Body"].read()
            ).hexdigest()
            for folder in checkpoints
        }
    assert not (tmp_path / "out" / "ray").exists()
    logged = list((tmp_path / "out" / "mlflow").rglob("best_checkpoint/model.pt"))
    assert len(logged) == 1
    assert hashlib.sha256(logged[0].read_bytes()).hexdigest() in remote_models


def test_remote_folders_are_found_listed_and_downloaded_through_pyarrow(tmp_path, monkeypatch):
    """exists / list_folders / download_folder and a Ray checkpoint on s3:// brought to local disk,
    against a real S3 HTTP endpoint (moto server), through AWS_ENDPOINT_URL as on a cluster."""
    from ray.train import Checkpoint

    from tests.s3_server import s3_endpoint
    from trainables.launch import local_checkpoint

    with s3_endpoint("hwd-runs") as s3:
        for key, value in s3.env().items():
            monkeypatch.setenv(key, value)
        client = s3.client()
        for name, body in (("checkpoint_000000/model.pt", b"weights-0"), ("checkpoint_000001/model.pt", b"weights-1")):
            client.put_object(Bucket="hwd-runs", Key=f"team/ray/run-a/{name}", Body=body)
        run = "s3://hwd-runs/team/ray/run-a"
        assert storage.exists(run) and not storage.exists("s3://hwd-runs/team/ray/run-b")
        assert storage.list_folders(run) == ["checkpoint_000000", "checkpoint_000001"]
        copy = storage.download_folder(run, tmp_path / "copy")
        assert (copy / "checkpoint_000001" / "model.pt").read_bytes() == b"weights-1"
        filesystem, path = storage.filesystem(f"{run}/checkpoint_000000")
        folder = local_checkpoint(Checkpoint(path, filesystem=filesystem))
        assert (folder / "model.pt").read_bytes() == b"weights-0"
    local = tmp_path / "run"
    local.mkdir()
    assert storage.download_folder(str(local), tmp_path / "unused") == local  # local: used in place
