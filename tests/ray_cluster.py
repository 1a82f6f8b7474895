"""A private local Ray head (`ray start --head`) for end-to-end tests of `ray job submit`.

The head runs in its own process group with its own ports and temp dir, so it coexists with the
test session's `ray.init` and with other Ray instances on the machine. `stop_head` ends only the
processes that head started, by PID: `ray stop` would stop every Ray on the machine.
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
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

AuthMode = Literal["token", "disabled"]

VENV_BIN = Path(sys.executable).parent  # ray, hwd-tune: what the head and its jobs run
HOST = "127.0.0.1"
READY_MARK = "Ray runtime started"  # printed by `ray start` once every head process is up
# Every port the head listens on: Ray's defaults (6379, 8265, 10001, 52365, ...) may belong to
# another Ray on this machine.
_PORT_FLAGS = (
    "port",
    "dashboard-port",
    "ray-client-server-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "metrics-export-port",
    "node-manager-port",
    "object-manager-port",
)
# Unix socket paths under the temp dir (<root>/ray/session_<time>_<pid>/sockets/plasma_store)
# must stay below ~107 bytes: keep the root short, not under pytest's long tmp_path.
_TEMP_PARENT = "/tmp"
_MAX_TEMP_ROOT_CHARS = 32


@dataclass(frozen=True)
class RayHead:
    """A running head: its addresses, its auth token file, and the `ray start --block` process."""

    gcs_address: str  # "127.0.0.1:<port>": what `ray.init(address=...)` or a worker node joins
    dashboard_url: str  # "http://127.0.0.1:<port>": the job API, `ray job submit --address`
    temp_root: Path  # RAY_TMPDIR that lets `--address auto` find this head (temp dir = <root>/ray)
    token_file: Path | None  # the token the head checks; None when auth is disabled
    process: subprocess.Popen

    @property
    def gcs_port(self) -> int:
        return int(self.gcs_address.rsplit(":", 1)[1])

    def auth_headers(self) -> dict[str, str]:
        """HTTP headers that authenticate a request to this head's dashboard (empty without auth)."""
        if self.token_file is None:
            return {}
        return {"Authorization": f"Bearer {self.token_file.read_text().strip()}"}

    def client_env(self, *, with_token: bool = True, **extra: str) -> dict[str, str]:
        """Environment for a `ray` CLI client of this head: no inherited RAY_* variables (the test
        session's Ray sets some), the venv first on PATH, and the token when `with_token`."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        if with_token and self.token_file is not None:
            env["RAY_AUTH_MODE"] = "token"
            env["RAY_AUTH_TOKEN_PATH"] = str(self.token_file)
        env.update(extra)
        return env


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def start_head(*, auth: AuthMode, num_cpus: int = 2, timeout_s: float = 120.0) -> RayHead:
    """Starts `ray start --head --block` in a new process group and waits for its job API.

    auth="token": a fresh token in a file named by RAY_AUTH_TOKEN_PATH and RAY_AUTH_MODE unset,
    i.e. Ray's default (token auth as soon as a token exists). auth="disabled": RAY_AUTH_MODE=disabled.
    """
    if auth not in ("token", "disabled"):
        raise ValueError(f"auth: got {auth!r}, expected 'token' or 'disabled'")
    temp_root = Path(tempfile.mkdtemp(prefix="hwdray-", dir=_TEMP_PARENT))
    if len(str(temp_root)) > _MAX_TEMP_ROOT_CHARS:
        raise ValueError(f"temp root {temp_root} is longer than {_MAX_TEMP_ROOT_CHARS} characters")
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # jobs find `hwd-tune` here
    token_file = None
    if auth == "token":
        token_file = temp_root / "auth_token"
        token_file.write_text(secrets.token_hex(32))
        token_file.chmod(0o600)
        env["RAY_AUTH_TOKEN_PATH"] = str(token_file)
    else:
        env["RAY_AUTH_MODE"] = "disabled"
    ports = {flag: free_port() for flag in _PORT_FLAGS}
    command = [
        str(VENV_BIN / "ray"),
        "start",
        "--head",
        "--block",
        "--node-ip-address",
        HOST,
        "--dashboard-host",
        HOST,
        "--num-cpus",
        str(num_cpus),
        "--temp-dir",
        str(temp_root / "ray"),
        "--disable-usage-stats",
    ]
    for flag, port in ports.items():
        command += [f"--{flag}", str(port)]
    log_path = temp_root / "ray-start.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop_head signals exactly this group
        )
    head = RayHead(
        gcs_address=f"{HOST}:{ports['port']}",
        dashboard_url=f"http://{HOST}:{ports['dashboard-port']}",
        temp_root=temp_root,
        token_file=token_file,
        process=process,
    )
    try:
        _wait_until_ready(head, log_path, timeout_s)
    except BaseException:
        stop_head(head)
        raise
    return head


def _wait_until_ready(head: RayHead, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.process.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.process.returncode}:\n{log_path.read_text()[-3000:]}")
        if READY_MARK in log_path.read_text() and dashboard_get(head, "/api/jobs/", timeout_s=5)[0] == 200:
            return
        time.sleep(0.5)
    raise TimeoutError(f"the Ray head was not ready within {timeout_s:g} s:\n{log_path.read_text()[-3000:]}")


def dashboard_get(head: RayHead, path: str, *, authenticated: bool = True, timeout_s: float = 10) -> tuple[int, Any]:
    """GET on the head's dashboard HTTP API: (status, decoded JSON or text); status 0 when it
    does not answer yet."""
    headers = head.auth_headers() if authenticated else {}
    request = urllib.request.Request(head.dashboard_url + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status, body = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, None
    try:
        return status, json.loads(body)
    except json.JSONDecodeError:
        return status, body


def submit_job(
    head: RayHead,
    entrypoint: Sequence[str],
    *,
    env: Mapping[str, str],
    address: str | None,
    working_dir: Path,
    submission_id: str,
    excludes: Sequence[str] = (".venv", ".git", "outputs", "mlruns", "__pycache__", ".pytest_cache"),
    timeout_s: float = 300,
) -> subprocess.CompletedProcess:
    """Runs `ray job submit` (waiting for the end, logs streamed to its stdout) with `env`;
    `address=None` leaves the address to RAY_ADDRESS / RAY_API_SERVER_ADDRESS in `env`."""
    runtime_env = {"working_dir": str(working_dir), "excludes": list(excludes)}
    command = [
        str(VENV_BIN / "ray"),
        "job",
        "submit",
        "--submission-id",
        submission_id,
        "--runtime-env-json",
        json.dumps(runtime_env),
        "--log-style",
        "record",
        "--log-color",
        "false",
    ]
    if address is not None:
        command += ["--address", address]
    command += ["--", *entrypoint]
    return subprocess.run(
        command, env=dict(env), capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
    )


def job_record(head: RayHead, submission_id: str) -> dict[str, Any]:
    """The job server's record of a job (status, entrypoint, message, ...); raises when unknown."""
    status, body = dashboard_get(head, f"/api/jobs/{submission_id}")
    if status != 200:
        raise LookupError(f"job {submission_id!r} on {head.dashboard_url}: HTTP {status} {body!r}")
    return body


def job_logs(head: RayHead, submission_id: str) -> str:
    """The driver's full stdout/stderr as the job server stored it."""
    status, body = dashboard_get(head, f"/api/jobs/{submission_id}/logs")
    if status != 200:
        raise LookupError(f"logs of job {submission_id!r}: HTTP {status} {body!r}")
    return body["logs"]


# ---------------------------------------------------------------------------------------------
# Stopping: by PID, only what this head started
# ---------------------------------------------------------------------------------------------
def _process_table() -> dict[int, tuple[int, int, str, int]]:
    """pid -> (parent pid, process group, state letter, start time in clock ticks), from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended while we looked
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (command) "
        table[int(entry.name)] = (int(fields[1]), int(fields[2]), fields[0], int(fields[19]))
    return table


def head_processes(head: RayHead) -> dict[int, int]:
    """Live processes of the head, pid -> start time: its process group (everything `ray start`
    spawned) and their descendants in other sessions (job drivers start a session of their own)."""
    table = _process_table()
    group = head.process.pid  # a PID is not reused while a process group of that number exists
    members = {pid for pid, (_, pgid, state, _) in table.items() if pgid == group and state != "Z"}
    frontier = list(members)
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _, state, _) in table.items():
            if ppid == parent and pid not in members and state != "Z":
                members.add(pid)
                frontier.append(pid)
    return {pid: table[pid][3] for pid in members}


def alive(processes: Mapping[int, int]) -> dict[int, int]:
    """Those of `processes` (pid -> start time) still running as the same process (not a reused PID)."""
    table = _process_table()
    return {
        pid: start
        for pid, start in processes.items()
        if pid in table and table[pid][3] == start and table[pid][2] != "Z"
    }


def _signal_each(processes: Mapping[int, int], signum: int) -> None:
    for pid in alive(processes):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def stop_head(head: RayHead, *, grace_s: float = 3.0) -> None:
    """Stops the head like `ray stop` does (SIGTERM, then SIGKILL after `grace_s`), but only its
    own processes, by PID; then removes its temp dir. Safe to call twice.

    Within a second of SIGTERM only `ray start` (draining the node for up to 30 s) and the GCS it
    keeps are left: a short grace is enough for a test cluster whose jobs have all ended."""
    if not head.temp_root.exists():  # stopped already: its process group number may be reused
        return
    processes = head_processes(head)
    _signal_each(processes, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while alive(processes) and time.monotonic() < deadline:
        head.process.poll()  # reaps `ray start` (our child) as soon as it exits
        time.sleep(0.2)
    processes |= head_processes(head)
    _signal_each(processes, signal.SIGKILL)
    try:
        head.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 5
    while alive(processes) and time.monotonic() < deadline:  # SIGKILL lands asynchronously
        time.sleep(0.1)
    shutil.rmtree(head.temp_root, ignore_errors=True)


class OneHeadAtATime:
    """Hands out a head of the asked auth mode, reusing the running one when the mode matches and
    stopping it first otherwise: two idle heads would share 2 cores for nothing."""

    def __init__(self) -> None:
        self.current: RayHead | None = None
        self.current_auth: AuthMode | None = None

    def get(self, auth: AuthMode) -> RayHead:
        if self.current is not None and (self.current_auth != auth or self.current.process.poll() is not None):
            self.stop()
        if self.current is None:
            self.current, self.current_auth = start_head(auth=auth), auth
        return self.current

    def stop(self) -> None:
        if self.current is not None:
            stop_head(self.current)
        self.current = self.current_auth = None
