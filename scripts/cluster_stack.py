"""The compose stack's roles on this machine without Docker: Postgres, an S3 endpoint, MLflow, a Ray
head and two Ray workers, each Ray node in a network namespace of its own (its own IP address).

    python scripts/cluster_stack.py up STATE_DIR     # prints the client environment file it wrote
    python scripts/cluster_stack.py down STATE_DIR   # stops everything by PID, deletes namespaces

Behind scripts/cluster-up.sh and scripts/cluster-down.sh. Needs root (ip netns) and Debian's
postgresql binaries. The Ray nodes and MLflow start through docker/entrypoint.sh with their real
roles; Postgres and the S3 endpoint (moto in server mode) stand in for the postgres and minio
images. Everything listens on a private bridge (10.77.N.0/24): nothing is reachable from outside.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"


def _postgres_bin() -> Path:
    """HWD_PG_BIN, else the newest of Debian's /usr/lib/postgresql/<version>/bin."""
    if os.environ.get("HWD_PG_BIN"):
        return Path(os.environ["HWD_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parts[-3]))
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _postgres_bin()
PG_USER = "postgres"  # initdb refuses root: the database runs as this system user
NODES = ("head", "worker1", "worker2")
BUCKETS = ("mlflow-artifacts", "ray-storage")
PORTS = {"postgres": 5432, "s3": 9000, "mlflow": 5000, "gcs": 6379, "dashboard": 8265}
STATE_FILE = "stack.json"  # what `down` needs: names, PIDs, folders
ENV_FILE = "cluster.env"  # `source` it to be a client of the cluster (ray job submit, hwd-tune)


def _run(*command: str, **options) -> subprocess.CompletedProcess:
    """Runs `command`; a failure raises with its output (initdb and ip say what went wrong)."""
    result = subprocess.run(command, capture_output=True, text=True, **options)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return result


def _free_subnet() -> int:
    """A third octet N whose 10.77.N.0/24 no interface of this machine uses yet."""
    used = _run("ip", "-o", "addr").stdout
    for _ in range(200):
        octet = secrets.randbelow(250) + 2
        if f"10.77.{octet}." not in used:
            return octet
    raise RuntimeError("no free 10.77.N.0/24 subnet")


# ---------------------------------------------------------------------------------------------
# Network: a bridge on the host, one namespace + veth pair per Ray node
# ---------------------------------------------------------------------------------------------
def create_network(state: dict) -> None:
    octet, tag = state["octet"], state["tag"]
    bridge = state["bridge"] = f"hwdbr{tag}"
    _run("ip", "link", "add", bridge, "type", "bridge")
    _run("ip", "addr", "add", f"10.77.{octet}.1/24", "dev", bridge)
    _run("ip", "link", "set", bridge, "up")
    state["host_ip"] = f"10.77.{octet}.1"
    for index, node in enumerate(NODES):
        namespace = f"hwd{tag}-{node}"
        host_end, node_end = f"hwd{tag}h{index}", f"hwd{tag}n{index}"
        state["namespaces"].append(namespace)
        _run("ip", "netns", "add", namespace)
        _run("ip", "link", "add", host_end, "type", "veth", "peer", "name", node_end)
        _run("ip", "link", "set", node_end, "netns", namespace)
        _run("ip", "link", "set", host_end, "master", bridge)
        _run("ip", "link", "set", host_end, "up")
        address = f"10.77.{octet}.{index + 2}"
        inside = ("ip", "netns", "exec", namespace, "ip")
        _run(*inside, "addr", "add", f"{address}/24", "dev", node_end)
        _run(*inside, "link", "set", node_end, "up")
        _run(*inside, "link", "set", "lo", "up")
        _run(*inside, "route", "add", "default", "via", state["host_ip"])  # Ray finds its IP by this route
        state["node_ips"][node] = address
        state["links"][node] = node_end


def delete_network(state: dict) -> None:
    for namespace in state.get("namespaces", []):
        subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)
    if state.get("bridge"):
        subprocess.run(["ip", "link", "delete", state["bridge"]], capture_output=True)
    # veth host ends vanish with their namespace peers


# ---------------------------------------------------------------------------------------------
# Processes: started in their own session, recorded by PID and start time
# ---------------------------------------------------------------------------------------------
def _start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def start(state: dict, name: str, command: list[str], env: dict[str, str], namespace: str | None = None) -> int:
    """Starts `command` (in `namespace` if given) in a new session, logs to STATE/logs/<name>.log."""
    if namespace is not None:
        command = ["ip", "netns", "exec", namespace, *command]
    log = Path(state["root"]) / "logs" / f"{name}.log"
    with log.open("a") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    state["processes"][name] = {"pid": process.pid, "start": _start_time(process.pid)}
    _save(state)
    return process.pid


def _process_table() -> dict[int, tuple[int, int, int]]:
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] != "Z":
                table[int(entry.name)] = (int(fields[1]), int(fields[2]), int(fields[19]))
    return table


def _tree(roots: dict[int, int]) -> set[int]:
    """The live processes among `roots` (pid -> start time), their process groups and descendants."""
    table = _process_table()
    live = {pid for pid, started in roots.items() if pid in table and table[pid][2] == started}
    members = {pid for pid, (_, group, _) in table.items() if group in live} | live
    frontier = list(members)
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _, _) in table.items():
            if ppid == parent and pid not in members:
                members.add(pid)
                frontier.append(pid)
    return members


def namespace_pids(namespace: str) -> set[int]:
    result = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
    return {int(word) for word in result.stdout.split()}


def stop_processes(state: dict, names: list[str] | None = None, grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace_s`: the recorded processes, their groups and children,
    and everything still running inside the stack's namespaces (only when all are stopped)."""
    chosen = {name: info for name, info in state["processes"].items() if names is None or name in names}
    roots = {info["pid"]: info["start"] for info in chosen.values() if info["start"] is not None}

    def targets() -> set[int]:
        pids = _tree(roots)
        if names is None:
            for namespace in state.get("namespaces", []):
                pids |= namespace_pids(namespace)
        return pids - {os.getpid()}

    for signum, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for pid in targets():
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while targets() and time.monotonic() < deadline:
            time.sleep(0.2)
    for name in chosen:
        state["processes"].pop(name, None)
    _save(state)


# ---------------------------------------------------------------------------------------------
# Services
# ---------------------------------------------------------------------------------------------
def _wait(what: str, ready, timeout_s: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.5)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise TimeoutError(f"{what} was not ready within {timeout_s:g} s\n{tail}")


def _answers(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((host, port)) == 0


def start_postgres(state: dict) -> None:
    """initdb + pg_ctl as the postgres user on a folder it owns; databases `mlflow` and `optuna`."""
    folder = Path(state["root"]) / "postgres"
    folder.mkdir()
    shutil.chown(folder, user=PG_USER)
    folder.chmod(0o700)
    password = state["secrets"]["postgres"]
    password_file = folder / "password"
    password_file.write_text(password)
    shutil.chown(password_file, user=PG_USER)
    as_postgres = ("runuser", "-u", PG_USER, "--")
    data = folder / "data"
    _run(*as_postgres, str(PG_BIN / "initdb"), "-D", str(data), "-U", "hwd", f"--pwfile={password_file}",
         "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8")  # fmt: skip
    password_file.unlink()
    with (data / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all all 10.77.{state['octet']}.0/24 scram-sha-256\n")
    host, port = state["host_ip"], PORTS["postgres"]
    options = f"-h {host} -p {port} -k {folder}"
    _run(*as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "server.log"),
         "-w", "-t", "120", "start")  # fmt: skip
    state["postgres"] = {"data": str(data), "socket_dir": str(folder)}
    _save(state)
    for database in ("mlflow", "optuna"):
        _run(*as_postgres, str(PG_BIN / "createdb"), "-h", str(folder), "-p", str(port), "-U", "hwd", database)


def stop_postgres(state: dict) -> None:
    info = state.get("postgres")
    if info and Path(info["data"], "postmaster.pid").exists():
        subprocess.run(
            ["runuser", "-u", PG_USER, "--", str(PG_BIN / "pg_ctl"), "-D", info["data"], "-m", "fast", "-w", "stop"],
            capture_output=True,
        )


def start_s3(state: dict, env: dict[str, str]) -> None:
    """moto's S3 HTTP API on the bridge address, with the artifact and Ray storage buckets."""
    host, port = state["host_ip"], PORTS["s3"]
    start(state, "s3", [str(VENV_BIN / "moto_server"), "-H", host, "-p", str(port)], env)
    _wait("the S3 endpoint", lambda: _answers(f"http://{host}:{port}/moto-api/"), 120, _log(state, "s3"))
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=f"http://{host}:{port}",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    for bucket in BUCKETS:
        client.create_bucket(Bucket=bucket)


def _log(state: dict, name: str) -> Path:
    return Path(state["root"]) / "logs" / f"{name}.log"


def _save(state: dict) -> None:
    path = Path(state["root"]) / STATE_FILE
    path.write_text(json.dumps(state, indent=1))
    path.chmod(0o600)


def _base_env(state: dict) -> dict[str, str]:
    """What every role's process sees: the venv first on PATH, the S3 endpoint and its keys."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RAY_", "HWD_", "MLFLOW_", "AWS_"))}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO)  # this checkout's hwd_tune, whichever venv runs it
    s3 = f"http://{state['host_ip']}:{PORTS['s3']}"
    env.update(
        AWS_ENDPOINT_URL=s3,
        AWS_ACCESS_KEY_ID="hwd-cluster",
        AWS_SECRET_ACCESS_KEY=state["secrets"]["s3"],
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
    )
    return env


def client_env(state: dict) -> dict[str, str]:
    """The variables the image sets on its nodes, as a client or a Ray node of this stack sees them."""
    host = state["host_ip"]
    password = state["secrets"]["postgres"]
    return {
        "MLFLOW_TRACKING_URI": f"http://{host}:{PORTS['mlflow']}",
        "HWD_STORAGE": "s3://ray-storage/hwd-tune",
        "HWD_OPTUNA_STORAGE": f"postgresql+psycopg://hwd:{password}@{host}:{PORTS['postgres']}/optuna",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": state["secrets"]["ray"],
        "RAY_ADDRESS": f"http://{state['node_ips']['head']}:{PORTS['dashboard']}",
        "AWS_ENDPOINT_URL": f"http://{host}:{PORTS['s3']}",
        "AWS_ACCESS_KEY_ID": "hwd-cluster",
        "AWS_SECRET_ACCESS_KEY": state["secrets"]["s3"],
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def start_mlflow(state: dict) -> None:
    """`docker/entrypoint.sh mlflow`: Postgres backend, artifacts proxied to s3://mlflow-artifacts."""
    host = state["host_ip"]
    env = _base_env(state) | {
        "POSTGRES_USER": "hwd",
        "POSTGRES_PASSWORD": state["secrets"]["postgres"],
        "POSTGRES_DB": "mlflow",
        "POSTGRES_HOST": host,
        "POSTGRES_PORT": str(PORTS["postgres"]),
        "MLFLOW_ARTIFACTS_DESTINATION": "s3://mlflow-artifacts",
        "MLFLOW_S3_ENDPOINT_URL": f"http://{host}:{PORTS['s3']}",
        "MLFLOW_HOST": host,
        "MLFLOW_PORT": str(PORTS["mlflow"]),
        "MLFLOW_WORKERS": "1",
        "MLFLOW_ALLOWED_HOSTS": f"{host},{host}:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*",
        "HWD_STATE_DIR": str(Path(state["root"]) / "mlflow-state"),
    }
    start(state, "mlflow", ["bash", str(ENTRYPOINT), "mlflow"], env)
    url = f"http://{host}:{PORTS['mlflow']}/health"
    _wait("the MLflow server", lambda: _answers(url), 300, _log(state, "mlflow"))


def node_env(state: dict, node: str) -> dict[str, str]:
    """A Ray node's environment: the image's variables, its own temp and state folders."""
    root = Path(state["root"])
    env = _base_env(state) | client_env(state)
    env.pop("RAY_ADDRESS")
    env.update(
        RAY_TMPDIR=str(root / "ray" / node),  # its own temp dir: the nodes share this file system
        HWD_STATE_DIR=str(root / "state" / node),
        HWD_OUTPUT_DIR=str(root / "outputs"),  # a relative output_dir of a job lands here, on the head
        RAY_HEAD_ADDRESS=f"{state['node_ips']['head']}:{PORTS['gcs']}",
        RAY_NODE_IP_ADDRESS=state["node_ips"][node],
        RAY_NUM_CPUS="0" if node == "head" else state["worker_cpus"],
        RAY_OBJECT_STORE_MEMORY=str(100 * 1024 * 1024),
        RAY_API_SERVER_ADDRESS=f"http://{state['node_ips']['head']}:{PORTS['dashboard']}",
        RAY_TRAIN_ENABLE_PREEMPTION_WATCHER="0",
    )
    return env


def start_ray_node(state: dict, node: str, attempts: int = 6) -> None:
    """`docker/entrypoint.sh head|worker` in the node's namespace, until its health check passes.

    `ray start` gives a raylet 30 s (fixed in Ray) to register with the GCS; on a busy machine it
    may miss that and exit, so a node that exits is started again, up to `attempts` times."""
    role = "head" if node == "head" else "worker"
    env = node_env(state, node)
    Path(env["RAY_TMPDIR"]).mkdir(parents=True, exist_ok=True)
    namespace = f"hwd{state['tag']}-{node}"
    healthy = ["ip", "netns", "exec", namespace, "bash", str(ENTRYPOINT), "healthcheck"]
    role_file = Path(env["HWD_STATE_DIR"]) / "hwd-entrypoint.role"  # without it healthcheck has nothing to probe
    for attempt in range(1, attempts + 1):
        role_file.unlink(missing_ok=True)
        pid = start(state, node, ["bash", str(ENTRYPOINT), role], env, namespace=namespace)
        started = state["processes"][node]["start"]

        def exited(pid: int = pid, started: int = started) -> bool:
            return _start_time(pid) != started

        def healthy_or_exited(exited=exited) -> bool:
            if exited():
                return True
            return role_file.exists() and subprocess.run(healthy, env=env, capture_output=True).returncode == 0

        _wait(f"Ray {node} ({state['node_ips'][node]})", healthy_or_exited, 300, _log(state, node))
        if not exited():
            return
        stop_processes(state, [node])  # what the failed `ray start` left behind
        if attempt == attempts:
            raise RuntimeError(f"Ray {node} exited {attempts} times:\n{_log(state, node).read_text()[-3000:]}")


def alive_nodes(state: dict) -> list[dict]:
    """The Ray nodes the head's State API lists as ALIVE."""
    url = f"http://{state['node_ips']['head']}:{PORTS['dashboard']}/api/v0/nodes?limit=100"
    headers = {"Authorization": f"Bearer {state['secrets']['ray']}"}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as response:
            body = json.loads(response.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, json.JSONDecodeError):
        return []
    return [node for node in body["data"]["result"]["result"] if node["state"] == "ALIVE"]


def up(root: Path, worker_cpus: str = "1") -> dict:
    """Starts the whole stack under `root` (created; must not exist); on any failure stops what started."""
    if os.geteuid() != 0:
        raise SystemExit("cluster-up: needs root (ip netns, runuser postgres)")
    if not (PG_BIN / "initdb").exists():
        raise SystemExit(f"cluster-up: {PG_BIN}/initdb is missing; apt-get install -y postgresql")
    root.mkdir(parents=True)
    root.chmod(0o755)  # the postgres user needs to reach its folder below
    (root / "logs").mkdir()
    octet = _free_subnet()
    state = {
        "root": str(root),
        "octet": octet,
        "tag": str(octet),
        "namespaces": [],
        "node_ips": {},
        "links": {},
        "processes": {},
        "worker_cpus": worker_cpus,
        "secrets": {name: secrets.token_hex(24) for name in ("postgres", "s3", "ray")},
        "timings": {},
    }
    _save(state)
    started = time.monotonic()
    try:
        create_network(state)
        _save(state)
        start_postgres(state)
        start_s3(state, _base_env(state))
        start_mlflow(state)
        state["timings"]["services_s"] = round(time.monotonic() - started, 1)
        for node in NODES:
            start_ray_node(state, node)
        _wait("3 alive Ray nodes", lambda: len(alive_nodes(state)) == len(NODES), 180, _log(state, "head"))
    except BaseException:
        if os.environ.get("HWD_CLUSTER_KEEP_ON_FAILURE") != "1":  # 1: left running to be looked at
            down(root)
        raise
    state["timings"]["start_s"] = round(time.monotonic() - started, 1)
    _save(state)
    env_file = root / ENV_FILE
    env_file.write_text("".join(f"export {key}={value}\n" for key, value in client_env(state).items()))
    env_file.chmod(0o600)
    return state


def load_state(root: Path) -> dict:
    return json.loads((root / STATE_FILE).read_text())


def down(root: Path) -> None:
    """Stops every process of the stack by PID, Postgres, deletes the namespaces, bridge and `root`."""
    path = root / STATE_FILE
    if not path.exists():
        shutil.rmtree(root, ignore_errors=True)
        return
    state = load_state(root)
    try:
        stop_processes(state)
        stop_postgres(state)
    finally:
        delete_network(state)
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("up", "down"):
        print("usage: cluster_stack.py up|down STATE_DIR", file=sys.stderr)
        return 2
    root = Path(argv[1]).resolve()
    if argv[0] == "up":
        state = up(root, os.environ.get("HWD_CLUSTER_WORKER_CPUS", "1"))
        print(f"cluster up in {state['timings']['start_s']} s: head {state['node_ips']['head']}, "
              f"workers {state['node_ips']['worker1']} {state['node_ips']['worker2']}")  # fmt: skip
        print(f"client environment: source {root / ENV_FILE}")
    else:
        down(root)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
