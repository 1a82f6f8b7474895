"""docker/compose.yaml and docker/.env.example read as YAML: services, ports, volumes, start order, secrets."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker" / "compose.yaml"
ENV_EXAMPLE = REPO / "docker" / ".env.example"
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}; $$ is a literal $.
REFERENCE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY")
LONG_RUNNING = ["postgres", "minio", "mlflow", "ray-head", "ray-worker", "ray-worker-cpu"]


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution, for the forms this file uses; a missing required one raises."""

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        value = env.get(name)
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise KeyError(f"{name}: {arg}")
        if op in (":-", "-") and (value is None or (op == ":-" and value == "")):
            return arg
        return value or ""

    return REFERENCE.sub(substitute, text)


def resolve(node, env: dict[str, str]):
    """Substitutes variables in every string of a parsed compose file, as compose does after parsing."""
    if isinstance(node, dict):
        return {key: resolve(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve(value, env) for value in node]
    return interpolate(node, env) if isinstance(node, str) else node


def env_example() -> dict[str, str]:
    """NAME=value lines of docker/.env.example."""
    values = {}
    for number, line in enumerate(ENV_EXAMPLE.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, separator, value = line.partition("=")
        assert separator and re.fullmatch(r"[A-Z][A-Z0-9_]*", name), f".env.example line {number}: {line!r}"
        assert name not in values, f".env.example sets {name} twice"
        values[name] = value
    return values


def filled_in_env() -> dict[str, str]:
    """.env.example with every placeholder replaced, as a user's docker/.env would be."""
    return {
        name: (f"real-{name.lower()}-value" if value.startswith("CHANGE_ME") else value)
        for name, value in env_example().items()
    }


@pytest.fixture(scope="module")
def raw() -> dict:
    """The compose file as written (anchors merged, variables not substituted)."""
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def resolved() -> dict:
    """The compose file as `docker compose --env-file docker/.env` sees it with a filled-in .env."""
    return resolve(yaml.safe_load(COMPOSE.read_text()), filled_in_env())


@pytest.fixture(scope="module")
def defaults() -> dict:
    """The compose file with every optional variable at its default (required ones filled in)."""
    references = REFERENCE.finditer(COMPOSE.read_text())
    required = {m.group("name") for m in references if m.group("op") in (":?", "?")}
    return resolve(yaml.safe_load(COMPOSE.read_text()), {name: "x" for name in required})


# ---------------------------------------------------------------- the helpers themselves


def test_interpolation_follows_compose_rules():
    assert interpolate("${A:-d} ${A-d} $${A}", {}) == "d d ${A}"
    assert interpolate("${A:-d} ${A-d}", {"A": ""}) == "d "
    assert interpolate("${A:?need A}", {"A": "v"}) == "v"
    with pytest.raises(KeyError, match="A: need A"):
        interpolate("${A:?need A}", {"A": ""})


# ---------------------------------------------------------------- services and order of start


def test_the_stack_has_its_services(raw):
    assert set(raw["services"]) == {*LONG_RUNNING, "minio-init"}
    assert raw["services"]["ray-worker-cpu"]["profiles"] == ["cpu"]


def test_start_order_is_enforced_by_health_and_completion(raw):
    depends = {name: service.get("depends_on", {}) for name, service in raw["services"].items()}
    assert depends == {
        "postgres": {},
        "minio": {},
        "minio-init": {"minio": {"condition": "service_healthy"}},
        "mlflow": {
            "postgres": {"condition": "service_healthy"},
            "minio-init": {"condition": "service_completed_successfully"},
        },
        "ray-head": {"mlflow": {"condition": "service_healthy"}},
        "ray-worker": {"ray-head": {"condition": "service_healthy"}},
        "ray-worker-cpu": {"ray-head": {"condition": "service_healthy"}},
    }


def test_long_running_services_have_health_checks_and_restart(raw):
    for name in LONG_RUNNING:
        service = raw["services"][name]
        test = service["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
        assert not service["healthcheck"].get("disable", False), name
        assert service["restart"] == "unless-stopped", name
    assert raw["services"]["minio-init"]["restart"] == "no"
    for name in ["mlflow", "ray-head", "ray-worker"]:
        assert raw["services"][name]["healthcheck"]["test"] == ["CMD", "hwd-entrypoint", "healthcheck"]


def test_every_image_is_pinned_and_ours_is_built_once(raw):
    for name, service in raw["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image}"
    built = [name for name, service in raw["services"].items() if "build" in service]
    assert built == ["ray-head"]
    ours = raw["services"]["ray-head"]["image"]
    for name in ["mlflow", "ray-worker", "ray-worker-cpu"]:
        assert raw["services"][name]["image"] == ours
        assert raw["services"][name]["pull_policy"] == "never", f"{name} must not pull someone else's hwd-tune"
    build = raw["services"]["ray-head"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == REPO / "docker" / "Dockerfile"
    assert build["args"]["TORCH_VARIANT"] == "${HWD_TORCH_VARIANT:-cuda}"
    assert ours == "hwd-tune:${HWD_TORCH_VARIANT:-cuda}"


# ---------------------------------------------------------------- ports and volumes


def published(service: dict) -> list[tuple[str, str, str]]:
    """(host address, host port, container port) of each published port; short syntax only."""
    result = []
    for entry in service.get("ports", []):
        assert isinstance(entry, str), f"use HOST:PORT:PORT strings, got {entry!r}"
        parts = entry.split(":")
        assert len(parts) == 3, f"{entry!r} publishes on every interface: give the host address"
        result.append(tuple(parts))
    return result


def test_every_published_port_binds_to_loopback_by_default(raw, defaults):
    ports = {name: published(service) for name, service in defaults["services"].items()}
    assert ports == {
        "postgres": [],
        "minio": [("127.0.0.1", "9001", "9001")],
        "minio-init": [],
        "mlflow": [("127.0.0.1", "5000", "5000")],
        "ray-head": [("127.0.0.1", "8265", "8265"), ("127.0.0.1", "10001", "10001")],
        "ray-worker": [],
        "ray-worker-cpu": [],
    }
    for name, service in raw["services"].items():
        for entry in service.get("ports", []):
            assert entry.startswith("${HWD_BIND:-127.0.0.1}:"), f"{name}: {entry}"
        assert service.get("network_mode") != "host", f"{name} would bypass the port bindings"


def test_hwd_bind_moves_every_published_port():
    document = resolve(yaml.safe_load(COMPOSE.read_text()), {**filled_in_env(), "HWD_BIND": "10.0.0.5"})
    hosts = {host for service in document["services"].values() for host, _, _ in published(service)}
    assert hosts == {"10.0.0.5"}


def test_workers_can_be_scaled(raw):
    for name in ["ray-worker", "ray-worker-cpu"]:
        service = raw["services"][name]
        assert "container_name" not in service and "ports" not in service, f"{name} could not be --scale'd"


def test_state_lives_in_named_volumes(raw):
    named = set(raw["volumes"])
    mounts = {}
    for name, service in raw["services"].items():
        for entry in service.get("volumes", []):
            source, target = entry.split(":")[:2]
            if source in named:
                mounts.setdefault(name, {})[target] = source
    assert mounts["postgres"] == {"/var/lib/postgresql/data": "postgres-data"}
    assert mounts["minio"] == {"/data": "minio-data"}
    # Ray Train/Tune checkpoints (~/ray_results): one volume shared by every Ray node.
    for name in ["ray-head", "ray-worker", "ray-worker-cpu"]:
        assert mounts[name]["/home/hwd/ray_results"] == "ray-results"
    assert mounts["ray-worker"]["/var/lib/hwd-gpu-slots"] == "gpu-slots"
    assert named == {"postgres-data", "minio-data", "ray-results", "gpu-slots"}
    # MLflow keeps no state of its own: runs and registry in Postgres, artifacts in MinIO.
    mlflow_env = raw["services"]["mlflow"]["environment"]
    assert mlflow_env["POSTGRES_HOST"] == "postgres"
    assert mlflow_env["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://${MLFLOW_BUCKET:-mlflow-artifacts}"
    assert mlflow_env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_gpu_workers_reserve_the_gpus_and_claim_a_share(raw):
    worker = raw["services"]["ray-worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    # count: all, not N: Docker hands GPUs 0..N-1 to every replica of a `count: N` reservation.
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert worker["environment"]["HWD_GPUS_PER_WORKER"] == "${HWD_GPUS_PER_WORKER:-1}"
    cpu_worker = raw["services"]["ray-worker-cpu"]
    assert "deploy" not in cpu_worker and cpu_worker["environment"]["HWD_GPUS_PER_WORKER"] == ""


def test_ray_nodes_log_to_the_mlflow_server_and_find_the_head(raw):
    for name in ["ray-head", "ray-worker", "ray-worker-cpu"]:
        environment = raw["services"][name]["environment"]
        assert environment["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert environment["RAY_AUTH_MODE"] == "${RAY_AUTH_MODE:-token}"
        # Artifacts go through the MLflow server (--serve-artifacts): no S3 keys on Ray nodes.
        assert not any(key.startswith("AWS_") for key in environment), name
    for name in ["ray-worker", "ray-worker-cpu"]:
        assert raw["services"][name]["environment"]["RAY_HEAD_ADDRESS"] == "ray-head:6379"
    assert [raw["services"][name]["command"] for name in ["ray-head", "ray-worker", "mlflow"]] == [
        ["head"],
        ["worker"],
        ["mlflow"],
    ]


def test_the_bucket_is_created_on_start(raw):
    init = raw["services"]["minio-init"]
    assert init["entrypoint"] == ["/bin/sh", "-c"]
    script = init["command"][0]
    assert 'mc mb --ignore-existing "hwd/$${MLFLOW_BUCKET}"' in script
    assert init["environment"]["MLFLOW_BUCKET"] == "${MLFLOW_BUCKET:-mlflow-artifacts}"


# ---------------------------------------------------------------- secrets


def environments(document: dict):
    for name, service in document["services"].items():
        for key, value in (service.get("environment") or {}).items():
            yield name, key, value


def test_every_secret_is_a_required_variable_reference(raw):
    secrets = [(name, key, value) for name, key, value in environments(raw) if SECRET_NAME.search(key)]
    assert {key for _, key, _ in secrets} >= {
        "RAY_AUTH_TOKEN",
        "POSTGRES_PASSWORD",
        "MINIO_ROOT_PASSWORD",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
    }
    for name, key, value in secrets:
        match = REFERENCE.fullmatch(str(value))
        assert match and match.group("op") == ":?" and match.group("arg"), f"{name}.{key} = {value!r}"


def test_no_plaintext_secret_anywhere_in_the_file():
    text = COMPOSE.read_text()
    for value in env_example().values():
        if value.startswith("CHANGE_ME"):
            assert value not in text
    for word in ["minioadmin", "password=", "changeme", "secret="]:
        assert word not in text.lower(), word


def test_every_reference_has_a_default_or_a_message():
    for match in REFERENCE.finditer(COMPOSE.read_text()):
        if match.group(0) != "$$":
            assert match.group("op") in (":-", ":?"), f"{match.group(0)} is silently empty when unset"


def test_a_missing_secret_stops_compose_with_its_name():
    env = filled_in_env()
    for secret in ["RAY_AUTH_TOKEN", "POSTGRES_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"]:
        with pytest.raises(KeyError, match=f"{secret}: {secret} is not set; copy docker/.env.example"):
            without = {key: value for key, value in env.items() if key != secret}
            resolve(yaml.safe_load(COMPOSE.read_text()), without)


def test_env_example_has_only_placeholders_and_every_required_variable():
    values = env_example()
    for name, value in values.items():
        if SECRET_NAME.search(name):
            assert value.startswith("CHANGE_ME"), f"{name} in .env.example must be a CHANGE_ME placeholder"
    required = {m.group("name") for m in REFERENCE.finditer(COMPOSE.read_text()) if m.group("op") == ":?"}
    assert required <= set(values), f"missing from .env.example: {required - set(values)}"
    references = list(REFERENCE.finditer(COMPOSE.read_text()))
    compose_defaults = {m.group("name"): m.group("arg") for m in references if m.group("op") == ":-"}
    for name in compose_defaults.keys() & values.keys():
        default = compose_defaults[name]
        assert values[name] == default, f".env.example: {name}={values[name]}, compose's default is {default}"


def test_the_real_env_file_is_ignored_by_git():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "--quiet", "docker/.env"], capture_output=True, timeout=30
    )
    assert result.returncode == 0, "docker/.env would be committed"


# ---------------------------------------------------------------- the entry point gets what it needs


@pytest.mark.parametrize("service", ["ray-head", "ray-worker", "ray-worker-cpu", "mlflow"])
def test_each_service_environment_is_enough_for_the_entrypoint(resolved, service, tmp_path):
    spec = resolved["services"][service]
    env = {key: str(value) for key, value in spec["environment"].items()}
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "nvidia0").touch()
    env.update(
        PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin",
        HWD_DEV_DIR=str(dev),
        HWD_GPU_SLOT_DIR=str(tmp_path / "slots"),
        HWD_STATE_DIR=str(tmp_path / "state"),
    )
    argv = ["bash", str(ENTRYPOINT), "--dry-run", *spec["command"]]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    exec_line = shlex.split(result.stdout.splitlines()[-1])
    program = {"ray-head": "ray", "ray-worker": "ray", "ray-worker-cpu": "ray", "mlflow": "mlflow"}[service]
    assert exec_line[:2] == ["exec", program]
    if service == "ray-worker":
        assert "--num-gpus=1" in exec_line and "export CUDA_VISIBLE_DEVICES=0" in result.stdout
    if service == "ray-head":
        # The ports compose publishes are the ports the head listens on.
        assert {"--dashboard-port=8265", "--ray-client-server-port=10001"} <= set(exec_line)


# ---------------------------------------------------------------- docker/README.md


def readme_block(after: str) -> str:
    """The first ```bash block of docker/README.md after the line containing AFTER."""
    text = (REPO / "docker" / "README.md").read_text()
    start = text.index("```bash\n", text.index(after)) + len("```bash\n")
    return text[start : text.index("```", start)]


def test_readme_secret_commands_replace_every_placeholder(tmp_path):
    (tmp_path / "docker").mkdir()
    shutil.copy(ENV_EXAMPLE, tmp_path / "docker" / ".env.example")
    script = readme_block("**1. Settings and secrets**")
    result = subprocess.run(["bash", "-euc", script], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "docker" / ".env").read_text().splitlines()
    written = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    for name, value in env_example().items():
        if value.startswith("CHANGE_ME"):
            assert re.fullmatch(r"[0-9a-f]{64}", written[name]), f"{name} was not replaced: {written[name]!r}"
        else:
            assert written[name] == value
    assert (tmp_path / "docker" / ".env").stat().st_mode & 0o077 == 0


def test_readme_cluster_commands_use_this_stack():
    start = readme_block("**3. Start**")
    assert "docker compose -f docker/compose.yaml --env-file docker/.env up -d --scale ray-worker=2" in start
    submit = readme_block("**4. Submit a sweep**")
    assert "ray job submit --address http://127.0.0.1:8265 --working-dir . --" in submit
    assert "export RAY_AUTH_MODE=token" in submit
    stop = readme_block("**6. Stop**")
    assert stop.splitlines()[0] == "docker compose -f docker/compose.yaml --env-file docker/.env down"
