"""Fixtures of the tracking tests: one real MLflow sqlite store shared by the package (MLflow's first
sqlite migration takes seconds), a tiny teacher registered twice in it, and a real `mlflow server`.
Every test uses its own experiment or run key, so the tests stay independent of each other's order."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow import MlflowClient

from hwd_tune import tracking
from hwd_tune.models import build_model
from tests.tracking.helpers import PASSWORD, new_run, write_checkpoint


@pytest.fixture(scope="package")
def store(tmp_path_factory):
    """(output_dir, tracking_uri) of an embedded sqlite store shared by the tracking tests."""
    output_dir = tmp_path_factory.mktemp("outputs")
    return output_dir, tracking.default_tracking_uri(output_dir)


@pytest.fixture(scope="package")
def client(store):
    return MlflowClient(tracking_uri=store[1], registry_uri=store[1])


@pytest.fixture(scope="package")
def teachers(store, tmp_path_factory):
    """Two registrations of a tiny real teacher: milestones 100 and 200, 'best' moved to the second."""
    root = tmp_path_factory.mktemp("teacher_ckpt")
    first = build_model("deeplabv3_resnet18", num_classes=3, width_multiplier=0.125).state_dict()
    second = {key: value + 1 if value.is_floating_point() else value for key, value in first.items()}
    run_id = new_run(store, "teacher-run", experiment="teachers")
    secret_uri = f"postgresql://alice:{PASSWORD}@db:5432/mlflow"
    common = dict(tracking_uri=store[1], run_id=run_id, dataset="synthetic", arch="deeplabv3_resnet18")
    version_one = tracking.register_teacher(
        checkpoint_dir=write_checkpoint(root / "a", first, 100, {"config": {"tracking": {"uri": secret_uri}}}),
        aliases=[tracking.milestone_alias(100), "best"],
        **common,
    )
    aliases_after_first = dict(
        MlflowClient(store[1], store[1]).get_registered_model("teacher-synthetic-deeplabv3_resnet18").aliases
    )
    version_two = tracking.register_teacher(
        checkpoint_dir=write_checkpoint(root / "b", second, 200),
        aliases=[tracking.milestone_alias(200), "best"],
        **common,
    )
    return {
        "name": "teacher-synthetic-deeplabv3_resnet18",
        "run_id": run_id,
        "versions": (version_one, version_two),
        "states": (first, second),
        "aliases_after_first": aliases_after_first,
        "checkpoints": (root / "a", root / "b"),
    }


@pytest.fixture
def http_server(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "server_artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its workers share our group id
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # a loaded 2-core machine takes minutes to start it
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log_tail = (tmp_path / "server.log").read_text()[-2000:]
                    raise RuntimeError(f"mlflow server did not start: {log_tail}") from None
                time.sleep(0.5)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the group this test started: server and its workers
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
