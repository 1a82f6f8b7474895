"""`ray job submit` end to end: hwd-tune commands as jobs on a local `ray start --head` cluster,
with Ray's token authentication on (its default once a token exists) and explicitly disabled.

Each head is private to these tests (own ports, temp dir, process group) and runs beside the
session's `ray_local`; at most one head runs at a time (`OneHeadAtATime`).
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from mlflow import MlflowClient

from hwd_tune.cli import app
from hwd_tune.tracking import default_tracking_uri
from tests.ray_cluster import (
    OneHeadAtATime,
    RayHead,
    alive,
    dashboard_get,
    head_processes,
    job_logs,
    job_record,
    submit_job,
)

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
TEACHER_YAML = "search_spaces/train/quickstart_teacher.yaml"
SWEEP_YAML = "search_spaces/quickstart.yaml"
TEACHER_NAME = "teacher-synthetic-deeplabv3_resnet18"
TEACHER_ITERS = 10
# `hwd-tune train-teacher`'s last lines (rich wraps them at 80 columns: any whitespace between words).
DONE_LINE = re.compile(
    r"done\s+(?P<run_name>\S+):\s+val_miou\s+(?P<val_miou>[\d.]+),\s+best\s+(?P<best>[\d.]+)\s+"
    r"\(MLflow\s+run\s+(?P<run_id>[0-9a-f]{32})\)"
)
# What ray.init prints when it joins a running cluster instead of starting one.
JOINED_LINE = re.compile(r"Connecting to existing Ray cluster at address: (?P<host>[\w.\-]+):(?P<port>\d+)")
STARTED_LOCAL = "Started a local Ray instance"
# A job that joins the cluster through hwd-tune's connect_ray (no --address: RAY_ADDRESS set by
# Ray inside the job) and prints where it landed.
PROBE = """
import json, os, ray
from trainables.launch import connect_ray
connect_ray(None)
context = ray.get_runtime_context()
print("PROBE " + json.dumps({"gcs_address": context.gcs_address, "job_id": context.get_job_id(),
      "ray_address": os.environ.get("RAY_ADDRESS"), "cpus": ray.cluster_resources().get("CPU")}))
"""


def teacher_command(output_dir: Path) -> list[str]:
    """The quickstart teacher, cut to TEACHER_ITERS iterations with one validation and one milestone."""
    return [
        "hwd-tune",
        "train-teacher",
        TEACHER_YAML,
        "--set",
        f"schedule.max_iters={TEACHER_ITERS}",
        "--set",
        f"schedule.val_interval={TEACHER_ITERS}",
        "--set",
        f"teacher.milestones=[{TEACHER_ITERS}]",
        "--set",
        f"output_dir={output_dir}",
    ]


def new_submission_id(label: str) -> str:
    return f"hwd-{label}-{secrets.token_hex(4)}"


def outcome_text(result) -> str:
    """The end of a `ray job submit` run's output, for assertion messages."""
    return f"rc {result.returncode}\nstdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"


def has_command(name: str) -> bool:
    return name in typer.main.get_command(app).commands


@dataclass(frozen=True)
class FinishedJob:
    """A job submitted and waited for, with what the head recorded while it was still up."""

    head: RayHead
    submission_id: str
    output_dir: Path
    result: Any  # subprocess.CompletedProcess of `ray job submit`
    record: dict[str, Any]
    logs: str


@pytest.fixture(scope="module")
def heads(ray_local):
    """One private head at a time, beside the session's own Ray (hence `ray_local`)."""
    pool = OneHeadAtATime()
    yield pool
    pool.stop()


@pytest.fixture(scope="module")
def teacher_job(heads, tmp_path_factory) -> FinishedJob:
    """The README's command with the token: `ray job submit --address http://127.0.0.1:<port>`,
    the job itself joining with `hwd-tune ... --address auto`."""
    head = heads.get("token")
    output_dir = tmp_path_factory.mktemp("teacher-job")
    submission_id = new_submission_id("teacher")
    result = submit_job(
        head,
        [*teacher_command(output_dir), "--address", "auto"],
        env=head.client_env(),
        address=head.dashboard_url,
        working_dir=REPO_ROOT,
        submission_id=submission_id,
    )
    return FinishedJob(
        head, submission_id, output_dir, result, job_record(head, submission_id), job_logs(head, submission_id)
    )


def test_token_head_refuses_jobs_without_the_token_or_with_a_wrong_one(heads, tmp_path):
    head = heads.get("token")
    # Ray's default: a token exists (RAY_AUTH_TOKEN_PATH) and RAY_AUTH_MODE is unset -> token auth.
    assert dashboard_get(head, "/api/authentication_mode", authenticated=False) == (
        200,
        {"authentication_mode": "token"},
    )
    submission_id = new_submission_id("refused")
    result = submit_job(
        head,
        ["python", "-c", "print('never runs')"],
        env=head.client_env(with_token=False),
        address=head.dashboard_url,
        working_dir=tmp_path,
        submission_id=submission_id,
        timeout_s=60,
    )
    assert result.returncode == 1, outcome_text(result)
    assert "Authentication required: Unauthorized: Missing authentication token" in result.stdout + result.stderr
    assert dashboard_get(head, "/api/jobs/", authenticated=False)[0] == 401
    wrong = dataclasses.replace(head, token_file=tmp_path / "wrong_token")
    wrong.token_file.write_text("0" * 64)
    assert dashboard_get(wrong, "/api/jobs/")[0] == 403
    status, jobs = dashboard_get(head, "/api/jobs/")
    assert status == 200 and submission_id not in {job["submission_id"] for job in jobs}


def test_teacher_job_joins_the_head_and_tracks_its_run(teacher_job):
    head, result, logs = teacher_job.head, teacher_job.result, teacher_job.logs
    assert result.returncode == 0, outcome_text(result)
    assert f"Job '{teacher_job.submission_id}' succeeded" in result.stdout
    assert teacher_job.record["status"] == "SUCCEEDED", teacher_job.record
    assert teacher_job.record["entrypoint"].startswith(f"hwd-tune train-teacher {TEACHER_YAML}")
    # The job joined this head (its GCS port, its dashboard) rather than starting a Ray of its own.
    joined = JOINED_LINE.search(logs)
    assert joined is not None and int(joined["port"]) == head.gcs_port, logs[-3000:]
    assert head.dashboard_url in logs and STARTED_LOCAL not in logs
    done = DONE_LINE.search(logs)
    assert done is not None, logs[-3000:]
    assert done["run_name"].startswith(f"{TEACHER_NAME}-none-")

    tracking_uri = default_tracking_uri(teacher_job.output_dir)
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    run = client.get_run(done["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == done["run_name"]
    assert run.data.params["max_iters"] == str(TEACHER_ITERS)
    history = client.get_metric_history(done["run_id"], "val_miou")
    assert [metric.step for metric in history] == [TEACHER_ITERS]
    assert f"{history[0].value:.2f}" == done["val_miou"] == done["best"]
    model = client.get_registered_model(TEACHER_NAME)
    assert {f"iter-{TEACHER_ITERS}", "best"} <= set(model.aliases)
    for alias in (f"iter-{TEACHER_ITERS}", "best"):
        assert client.get_model_version_by_alias(TEACHER_NAME, alias).run_id == done["run_id"]


@pytest.mark.parametrize("address_source", ["RAY_ADDRESS", "--address auto"])
def test_job_submit_finds_an_open_head_through(address_source, heads):
    head = heads.get("disabled")
    assert dashboard_get(head, "/api/authentication_mode", authenticated=False) == (
        200,
        {"authentication_mode": "disabled"},
    )
    if address_source == "RAY_ADDRESS":
        env, address = head.client_env(RAY_ADDRESS=head.dashboard_url), None
    else:  # "auto": the head that `ray start` last wrote into <RAY_TMPDIR>/ray/ray_current_cluster
        env, address = head.client_env(RAY_TMPDIR=str(head.temp_root)), "auto"
    submission_id = new_submission_id("probe")
    result = submit_job(
        head,
        ["python", "-c", PROBE],
        env=env,
        address=address,
        working_dir=REPO_ROOT,
        submission_id=submission_id,
        timeout_s=120,
    )
    assert result.returncode == 0, outcome_text(result)
    record = job_record(head, submission_id)  # found on this head's job server: submitted there
    assert record["status"] == "SUCCEEDED", record
    probe_lines = [line for line in job_logs(head, submission_id).splitlines() if line.startswith("PROBE ")]
    assert len(probe_lines) == 1, outcome_text(result)
    probe = json.loads(probe_lines[0].removeprefix("PROBE "))
    # connect_ray joined through the RAY_ADDRESS that Ray sets in the job: the same driver job.
    assert probe["ray_address"].endswith(f":{head.gcs_port}")
    assert probe["gcs_address"].endswith(f":{head.gcs_port}")
    assert probe["job_id"] == record["job_id"]
    assert probe["cpus"] == 2.0


@pytest.mark.skipif(not has_command("sweep"), reason="`hwd-tune sweep` is not in the CLI yet")
def test_quickstart_sweep_job_on_an_open_head(heads, teacher_job):
    assert teacher_job.record["status"] == "SUCCEEDED", "the sweep distils from the teacher job's registry"
    head = heads.get("disabled")
    submission_id = new_submission_id("sweep")
    command = [
        "hwd-tune",
        "sweep",
        SWEEP_YAML,
        "--set",
        f"train.output_dir={teacher_job.output_dir}",
        "--set",
        "search.num_samples=2",
        "--set",
        "search.baselines=[]",
        "--set",
        "search.final.top_k=0",  # the job submission is under test here, not the final stage
        "--set",
        f"train.schedule.max_iters={TEACHER_ITERS}",
        "--set",
        "train.schedule.val_interval=5",
        "--set",
        "train.schedule.log_interval=5",
        "--set",
        f"search.scheduler.grace_period={TEACHER_ITERS}",  # ASHA on, but no trial stopped early
    ]
    result = submit_job(
        head,
        command,
        env=head.client_env(RAY_ADDRESS=head.dashboard_url),
        address=None,
        working_dir=REPO_ROOT,
        submission_id=submission_id,
        timeout_s=300,
    )
    assert result.returncode == 0, outcome_text(result)
    assert job_record(head, submission_id)["status"] == "SUCCEEDED"
    logs = job_logs(head, submission_id)
    joined = JOINED_LINE.search(logs)
    assert joined is not None and int(joined["port"]) == head.gcs_port and STARTED_LOCAL not in logs

    client = MlflowClient(default_tracking_uri(teacher_job.output_dir))
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    sweeps = client.search_runs(experiments, "tags.`hwd.job` = 'sweep'")
    assert [(run.info.run_name, run.info.status) for run in sweeps] == [("quickstart", "FINISHED")]
    trials = client.search_runs(experiments, f"tags.`mlflow.parentRunId` = '{sweeps[0].info.run_id}'")
    assert len(trials) == 2 and {trial.info.status for trial in trials} == {"FINISHED"}
    # the first trial is the YAML's points_to_evaluate (Table I); each validated at 5 and 10
    first = [trial for trial in trials if trial.data.params["tau"] == "4.0"]
    assert len(first) == 1 and (first[0].data.params["mu"], first[0].data.params["beta"]) == ("0.0", "0.1")
    for trial in trials:
        history = client.get_metric_history(trial.info.run_id, "val_miou")
        assert [metric.step for metric in history] == [5, TEACHER_ITERS]
    assert (teacher_job.output_dir / "quickstart" / "best_config.yaml").is_file()


def test_stopping_a_head_ends_its_processes_and_leaves_the_session_ray_running(heads, ray_local):
    head = heads.get("disabled")
    processes = head_processes(head)
    assert head.process.pid in processes and len(processes) >= 5  # ray start, gcs, raylet, dashboard, ...
    heads.stop()
    assert alive(processes) == {}
    assert not head.temp_root.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", head.gcs_port), timeout=5).close()

    @ray_local.remote
    def square(value: int) -> int:
        return value * value

    assert ray_local.get([square.remote(value) for value in range(4)]) == [0, 1, 4, 9]
    assert ray_local.cluster_resources()["CPU"] == 2
