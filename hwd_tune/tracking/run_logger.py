"""`RunLogger`: logs params, metrics, system facts and artifacts to one existing run, by its id."""

from __future__ import annotations

import csv
import json
import logging
import os
import platform
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

from hwd_tune.tracking.params import param_value
from hwd_tune.tracking.plots import plot_channel_weights, plot_class_iou, write_class_iou_csv, write_class_iou_markdown
from hwd_tune.tracking.runs import FAILURE_REASON_TAG, set_tags
from hwd_tune.tracking.store import mlflow_client, redact_uri, redacted_if_uri

logger = logging.getLogger(__name__)
CHANGED_PARAM_TAG_PREFIX = "hwd.param_changed."  # new value of a param that differs on resume
SYSTEM_TAG_PREFIX = "hwd.system."
TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")


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
        self.client = mlflow_client(tracking_uri)

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
            text = param_value(value)
            if key not in logged:
                new_params.append(Param(key, text))
            elif logged[key] != text:
                changed[key] = (logged[key], text)
        if changed and on_change == "error":
            listing = "; ".join(f"{key}: logged {old!r}, now {new!r}" for key, (old, new) in changed.items())
            raise ValueError(f"params of run {self.run_id} differ from the logged values: {listing}")
        for start in range(0, len(new_params), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=new_params[start : start + MAX_PARAMS_TAGS_PER_BATCH])
        if changed:
            logger.warning(
                "run %s: params changed since first logged (kept the first, new values as tags): %s",
                self.run_id,
                sorted(changed),
            )
            set_tags(
                self.client, self.run_id, {CHANGED_PARAM_TAG_PREFIX + key: new for key, (_, new) in changed.items()}
            )
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
            self.client.log_batch(self.run_id, metrics=entries[start : start + MAX_METRICS_PER_BATCH])

    def last_steps(self) -> dict[str, int]:
        """The highest step logged so far for each metric of the run (a resumed run starts above it)."""
        keys = self.client.get_run(self.run_id).data.metrics
        return {key: max(metric.step for metric in self.client.get_metric_history(self.run_id, key)) for key in keys}

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Sets (or overwrites) run tags; values are stringified, URIs redacted."""
        set_tags(self.client, self.run_id, tags)

    def log_system_facts(self) -> dict[str, str]:
        """Records library versions and the device as tags `hwd.system.*` (tags: a resume may move hosts)."""
        facts = system_facts()
        set_tags(self.client, self.run_id, {SYSTEM_TAG_PREFIX + key: value for key, value in facts.items()})
        return facts

    # ---------------------------------------------------------------------------------------
    def log_artifact_dir(self, local_dir: str | os.PathLike, artifact_path: str) -> None:
        """Uploads the files of `local_dir` under `artifact_path`; JSON files go up with URIs redacted."""
        _log_directory(self.client, self.run_id, Path(local_dir), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Writes `text` as the artifact `artifact_file` (e.g. "sweep/holdout.txt"), replacing it."""
        self.client.log_text(self.run_id, text, artifact_file)

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
                f"iou must hold one value per class ({len(class_names)} class_names), got shape {tuple(values.shape)}"
            )
        folder = f"{artifact_path.rstrip('/')}/step_{step:07d}"
        with tempfile.TemporaryDirectory(prefix="hwd-iou-") as scratch:
            scratch_dir = Path(scratch)
            write_class_iou_csv(scratch_dir / "class_iou.csv", values, class_names)
            write_class_iou_markdown(scratch_dir / "class_iou.md", values, class_names, step)
            plot_class_iou(scratch_dir / "class_iou.png", values, class_names, step)
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
            plot_channel_weights(scratch_dir / "channel_weights.png", steps, table, class_names)
            self.client.log_artifacts(self.run_id, scratch, artifact_path)
        return artifact_path

    def finish(self, status: Literal["FINISHED", "FAILED", "KILLED"] = "FINISHED", reason: str | None = None) -> None:
        """Ends the run with `status`; `reason` (e.g. the exception) goes to tag `hwd.failure_reason`.

        A FINISHED run without a reason drops a failure reason left by an earlier attempt.
        """
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"status must be one of {TERMINAL_STATUSES}, got {status!r}")
        if reason:
            set_tags(self.client, self.run_id, {FAILURE_REASON_TAG: reason})
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
        raise ValueError(f"{name} must be numbers (list, array or tensor), got {type(values).__name__}") from None


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
            client.log_artifact(run_id, str(redacted_json_copy(path, Path(scratch))), target)


def redacted_json_copy(path: Path, scratch: Path) -> Path:
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
        return redacted_if_uri(value)
    if isinstance(value, dict):
        return {key: _redact_strings(child) for key, child in value.items()}
    if isinstance(value, list):
        return [_redact_strings(child) for child in value]
    return value
