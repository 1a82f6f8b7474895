"""MLflow tracking for hwd-tune: runs, params, metrics, artifacts and the teacher registry.

The only module that imports mlflow. Everything goes through an `MlflowClient` bound to an
explicit tracking URI (never the fluent, process-global active run), so the driver can create a
run and a Ray worker can log to it by id, and several runs can be logged from one process.

Conventions other parts rely on (docs/architecture.md, "Names that other parts rely on"):
- a run is found again by its tag `hwd.run_key`, so a resumed job continues the same run;
- params are the flattened config plus the aliases `tau`, `mu`, `beta`, `method`, `dataset`,
  `student`, `teacher`, `max_iters`;
- teachers are registered as `teacher-<dataset>-<arch>` with aliases `iter-80k`, `iter-160k`
  and `best`; a version holds a plain state_dict `model.pt` (and `meta.json`), never a pickled
  model, and is read back with `torch.load(..., weights_only=True)`.
Secrets: URIs are shown and logged with their password replaced by `***` (`redact_uri`), and
environment variables are never logged.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import platform
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from importlib import metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

import mlflow.artifacts
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from mlflow.utils.validation import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)
from pydantic import BaseModel, ValidationError

from hwd_tune.config import METHOD_PARAMS

logger = logging.getLogger(__name__)

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
MLFLOW_FOLDER = "mlflow"  # under output_dir: mlflow.db and artifacts/
RUN_KEY_TAG = "hwd.run_key"  # identifies a job across restarts (resume = same run)
RESUME_COUNT_TAG = "hwd.resume_count"
FAILURE_REASON_TAG = "hwd.failure_reason"
CHANGED_PARAM_TAG_PREFIX = "hwd.param_changed."  # new value of a param that differs on resume
SYSTEM_TAG_PREFIX = "hwd.system."
TEACHER_ARTIFACT_ROOT = "teacher"  # run artifact folder of registered teacher checkpoints
TEACHER_FILES = ("model.pt", "meta.json")  # what a teacher version holds (no optimizer state)
CHECKPOINT_FILE = "model.pt"
TRUNCATION_MARKER = "...[truncated]"
TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")
PARAM_ALIASES = ("tau", "mu", "beta", "method", "dataset", "student", "teacher", "max_iters")
# Reproduction plans (`hwd-tune reproduce` / `report`): every run of a plan carries these tags.
PLAN_TAG = "hwd.plan"  # the plan's name
PLAN_DATASET_TAG = "hwd.plan.dataset"  # DataConfig.name of the run
PLAN_STUDENT_TAG = "hwd.plan.student"  # the student's arch
PLAN_METHOD_TAG = "hwd.plan.method"  # the plan's label of the method (default its name; e.g. hwd-swept)
PLAN_SEED_TAG = "hwd.plan.seed"  # the run's seed
CONFIG_HASH_TAG = "hwd.config_hash"  # trainables.launch.run_key of the run's TrainConfig

_ALIAS_PATTERN = re.compile(r"^[\w\-]+$")  # MLflow: alphanumerics, underscores, dashes
_RESERVED_ALIAS_PATTERN = re.compile(r"^(latest|[vV]\d+)$", re.IGNORECASE)
_URI_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#\s]*)@")
_SECRET_QUERY = re.compile(
    r"(?i)([?&][^=&#]*(?:password|passwd|pwd|token|secret|key|signature|sig)[^=&#]*=)[^&#]*"
)
_MAX_NAMES_SHOWN = 20
_SCALARS = (str, int, float, bool)


# --------------------------------------------------------------------------------------------
# Tracking URIs
# --------------------------------------------------------------------------------------------
def default_tracking_uri(output_dir: str | os.PathLike) -> str:
    """`sqlite:///<abs output_dir>/mlflow/mlflow.db`; its experiments keep artifacts in `mlflow/artifacts`."""
    database = Path(output_dir).expanduser().resolve() / MLFLOW_FOLDER / "mlflow.db"
    return f"sqlite:///{database.as_posix()}"


def resolve_tracking_uri(config_uri: str | None, output_dir: str | os.PathLike) -> str:
    """The tracking URI to use: env MLFLOW_TRACKING_URI, else `tracking.uri`, else the embedded default."""
    from_env = os.environ.get(TRACKING_URI_ENV, "").strip()
    if from_env:
        return from_env
    if config_uri is not None and config_uri.strip():
        return config_uri.strip()
    return default_tracking_uri(output_dir)


def default_artifact_location(tracking_uri: str) -> str | None:
    """For a sqlite store `<dir>/x.db`: `file://<dir>/artifacts`; None (the server decides) otherwise.

    Without this, MLflow puts a sqlite store's artifacts in `./mlruns` of the current directory.
    """
    database = _sqlite_path(tracking_uri)
    if database is None:
        return None
    return (database.parent / "artifacts").as_uri()


def redact_uri(uri: str) -> str:
    """`uri` with `***` for the password in `user:password@`, a lone `token@`, and secret query values.

    Works on any text: every URI inside it (e.g. in an error message) is redacted.
    """

    def hide_password(match: re.Match) -> str:
        user, has_password, _ = match["userinfo"].partition(":")
        return f"{match['scheme']}{user}:***@" if has_password else f"{match['scheme']}***@"

    return _SECRET_QUERY.sub(r"\1***", _URI_USERINFO.sub(hide_password, uri))


def _sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///path` URI (absolute or relative path), else None."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    path_text = tracking_uri[len(prefix):].split("?", 1)[0]
    if not path_text or path_text == ":memory:":
        return None
    return Path(path_text).resolve()


def _client(tracking_uri: str) -> MlflowClient:
    """A client whose registry is the tracking store (MLflow would follow MLFLOW_REGISTRY_URI instead)."""
    if not isinstance(tracking_uri, str) or not tracking_uri.strip():
        raise ValueError(f"tracking_uri must be a non-empty string, got {tracking_uri!r}")
    database = _sqlite_path(tracking_uri)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)  # sqlite creates the file, not its folder
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _is_not_found(error: MlflowException) -> bool:
    return error.error_code == "RESOURCE_DOES_NOT_EXIST"


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------
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
    client = _client(tracking_uri)
    if parent_run_id is not None:
        _get_run(client, parent_run_id, tracking_uri, role="parent run")
    experiment_id = _experiment_id(
        client, experiment, artifact_location or default_artifact_location(tracking_uri)
    )
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
            len(existing), RUN_KEY_TAG, run_key, experiment, run.info.run_id,
        )
    resumes = int(run.data.tags.get(RESUME_COUNT_TAG, "0")) + 1
    client.update_run(run.info.run_id, status="RUNNING")
    _set_tags(client, run.info.run_id, {**run_tags, RESUME_COUNT_TAG: str(resumes)})
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
    client = _client(tracking_uri)
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
            [found.experiment_id], filter_string=" and ".join(conditions),
            order_by=["attributes.start_time ASC"], max_results=min(1000, max_results - len(runs)), page_token=token,
        )
        runs += page
        token = page.token
        if not token:
            break
    return [
        FoundRun(run.info.run_id, run.info.run_name or "", run.info.status, dict(run.data.tags),
                 dict(run.data.params), dict(run.data.metrics))
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


def _get_run(client: MlflowClient, run_id: str, tracking_uri: str, role: str = "run"):
    try:
        return client.get_run(run_id)
    except MlflowException as error:
        if _is_not_found(error):
            raise ValueError(f"{role} {run_id!r} not found in {redact_uri(tracking_uri)}") from None
        raise


def _set_tags(client: MlflowClient, run_id: str, tags: Mapping[str, str]) -> None:
    """Sets tags in batches of MLflow's limit; values are redacted URIs where they look like one."""
    run_tags = [RunTag(key, _tag_value(value)) for key, value in tags.items()]
    for start in range(0, len(run_tags), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, tags=run_tags[start:start + MAX_PARAMS_TAGS_PER_BATCH])


def _tag_value(value: Any) -> str:
    return _truncated(_redacted_if_uri(str(value)), MAX_TAG_VAL_LENGTH)


# --------------------------------------------------------------------------------------------
# Params
# --------------------------------------------------------------------------------------------
def flatten_params(config: Mapping[str, Any] | BaseModel) -> dict[str, str]:
    """Every config value under its dotted key (`schedule.max_iters`), plus the top-level aliases.

    Aliases: `tau`, `mu`, `beta` (from method.params, the method's defaults filled in), `method`,
    `dataset`, `student`, `max_iters`, and `teacher` (its source, or "none" for method "none").
    Values are strings: lists/tuples as their str, URIs redacted, long values truncated with a marker.
    """
    if isinstance(config, BaseModel):
        config = config.model_dump(mode="json")
    if not isinstance(config, Mapping):
        raise ValueError(f"config must be a mapping or a pydantic config, got {type(config).__name__}")
    raw = dict(config)
    raw = _with_method_defaults(raw)
    flat: dict[str, str] = {}
    _flatten_into(flat, "", raw)

    def nested(*keys: str) -> Any:
        node: Any = raw
        for key in keys:
            if not isinstance(node, Mapping) or key not in node:
                return None
            node = node[key]
        return node

    method_params = nested("method", "params")
    aliases: dict[str, Any] = {}
    if isinstance(method_params, Mapping):
        aliases.update({name: method_params[name] for name in ("tau", "mu", "beta") if name in method_params})
    method_name = nested("method", "name")
    aliases["method"] = method_name
    aliases["dataset"] = nested("data", "name")
    aliases["student"] = nested("student", "arch")
    aliases["teacher"] = "none" if method_name == "none" else (
        nested("teacher", "source") or nested("teacher", "arch")
    )
    aliases["max_iters"] = nested("schedule", "max_iters")
    for name, value in aliases.items():
        if value is not None:
            flat[name] = _param_value(value)
    return flat


def _with_method_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` with method.params completed by the method's published defaults (when they validate)."""
    method = raw.get("method")
    if not isinstance(method, Mapping) or method.get("name") not in METHOD_PARAMS:
        return raw
    params = method.get("params") or {}
    if not isinstance(params, Mapping):
        return raw
    try:
        resolved = METHOD_PARAMS[method["name"]].model_validate(dict(params)).model_dump(mode="json")
    except ValidationError:
        return raw  # log what was given; the config loader reports the error
    return {**raw, "method": {**method, "params": resolved}}


def _flatten_into(flat: dict[str, str], prefix: str, value: Any) -> None:
    if isinstance(value, Mapping) and (value or not prefix):
        for key, child in value.items():
            _flatten_into(flat, f"{prefix}.{key}" if prefix else str(key), child)
    else:
        flat[prefix] = _param_value(value)


def _param_value(value: Any) -> str:
    return _truncated(_redacted_if_uri(str(value)), MAX_PARAM_VAL_LENGTH)


def _redacted_if_uri(text: str) -> str:
    return redact_uri(text) if "://" in text else text


def _truncated(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER


# --------------------------------------------------------------------------------------------
# Logging to one run
# --------------------------------------------------------------------------------------------
class RunLogger:
    """Logs params, metrics, system facts and artifacts to one existing run, by id.

    Safe to build in any process (a Ray worker): it holds only the URI and run id, and pickles
    as such.
    """

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        if not isinstance(run_id, str) or not run_id:
            raise ValueError(f"run_id must be a non-empty string, got {run_id!r}")
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.client = _client(tracking_uri)

    def __reduce__(self):
        return (RunLogger, (self.tracking_uri, self.run_id))

    def __repr__(self) -> str:
        return f"RunLogger({redact_uri(self.tracking_uri)!r}, {self.run_id!r})"

    # ---------------------------------------------------------------------------------------
    def log_params(
        self, params: Mapping[str, Any], on_change: Literal["tag", "error"] = "tag"
    ) -> dict[str, tuple[str, str]]:
        """Logs params in batches; returns {key: (logged, new)} for values that differ from the run's.

        MLflow params cannot change. On resume, identical values are skipped; a changed value
        keeps the first one as the param and records the new one as tag
        `hwd.param_changed.<key>` (on_change="tag", with a warning) or raises ValueError ("error").
        """
        if on_change not in ("tag", "error"):
            raise ValueError(f"on_change must be 'tag' or 'error', got {on_change!r}")
        logged = self.client.get_run(self.run_id).data.params
        new_params: list[Param] = []
        changed: dict[str, tuple[str, str]] = {}
        for key, value in params.items():
            text = _param_value(value)
            if key not in logged:
                new_params.append(Param(key, text))
            elif logged[key] != text:
                changed[key] = (logged[key], text)
        if changed and on_change == "error":
            listing = "; ".join(f"{key}: logged {old!r}, now {new!r}" for key, (old, new) in changed.items())
            raise ValueError(f"params of run {self.run_id} differ from the logged values: {listing}")
        for start in range(0, len(new_params), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=new_params[start:start + MAX_PARAMS_TAGS_PER_BATCH])
        if changed:
            logger.warning(
                "run %s: params changed since first logged (kept the first, new values as tags): %s",
                self.run_id, sorted(changed),
            )
            _set_tags(self.client, self.run_id, {
                CHANGED_PARAM_TAG_PREFIX + key: new for key, (_, new) in changed.items()
            })
        return changed

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Logs every metric at `step` (the training iteration) in one batch per 1000 values."""
        _check_step(step)
        timestamp = _now_millis()
        entries = []
        for key, value in metrics.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"metric {key!r} must be a number, got {value!r}") from None
            entries.append(Metric(key, number, timestamp, step))
        for start in range(0, len(entries), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=entries[start:start + MAX_METRICS_PER_BATCH])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Sets (or overwrites) run tags; values are stringified, URIs redacted."""
        _set_tags(self.client, self.run_id, tags)

    def log_system_facts(self) -> dict[str, str]:
        """Records library versions and the device as tags `hwd.system.*` (tags: a resume may move hosts)."""
        facts = system_facts()
        _set_tags(self.client, self.run_id, {SYSTEM_TAG_PREFIX + key: value for key, value in facts.items()})
        return facts

    # ---------------------------------------------------------------------------------------
    def log_artifact_dir(self, local_dir: str | os.PathLike, artifact_path: str) -> None:
        """Uploads the files of `local_dir` under `artifact_path`; JSON files go up with URIs redacted."""
        _log_directory(self.client, self.run_id, Path(local_dir), artifact_path)

    def log_class_iou(
        self,
        iou: Sequence[float],
        class_names: Sequence[str],
        step: int,
        artifact_path: str = "class_iou",
    ) -> str:
        """Per-class IoU [K] (NaN: class absent) as CSV, Markdown and a bar chart PNG.

        Written under `<artifact_path>/step_<step>`, values as given (exact float repr in the
        CSV). Returns the artifact folder.
        """
        _check_step(step)
        values = _as_float_array(iou, "iou")
        if values.ndim != 1 or len(values) != len(class_names):
            raise ValueError(
                f"iou must hold one value per class ({len(class_names)} class_names), "
                f"got shape {tuple(values.shape)}"
            )
        folder = f"{artifact_path.rstrip('/')}/step_{step:07d}"
        with tempfile.TemporaryDirectory(prefix="hwd-iou-") as scratch:
            scratch_dir = Path(scratch)
            _write_class_iou_csv(scratch_dir / "class_iou.csv", values, class_names)
            _write_class_iou_markdown(scratch_dir / "class_iou.md", values, class_names, step)
            _plot_class_iou(scratch_dir / "class_iou.png", values, class_names, step)
            self.client.log_artifacts(self.run_id, scratch, folder)
        return folder

    def log_channel_weights(
        self,
        iterations: Sequence[int],
        weights: Any,
        class_names: Sequence[str],
        artifact_path: str = "channel_weights",
    ) -> str:
        """HWD channel weights over training, [T, C] for T iterations: heatmap PNG, .npy and .csv.

        Each call replaces the previous files (pass the whole history). Returns the artifact folder.
        """
        table = _as_float_array(weights, "weights")
        steps = [int(iteration) for iteration in iterations]
        if table.ndim != 2 or table.shape != (len(steps), len(class_names)):
            raise ValueError(
                f"weights must be [T, C] = [{len(steps)} iterations, {len(class_names)} classes], "
                f"got shape {tuple(table.shape)}"
            )
        with tempfile.TemporaryDirectory(prefix="hwd-weights-") as scratch:
            scratch_dir = Path(scratch)
            np.save(scratch_dir / "channel_weights.npy", table)
            np.save(scratch_dir / "iterations.npy", np.asarray(steps, dtype=np.int64))
            with open(scratch_dir / "channel_weights.csv", "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["iteration", *class_names])
                for iteration, row in zip(steps, table):
                    writer.writerow([iteration, *(repr(float(value)) for value in row)])
            _plot_channel_weights(scratch_dir / "channel_weights.png", steps, table, class_names)
            self.client.log_artifacts(self.run_id, scratch, artifact_path)
        return artifact_path

    def finish(
        self, status: Literal["FINISHED", "FAILED", "KILLED"] = "FINISHED", reason: str | None = None
    ) -> None:
        """Ends the run with `status`; `reason` (e.g. the exception) goes to tag `hwd.failure_reason`.

        A FINISHED run without a reason drops a failure reason left by an earlier attempt.
        """
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"status must be one of {TERMINAL_STATUSES}, got {status!r}")
        if reason:
            _set_tags(self.client, self.run_id, {FAILURE_REASON_TAG: reason})
        elif status == "FINISHED" and FAILURE_REASON_TAG in self.client.get_run(self.run_id).data.tags:
            self.client.delete_tag(self.run_id, FAILURE_REASON_TAG)
        self.client.set_terminated(self.run_id, status=status)


def system_facts() -> dict[str, str]:
    """Versions of python, torch, torchvision, ray, mlflow, numpy, and the compute device."""
    facts = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    for package in ("torch", "torchvision", "ray", "mlflow", "numpy"):
        try:
            facts[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            facts[package] = "not installed"
    cuda = torch.cuda.is_available()
    facts["cuda_available"] = str(cuda)
    facts["cuda_version"] = str(torch.version.cuda)
    facts["device"] = torch.cuda.get_device_name(torch.cuda.current_device()) if cuda else "cpu"
    facts["device_count"] = str(torch.cuda.device_count() if cuda else 0)
    return facts


def _check_step(step: int) -> None:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative int (the iteration), got {step!r}")


def _now_millis() -> int:
    return int(time.time() * 1000)


def _as_float_array(values: Any, name: str) -> np.ndarray:
    """A float64 numpy array from a list, array, tensor or list of tensors."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().double().numpy()
    if isinstance(values, (list, tuple)) and values and isinstance(values[0], torch.Tensor):
        return torch.stack([value.detach().cpu().double() for value in values]).numpy()
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be numbers (list, array or tensor), got {type(values).__name__}"
        ) from None


def _log_directory(client: MlflowClient, run_id: str, local_dir: Path, artifact_path: str) -> None:
    """Uploads every file under local_dir, keeping sub-folders; JSON is redacted on the way."""
    if not local_dir.is_dir():
        raise FileNotFoundError(f"artifact directory not found: {local_dir}")
    with tempfile.TemporaryDirectory(prefix="hwd-redacted-") as scratch:
        for path in sorted(local_dir.rglob("*")):
            if not path.is_file():
                continue
            relative_parent = path.parent.relative_to(local_dir).as_posix()
            target = artifact_path if relative_parent == "." else f"{artifact_path}/{relative_parent}"
            client.log_artifact(run_id, str(_redacted_json_copy(path, Path(scratch))), target)


def _redacted_json_copy(path: Path, scratch: Path) -> Path:
    """`path` itself, or for a .json file a copy whose URI strings have their passwords redacted."""
    if path.suffix != ".json":
        return path
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return path
    copy_dir = scratch / uuid.uuid4().hex
    copy_dir.mkdir()
    copy = copy_dir / path.name
    copy.write_text(json.dumps(_redact_strings(content), indent=2))
    return copy


def _redact_strings(value: Any) -> Any:
    if isinstance(value, str):
        return _redacted_if_uri(value)
    if isinstance(value, dict):
        return {key: _redact_strings(child) for key, child in value.items()}
    if isinstance(value, list):
        return [_redact_strings(child) for child in value]
    return value


# --------------------------------------------------------------------------------------------
# Tables and pictures
# --------------------------------------------------------------------------------------------
def _write_class_iou_csv(path: Path, values: np.ndarray, class_names: Sequence[str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class_id", "class_name", "iou"])
        for class_id, (name, value) in enumerate(zip(class_names, values)):
            writer.writerow([class_id, name, repr(float(value))])


def _write_class_iou_markdown(path: Path, values: np.ndarray, class_names: Sequence[str], step: int) -> None:
    present = values[~np.isnan(values)]
    mean = float(present.mean()) if present.size else math.nan
    lines = [
        f"# Per-class IoU at iteration {step}",
        "",
        f"Mean over the {present.size} classes present: {mean:.4f}",
        "",
        "| id | class | IoU |",
        "|---:|:------|----:|",
    ]
    for class_id, (name, value) in enumerate(zip(class_names, values)):
        shown = "n/a" if math.isnan(value) else f"{value:.4f}"
        lines.append(f"| {class_id} | {str(name).replace('|', '/')} | {shown} |")
    path.write_text("\n".join(lines) + "\n")


def _plot_class_iou(path: Path, values: np.ndarray, class_names: Sequence[str], step: int) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    count = len(values)
    figure = Figure(figsize=(min(max(6.0, 0.18 * count), 40.0), 4.0), dpi=100)
    axes = figure.subplots()
    absent = np.isnan(values)
    axes.bar(np.arange(count), np.where(absent, 0.0, values), color=np.where(absent, "lightgrey", "tab:blue"))
    axes.set_xticks(np.arange(count), [str(name) for name in class_names], rotation=90, fontsize=6)
    axes.set_ylabel("IoU")
    axes.set_title(f"Per-class IoU at iteration {step} (grey: class absent)")
    figure.tight_layout()
    figure.savefig(path)


def _plot_channel_weights(
    path: Path, iterations: list[int], table: np.ndarray, class_names: Sequence[str]
) -> None:
    from matplotlib.figure import Figure

    steps, classes = table.shape
    figure = Figure(figsize=(min(max(6.0, 0.15 * classes), 40.0), min(max(3.0, 0.25 * steps), 20.0)), dpi=100)
    axes = figure.subplots()
    image = axes.imshow(table, aspect="auto", interpolation="nearest", cmap="viridis")
    axes.set_xticks(np.arange(classes), [str(name) for name in class_names], rotation=90, fontsize=6)
    shown_rows = np.unique(np.linspace(0, steps - 1, num=min(steps, 20)).round().astype(int)) if steps else []
    axes.set_yticks(shown_rows, [str(iterations[row]) for row in shown_rows], fontsize=6)
    axes.set_xlabel("class (channel)")
    axes.set_ylabel("iteration")
    axes.set_title("HWD channel weights over training")
    figure.colorbar(image, ax=axes, label="weight")
    figure.tight_layout()
    figure.savefig(path)


# --------------------------------------------------------------------------------------------
# Teacher registry
# --------------------------------------------------------------------------------------------
def milestone_alias(iteration: int) -> str:
    """Registry alias of a milestone: `iter-80k` for 80000, `iter-1500` for 1500 (not a multiple of 1000).

    MLflow aliases allow only letters, digits, `_` and `-`, so `iter-1.5k` is not an option.
    """
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 1:
        raise ValueError(f"milestone iteration must be a positive int, got {iteration!r}")
    if iteration % 1000 == 0:
        return f"iter-{iteration // 1000}k"
    return f"iter-{iteration}"


def teacher_model_name(dataset: str, arch: str) -> str:
    """Registered model name of a teacher: `teacher-<dataset>-<arch>`."""
    for label, value in (("dataset", dataset), ("arch", arch)):
        if not isinstance(value, str) or not value.strip() or any(char in value for char in "/:@"):
            raise ValueError(f"{label} must be a non-empty name without '/', ':' or '@', got {value!r}")
    return f"teacher-{dataset}-{arch}"


def register_teacher(
    *,
    tracking_uri: str,
    run_id: str,
    checkpoint_dir: str | os.PathLike,
    dataset: str,
    arch: str,
    aliases: Sequence[str],
    tags: Mapping[str, Any] | None = None,
) -> int:
    """Registers the checkpoint's `model.pt` (+ `meta.json`) as a new version of `teacher-<dataset>-<arch>`.

    The files go to run artifacts `teacher/iter-<n>` (n from meta.json's `iteration`; a `-2`,
    `-3` suffix if that path exists already, e.g. after a resume); the optimizer state is left
    out. Every alias in `aliases` is set on (or moved to) the new version. Returns its number.
    """
    if isinstance(aliases, str):
        raise ValueError(f"aliases must be a list of alias names, got the string {aliases!r}")
    for alias in aliases:
        _check_alias(alias)
    name = teacher_model_name(dataset, arch)
    checkpoint_dir = Path(checkpoint_dir)
    weights = checkpoint_dir / CHECKPOINT_FILE
    if not weights.is_file():
        raise FileNotFoundError(
            f"teacher checkpoint {checkpoint_dir} has no {CHECKPOINT_FILE}; "
            f"it holds {_listing(checkpoint_dir)}"
        )
    meta = _read_meta(checkpoint_dir / "meta.json")
    client = _client(tracking_uri)
    run = _get_run(client, run_id, tracking_uri)

    iteration = meta.get("iteration")
    label = milestone_alias(iteration) if _is_positive_int(iteration) else (aliases or ["checkpoint"])[0]
    artifact_path = _unused_artifact_path(client, run_id, f"{TEACHER_ARTIFACT_ROOT}/{label}")
    with tempfile.TemporaryDirectory(prefix="hwd-teacher-") as scratch:
        for file_name in TEACHER_FILES:
            path = checkpoint_dir / file_name
            if path.is_file():
                client.log_artifact(run_id, str(_redacted_json_copy(path, Path(scratch))), artifact_path)

    _ensure_registered_model(client, name, dataset, arch)
    version_tags = {
        "hwd.artifact_path": artifact_path,
        **{f"hwd.meta.{key}": value for key, value in meta.items() if isinstance(value, _SCALARS)},
        **(tags or {}),
    }
    version = client.create_model_version(
        name,
        source=f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}",
        run_id=run_id,
        tags={key: _tag_value(value) for key, value in version_tags.items()},
        description=f"{arch} teacher on {dataset} from run {run_id}, artifacts {artifact_path}",
    )
    for alias in aliases:
        client.set_registered_model_alias(name, alias, str(version.version))
    logger.info("registered %s version %s with aliases %s", name, version.version, list(aliases))
    return int(version.version)


def _check_alias(alias: str) -> None:
    if not isinstance(alias, str) or not _ALIAS_PATTERN.match(alias) or len(alias) > 255:
        raise ValueError(
            f"alias {alias!r} is not a valid MLflow alias: use letters, digits, '_' and '-' (at most 255)"
        )
    if _RESERVED_ALIAS_PATTERN.match(alias):
        raise ValueError(f"alias {alias!r} is reserved by MLflow ('latest' and 'v<number>')")


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read checkpoint metadata {path}: {error}") from None
    return loaded if isinstance(loaded, dict) else {}


def _unused_artifact_path(client: MlflowClient, run_id: str, wanted: str) -> str:
    parent, _, _ = wanted.rpartition("/")
    taken = {Path(info.path).name for info in client.list_artifacts(run_id, parent)}
    base = Path(wanted).name
    candidate, suffix = base, 1
    while candidate in taken:
        suffix += 1
        candidate = f"{base}-{suffix}"
    return f"{parent}/{candidate}"


def _ensure_registered_model(client: MlflowClient, name: str, dataset: str, arch: str) -> None:
    try:
        client.get_registered_model(name)
        return
    except MlflowException as error:
        if not _is_not_found(error):
            raise
    try:
        client.create_registered_model(
            name,
            tags={"hwd.dataset": dataset, "hwd.arch": arch},
            description=f"{arch} teachers trained on {dataset} (plain state_dict model.pt)",
        )
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":  # created meanwhile by another process
            raise


# --------------------------------------------------------------------------------------------
# Resolving a teacher source to a local file
# --------------------------------------------------------------------------------------------
def resolve_teacher(source: str, *, tracking_uri: str | None, cache_dir: str | os.PathLike) -> Path:
    """Local state-dict file for a teacher source; MLflow artifacts are downloaded once into cache_dir.

    source: `models:/<name>@<alias>`, `models:/<name>/<version>`, `runs:/<run_id>/<path>`, or a
    file / checkpoint directory holding model.pt (our checkpoints, the authors' .pth files).
    Raises ValueError for an unknown model, alias, version or run (naming the ones that exist)
    and FileNotFoundError for a missing file or artifact (naming what is there).
    """
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"teacher source must be a non-empty string, got {source!r}")
    source = source.strip()
    if source.startswith(("models:/", "runs:/")):
        if not tracking_uri:
            raise ValueError(f"teacher source {source!r} needs a tracking URI, got {tracking_uri!r}")
        cache_root = Path(cache_dir)
        if source.startswith("models:/"):
            return _resolve_registered(source, _client(tracking_uri), tracking_uri, cache_root)
        return _resolve_run_artifact(source, _client(tracking_uri), tracking_uri, cache_root)
    if source.startswith("file://"):
        source = unquote(urlparse(source).path)
    return _local_weights(Path(source).expanduser(), asked=source)


def _local_weights(path: Path, asked: str) -> Path:
    """`path` itself if a file, `path/model.pt` if a directory holding one; else FileNotFoundError."""
    if path.is_file():
        return path.resolve()
    if path.is_dir():
        weights = path / CHECKPOINT_FILE
        if weights.is_file():
            return weights.resolve()
        raise FileNotFoundError(
            f"teacher source {asked!r}: directory {path} has no {CHECKPOINT_FILE}; it holds {_listing(path)}"
        )
    parent = path.parent
    there = f"{parent} holds {_listing(parent)}" if parent.is_dir() else f"{parent} does not exist either"
    raise FileNotFoundError(f"teacher source {asked!r}: no such file or directory {path}; {there}")


def _listing(directory: Path) -> str:
    try:
        names = sorted(entry.name for entry in directory.iterdir())
    except OSError:
        return "nothing readable"
    return _shown_names(names) if names else "nothing"


def _shown_names(names: Sequence[str]) -> str:
    shown = list(names[:_MAX_NAMES_SHOWN])
    more = f" and {len(names) - len(shown)} more" if len(names) > len(shown) else ""
    return f"{shown}{more}"


def registered_version(tracking_uri: str, source: str) -> tuple[str, str]:
    """(model name, version number) that models:/name@alias or models:/name/version points at.

    Raises ValueError naming the aliases and versions that exist when it points nowhere.
    """
    return _registered_version(source, _client(tracking_uri), tracking_uri)


def _registered_version(source: str, client: MlflowClient, tracking_uri: str) -> tuple[str, str]:
    body = source[len("models:/"):].strip("/")
    if "@" in body:
        name, _, alias = body.rpartition("@")
        version_number = None
    else:
        name, _, version_text = body.rpartition("/")
        alias = None
        if not name or not version_text.isdigit():
            raise ValueError(
                f"teacher source {source!r}: expected models:/<name>@<alias> "
                "or models:/<name>/<version number>"
            )
        version_number = str(int(version_text))
    if "'" in name:
        raise ValueError(f"teacher source {source!r}: a model name cannot contain quotes")
    model = _registered_model(client, name, source, tracking_uri)
    versions = sorted(
        int(version.version) for version in client.search_model_versions(f"name = '{name}'")
    )
    aliases = {key: int(value) for key, value in sorted(model.aliases.items())}  # REST gives str versions
    if alias is not None:
        if alias not in aliases:
            raise ValueError(
                f"teacher source {source!r}: model {name!r} has no alias {alias!r}; "
                f"its aliases are {aliases or 'none'}, versions {versions}"
            )
        version_number = str(aliases[alias])
    if int(version_number) not in versions:
        raise ValueError(
            f"teacher source {source!r}: model {name!r} has no version {version_number}; "
            f"versions {versions}, aliases {aliases or 'none'}"
        )
    return name, version_number


def _resolve_registered(source: str, client: MlflowClient, tracking_uri: str, cache_root: Path) -> Path:
    """models:/name@alias or models:/name/version -> cached copy of that version's files."""
    name, version_number = _registered_version(source, client, tracking_uri)
    storage_uri = client.get_model_version_download_uri(name, version_number)
    key = hashlib.sha256(f"{redact_uri(tracking_uri)}|{storage_uri}".encode()).hexdigest()[:12]
    destination = cache_root / "models" / f"{name}-v{version_number}-{key}"

    def download(scratch: Path) -> Path:
        return Path(mlflow.artifacts.download_artifacts(
            artifact_uri=storage_uri,
            dst_path=str(scratch),
            tracking_uri=tracking_uri,
            registry_uri=tracking_uri,
        ))

    return _cached_weights(destination, download, source)


def _registered_model(client: MlflowClient, name: str, source: str, tracking_uri: str):
    try:
        return client.get_registered_model(name)
    except MlflowException as error:
        if not _is_not_found(error):
            raise
    existing = sorted(model.name for model in client.search_registered_models(max_results=1000))
    raise ValueError(
        f"teacher source {source!r}: no registered model {name!r} in {redact_uri(tracking_uri)}; "
        f"registered models: {_shown_names(existing) if existing else 'none'}"
    ) from None


def _resolve_run_artifact(source: str, client: MlflowClient, tracking_uri: str, cache_root: Path) -> Path:
    """runs:/<run_id>/<path> -> cached copy of that artifact (a file, or a folder with model.pt)."""
    run_id, _, artifact_path = source[len("runs:/"):].partition("/")
    artifact_path = artifact_path.strip("/")
    if not run_id or ".." in artifact_path.split("/"):
        raise ValueError(f"teacher source {source!r}: expected runs:/<run_id>/<artifact path> without '..'")
    _get_run(client, run_id, tracking_uri, role=f"teacher source {source!r}: run")
    if artifact_path:
        parent = _posix_parent(artifact_path)
        entries = {info.path: info for info in client.list_artifacts(run_id, parent or None)}
        if artifact_path not in entries:
            raise FileNotFoundError(
                f"teacher source {source!r}: run {run_id} has no artifact {artifact_path!r}; "
                f"{parent or 'its root'} holds {_shown_names(sorted(entries)) if entries else 'nothing'}"
            )
    destination = cache_root / "runs" / run_id / (artifact_path or "_root")

    def download(scratch: Path) -> Path:
        return Path(client.download_artifacts(run_id, artifact_path, str(scratch)))

    return _cached_weights(destination, download, source)


def _posix_parent(artifact_path: str) -> str:
    """Parent folder of an artifact path ('' for a top-level one)."""
    return artifact_path.rpartition("/")[0]


def _cached_weights(destination: Path, download, source: str) -> Path:
    """Weights file in `destination`, downloading there first (atomically, via a rename) if absent."""
    if not destination.exists():
        destination.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=destination.parent))
        try:
            downloaded = download(scratch)
            try:
                os.rename(downloaded, destination)
            except OSError:
                if not destination.exists():  # not a concurrent download that finished first
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        logger.info("downloaded teacher %s to %s", source, destination)
    return _local_weights(destination, asked=source)


def latest_metrics(tracking_uri: str, run_id: str) -> dict[str, float]:
    """The latest value of every metric of a run (for progress displays)."""
    return dict(_client(tracking_uri).get_run(run_id).data.metrics)
