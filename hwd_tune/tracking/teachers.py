"""Teacher resolution: a teacher source (registry URI, run artifact or file) to a local weights file.

MLflow artifacts are downloaded once into a cache folder (atomically, via a rename), so every
worker of a node reads the same file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow.artifacts
from mlflow import MlflowClient

from hwd_tune.tracking.registry import CHECKPOINT_FILE, listing, registered_version, shown_names
from hwd_tune.tracking.runs import get_run
from hwd_tune.tracking.store import mlflow_client, redact_uri

logger = logging.getLogger(__name__)


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
            return _resolve_registered(source, mlflow_client(tracking_uri), tracking_uri, cache_root)
        return _resolve_run_artifact(source, mlflow_client(tracking_uri), tracking_uri, cache_root)
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
            f"teacher source {asked!r}: directory {path} has no {CHECKPOINT_FILE}; it holds {listing(path)}"
        )
    parent = path.parent
    there = f"{parent} holds {listing(parent)}" if parent.is_dir() else f"{parent} does not exist either"
    raise FileNotFoundError(f"teacher source {asked!r}: no such file or directory {path}; {there}")


def _resolve_registered(source: str, client: MlflowClient, tracking_uri: str, cache_root: Path) -> Path:
    """models:/name@alias or models:/name/version -> cached copy of that version's files."""
    name, version_number = registered_version(tracking_uri, source)
    storage_uri = client.get_model_version_download_uri(name, version_number)
    key = hashlib.sha256(f"{redact_uri(tracking_uri)}|{storage_uri}".encode()).hexdigest()[:12]
    destination = cache_root / "models" / f"{name}-v{version_number}-{key}"

    def download(scratch: Path) -> Path:
        return Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=storage_uri,
                dst_path=str(scratch),
                tracking_uri=tracking_uri,
                registry_uri=tracking_uri,
            )
        )

    return _cached_weights(destination, download, source)


def _resolve_run_artifact(source: str, client: MlflowClient, tracking_uri: str, cache_root: Path) -> Path:
    """runs:/<run_id>/<path> -> cached copy of that artifact (a file, or a folder with model.pt)."""
    run_id, _, artifact_path = source[len("runs:/") :].partition("/")
    artifact_path = artifact_path.strip("/")
    if not run_id or ".." in artifact_path.split("/"):
        raise ValueError(f"teacher source {source!r}: expected runs:/<run_id>/<artifact path> without '..'")
    get_run(client, run_id, tracking_uri, role=f"teacher source {source!r}: run")
    if artifact_path:
        parent = _posix_parent(artifact_path)
        entries = {info.path: info for info in client.list_artifacts(run_id, parent or None)}
        if artifact_path not in entries:
            raise FileNotFoundError(
                f"teacher source {source!r}: run {run_id} has no artifact {artifact_path!r}; "
                f"{parent or 'its root'} holds {shown_names(sorted(entries)) if entries else 'nothing'}"
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
