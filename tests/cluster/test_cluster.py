"""End to end on the stack of scripts/cluster-up.sh (Postgres, S3, MLflow, a Ray head and two Ray
workers with their own IP addresses): the commands of docker/README.md step 4, as `ray job submit`
from this host, with Ray's token authentication on: a teacher, a sweep on both workers, the teacher
evaluated and distilled from through the MLflow server, a sweep whose driver is killed and resumed,
and a worker node lost mid-sweep.

Marked `cluster` (deselected by default; `make test-cluster` runs them). Needs root.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from hwd_tune.tracking import RESUME_COUNT_TAG
from tests.cluster.conftest import REPO, Cluster

# the stack starts in minutes on a busy 2-core machine, and each job takes minutes more
pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(2400)]

TEACHER_YAML = "search_spaces/train/quickstart_teacher.yaml"
SWEEP_YAML = "search_spaces/quickstart.yaml"
TEACHER_MODEL = "teacher-synthetic-deeplabv3_resnet18"
TEACHER_ITERS = 10
SWEEP_TRIALS = 4
SWEEP_ITERS = 8
# Tiny settings of both files (48 px synthetic images, a few iterations); everything else, and in
# particular output_dir: outputs (relative), is the files' own.
TINY_DATA = [
    "data.crop_size=48",
    "data.scale_range=[1.0,1.0]",
    "data.synthetic.image_size=48",
    "data.synthetic.train_samples=64",
    "data.synthetic.val_samples=8",
]
TEACHER_SETS = [
    *TINY_DATA,
    f"schedule.max_iters={TEACHER_ITERS}",
    f"schedule.val_interval={TEACHER_ITERS}",
    "schedule.batch_size=4",
    f"teacher.milestones=[{TEACHER_ITERS}]",
    "resources.cpus_per_worker=0.9",
]
SWEEP_SETS = [
    *(f"train.{value}" for value in TINY_DATA),
    f"train.teacher.source=models:/{TEACHER_MODEL}@iter-{TEACHER_ITERS}",
    f"train.schedule.max_iters={SWEEP_ITERS}",
    "train.schedule.val_interval=4",
    "train.schedule.log_interval=4",
    "train.schedule.batch_size=4",
    # one trial per worker node (each has 1 CPU), so both nodes must take trials
    "train.resources.cpus_per_worker=0.9",
    f"search.num_samples={SWEEP_TRIALS}",
    "search.max_concurrent_trials=2",
    "search.scheduler.grace_period=4",
    "search.scheduler.reduction_factor=2",
    "search.holdout.max_images=8",
    "search.baselines=[]",
    "search.final.top_k=0",
]
# the sweeps that lose their driver or a node: one trial per worker node, no second wave (time)
FAILURE_TRIALS = 2
DISTILL_ITERS = 4
# the sweep's best_config.yaml keeps SWEEP_SETS' data, teacher and resources; fewer iterations
DISTILL_SETS = [f"schedule.max_iters={DISTILL_ITERS}", f"schedule.val_interval={DISTILL_ITERS}"]
MIOU_LINE = re.compile(r"mIoU (\d+\.\d+) \(classes present\)")  # what `hwd-tune evaluate` ends with
TRACEBACK_LINE = re.compile(r"full traceback: (\S+)")  # what a failed hwd-tune command prints


def submit(
    cluster: Cluster, submission_id: str, command: list[str], timeout_s: float = 1500, wait: bool = True
) -> subprocess.CompletedProcess:
    """`ray job submit --working-dir . -- <command>` from the repository, as docker/README.md writes it
    (`--no-wait` unless `wait`)."""
    argv = ["ray", "job", "submit", *([] if wait else ["--no-wait"]), "--submission-id", submission_id]
    argv += ["--working-dir", ".", "--", *command]
    return subprocess.run(argv, cwd=REPO, env=cluster.client_env(), capture_output=True, text=True, timeout=timeout_s)


def with_sets(command: list[str], sets: list[str]) -> list[str]:
    return [*command, *(word for value in sets for word in ("--set", value))]


def with_tracebacks(text: str) -> str:
    """`text` and the tail of each run log it names (`full traceback: <path>`): the drivers run on
    the head, whose files are on this machine under the stack's folder."""
    parts = [text]
    for path in dict.fromkeys(TRACEBACK_LINE.findall(text)):
        log = Path(path)
        tail = log.read_text(errors="replace")[-8000:] if log.is_file() else "(no longer there)"
        parts.append(f"--- tail of {path} ---\n{tail}")
    return "\n".join(parts)


def outcome(result: subprocess.CompletedProcess) -> str:
    """A finished command's exit status, output tails and the run logs it names, for an assertion message."""
    return with_tracebacks(f"rc {result.returncode}\n{result.stdout[-5000:]}\n{result.stderr[-3000:]}")


def job_logs(cluster: Cluster, submission_id: str) -> str:
    """`ray job logs <id>` with the tails of the run logs it names, for an assertion message."""
    argv = ["ray", "job", "logs", submission_id]
    logs = subprocess.run(argv, env=cluster.client_env(), capture_output=True, text=True)
    return with_tracebacks(f"{logs.stdout[-5000:]}\n{logs.stderr[-2000:]}")


def wait_for_end(cluster: Cluster, submission_id: str, deadline: float) -> str:
    """succeeded, failed or stopped: what `ray job status` says at the end (on stderr)."""
    while True:
        status = subprocess.run(
            ["ray", "job", "status", submission_id], env=cluster.client_env(), capture_output=True, text=True
        )
        ended = re.search(rf"Job '{submission_id}' (?:was )?(succeeded|failed|stopped)", status.stdout + status.stderr)
        if ended:
            return ended.group(1)
        assert time.monotonic() < deadline, f"job {submission_id} did not end:\n{job_logs(cluster, submission_id)}"
        time.sleep(3)


def sweep_runs(client: MlflowClient, name: str, job: str = "trial") -> list:
    """The MLflow runs of sweep `name` with tag hwd.job = `job` (trial, sweep)."""
    return client.search_runs(
        [experiment.experiment_id for experiment in client.search_experiments()],
        filter_string=f"tags.`hwd.sweep` = '{name}' and tags.`hwd.job` = '{job}'",
    )


def wait_for_a_validation(client: MlflowClient, name: str, deadline: float, submission_id: str, cluster: Cluster):
    """Returns once a trial of sweep `name` has validated (and so checkpointed) in MLflow."""
    while not any("val_miou" in run.data.metrics for run in sweep_runs(client, name)):
        assert time.monotonic() < deadline, f"no trial validated in time:\n{job_logs(cluster, submission_id)}"
        time.sleep(2)


def assert_every_trial_ended_once(cluster: Cluster, client: MlflowClient, name: str) -> list:
    """Sweep `name` ended whole: FAILURE_TRIALS Optuna trials COMPLETE or PRUNED, one FINISHED MLflow run
    per trial id, the parent FINISHED. Returns the trial runs."""
    study = optuna.load_study(study_name=name, storage=cluster.env["HWD_OPTUNA_STORAGE"])
    states = [trial.state for trial in study.trials]
    ended = {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert len(states) == FAILURE_TRIALS and set(states) <= ended, states
    runs = sweep_runs(client, name)
    assert len(runs) == FAILURE_TRIALS and {run.info.status for run in runs} == {"FINISHED"}, [
        (run.info.run_name, run.info.status) for run in runs
    ]
    assert len({run.data.tags["hwd.trial_id"] for run in runs}) == FAILURE_TRIALS
    parents = sweep_runs(client, name, job="sweep")
    assert [run.info.status for run in parents] == ["FINISHED"]
    return runs


def working_dirs(cluster: Cluster) -> list[Path]:
    """The head's unpacked copies of the jobs' working directories."""
    return list((cluster.root / "ray" / "head").glob("ray/session_*/runtime_resources/working_dir_files/*"))


@pytest.fixture(scope="module")
def teacher(cluster: Cluster) -> str:
    """The quickstart teacher trained as a job and registered on the cluster's MLflow (S3 artifacts)."""
    result = submit(cluster, "hwd-teacher", with_sets(["hwd-tune", "train-teacher", TEACHER_YAML], TEACHER_SETS))
    assert result.returncode == 0, outcome(result)
    return f"models:/{TEACHER_MODEL}@iter-{TEACHER_ITERS}"


@pytest.fixture(scope="module")
def sweep_job(cluster: Cluster, teacher: str) -> dict:
    started = time.monotonic()
    result = submit(cluster, "hwd-sweep", with_sets(["hwd-tune", "sweep", SWEEP_YAML], SWEEP_SETS))
    assert result.returncode == 0, outcome(result)
    return {"result": result, "wall_s": time.monotonic() - started}


def s3_client(cluster: Cluster):
    """A boto3 client of the stack's S3 endpoint, with its keys."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=cluster.env["AWS_ENDPOINT_URL"],
        aws_access_key_id=cluster.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=cluster.env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )


def test_cluster_has_a_head_and_two_workers_with_their_own_addresses(cluster: Cluster):
    ips = cluster.state["node_ips"]
    assert len(set(ips.values())) == 3
    assert all(re.fullmatch(r"10\.77\.\d+\.\d+", ip) for ip in ips.values())
    print(f"cluster start: {cluster.start_s:.1f} s (stack's own timing {cluster.state['timings']})")


def test_teacher_is_registered_with_its_weights_in_s3(cluster: Cluster, teacher: str):
    client = MlflowClient(cluster.env["MLFLOW_TRACKING_URI"])
    version = client.get_model_version_by_alias(TEACHER_MODEL, f"iter-{TEACHER_ITERS}")
    assert version.source
    s3 = s3_client(cluster)
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket="mlflow-artifacts").get("Contents", [])]
    assert any(key.endswith("model.pt") for key in keys), keys[:20]


def test_sweep_job_runs_trials_on_both_workers_keeping_everything_in_the_stack(
    cluster: Cluster, sweep_job: dict, monkeypatch
):
    from ray import tune

    for key, value in cluster.env.items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    storage = cluster.env["HWD_STORAGE"]
    analysis = tune.ExperimentAnalysis(f"{storage}/quickstart/tune/quickstart")
    node_ips = {frame["node_ip"].iloc[-1] for frame in analysis.trial_dataframes.values() if len(frame)}
    assert node_ips == cluster.worker_ips, node_ips
    assert len(analysis.trials) == SWEEP_TRIALS

    # checkpoints in S3, one Ray Train run per trial
    s3 = s3_client(cluster)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket="ray-storage", Prefix="hwd-tune/quickstart/trials/")
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    trials_with_checkpoints = {key.split("/")[3] for key in keys if key.endswith("/model.pt")}
    assert len(trials_with_checkpoints) == SWEEP_TRIALS, sorted(trials_with_checkpoints)

    # the study in Postgres: every trial ended, none left running
    study = optuna.load_study(study_name="quickstart", storage=cluster.env["HWD_OPTUNA_STORAGE"])
    states = [trial.state for trial in study.trials]
    assert len(states) == SWEEP_TRIALS
    assert optuna.trial.TrialState.RUNNING not in states

    # runs and artifacts in MLflow: the parent, one child per trial, none left RUNNING
    client = MlflowClient(cluster.env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs(
        [experiment.experiment_id for experiment in client.search_experiments()],
        filter_string="tags.`hwd.sweep` = 'quickstart'",
    )
    parents = [run for run in runs if run.data.tags.get("hwd.job") == "sweep"]
    children = [run for run in runs if run.data.tags.get("hwd.job") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == SWEEP_TRIALS
    assert {run.info.status for run in children} <= {"FINISHED"}
    assert client.list_artifacts(parents[0].info.run_id)

    # nothing written into the job's working directory; the driver's files under HWD_OUTPUT_DIR
    for folder in working_dirs(cluster):
        assert not (folder / "outputs").exists() and not list(folder.glob("*.db")), folder
    assert (cluster.root / "outputs" / "outputs" / "quickstart").is_dir()
    print(f"sweep on the cluster: {sweep_job['wall_s']:.1f} s wall time")


def raylet_pid(cluster: Cluster, node: str) -> int:
    """The PID of the raylet of `node` (a process in its network namespace)."""
    namespace = f"hwd{cluster.state['tag']}-{node}"
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, check=True).stdout.split()
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if command.endswith(b"/raylet"):
            return int(pid)
    raise AssertionError(f"no raylet among the processes of {namespace}: {pids}")


def mlflow_metric(client: MlflowClient, run_id: str, key: str, step: int) -> float:
    values = [metric.value for metric in client.get_metric_history(run_id, key) if metric.step == step]
    assert values, f"run {run_id} logged no {key} at step {step}"
    return values[-1]


def test_evaluate_downloads_the_registered_teacher_through_the_mlflow_server(cluster: Cluster, teacher: str, tmp_path):
    """`hwd-tune evaluate models:/…@iter-10` as a job on the head, and on this host with no S3 keys at
    all (so the files can only come through the MLflow server): both print the mIoU the teacher's
    run logged at that iteration, on the same 8 validation images."""
    client = MlflowClient(cluster.env["MLFLOW_TRACKING_URI"])
    version = client.get_model_version_by_alias(TEACHER_MODEL, f"iter-{TEACHER_ITERS}")
    assert version.source.startswith("mlflow-artifacts:/"), version.source  # served by the server, not s3://
    logged = mlflow_metric(client, version.run_id, "val_miou", TEACHER_ITERS)
    command = ["hwd-tune", "evaluate", teacher, "--data", "synthetic"]

    started = time.monotonic()
    job = submit(cluster, "hwd-evaluate", command, timeout_s=600)
    job_s = time.monotonic() - started
    assert job.returncode == 0, outcome(job)
    no_s3_keys = {key: value for key, value in cluster.client_env().items() if not key.startswith("AWS_")}
    started = time.monotonic()
    here = subprocess.run(command, cwd=tmp_path, env=no_s3_keys, capture_output=True, text=True, timeout=600)
    here_s = time.monotonic() - started
    assert here.returncode == 0, outcome(here)

    printed = [float(MIOU_LINE.search(result.stdout).group(1)) for result in (job, here)]
    assert printed[0] == printed[1] == pytest.approx(logged, abs=0.005), (printed, logged)
    assert 0.0 <= logged <= 100.0
    print(f"evaluate {teacher}: mIoU {printed[0]:.2f} (logged {logged:.4f}); job {job_s:.1f} s, host {here_s:.1f} s")


def test_distill_of_the_sweeps_best_config_tracks_the_run_and_its_artifacts_in_s3(
    cluster: Cluster, teacher: str, sweep_job: dict
):
    """`hwd-tune distill <HWD_OUTPUT_DIR>/outputs/quickstart/best_config.yaml` (the sweep's answer, on
    the head) as a job: its worker downloads the teacher through the MLflow server; the run ends
    FINISHED with the teacher source recorded, its best checkpoint objects in S3."""
    # HWD_OUTPUT_DIR is root/outputs on the head; the sweep file's relative output_dir is outputs
    best_config = cluster.root / "outputs" / "outputs" / "quickstart" / "best_config.yaml"
    assert best_config.is_file(), list(best_config.parent.iterdir())
    started = time.monotonic()
    result = submit(cluster, "hwd-distill", with_sets(["hwd-tune", "distill", str(best_config)], DISTILL_SETS))
    wall_s = time.monotonic() - started
    assert result.returncode == 0, outcome(result)

    client = MlflowClient(cluster.env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs(
        [experiment.experiment_id for experiment in client.search_experiments()],
        filter_string="tags.`hwd.job` = 'distill'",
    )
    assert len(runs) == 1, [run.info.run_name for run in runs]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["teacher"] == teacher and run.data.params["teacher.source"] == teacher
    assert 0.0 <= mlflow_metric(client, run.info.run_id, "val_miou", DISTILL_ITERS) <= 100.0
    s3 = s3_client(cluster)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket="mlflow-artifacts")
    keys = [item["Key"] for page in pages for item in page.get("Contents", []) if run.info.run_id in item["Key"]]
    assert any(key.endswith("best_checkpoint/model.pt") for key in keys), keys
    print(f"distill from {teacher} ({DISTILL_ITERS} iterations) as a job: {wall_s:.1f} s wall")


def sweep_command(name: str) -> list[str]:
    """The small sweep of SWEEP_SETS with FAILURE_TRIALS trials under its own name (its own study, runs
    and Tune folder)."""
    return with_sets(
        ["hwd-tune", "sweep", SWEEP_YAML], [*SWEEP_SETS, f"search.num_samples={FAILURE_TRIALS}", f"name={name}"]
    )


def driver_pids(cluster: Cluster, name: str) -> list[int]:
    """PIDs of the `hwd-tune sweep … name=<name>` driver in the head's namespace (not its shell)."""
    namespace = f"hwd{cluster.state['tag']}-head"
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, check=True).stdout.split()
    found = []
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        shell = Path(argv[0]).name in ("sh", "bash", "dash")
        if not shell and any(Path(word).name == "hwd-tune" for word in argv) and f"name={name}" in argv:
            found.append(int(pid))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").is_dir() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def test_a_killed_sweep_driver_is_resumed_by_a_new_job_to_every_trial_once(cluster: Cluster, sweep_job: dict):
    """The sweep's driver on the head stopped (`ray job stop`, then `kill -9` at once) after a trial
    validated; `hwd-tune sweep … --resume` as a new job finishes it from the same S3 storage and
    Postgres study: every trial ends once, nothing is left RUNNING."""
    name = "driverkill"
    started = time.monotonic()
    submitted = submit(cluster, "hwd-driverkill", sweep_command(name), timeout_s=600, wait=False)
    assert submitted.returncode == 0, outcome(submitted)
    client = MlflowClient(cluster.env["MLFLOW_TRACKING_URI"])
    wait_for_a_validation(client, name, time.monotonic() + 900, "hwd-driverkill", cluster)
    drivers = driver_pids(cluster, name)
    assert drivers, f"no driver process of sweep {name} on the head:\n{job_logs(cluster, 'hwd-driverkill')}"
    before = {run.data.tags["hwd.trial_id"]: dict(run.data.metrics) for run in sweep_runs(client, name)}
    argv = ["ray", "job", "stop", "--no-wait", "hwd-driverkill"]
    stopped = subprocess.run(argv, env=cluster.client_env(), capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0, outcome(stopped)
    time.sleep(0.5)
    hard_killed = [pid for pid in drivers if alive(pid)]
    for pid in hard_killed:
        os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    assert wait_for_end(cluster, "hwd-driverkill", time.monotonic() + 300) == "stopped"

    resumed = submit(cluster, "hwd-driverkill-resume", [*sweep_command(name), "--resume"])
    assert resumed.returncode == 0, outcome(resumed)

    runs = assert_every_trial_ended_once(cluster, client, name)
    resumed_trials = {run.data.tags["hwd.trial_id"] for run in runs if run.data.tags.get(RESUME_COUNT_TAG)}
    assert resumed_trials and resumed_trials <= set(before), (resumed_trials, before)  # continued, not new
    validations = sum(len(client.get_metric_history(run.info.run_id, "val_miou")) for run in runs)
    steps = sum(len({m.step for m in client.get_metric_history(run.info.run_id, "val_miou")}) for run in runs)
    at_kill = {trial: int(metrics.get("iteration", 0)) for trial, metrics in before.items()}
    print(
        f"driver kill: {len(hard_killed)} driver(s) still alive 0.5 s after `ray job stop`, killed with -9; "
        f"last logged iteration of the trials at the kill {at_kill}, {len(resumed_trials)} resumed; "
        f"{validations - steps} validation(s) repeated; sweep {time.monotonic() - started:.1f} s wall "
        f"({time.monotonic() - killed_at:.1f} s from the kill to the resumed end) vs {sweep_job['wall_s']:.1f} s"
    )


def test_a_worker_node_lost_mid_sweep_leaves_every_trial_finished_once(cluster: Cluster, sweep_job: dict):
    """worker2's raylet killed by PID once a trial has checkpointed: its trials restart on
    worker1 from their S3 checkpoints; no MLflow run or Optuna trial is duplicated or left RUNNING.
    Last in this file: the cluster has one worker left afterwards."""
    name = "nodeloss"
    submitted = submit(cluster, "hwd-nodeloss", sweep_command(name), timeout_s=600, wait=False)
    assert submitted.returncode == 0, outcome(submitted)
    client = MlflowClient(cluster.env["MLFLOW_TRACKING_URI"])
    started = time.monotonic()
    # a trial has validated (and checkpointed): one trial per worker node runs at once
    wait_for_a_validation(client, name, started + 900, "hwd-nodeloss", cluster)
    killed_at = time.monotonic()
    subprocess.run(["kill", "-9", str(raylet_pid(cluster, "worker2"))], check=True)
    ended = wait_for_end(cluster, "hwd-nodeloss", killed_at + 900)
    assert ended == "succeeded", job_logs(cluster, "hwd-nodeloss")

    runs = assert_every_trial_ended_once(cluster, client, name)
    restarts = sum(int(run.data.tags.get("hwd.trial_restarts", "0")) for run in runs)
    assert restarts >= 1  # the lost node's trials were restarted, not failed
    print(
        f"node loss: {restarts} trial restart(s); sweep {time.monotonic() - started:.1f} s wall "
        f"({time.monotonic() - killed_at:.1f} s after the kill) vs {sweep_job['wall_s']:.1f} s without"
    )
