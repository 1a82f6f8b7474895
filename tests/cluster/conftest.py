"""The cluster stack of scripts/cluster-up.sh for the tests marked `cluster` (`make test-cluster`):
started once per session, stopped by scripts/cluster-down.sh even when a test fails."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Cluster:
    """A running stack: its state (IPs, PIDs, folders), client environment and start time."""

    root: Path
    state: dict[str, Any]
    env: dict[str, str]  # the variables of cluster.env
    start_s: float

    @property
    def head_ip(self) -> str:
        return self.state["node_ips"]["head"]

    @property
    def worker_ips(self) -> set[str]:
        return {self.state["node_ips"]["worker1"], self.state["node_ips"]["worker2"]}

    def client_env(self, **extra: str) -> dict[str, str]:
        """This process's environment without Ray/HWD/MLflow/AWS settings, plus the cluster's."""
        prefixes = ("RAY_", "HWD_", "MLFLOW_", "AWS_")
        env = {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return env | self.env | extra

    def reload(self) -> dict[str, Any]:
        return json.loads((self.root / "stack.json").read_text())


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = shlex.split(value)[0] if value else ""
    return env


def keep_logs(root: Path) -> None:
    """Copy the drivers' run logs and Ray's session logs to $HWD_CLUSTER_LOGS (when set) before
    the stack and its folder go: a failed job's traceback is in them."""
    target = os.environ.get("HWD_CLUSTER_LOGS")
    if not target or not root.is_dir():
        return
    for source in [*root.glob("outputs/**/logs"), *root.glob("ray/*/ray/session_latest/logs")]:
        destination = Path(target) / source.relative_to(root)
        shutil.copytree(source, destination, dirs_exist_ok=True, ignore_dangling_symlinks=True)


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    parent = Path(tempfile.mkdtemp(prefix="hwdc-", dir="/tmp"))
    parent.chmod(0o755)  # Postgres runs as the postgres user, below this folder
    root = parent / "stack"
    env = {**os.environ, "HWD_PYTHON": sys.executable}
    started = time.monotonic()
    try:
        up = subprocess.run(
            [str(REPO / "scripts/cluster-up.sh"), str(root)], env=env, capture_output=True, text=True, timeout=900
        )
        assert up.returncode == 0, f"cluster-up failed:\n{up.stdout[-3000:]}\n{up.stderr[-5000:]}"
        yield Cluster(root, json.loads((root / "stack.json").read_text()), read_env_file(root / "cluster.env"),
                      time.monotonic() - started)  # fmt: skip
    finally:
        keep_logs(root)
        subprocess.run([str(REPO / "scripts/cluster-down.sh"), str(root)], env=env, timeout=300)
        shutil.rmtree(parent, ignore_errors=True)
