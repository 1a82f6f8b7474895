"""docker/entrypoint.sh run as a plain script: the command lines it builds and the errors it raises."""

from __future__ import annotations

import fcntl
import http.server
import shlex
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest

ENTRYPOINT = Path(__file__).resolve().parents[2] / "docker" / "entrypoint.sh"
TOKEN = "0123456789abcdef0123456789abcdef"
# A password with every character that breaks a URI when pasted in unquoted.
PASSWORD = "p@ss:w/rd#1%"


@pytest.fixture()
def run(tmp_path):
    """Runs the entry point with only the given environment (plus PATH and a private state dir)."""

    def _run(*args: str, env: dict | None = None, dry_run: bool = True, path_first: Path | None = None):
        search_path = [str(Path(sys.executable).parent), "/usr/bin", "/bin"]
        if path_first is not None:
            search_path.insert(0, str(path_first))
        full_env = {"PATH": ":".join(search_path), "HWD_STATE_DIR": str(tmp_path / "state")}
        full_env.update(env or {})
        argv = ["bash", str(ENTRYPOINT), *(["--dry-run"] if dry_run else []), *args]
        return subprocess.run(argv, env=full_env, capture_output=True, text=True, timeout=30)

    return _run


def parse_dry_run(stdout: str) -> tuple[dict[str, str], list[str]]:
    """The `export NAME=value` lines as a dict and the words of the `exec ...` line."""
    exports, argv = {}, None
    for line in stdout.splitlines():
        words = shlex.split(line)
        if words[0] == "export":
            name, _, value = words[1].partition("=")
            exports[name] = value
        elif words[0] == "exec":
            assert argv is None, f"two exec lines in {stdout!r}"
            argv = words[1:]
    assert argv is not None, f"no exec line in {stdout!r}"
    return exports, argv


def fake_program(directory: Path, name: str) -> Path:
    """An executable NAME that writes its arguments and a few variables to NAME.log, one per line."""
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / f"{name}.log"
    script = directory / name
    script.write_text(
        "#!/usr/bin/env bash\n"
        f'{{ printf "%s\\n" "$@"; echo "URI=${{MLFLOW_BACKEND_STORE_URI:-}}"; '
        f'echo "AUTH=${{RAY_AUTH_MODE:-}}"; }} > "{log}"\n'
    )
    script.chmod(0o755)
    return log


# ---------------------------------------------------------------- head


def test_head_builds_ray_start_with_default_ports_and_token_auth(run):
    result = run("head", env={"RAY_AUTH_TOKEN": TOKEN})
    assert result.returncode == 0, result.stderr
    exports, argv = parse_dry_run(result.stdout)
    assert exports == {"RAY_AUTH_MODE": "token"}
    assert argv == [
        "ray", "start", "--head", "--block",
        "--port=6379",
        "--dashboard-host=0.0.0.0",
        "--dashboard-port=8265",
        "--ray-client-server-port=10001",
        "--dashboard-agent-listen-port=52365",
        "--num-gpus=0",
        "--disable-usage-stats",
    ]  # fmt: skip
    assert TOKEN not in result.stdout + result.stderr


def test_head_takes_ports_and_resources_from_the_environment(run):
    env = {
        "RAY_AUTH_TOKEN": TOKEN,
        "RAY_GCS_PORT": "7000",
        "RAY_DASHBOARD_PORT": "9265",
        "RAY_CLIENT_PORT": "11001",
        "RAY_AGENT_PORT": "53000",
        "RAY_HEAD_NUM_GPUS": "1",
        "RAY_NUM_CPUS": "4",
        "RAY_OBJECT_STORE_MEMORY": "1000000000",
    }
    _exports, argv = parse_dry_run(run("head", env=env).stdout)
    assert argv[4:] == [
        "--port=7000",
        "--dashboard-host=0.0.0.0",
        "--dashboard-port=9265",
        "--ray-client-server-port=11001",
        "--dashboard-agent-listen-port=53000",
        "--num-gpus=1",
        "--disable-usage-stats",
        "--num-cpus=4",
        "--object-store-memory=1000000000",
    ]


def test_the_environment_switch_is_the_same_as_the_flag(run):
    by_flag = run("head", env={"RAY_AUTH_TOKEN": TOKEN})
    by_env = run("head", env={"RAY_AUTH_TOKEN": TOKEN, "HWD_ENTRYPOINT_DRY_RUN": "1"}, dry_run=False)
    assert by_env.returncode == 0, by_env.stderr
    assert by_env.stdout == by_flag.stdout


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "RAY_AUTH_TOKEN is not set"),
        ({"RAY_AUTH_TOKEN": ""}, "RAY_AUTH_TOKEN is not set"),
        ({"RAY_AUTH_TOKEN": "CHANGE_ME_ray_auth_token"}, "RAY_AUTH_TOKEN still holds the placeholder"),
        ({"RAY_AUTH_TOKEN": TOKEN, "RAY_AUTH_MODE": "open"}, "RAY_AUTH_MODE must be 'token' or 'disabled', got 'open'"),
        ({"RAY_AUTH_TOKEN": TOKEN, "RAY_GCS_PORT": "abc"}, "RAY_GCS_PORT must be a TCP port between 1 and 65535"),
        ({"RAY_AUTH_TOKEN": TOKEN, "RAY_DASHBOARD_PORT": "70000"}, "RAY_DASHBOARD_PORT must be a TCP port"),
        ({"RAY_AUTH_TOKEN": TOKEN, "RAY_CLIENT_PORT": "0"}, "RAY_CLIENT_PORT must be a TCP port"),
        ({"RAY_AUTH_TOKEN": TOKEN, "RAY_NUM_CPUS": "two"}, "RAY_NUM_CPUS must be a whole number, got 'two'"),
        ({"RAY_AUTH_TOKEN": TOKEN, "RAY_HEAD_NUM_GPUS": "-1"}, "RAY_HEAD_NUM_GPUS must be a whole number"),
    ],
)
def test_head_refuses_missing_or_bad_settings_by_name(run, env, message):
    result = run("head", env=env)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_auth_can_be_disabled_only_explicitly_and_says_so(run):
    result = run("head", env={"RAY_AUTH_MODE": "disabled"})
    assert result.returncode == 0, result.stderr
    exports, argv = parse_dry_run(result.stdout)
    assert exports == {"RAY_AUTH_MODE": "disabled"}
    assert argv[:4] == ["ray", "start", "--head", "--block"]
    assert "RAY_AUTH_MODE=disabled" in result.stderr and "private network" in result.stderr


def test_head_really_execs_ray_and_records_its_role(run, tmp_path):
    log = fake_program(tmp_path / "bin", "ray")
    result = run("head", env={"RAY_AUTH_TOKEN": TOKEN}, dry_run=False, path_first=tmp_path / "bin")
    assert result.returncode == 0, result.stderr
    lines = log.read_text().splitlines()
    assert lines[:4] == ["start", "--head", "--block", "--port=6379"]
    assert "AUTH=token" in lines
    assert (tmp_path / "state" / "hwd-entrypoint.role").read_text() == "head\n"


# ---------------------------------------------------------------- worker


def test_worker_joins_the_head_address_without_gpu_claim_when_not_asked(run):
    env = {"RAY_AUTH_TOKEN": TOKEN, "RAY_HEAD_ADDRESS": "ray-head:6379", "HWD_GPUS_PER_WORKER": ""}
    exports, argv = parse_dry_run(run("worker", env=env).stdout)
    assert exports == {"RAY_AUTH_MODE": "token"}
    assert argv == [
        "ray", "start", "--block",
        "--address=ray-head:6379",
        "--dashboard-agent-listen-port=52365",
        "--disable-usage-stats",
    ]  # fmt: skip


def test_worker_takes_its_node_address_from_the_environment_and_checks_it(run):
    """scripts/cluster-up.sh gives each node the address of its own network namespace."""
    env = {"RAY_AUTH_TOKEN": TOKEN, "RAY_HEAD_ADDRESS": "10.77.3.2:6379", "RAY_NODE_IP_ADDRESS": "10.77.3.4"}
    _, argv = parse_dry_run(run("worker", env=env).stdout)
    assert "--node-ip-address=10.77.3.4" in argv
    refused = run("worker", env={**env, "RAY_NODE_IP_ADDRESS": "worker-1"})
    assert refused.returncode == 2
    assert "RAY_NODE_IP_ADDRESS must be an IPv4 address, got 'worker-1'" in refused.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RAY_AUTH_TOKEN": TOKEN}, "RAY_HEAD_ADDRESS is not set"),
        ({"RAY_HEAD_ADDRESS": "ray-head:6379"}, "RAY_AUTH_TOKEN is not set"),
        (
            {"RAY_AUTH_TOKEN": TOKEN, "RAY_HEAD_ADDRESS": "h:1", "HWD_GPUS_PER_WORKER": "1.5"},
            "HWD_GPUS_PER_WORKER must be a whole number, got '1.5'",
        ),
        ({"RAY_AUTH_TOKEN": TOKEN, "RAY_HEAD_ADDRESS": "h:1", "RAY_AGENT_PORT": "x"}, "RAY_AGENT_PORT must be a TCP"),
    ],
)
def test_worker_refuses_missing_or_bad_settings_by_name(run, env, message):
    result = run("worker", env=env)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


@pytest.fixture()
def four_gpus(tmp_path):
    """A fake /dev with nvidia0..nvidia3 (plus the control nodes that are not GPUs) and a slot dir."""
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ["nvidia0", "nvidia1", "nvidia2", "nvidia3", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"]:
        (dev / name).touch()
    slots = tmp_path / "slots"
    return {
        "RAY_AUTH_TOKEN": TOKEN,
        "RAY_HEAD_ADDRESS": "ray-head:6379",
        "HWD_DEV_DIR": str(dev),
        "HWD_GPU_SLOT_DIR": str(slots),
    }


def hold_slot(slot_dir: Path, slot: int):
    """Takes the flock of one GPU slot, as a running worker does; close the file to release it."""
    slot_dir.mkdir(parents=True, exist_ok=True)
    handle = open(slot_dir / f"slot-{slot}", "w")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


@pytest.mark.parametrize(
    ("per_worker", "held", "visible"),
    [
        ("1", [], "0"),
        ("1", [0, 1], "2"),
        ("2", [], "0,1"),
        ("2", [0], "2,3"),
        ("4", [], "0,1,2,3"),
        ("3", [], "0,1,2"),  # 4 GPUs make one slot of 3; GPU 3 stays unused
    ],
)
def test_worker_claims_the_first_free_group_of_gpus(run, four_gpus, per_worker, held, visible):
    slot_dir = Path(four_gpus["HWD_GPU_SLOT_DIR"])
    handles = [hold_slot(slot_dir, slot) for slot in held]
    try:
        result = run("worker", env={**four_gpus, "HWD_GPUS_PER_WORKER": per_worker})
    finally:
        for handle in handles:
            handle.close()
    assert result.returncode == 0, result.stderr
    exports, argv = parse_dry_run(result.stdout)
    assert exports["CUDA_VISIBLE_DEVICES"] == visible
    assert exports["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert f"--num-gpus={per_worker}" in argv


def test_worker_fails_when_every_gpu_slot_is_held(run, four_gpus):
    slot_dir = Path(four_gpus["HWD_GPU_SLOT_DIR"])
    handles = [hold_slot(slot_dir, slot) for slot in (0, 1)]
    try:
        result = run("worker", env={**four_gpus, "HWD_GPUS_PER_WORKER": "2"})
    finally:
        for handle in handles:
            handle.close()
    assert result.returncode == 2
    assert "all 2 GPU slot(s) of 2 GPU(s) are held by other workers" in result.stderr
    assert "--scale ray-worker" in result.stderr


def test_worker_gpu_claim_errors_name_the_setting(run, four_gpus, tmp_path):
    too_many = run("worker", env={**four_gpus, "HWD_GPUS_PER_WORKER": "5"})
    assert too_many.returncode == 2
    assert "HWD_GPUS_PER_WORKER=5 is more than the 4 GPU(s) visible" in too_many.stderr

    not_a_dir = tmp_path / "slots-file"
    not_a_dir.write_text("")
    unusable = run("worker", env={**four_gpus, "HWD_GPUS_PER_WORKER": "1", "HWD_GPU_SLOT_DIR": str(not_a_dir)})
    assert unusable.returncode == 2
    assert f"HWD_GPU_SLOT_DIR={not_a_dir} is not a writable directory" in unusable.stderr

    (tmp_path / "empty-dev").mkdir()
    no_gpu = run("worker", env={**four_gpus, "HWD_GPUS_PER_WORKER": "1", "HWD_DEV_DIR": str(tmp_path / "empty-dev")})
    assert no_gpu.returncode == 2
    assert "HWD_GPUS_PER_WORKER=1 but no GPU is visible" in no_gpu.stderr


# ---------------------------------------------------------------- mlflow

MLFLOW_ENV = {
    "POSTGRES_USER": "mlflow",
    "POSTGRES_PASSWORD": PASSWORD,
    "POSTGRES_DB": "tracking",
    "MLFLOW_ARTIFACTS_DESTINATION": "s3://mlflow-artifacts",
    "MLFLOW_S3_ENDPOINT_URL": "http://minio:9000",
    "AWS_ACCESS_KEY_ID": "hwd-minio",
    "AWS_SECRET_ACCESS_KEY": "minio-secret-value",
}


def test_mlflow_builds_the_server_command_and_masks_the_database_password(run):
    result = run("mlflow", env=MLFLOW_ENV)
    assert result.returncode == 0, result.stderr
    exports, argv = parse_dry_run(result.stdout)
    assert exports == {"MLFLOW_BACKEND_STORE_URI": "postgresql+psycopg2://mlflow:***@postgres:5432/tracking"}
    assert argv == [
        "mlflow", "server",
        "--serve-artifacts",
        "--artifacts-destination=s3://mlflow-artifacts",
        "--host=0.0.0.0",
        "--port=5000",
        "--workers=2",
        "--allowed-hosts=mlflow,mlflow:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*",
    ]  # fmt: skip
    for secret in (PASSWORD, urllib.parse.quote(PASSWORD, safe=""), "minio-secret-value"):
        assert secret not in result.stdout + result.stderr


def test_mlflow_really_passes_a_percent_encoded_uri_through_the_environment(run, tmp_path):
    log = fake_program(tmp_path / "bin", "mlflow")
    env = {**MLFLOW_ENV, "POSTGRES_HOST": "db", "POSTGRES_PORT": "6543", "MLFLOW_ALLOWED_HOSTS": "mlflow.lab:5000"}
    result = run("mlflow", env=env, dry_run=False, path_first=tmp_path / "bin")
    assert result.returncode == 0, result.stderr
    lines = log.read_text().splitlines()
    assert lines[0] == "server"
    assert "--allowed-hosts=mlflow.lab:5000" in lines
    assert not any(PASSWORD in line for line in lines if not line.startswith("URI="))
    uri = next(line for line in lines if line.startswith("URI="))[len("URI=") :]
    parsed = urllib.parse.urlsplit(uri)
    assert parsed.scheme == "postgresql+psycopg2"
    assert (parsed.hostname, parsed.port, parsed.path) == ("db", 6543, "/tracking")
    assert urllib.parse.unquote(parsed.password) == PASSWORD
    assert (tmp_path / "state" / "hwd-entrypoint.role").read_text() == "mlflow\n"


def test_mlflow_uses_a_given_backend_uri_and_a_local_artifact_root_as_is(run):
    env = {"MLFLOW_BACKEND_STORE_URI": "sqlite:////tmp/mlflow.db", "MLFLOW_ARTIFACTS_DESTINATION": "/tmp/artifacts"}
    result = run("mlflow", env=env)
    assert result.returncode == 0, result.stderr
    exports, argv = parse_dry_run(result.stdout)
    assert exports == {}  # nothing to build: neither Postgres nor S3 settings are needed
    assert "--artifacts-destination=/tmp/artifacts" in argv


@pytest.mark.parametrize(
    ("drop", "override", "message"),
    [
        ("POSTGRES_USER", {}, "POSTGRES_USER is not set"),
        ("POSTGRES_PASSWORD", {}, "POSTGRES_PASSWORD is not set"),
        ("POSTGRES_DB", {}, "POSTGRES_DB is not set"),
        ("MLFLOW_ARTIFACTS_DESTINATION", {}, "MLFLOW_ARTIFACTS_DESTINATION is not set"),
        ("MLFLOW_S3_ENDPOINT_URL", {}, "MLFLOW_S3_ENDPOINT_URL is not set"),
        ("AWS_ACCESS_KEY_ID", {}, "AWS_ACCESS_KEY_ID is not set"),
        ("AWS_SECRET_ACCESS_KEY", {}, "AWS_SECRET_ACCESS_KEY is not set"),
        (None, {"POSTGRES_PASSWORD": "CHANGE_ME_postgres_password"}, "POSTGRES_PASSWORD still holds the placeholder"),
        (None, {"AWS_SECRET_ACCESS_KEY": "CHANGE_ME_minio"}, "AWS_SECRET_ACCESS_KEY still holds the placeholder"),
        (None, {"POSTGRES_PORT": "postgres"}, "POSTGRES_PORT must be a TCP port"),
        (None, {"MLFLOW_PORT": "99999"}, "MLFLOW_PORT must be a TCP port"),
        (None, {"MLFLOW_WORKERS": "many"}, "MLFLOW_WORKERS must be a whole number"),
    ],
)
def test_mlflow_refuses_missing_or_bad_settings_by_name(run, drop, override, message):
    env = {key: value for key, value in MLFLOW_ENV.items() if key != drop}
    result = run("mlflow", env={**env, **override})
    assert result.returncode == 2
    assert message in result.stderr
    assert PASSWORD not in result.stderr
    assert result.stdout == ""


# ---------------------------------------------------------------- other commands


def test_any_other_command_runs_as_given(run, tmp_path):
    dry = run("hwd-tune", "sweep", "search_spaces/my sweep.yaml")
    assert parse_dry_run(dry.stdout) == ({}, ["hwd-tune", "sweep", "search_spaces/my sweep.yaml"])

    log = fake_program(tmp_path / "bin", "hwd-tune")
    real = run("hwd-tune", "sweep", "it's.yaml", dry_run=False, path_first=tmp_path / "bin")
    assert real.returncode == 0, real.stderr
    assert log.read_text().splitlines()[:2] == ["sweep", "it's.yaml"]
    assert not (tmp_path / "state" / "hwd-entrypoint.role").exists()  # not a long-running role


def test_no_arguments_prints_usage_and_fails(run):
    result = run(dry_run=False)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: hwd-entrypoint")


# ---------------------------------------------------------------- healthcheck


class _StubServer:
    """A local HTTP server that answers 200 on the paths in `healthy` and 503 elsewhere."""

    def __init__(self, healthy: set[str]):
        requested = self.requested = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                requested.append(self.path)
                self.send_response(200 if self.path in healthy else 503)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = str(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def stub_server():
    servers = []

    def _start(healthy: set[str]) -> _StubServer:
        servers.append(_StubServer(healthy))
        return servers[-1]

    yield _start
    for server in servers:
        server.close()


def write_role(tmp_path: Path, role: str) -> None:
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "state" / "hwd-entrypoint.role").write_text(role + "\n")


@pytest.mark.parametrize(
    ("role", "urls"),
    [
        ("head", ["http://127.0.0.1:8265/api/gcs_healthz", "http://127.0.0.1:52365/api/local_raylet_healthz"]),
        ("worker", ["http://127.0.0.1:52365/api/local_raylet_healthz"]),
        ("mlflow", ["http://127.0.0.1:5000/health"]),
    ],
)
def test_healthcheck_probes_the_endpoints_of_the_recorded_role(run, tmp_path, role, urls):
    write_role(tmp_path, role)
    result = run("healthcheck")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"probe {url}" for url in urls]


def test_healthcheck_passes_when_every_endpoint_answers(run, tmp_path, stub_server):
    server = stub_server({"/api/gcs_healthz", "/api/local_raylet_healthz"})
    write_role(tmp_path, "head")
    env = {"RAY_DASHBOARD_PORT": server.port, "RAY_AGENT_PORT": server.port}
    result = run("healthcheck", env=env, dry_run=False)
    assert result.returncode == 0, result.stderr
    assert server.requested == ["/api/gcs_healthz", "/api/local_raylet_healthz"]


def test_healthcheck_fails_naming_the_endpoint_that_does_not_answer(run, tmp_path, stub_server):
    server = stub_server({"/api/gcs_healthz"})  # the raylet is down
    write_role(tmp_path, "head")
    env = {"RAY_DASHBOARD_PORT": server.port, "RAY_AGENT_PORT": server.port}
    result = run("healthcheck", env=env, dry_run=False)
    assert result.returncode == 1
    assert f"http://127.0.0.1:{server.port}/api/local_raylet_healthz did not answer 2xx" in result.stderr

    server = stub_server({"/health"})
    write_role(tmp_path, "mlflow")
    assert run("healthcheck", env={"MLFLOW_PORT": server.port}, dry_run=False).returncode == 0
    write_role(tmp_path, "worker")
    assert run("healthcheck", env={"RAY_AGENT_PORT": server.port}, dry_run=False).returncode == 1


def test_healthcheck_without_a_role_is_healthy_and_an_unknown_role_is_unhealthy(run, tmp_path):
    assert run("healthcheck", dry_run=False).returncode == 0
    write_role(tmp_path, "scheduler")
    result = run("healthcheck", dry_run=False)
    assert result.returncode == 1  # Docker reads 1 as unhealthy; 2 is reserved
    assert "unknown role 'scheduler'" in result.stderr
    write_role(tmp_path, "head")
    bad_port = run("healthcheck", env={"RAY_DASHBOARD_PORT": "http"}, dry_run=False)
    assert bad_port.returncode == 1
    assert "RAY_DASHBOARD_PORT must be a TCP port" in bad_port.stderr
