"""Runs and their keys: a job's MLflow run is found again by its tag `hwd.run_key`, so a resumed job
continues the same run; plus the tags other parts search runs by (plans, config hashes)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from mlflow.utils.validation import MAX_PARAMS_TAGS_PER_BATCH, MAX_TAG_VAL_LENGTH

from hwd_tune.tracking.store import (
    default_artifact_location,
    is_not_found,
    mlflow_client,
    redact_uri,
    redacted_if_uri,
    truncated,
)

logger = logging.getLogger(__name__)
RUN_KEY_TAG = "hwd.run_key"  # identifies a job across restarts (resume = same run)
RESUME_COUNT_TAG = "hwd.resume_count"
FAILURE_REASON_TAG = "hwd.failure_reason"
# Reproduction plans (`hwd-tune reproduce` / `report`): every run of a plan carries these tags.
PLAN_TAG = "hwd.plan"  # the plan's name
PLAN_DATASET_TAG = "hwd.plan.dataset"  # DataConfig.name of the run
PLAN_STUDENT_TAG = "hwd.plan.student"  # the student's arch
PLAN_METHOD_TAG = "hwd.plan.method"  # the plan's label of the method (default its name; e.g. hwd-swept)
PLAN_SEED_TAG = "hwd.plan.seed"  # the run's seed
CONFIG_HASH_TAG = "hwd.config_hash"  # trainables.launch.run_key of the run's TrainConfig


def start_run(
    *,
    tracking_uri: str,
    experiment: str,
    run_key: str,
    run_name: str,
    tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
    artifact_location: str | None = None,
) -> str:
    """Id of the run tagged `hwd.run_key == run_key` in `experiment` (reopened as RUNNING), or of a new one.

    parent_run_id nests the run under another in the UI (tag `mlflow.parentRunId`). A new
    experiment stores its artifacts at `artifact_location`, by default next to a sqlite store.
    Call it from one process per run key (the driver): two simultaneous calls could both create.
    """
    _check_run_key(run_key)
    client = mlflow_client(tracking_uri)
    if parent_run_id is not None:
        get_run(client, parent_run_id, tracking_uri, role="parent run")
    experiment_id = _experiment_id(client, experiment, artifact_location or default_artifact_location(tracking_uri))
    run_tags = {RUN_KEY_TAG: run_key, **{key: str(value) for key, value in (tags or {}).items()}}
    if parent_run_id is not None:
        run_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id

    existing = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_key}'",
        order_by=["attributes.start_time ASC"],
        max_results=10,
    )
    if not existing:
        run = client.create_run(experiment_id, run_name=run_name, tags=run_tags)
        logger.info("created MLflow run %s (%s) in %s", run.info.run_id, run_name, redact_uri(tracking_uri))
        return run.info.run_id

    run = existing[0]
    if len(existing) > 1:
        logger.warning(
            "%d runs carry %s=%r in experiment %r; resuming the oldest, %s",
            len(existing),
            RUN_KEY_TAG,
            run_key,
            experiment,
            run.info.run_id,
        )
    resumes = int(run.data.tags.get(RESUME_COUNT_TAG, "0")) + 1
    client.update_run(run.info.run_id, status="RUNNING")
    set_tags(client, run.info.run_id, {**run_tags, RESUME_COUNT_TAG: str(resumes)})
    logger.info("resuming MLflow run %s (%s), resume %d", run.info.run_id, run_name, resumes)
    return run.info.run_id


@dataclass(frozen=True)
class FoundRun:
    """A run as `find_runs` returns it: id, status, and its tags, params and latest metrics."""

    run_id: str
    run_name: str
    status: str  # RUNNING | FINISHED | FAILED | KILLED | SCHEDULED
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]


def find_runs(
    tracking_uri: str,
    experiment: str,
    tags: Mapping[str, str],
    *,
    status: str | None = None,
    max_results: int = 10_000,
) -> list[FoundRun]:
    """Runs of `experiment` whose tags equal every `tags` item (and `status`, if given), oldest
    first; [] when the experiment does not exist."""
    client = mlflow_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    conditions = []
    for key, value in tags.items():
        if any(char in f"{key}{value}" for char in "'`\\"):
            raise ValueError(f"tag filters must not contain quotes, backticks or backslashes, got {key}={value!r}")
        conditions.append(f"tags.`{key}` = '{value}'")
    if status is not None:
        conditions.append(f"attributes.status = '{status}'")
    runs, token = [], None
    while len(runs) < max_results:
        page = client.search_runs(
            [found.experiment_id],
            filter_string=" and ".join(conditions),
            order_by=["attributes.start_time ASC"],
            max_results=min(1000, max_results - len(runs)),
            page_token=token,
        )
        runs += page
        token = page.token
        if not token:
            break
    return [
        FoundRun(
            run.info.run_id,
            run.info.run_name or "",
            run.info.status,
            dict(run.data.tags),
            dict(run.data.params),
            dict(run.data.metrics),
        )
        for run in runs
    ]


def find_run_id(tracking_uri: str, experiment: str, run_key: str) -> str | None:
    """The id of the (oldest) run tagged `hwd.run_key == run_key`, or None: the run start_run resumes."""
    _check_run_key(run_key)
    runs = find_runs(tracking_uri, experiment, {RUN_KEY_TAG: run_key}, max_results=1)
    return runs[0].run_id if runs else None


def _check_run_key(run_key: str) -> None:
    if not isinstance(run_key, str) or not run_key.strip():
        raise ValueError(f"run_key must be a non-empty string, got {run_key!r}")
    if any(char in run_key for char in "'\"\\`"):
        raise ValueError(f"run_key must not contain quotes, backticks or backslashes, got {run_key!r}")


def _experiment_id(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """The id of the experiment `name`, created (with its artifact location) or restored if needed."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"experiment must be a non-empty name, got {name!r}")
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException:
            found = client.get_experiment_by_name(name)  # created meanwhile by another process
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        logger.warning("restoring deleted MLflow experiment %r (id %s)", name, found.experiment_id)
        client.restore_experiment(found.experiment_id)
    return found.experiment_id


def get_run(client: MlflowClient, run_id: str, tracking_uri: str, role: str = "run"):
    try:
        return client.get_run(run_id)
    except MlflowException as error:
        if is_not_found(error):
            raise ValueError(f"{role} {run_id!r} not found in {redact_uri(tracking_uri)}") from None
        raise


def set_tags(client: MlflowClient, run_id: str, tags: Mapping[str, str]) -> None:
    """Sets tags in batches of MLflow's limit; values are redacted URIs where they look like one."""
    run_tags = [RunTag(key, tag_value(value)) for key, value in tags.items()]
    for start in range(0, len(run_tags), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, tags=run_tags[start : start + MAX_PARAMS_TAGS_PER_BATCH])


def tag_value(value: Any) -> str:
    return truncated(redacted_if_uri(str(value)), MAX_TAG_VAL_LENGTH)


def latest_metrics(tracking_uri: str, run_id: str) -> dict[str, float]:
    """The latest value of every metric of a run (for progress displays)."""
    return dict(mlflow_client(tracking_uri).get_run(run_id).data.metrics)
