"""hwd_tune.tracking.store: tracking URIs, artifact locations, redaction, and a store copied elsewhere."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from mlflow import MlflowClient

from hwd_tune import tracking
from tests.tracking.helpers import PASSWORD


def test_default_uri_is_sqlite_under_output_dir_and_env_wins(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    expected = f"sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db"
    assert tracking.default_tracking_uri(tmp_path) == expected
    assert expected.startswith("sqlite:////")  # absolute path: four slashes
    assert tracking.resolve_tracking_uri(None, tmp_path) == expected
    assert tracking.resolve_tracking_uri("  ", tmp_path) == expected
    assert tracking.resolve_tracking_uri("http://mlflow:5000", tmp_path) == "http://mlflow:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-env:5000")
    assert tracking.resolve_tracking_uri("http://mlflow:5000", tmp_path) == "http://from-env:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    assert tracking.resolve_tracking_uri(None, tmp_path) == expected


def test_artifact_location_sits_next_to_a_sqlite_store_only(tmp_path):
    uri = tracking.default_tracking_uri(tmp_path)
    assert tracking.default_artifact_location(uri) == (tmp_path.resolve() / "mlflow" / "artifacts").as_uri()
    assert tracking.default_artifact_location("http://mlflow:5000") is None
    assert tracking.default_artifact_location("postgresql://u:p@db/mlflow") is None
    assert tracking.default_artifact_location("sqlite:///:memory:") is None


def test_a_missing_local_store_is_named_and_not_created(tmp_path, store, teachers):
    sqlite = tracking.default_tracking_uri(tmp_path / "new")
    assert tracking.missing_local_store(sqlite) == (tmp_path / "new" / "mlflow" / "mlflow.db").resolve()
    assert tracking.missing_local_store((tmp_path / "runs").as_uri()) == (tmp_path / "runs").resolve()
    assert tracking.missing_local_store(str(tmp_path / "runs")) == (tmp_path / "runs").resolve()
    assert list(tmp_path.iterdir()) == []  # looked at, not created
    assert tracking.missing_local_store(store[1]) is None  # the shared store, where teachers are registered
    assert tracking.missing_local_store(tmp_path.as_uri()) is None
    for elsewhere in ("http://mlflow:5000", "postgresql://u:p@db/mlflow", "sqlite:///:memory:"):
        assert tracking.missing_local_store(elsewhere) is None


@pytest.mark.parametrize(
    "uri, expected",
    [
        (f"http://alice:{PASSWORD}@mlflow:5000", "http://alice:***@mlflow:5000"),
        (
            f"postgresql://bob:{PASSWORD}@db:5432/mlflow?sslmode=require",
            "postgresql://bob:***@db:5432/mlflow?sslmode=require",
        ),
        (f"https://{PASSWORD}@host/path", "https://***@host/path"),  # a lone token is a secret too
        (f"mysql://carol:p@ss{PASSWORD}@db/x", "mysql://carol:***@db/x"),  # raw '@' in the password
        (f"https://host/api?user=dan&token={PASSWORD}&x=1", "https://host/api?user=dan&token=***&x=1"),
        ("sqlite:////tmp/out/mlflow/mlflow.db", "sqlite:////tmp/out/mlflow/mlflow.db"),
        ("http://mlflow:5000/a@b", "http://mlflow:5000/a@b"),  # '@' in the path is not userinfo
        (
            f"error: see http://u:{PASSWORD}@h:1/x and https://{PASSWORD}@g/y",  # URIs inside text
            "error: see http://u:***@h:1/x and https://***@g/y",
        ),
    ],
)
def test_redact_uri_hides_passwords_and_tokens(uri, expected):
    assert tracking.redact_uri(uri) == expected
    assert PASSWORD not in tracking.redact_uri(uri)


def tree_digest(root):
    """{relative path: sha256} of every file under root."""
    import hashlib

    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.mark.slow
def test_a_copied_output_folder_writes_into_the_copy_and_leaves_the_original_unchanged(tmp_path):
    """MLflow stores absolute artifact locations; the store relocates a copy on first use, so its
    runs, new artifacts and registered teachers all resolve inside the copy."""
    import shutil

    from tests.tracking.helpers import write_checkpoint

    original = tmp_path / "original" / "outputs"
    uri = tracking.default_tracking_uri(original)
    run_id = tracking.start_run(tracking_uri=uri, experiment="relocate", run_key="run", run_name="run")
    run_logger = tracking.RunLogger(uri, run_id)
    run_logger.log_metrics({"loss": 1.0}, step=1)
    state = {"weight": torch.arange(6.0).reshape(2, 3)}
    tracking.register_teacher(
        tracking_uri=uri,
        run_id=run_id,
        checkpoint_dir=write_checkpoint(tmp_path / "ckpt", state, 100),
        dataset="synthetic",
        arch="deeplabv3_resnet18",
        aliases=["best"],
    )
    copy = tmp_path / "copy" / "outputs"
    shutil.copytree(original, copy)
    before = tree_digest(original)

    copy_uri = tracking.default_tracking_uri(copy)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "after_copy.txt").write_text("written in the copy")
    # A new process, as when a user resumes the copy (MLflow caches artifact stores per run id).
    script = textwrap.dedent(f"""
        import torch
        from hwd_tune import tracking
        run_id = tracking.start_run(tracking_uri={copy_uri!r}, experiment="relocate", run_key="run", run_name="run")
        assert run_id == {run_id!r}, run_id  # the same run, found again in the copy
        tracking.RunLogger({copy_uri!r}, run_id).log_artifact_dir({str(notes)!r}, "later")
        weights = tracking.resolve_teacher(
            "models:/teacher-synthetic-deeplabv3_resnet18@best",
            tracking_uri={copy_uri!r},
            cache_dir={str(tmp_path / "cache")!r},
        )
        print(torch.load(weights, weights_only=True)["weight"].tolist())
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == str(state["weight"].tolist())

    assert tree_digest(original) == before  # not one byte of the original changed
    assert list(copy.glob(f"mlflow/artifacts/{run_id}/artifacts/later/after_copy.txt"))
    client = MlflowClient(copy_uri, copy_uri)
    assert client.get_run(run_id).info.artifact_uri.startswith((copy / "mlflow" / "artifacts").resolve().as_uri())
    version = client.get_model_version_by_alias("teacher-synthetic-deeplabv3_resnet18", "best")
    assert version.source.startswith((copy / "mlflow" / "artifacts").resolve().as_uri())
    assert tracking.relocate_sqlite_store(copy / "mlflow" / "mlflow.db") == []  # done once, then nothing to do


def test_a_relative_sqlite_uri_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    expected = f"sqlite:///{tmp_path.resolve()}/runs/mlflow.db"
    assert tracking.resolve_tracking_uri("sqlite:///runs/mlflow.db", "out") == expected
    assert tracking.resolve_tracking_uri("sqlite:///runs/mlflow.db?timeout=20", "out") == expected + "?timeout=20"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert tracking.resolve_tracking_uri(None, "out") == f"sqlite:///{tmp_path.resolve()}/env.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.resolve_tracking_uri(None, "out") == "http://127.0.0.1:5000"
