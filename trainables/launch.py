"""Runs the training loop as a Ray Train job: resource plan, run naming, MLflow run, TorchTrainer.

`run_training(config)` is what `hwd-tune train-teacher` / `hwd-tune distill` call; the sweep
service builds the same `TorchTrainer` through `build_trainer` inside each Tune trial.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig

from hwd_tune.config import HoldoutConfig, TrainConfig
from hwd_tune.console import active_board
from hwd_tune.data.from_config import info_from_config
from hwd_tune.storage import join, ray_storage_root
from trainables.checkpointing import MANIFEST_FILE, META_FILE, MODEL_FILE, checkpoint_problems
from trainables.checks import before_start, check_before_start
from trainables.loop import train_loop_per_worker
from trainables.trainer import SegmentationTrainer

RAY_FOLDER = "ray"  # under the Ray storage root: one folder per training run (named by run_name)
# Fields that do not change what is trained: a re-run that differs only in these resumes.
_NOT_IN_RUN_KEY = ("name", "resources", "tracking", "output_dir", "storage")


def run_key(config: TrainConfig) -> str:
    """Short hash of everything that defines the trained model (not where or how wide it runs)."""
    content = config.model_dump(mode="json", exclude=set(_NOT_IN_RUN_KEY))
    if config.data.holdout == HoldoutConfig():  # off: the key of runs made before data.holdout existed
        del content["data"]["holdout"]
    content["data"].pop("check_samples", None)  # how much the data check reads, not what is trained
    if config.data.folder is None:  # not a folder dataset: the key runs had before the field existed
        del content["data"]["folder"]
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:10]


def run_name(config: TrainConfig) -> str:
    """The configured name, or `<job>-<dataset>-<student>-<method>-<hash>` so re-runs resume."""
    if config.name:
        return config.name
    return f"{config.job}-{config.data.name}-{config.student.arch}-{config.method.name}-{run_key(config)}"


@dataclass(frozen=True)
class ResourcePlan:
    """What one training run reserves from the Ray cluster."""

    num_workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    batch_per_worker: int

    @property
    def cpus(self) -> float:
        return self.num_workers * self.cpus_per_worker

    @property
    def gpus(self) -> float:
        return self.num_workers * self.gpus_per_worker

    def describe(self) -> str:
        device = f"{self.gpus_per_worker:g} GPU" if self.gpus_per_worker else "CPU only, gloo"
        return (
            f"{self.num_workers} worker(s) x ({self.cpus_per_worker:g} CPU, {device}), "
            f"batch {self.batch_per_worker} per worker; reserves {self.cpus:g} CPU, {self.gpus:g} GPU"
        )


def resource_plan(config: TrainConfig) -> ResourcePlan:
    """The resource plan of `config` (validated against the cluster by `check_fits`)."""
    resources = config.resources
    return ResourcePlan(
        num_workers=resources.num_workers,
        cpus_per_worker=resources.cpus_per_worker,
        gpus_per_worker=resources.gpus_per_worker,
        batch_per_worker=config.schedule.batch_size // resources.num_workers,
    )


def check_fits(plan: ResourcePlan, available: dict[str, float]) -> None:
    """Raises ValueError naming the resources fields when the cluster cannot host the run
    (Ray would otherwise wait forever for resources that never come)."""
    cpus, gpus = available.get("CPU", 0.0), available.get("GPU", 0.0)
    if plan.cpus > cpus + 1e-9:
        raise ValueError(
            f"resources: {plan.num_workers} workers x cpus_per_worker {plan.cpus_per_worker:g} = "
            f"{plan.cpus:g} CPUs, but the Ray cluster has {cpus:g}; lower resources.num_workers or "
            "resources.cpus_per_worker (fractions such as 0.5 are allowed)"
        )
    if plan.gpus > gpus + 1e-9:
        raise ValueError(
            f"resources: {plan.num_workers} workers x gpus_per_worker {plan.gpus_per_worker:g} = "
            f"{plan.gpus:g} GPUs, but the Ray cluster has {gpus:g}"
        )


def preflight(config: TrainConfig, tracking_uri: str | None) -> None:
    """Checks that would otherwise fail inside the workers, before the run is created: those of
    `check_before_start`, then a teacher in MLflow downloaded (into teacher_cache, once per node)
    and loaded against the dataset's class count."""
    from hwd_tune import tracking
    from trainables.loop import build_teacher, resolve_teacher_weights

    check_before_start(config, tracking_uri=tracking_uri)
    if config.method.name != "none" and tracking.is_mlflow_source(config.teacher.source):
        weights = resolve_teacher_weights(config, tracking_uri)
        build_teacher(config, info_from_config(config.data).num_classes, weights, device=torch.device("cpu"))


def pinned_to_driver(config: TrainConfig, tracking_uri: str) -> TrainConfig:
    """`config` with the driver's tracking URI, an absolute output_dir and Ray storage (none is in
    the run key), so a Tune trial actor, whose working directory is its own trial folder, logs and
    checkpoints where the driver looks."""
    return config.model_copy(
        update={
            "output_dir": str(Path(config.output_dir).resolve()),
            "storage": ray_storage_root(config.storage, config.output_dir),
            "tracking": config.tracking.model_copy(update={"uri": tracking_uri}),
        }
    )


def build_trainer(
    config: TrainConfig,
    *,
    tracking_uri: str | None,
    mlflow_run_id: str | None,
    storage_path: str | Path | None = None,
    extra_loop_config: dict[str, Any] | None = None,
) -> SegmentationTrainer:
    """A TorchTrainer over the one loop; same name + storage = resume from the latest checkpoint.

    `storage_path` (a folder or URI) defaults to `<storage>/ray`, `storage` being config.storage
    or the output folder; Ray opens s3:// and gs:// URIs with pyarrow's filesystems."""
    plan = resource_plan(config)
    use_gpu = plan.gpus_per_worker > 0
    storage = storage_path or join(ray_storage_root(config.storage, config.output_dir), RAY_FOLDER)
    loop_config = {
        "train": config.model_dump(mode="json"),
        "tracking_uri": tracking_uri,
        "mlflow_run_id": mlflow_run_id,
        **(extra_loop_config or {}),
    }
    return SegmentationTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=plan.num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": plan.cpus_per_worker, **({"GPU": plan.gpus_per_worker} if use_gpu else {})},
        ),
        run_config=RunConfig(
            name=run_name(config),
            storage_path=ray_storage_root(str(storage), config.output_dir),
            failure_config=FailureConfig(max_failures=config.resources.max_failures),
            # The latest checkpoint is always kept too, so this keeps "the best and the latest".
            checkpoint_config=CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute="val_miou", checkpoint_score_order="max"
            ),
        ),
    )


def failed_by_training_code(error: BaseException) -> bool:
    """Whether a Train run failed by an error of the training code (a restart would repeat it), not
    because a worker's process or node was lost (a restart from the checkpoint goes on).

    As in Ray Train's own failure policy, one lost worker makes the whole failure a loss: the
    surviving ranks then fail with collateral errors (collective aborts, connection resets)."""
    from ray.exceptions import RayActorError
    from ray.train.v2._internal.exceptions import WorkerHealthCheckFailedError
    from ray.train.v2.api.exceptions import WorkerGroupError

    if not isinstance(error, WorkerGroupError):
        return False
    lost = (RayActorError, WorkerHealthCheckFailedError)
    return not any(isinstance(failure, lost) for failure in error.worker_failures.values())


def connect_ray(address: str | None) -> None:
    """Joins the cluster at `address` ('auto', an IP:port, ray://...) or RAY_ADDRESS, else starts
    a local Ray on this machine's cores; says which on the command's board."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        context = ray.init(address=address)
        gcs_address = (getattr(context, "address_info", None) or {}).get("gcs_address", address)  # ray://: none
        where = f"Connecting to existing Ray cluster at address: {gcs_address}"
    else:
        context = start_local_ray()
        where = "Started a local Ray instance"
    # Ray's own lines go to the run log: the screen says where the command runs (as Ray words it)
    dashboard = getattr(context, "dashboard_url", None)
    active_board().message(f"Ray: {where}" + (f"; dashboard at http://{dashboard}" if dashboard else ""))


@contextmanager
def ray_connection(address: str | None) -> Iterator[None]:
    """`connect_ray(address)` for the block; a Ray it started or joined is left at the block's end
    (a local one stops), so Ray's last lines still reach the command's run log. A Ray that was
    already up (a test session's) is used and left running."""
    if ray.is_initialized():
        yield
        return
    connect_ray(address)
    try:
        yield
    finally:
        ray.shutdown()


def start_local_ray(**init_options: Any) -> Any:
    """Starts a new local Ray instance (never joins an unrelated one found on the machine).

    Its dashboard listens on 127.0.0.1 and every Ray process is told its address through
    RAY_API_SERVER_ADDRESS: Ray Train's PlacementGroupCleaner asks the State API whether a
    trial's controller died (e.g. stopped by ASHA), and when several Ray instances run on one
    machine its auto-detection fails, so stopped trials would keep their workers' CPUs and the
    next trials would wait forever.

    Ray Train's settings for a cluster are costly on a laptop: nothing drains a local node, so
    its preemption watcher (an actor per training run) only takes a process, and a controller
    that checks its workers every 0.5 s rather than 2 s notices a finished run sooner. Set for
    the driver (Ray Train passes them on to its controller and workers); a user's own values win.
    """
    # setdefault: a user's own RAY_TRAIN_* values win over these one-machine ones (see above)
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"  # inherited by the raylet
    return ray.init(
        address="local", dashboard_host="127.0.0.1", dashboard_port=port, configure_logging=False, **init_options
    )


def run_training(
    config: TrainConfig,
    *,
    parent_run_id: str | None = None,
    extra_loop_config: dict[str, Any] | None = None,
    progress: bool = False,
    tags: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Runs (or resumes) one training job to the end; returns its final metrics and MLflow run id.

    Ray must be initialised by the caller. The MLflow run is created by the driver (or found
    again on resume, by run name) and logged to by rank 0; `tags` are added to its tags (e.g. a
    reproduction plan's cell). With `progress`, the run is a line of the command's board.
    """
    from hwd_tune import tracking
    from trainables.progress import ProgressMonitor

    tracking_uri = tracking.resolve_tracking_uri(config.tracking.uri, config.output_dir)
    with before_start():
        check_fits(resource_plan(config), ray.cluster_resources())
        preflight(config, tracking_uri)
    name = run_name(config)
    earlier = tracking.find_runs(tracking_uri, config.tracking.experiment, {tracking.RUN_KEY_TAG: name}, max_results=1)
    was_finished = bool(earlier) and earlier[0].status == "FINISHED"
    run_id = tracking.start_run(
        tracking_uri=tracking_uri,
        experiment=config.tracking.experiment,
        run_key=name,
        run_name=name,
        tags={"hwd.job": config.job, "hwd.method": config.method.name, **(tags or {})},
        parent_run_id=parent_run_id,
    )
    logger = tracking.RunLogger(tracking_uri, run_id)
    logger.log_params(tracking.flatten_params(config.model_dump(mode="json")))
    logger.log_system_facts()
    trainer = build_trainer(
        config, tracking_uri=tracking_uri, mlflow_run_id=run_id, extra_loop_config=extra_loop_config
    )
    monitor = (
        ProgressMonitor(
            tracking_uri,
            run_id,
            config.schedule.max_iters,
            label="teacher" if config.job == "teacher" else config.method.name,
            params={name: value for name, value in config.method.params.items() if name in ("tau", "mu", "beta")},
        )
        if progress
        else nullcontext()
    )
    try:
        with monitor:
            result = trainer.fit()
    except BaseException as error:
        if was_finished:  # what it trained before stays valid: the run stays FINISHED, the failure is noted
            logger.set_tags({"hwd.rerun_failure": _reason(error)})
            logger.finish("FINISHED")
        else:
            logger.finish("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED", reason=_reason(error))
        raise
    best, skipped = best_whole_checkpoint(result)
    if skipped:
        logger.set_tags({"hwd.best_checkpoint_note": " | ".join(skipped)})
    if best is not None:
        publish_best(config, tracking_uri, run_id, logger, best, register_student=parent_run_id is None)
    logger.finish("FINISHED")
    return {
        "run_id": run_id,
        "run_name": name,
        "metrics": dict(result.metrics or {}),
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "best_checkpoints": [(c.path, m) for c, m in (result.best_checkpoints or [])],
        "tracking_uri": tracking_uri,
    }


def best_whole_checkpoint(result: Any) -> tuple[Path | None, list[str]]:
    """Local directory (downloaded from remote storage) of the run's best checkpoint by val_miou that
    verifies (Ray keeps the best and the latest), and what was skipped as damaged (each naming its file)."""
    scored = sorted(
        ((metrics.get("val_miou", float("-inf")), checkpoint) for checkpoint, metrics in result.best_checkpoints or []),
        key=lambda pair: pair[0],
        reverse=True,
    )
    skipped = []
    for _, checkpoint in scored:
        folder = local_checkpoint(checkpoint)
        problems = checkpoint_problems(folder)
        if not problems:
            return folder, skipped
        skipped.append(f"best checkpoint {checkpoint.path} skipped: " + "; ".join(problems))
    return None, skipped


def local_checkpoint(checkpoint: Any) -> Path:
    """The folder of a Ray checkpoint on this machine: itself when Ray's storage is local, else a
    download into a temporary folder (s3://, gs://)."""
    if checkpoint.filesystem.type_name == "local":
        return Path(checkpoint.path)
    return Path(checkpoint.to_directory())


def publish_best(
    config: TrainConfig, tracking_uri: str, run_id: str, logger: Any, best: Path, *, register_student: bool = True
) -> None:
    """Logs the best weights (model.pt + meta.json, not the optimiser state) on the run; for a
    teacher sets the registry alias "best" on a version holding them, and for a distilled student
    (`register_student`: a run of its own, not a sweep's or a plan's, whose winner is registered
    there) the alias "best-<method>" on a student version, an MLflow model returning class maps."""
    from hwd_tune import tracking

    with tempfile.TemporaryDirectory() as temporary:
        for name in (MODEL_FILE, META_FILE, MANIFEST_FILE):  # verified by best_whole_checkpoint
            if (best / name).is_file():  # checkpoints written before manifests have none
                shutil.copy2(best / name, Path(temporary) / name)
        logger.log_artifact_dir(temporary, "best_checkpoint")
        if config.job == "teacher":
            tracking.register_teacher(
                tracking_uri=tracking_uri,
                run_id=run_id,
                checkpoint_dir=temporary,
                dataset=config.data.name,
                arch=config.student.arch,
                aliases=["best"],
            )
        elif config.job == "distill" and register_student:
            try:
                tracking.register_student(
                    tracking_uri=tracking_uri,
                    run_id=run_id,
                    checkpoint_dir=temporary,
                    aliases=[tracking.best_alias(config.method.name)],
                )
            except Exception as error:  # noqa: BLE001 - the trained run stands; its weights are logged above
                logger.set_tags({"hwd.student_registration_failure": _reason(error)})


def _reason(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) < 2000 else text[:1997] + "..."
