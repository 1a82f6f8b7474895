"""The student registry: `student-<dataset>-<arch>` versions as MLflow pyfunc models that return
class maps, with aliases `best-<method>` (a distill run's best) and `champion` (a sweep's winner).

A version holds an MLflow model (signature, input example, the pyfunc as code) whose artifacts are
the checkpoint's plain `model.pt` and `meta.json`: nothing pickled. `resolve_student` brings a
model URI (models:/, runs:/ or a local checkpoint directory) to a local model.pt + meta.json folder.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from hwd_tune.data.transforms import NORMALIZATIONS
from hwd_tune.models import read_checkpoint_meta
from hwd_tune.tracking.registry import (
    CHECKPOINT_FILE,
    _check_alias,
    _ensure_registered_model,
    _unused_artifact_path,
    create_version,
    listing,
    registered_version,
)
from hwd_tune.tracking.run_logger import redacted_json_copy
from hwd_tune.tracking.runs import get_run, tag_value
from hwd_tune.tracking.store import missing_local_store, mlflow_client, redact_uri

logger = logging.getLogger(__name__)
STUDENT_ARTIFACT_ROOT = "student"  # run artifact folder of registered student models
BEST_CHECKPOINT_ARTIFACT = "best_checkpoint"  # where a run logs its best weights (trainables.launch.publish_best)
CHAMPION_ALIAS = "champion"  # the sweep's final-stage winner
META_FILE = "meta.json"
PYFUNC_CODE = Path(__file__).with_name("student_pyfunc.py")
INPUT_EXAMPLE_SHAPE = (1, 3, 32, 32)  # small: MLflow stores it as JSON and runs the model on it once
STUDENT_SIGNATURE = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1))]),  # unnamed: predict gets the array itself
    outputs=Schema([TensorSpec(np.dtype(np.int64), (-1, -1, -1))]),
)


def student_model_name(dataset: str, arch: str) -> str:
    """Registered model name of a student: `student-<dataset>-<arch>`."""
    for label, value in (("dataset", dataset), ("arch", arch)):
        if not isinstance(value, str) or not value.strip() or any(char in value for char in "/:@"):
            raise ValueError(f"{label} must be a non-empty name without '/', ':' or '@', got {value!r}")
    return f"student-{dataset}-{arch}"


def best_alias(method: str) -> str:
    """Alias of the best student of a distill run with `method`: `best-hwd`, `best-cwd`, ..."""
    alias = f"best-{method}"
    _check_alias(alias)
    return alias


def register_student(
    *,
    tracking_uri: str,
    run_id: str,
    checkpoint_dir: str | os.PathLike,
    aliases: Sequence[str],
    tags: Mapping[str, Any] | None = None,
) -> tuple[str, int]:
    """Logs the checkpoint (model.pt + meta.json) as an MLflow pyfunc model under the run's
    `student/<label>` and registers it as a new version of `student-<dataset>-<arch>` (from its
    meta.json) with `aliases`. Returns (model name, version number)."""
    if isinstance(aliases, str):
        raise ValueError(f"aliases must be a list of alias names, got the string {aliases!r}")
    for alias in aliases:
        _check_alias(alias)
    checkpoint_dir = Path(checkpoint_dir)
    if not (checkpoint_dir / CHECKPOINT_FILE).is_file():
        raise FileNotFoundError(
            f"student checkpoint {checkpoint_dir} has no {CHECKPOINT_FILE}; it holds {listing(checkpoint_dir)}"
        )
    meta = read_checkpoint_meta(checkpoint_dir)
    dataset, arch = str(meta.get("dataset", "unknown")), str(meta["arch"])
    name = student_model_name(dataset, arch)
    client = mlflow_client(tracking_uri)
    run = get_run(client, run_id, tracking_uri)
    label = f"iter-{meta['iteration']}" if isinstance(meta.get("iteration"), int) else "checkpoint"
    artifact_path = _unused_artifact_path(client, run_id, f"{STUDENT_ARTIFACT_ROOT}/{label}")
    with tempfile.TemporaryDirectory(prefix="hwd-student-") as scratch:
        model_dir = Path(scratch) / "model"
        save_student_model(checkpoint_dir, model_dir, meta)
        client.log_artifacts(run_id, str(model_dir), artifact_path)
    description = f"{arch} students distilled on {dataset}: MLflow pyfunc models that return class maps"
    _ensure_registered_model(client, name, dataset, arch, description)
    what = f"{arch} student on {dataset}"
    return name, create_version(client, name, run, artifact_path, meta, tags, aliases, what)


def save_student_model(checkpoint_dir: Path, model_dir: Path, meta: Mapping[str, Any]) -> None:
    """Writes the MLflow model of a checkpoint into `model_dir`: the pyfunc (as code), model.pt,
    a redacted meta.json, the signature, an input example and the inputs' normalisation."""
    normalization = str((meta.get("config") or {}).get("data", {}).get("normalization", "imagenet"))
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"{checkpoint_dir / META_FILE}: unknown normalization {normalization!r}")
    steps = NORMALIZATIONS[normalization]
    with tempfile.TemporaryDirectory(prefix="hwd-meta-") as scratch:
        mlflow.pyfunc.save_model(
            str(model_dir),
            python_model=str(PYFUNC_CODE),
            artifacts={
                "weights": str(checkpoint_dir / CHECKPOINT_FILE),
                "meta": str(redacted_json_copy(checkpoint_dir / META_FILE, Path(scratch))),
            },
            signature=STUDENT_SIGNATURE,
            input_example=np.random.default_rng(0).normal(size=INPUT_EXAMPLE_SHAPE).round(2).astype(np.float32),
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"],
            metadata={
                "input": "float32 [N, 3, H, W], normalised as the training data: "
                + ("BGR, " if steps.bgr else "RGB, ")
                + ("(x / 255 - mean) / std" if steps.unit_range else "(x - mean) / std on 0-255 values"),
                "normalization": normalization,
                "mean": list(steps.mean),
                "std": list(steps.std),
                "output": "int64 [N, H, W] class ids",
                "num_classes": int(meta["num_classes"]),
                "dataset": str(meta.get("dataset", "unknown")),
                "arch": str(meta["arch"]),
            },
        )


def register_run_student(
    *, tracking_uri: str, run_id: str, aliases: Sequence[str], tags: Mapping[str, Any] | None = None
) -> tuple[str, int]:
    """Registers the run's `best_checkpoint` artifact as a student version with `aliases`; a student
    version from this run that exists already (a resumed sweep) gets the aliases instead of a copy."""
    client = mlflow_client(tracking_uri)
    for version in client.search_model_versions(f"run_id = '{run_id}'"):
        if is_student_name(version.name):
            for alias in aliases:
                client.set_registered_model_alias(version.name, alias, str(version.version))
            for key, value in (tags or {}).items():
                client.set_model_version_tag(version.name, str(version.version), key, tag_value(value))
            return version.name, int(version.version)
    with tempfile.TemporaryDirectory(prefix="hwd-best-") as scratch:
        local = Path(client.download_artifacts(run_id, BEST_CHECKPOINT_ARTIFACT, scratch))
        return register_student(
            tracking_uri=tracking_uri, run_id=run_id, checkpoint_dir=local, aliases=aliases, tags=tags
        )


def resolve_student(source: str, *, tracking_uri: str | None, destination: str | os.PathLike) -> Path:
    """Local folder holding model.pt + meta.json of a model URI: `models:/<name>@<alias>`,
    `models:/<name>/<version>`, `runs:/<run_id>/<path>` (downloaded into `destination`), or a local
    checkpoint directory (or MLflow model folder). Errors name what exists instead."""
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"model URI must be a non-empty string, got {source!r}")
    source = source.strip()
    if not source.startswith(("models:/", "runs:/")):
        return _checkpoint_folder(Path(source).expanduser(), source)
    if not tracking_uri:
        raise ValueError(f"model URI {source!r} needs a tracking URI (--tracking-uri or MLFLOW_TRACKING_URI)")
    if missing_local_store(tracking_uri) is not None:
        raise ValueError(
            f"model URI {source!r}: the MLflow store {redact_uri(tracking_uri)} does not exist, so it holds no "
            "model; pass --tracking-uri (or set MLFLOW_TRACKING_URI) to the store that holds it"
        )
    if source.startswith("models:/"):
        name, version = registered_version(tracking_uri, source, role="model URI")
        artifact_uri = mlflow_client(tracking_uri).get_model_version_download_uri(name, version)
    else:
        run_id = source[len("runs:/") :].partition("/")[0]
        get_run(mlflow_client(tracking_uri), run_id, tracking_uri, role=f"model URI {source!r}: run")
        artifact_uri = source
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=artifact_uri, dst_path=str(destination), tracking_uri=tracking_uri, registry_uri=tracking_uri
        )
    except MlflowException as error:
        raise FileNotFoundError(f"model URI {source!r}: cannot download {artifact_uri}: {error.message}") from None
    return _checkpoint_folder(Path(local), source)


def _checkpoint_folder(path: Path, source: str) -> Path:
    """`path` if it holds model.pt + meta.json, or its `artifacts/` (an MLflow student model) if that does."""
    if not path.is_dir():
        there = f"{path.parent} holds {listing(path.parent)}" if path.parent.is_dir() else "its parent does not exist"
        raise FileNotFoundError(
            f"model URI {source!r}: no such directory {path} ({there}); expected models:/<name>@<alias>, "
            "models:/<name>/<version>, runs:/<run_id>/<path> or a checkpoint directory with model.pt and meta.json"
        )
    for folder in (path, path / "artifacts"):
        if (folder / CHECKPOINT_FILE).is_file() and (folder / META_FILE).is_file():
            return folder
    raise FileNotFoundError(
        f"model URI {source!r}: {path} holds no {CHECKPOINT_FILE} + {META_FILE} (it holds {listing(path)}); "
        "expected an hwd-tune checkpoint directory or a registered student"
    )


def is_student_name(name: str) -> bool:
    """Whether a registered model name is a student's (`student-<dataset>-<arch>`)."""
    return bool(re.match(r"^student-[^/:@]+-[^/:@]+$", name))
