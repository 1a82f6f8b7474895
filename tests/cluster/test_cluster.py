"""End to end on the stack of scripts/cluster-up.sh (Postgres, S3, MLflow, a Ray head and two Ray
workers with their own IP addresses): the commands of docker/README.md step 4, as `ray job submit`
from this host, with Ray's token authentication on.

Marked `cluster` (deselected by default; `make test-cluster` runs them). Needs root.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

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


def submit(cluster: Cluster, submission_id: str, command: list[str], timeout_s: float = 1500):
    """`ray job submit --working-dir . -- <command>` from the repository, as docker/README.md writes it."""
    argv = ["ray", "job", "submit", "--submission-id", submission_id, "--working-dir", ".", "--", *command]
    return subprocess.run(argv, cwd=REPO, env=cluster.client_env(), capture_output=True, text=True, timeout=timeout_s)


def with_sets(command: list[str], sets: list[str]) -> list[str]:
    return [*command, *(word for value in sets for word in ("--set", value))]


def outcome(result) -> str:
    return f"rc {result.returncode}\n{result.stdout[-5000:]}\n{result.stderr[-3000:]}"


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


def test_a_worker_node_lost_mid_sweep_leaves_every_trial_finished_once(cluster: Cluster, sweep_job: dict):
    """worker2's raylet killed by PID once a trial has checkpointed: its trials restart on
    worker1 from their S3 checkpoints; no MLflow run or Optuna trial is duplicated or left RUNNING.
    Last in this file: the cluster has one worker left afterwards."""
    name = "nodeloss"
    command = with_sets(["hwd-tune", "sweep", SWEEP_YAML], [*SWEEP_SETS, f"name={name}"])
    argv = [
        "ray",
        "job",
        "submit",
        "--no-wait",
        "--submission-id",
        "hwd-nodeloss",
        "--working-dir",
        ".",
        "--",
        *command,
    ]
    submitted = subprocess.run(argv, cwd=REPO, env=cluster.client_env(), capture_output=True, text=True, timeout=600)
    assert submitted.returncode == 0, outcome(submitted)
    client = MlflowClient(cluster.env["MLFLOW_TRACKING_URI"])
    started, deadline = time.monotonic(), time.monotonic() + 900
    while True:  # a trial has validated (and checkpointed): one trial per worker node runs at once
        assert time.monotonic() < deadline, "no trial validated within 900 s"
        runs = client.search_runs(
            [experiment.experiment_id for experiment in client.search_experiments()],
            filter_string=f"tags.`hwd.sweep` = '{name}' and tags.`hwd.job` = 'trial'",
        )
        if any("val_miou" in run.data.metrics for run in runs):
            break
        time.sleep(2)
    killed_at = time.monotonic()
    subprocess.run(["kill", "-9", str(raylet_pid(cluster, "worker2"))], check=True)
    while True:  # `ray job status` ends with "Job '<id>' succeeded" (or failed, stopped), on stderr
        status = subprocess.run(
            ["ray", "job", "status", "hwd-nodeloss"], env=cluster.client_env(), capture_output=True, text=True
        )
        ended = re.search(r"Job 'hwd-nodeloss' (succeeded|failed|stopped)", status.stdout + status.stderr)
        if ended:
            break
        assert time.monotonic() < deadline + 900, "the node-loss sweep did not end"
        time.sleep(5)
    logs = subprocess.run(
        ["ray", "job", "logs", "hwd-nodeloss"], env=cluster.client_env(), capture_output=True, text=True
    )
    assert ended.group(1) == "succeeded", logs.stdout[-5000:]

    study = optuna.load_study(study_name=name, storage=cluster.env["HWD_OPTUNA_STORAGE"])
    states = {trial.state for trial in study.trials}
    assert len(study.trials) == SWEEP_TRIALS and states <= {
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
    }
    runs = client.search_runs(
        [experiment.experiment_id for experiment in client.search_experiments()],
        filter_string=f"tags.`hwd.sweep` = '{name}' and tags.`hwd.job` = 'trial'",
    )
    assert len(runs) == SWEEP_TRIALS and {run.info.status for run in runs} == {"FINISHED"}
    assert len({run.data.tags["hwd.trial_id"] for run in runs}) == SWEEP_TRIALS
    restarts = sum(int(run.data.tags.get("hwd.trial_restarts", "0")) for run in runs)
    assert restarts >= 1  # the lost node's trials were restarted, not failed
    print(
        f"node loss: {restarts} trial restart(s); sweep {time.monotonic() - started:.1f} s wall "
        f"({time.monotonic() - killed_at:.1f} s after the kill) vs {sweep_job['wall_s']:.1f} s without"
    )
