"""Teacher resolution: a teacher source (registry URI, run artifact or file) to a local weights file.

MLflow artifacts are downloaded once into a cache folder (atomically, via a rename), so every
worker of a node reads the same file. `locate_teacher` checks a source the same way without
downloading or creating anything, for the checks that run before a command starts.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow.artifacts
from mlflow import MlflowClient

from hwd_tune.tracking.registry import CHECKPOINT_FILE, META_TAG_PREFIX, listing, registered_version, shown_names
from hwd_tune.tracking.runs import get_run
from hwd_tune.tracking.store import missing_local_store, mlflow_client, redact_uri

logger = logging.getLogger(__name__)
MLFLOW_SOURCES = ("models:/", "runs:/")  # teacher sources read from MLflow; any other is a local path


@dataclass(frozen=True)
class TeacherLocation:
    """Where a teacher source points, found without downloading or writing anything."""

    source: str
    weights: Path | None  # the weights file of a local source; None for one in MLflow
    meta: dict[str, str]  # a registered version's meta.json scalars (arch, num_classes, ...); {} if unknown


def is_mlflow_source(source: str) -> bool:
    """Whether `source` names weights in MLflow (models:/..., runs:/...) rather than a local file."""
    return isinstance(source, str) and source.strip().startswith(MLFLOW_SOURCES)


def resolve_teacher(source: str, *, tracking_uri: str | None, cache_dir: str | os.PathLike) -> Path:
    """Local state-dict file for a teacher source; MLflow artifacts are downloaded once into cache_dir.

    source: `models:/<name>@<alias>`, `models:/<name>/<version>`, `runs:/<run_id>/<path>`, or a
    file / checkpoint directory holding model.pt (our checkpoints, the authors' .pth files).
    Raises ValueError for an unknown model, alias, version or run (naming the ones that exist) or
    a local store that does not exist yet, and FileNotFoundError for a missing file or artifact
    (naming what is there).
    """
    source = _checked_text(source)
    if not is_mlflow_source(source):
        return _local_source(source)
    client = _existing_store_client(source, tracking_uri)
    if source.startswith("models:/"):
        return _resolve_registered(source, client, tracking_uri, Path(cache_dir))
    return _resolve_run_artifact(source, client, tracking_uri, Path(cache_dir))


def locate_teacher(source: str, *, tracking_uri: str | None) -> TeacherLocation:
    """Where `source` points, with the errors of `resolve_teacher`, but nothing downloaded and no
    store created: a registry URI is looked up (with its version's metadata), a run and its artifact
    listed, a local file found."""
    source = _checked_text(source)
    if not is_mlflow_source(source):
        return TeacherLocation(source, _local_source(source), {})
    client = _existing_store_client(source, tracking_uri)
    if source.startswith("runs:/"):
        _checked_run_artifact(source, client, tracking_uri)
        return TeacherLocation(source, None, {})
    name, version_number = registered_version(tracking_uri, source)
    tags = client.get_model_version(name, version_number).tags
    meta = {key[len(META_TAG_PREFIX) :]: value for key, value in tags.items() if key.startswith(META_TAG_PREFIX)}
    return TeacherLocation(source, None, meta)


def _checked_text(source: str) -> str:
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"teacher source must be a non-empty string, got {source!r}")
    return source.strip()


def _local_source(source: str) -> Path:
    """The weights file of a path or file:// URI (a file, or a directory holding model.pt)."""
    path = unquote(urlparse(source).path) if source.startswith("file://") else source
    return _local_weights(Path(path).expanduser(), asked=source)


def _existing_store_client(source: str, tracking_uri: str | None) -> MlflowClient:
    """A client of the store that should hold `source`. A local store that does not exist yet is
    not created just to be found empty: ValueError saying so."""
    if not tracking_uri:
        raise ValueError(f"teacher source {source!r} needs a tracking URI, got {tracking_uri!r}")
    if missing_local_store(tracking_uri) is not None:
        what = "registered" if source.startswith("models:/") else "logged"
        raise ValueError(
            f"teacher source {source!r} is not {what}: the MLflow store {redact_uri(tracking_uri)} does not "
            "exist yet, so it is empty; train and register a teacher first (hwd-tune train-teacher), or set "
            "tracking.uri (or MLFLOW_TRACKING_URI) to the store that holds it"
        )
    return mlflow_client(tracking_uri)


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
    run_id, artifact_path = _checked_run_artifact(source, client, tracking_uri)
    destination = cache_root / "runs" / run_id / (artifact_path or "_root")

    def download(scratch: Path) -> Path:
        return Path(client.download_artifacts(run_id, artifact_path, str(scratch)))

    return _cached_weights(destination, download, source)


def _checked_run_artifact(source: str, client: MlflowClient, tracking_uri: str) -> tuple[str, str]:
    """(run id, artifact path) of runs:/<run_id>/<path>, once the run and the artifact are found."""
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
    return run_id, artifact_path


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
