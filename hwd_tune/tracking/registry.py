"""The teacher registry: `teacher-<dataset>-<arch>` versions with aliases `iter-80k`, `iter-160k`, `best`.

A version holds a plain state_dict `model.pt` (and `meta.json`), never a pickled model, and is
read back with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from hwd_tune.tracking.run_logger import redacted_json_copy
from hwd_tune.tracking.runs import get_run, tag_value
from hwd_tune.tracking.store import is_not_found, mlflow_client, redact_uri

logger = logging.getLogger(__name__)
TEACHER_ARTIFACT_ROOT = "teacher"  # run artifact folder of registered teacher checkpoints
TEACHER_FILES = ("model.pt", "meta.json")  # what a teacher version holds (no optimizer state)
CHECKPOINT_FILE = "model.pt"
META_TAG_PREFIX = "hwd.meta."  # a version's tags: its meta.json scalars (arch, num_classes, ...)
_ALIAS_PATTERN = re.compile(r"^[\w\-]+$")  # MLflow: alphanumerics, underscores, dashes
_RESERVED_ALIAS_PATTERN = re.compile(r"^(latest|[vV]\d+)$", re.IGNORECASE)
_MAX_NAMES_SHOWN = 20
_SCALARS = (str, int, float, bool)


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
            f"teacher checkpoint {checkpoint_dir} has no {CHECKPOINT_FILE}; it holds {listing(checkpoint_dir)}"
        )
    meta = _read_meta(checkpoint_dir / "meta.json")
    client = mlflow_client(tracking_uri)
    run = get_run(client, run_id, tracking_uri)

    iteration = meta.get("iteration")
    label = milestone_alias(iteration) if _is_positive_int(iteration) else (aliases or ["checkpoint"])[0]
    artifact_path = _unused_artifact_path(client, run_id, f"{TEACHER_ARTIFACT_ROOT}/{label}")
    with tempfile.TemporaryDirectory(prefix="hwd-teacher-") as scratch:
        for file_name in TEACHER_FILES:
            path = checkpoint_dir / file_name
            if path.is_file():
                client.log_artifact(run_id, str(redacted_json_copy(path, Path(scratch))), artifact_path)

    _ensure_registered_model(client, name, dataset, arch)
    return create_version(client, name, run, artifact_path, meta, tags, aliases, f"{arch} teacher on {dataset}")


def create_version(
    client: MlflowClient,
    name: str,
    run: Any,
    artifact_path: str,
    meta: Mapping[str, Any],
    tags: Mapping[str, Any] | None,
    aliases: Sequence[str],
    what: str,
) -> int:
    """A new version of `name` from `artifact_path` of `run`, tagged with the checkpoint's meta
    scalars and `tags`, holding `aliases`; `what` opens its description ("<arch> teacher on <dataset>")."""
    version_tags = {
        "hwd.artifact_path": artifact_path,
        **{f"{META_TAG_PREFIX}{key}": value for key, value in meta.items() if isinstance(value, _SCALARS)},
        **(tags or {}),
    }
    version = client.create_model_version(
        name,
        source=f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}",
        run_id=run.info.run_id,
        tags={key: tag_value(value) for key, value in version_tags.items()},
        description=f"{what} from run {run.info.run_id}, artifacts {artifact_path}",
    )
    for alias in aliases:
        client.set_registered_model_alias(name, alias, str(version.version))
    logger.info("registered %s version %s with aliases %s", name, version.version, list(aliases))
    return int(version.version)


def _check_alias(alias: str) -> None:
    if not isinstance(alias, str) or not _ALIAS_PATTERN.match(alias) or len(alias) > 255:
        raise ValueError(f"alias {alias!r} is not a valid MLflow alias: use letters, digits, '_' and '-' (at most 255)")
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


def _ensure_registered_model(
    client: MlflowClient, name: str, dataset: str, arch: str, description: str | None = None
) -> None:
    try:
        client.get_registered_model(name)
        return
    except MlflowException as error:
        if not is_not_found(error):
            raise
    try:
        client.create_registered_model(
            name,
            tags={"hwd.dataset": dataset, "hwd.arch": arch},
            description=description or f"{arch} teachers trained on {dataset} (plain state_dict model.pt)",
        )
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":  # created meanwhile by another process
            raise


def registered_version(tracking_uri: str, source: str, role: str = "teacher source") -> tuple[str, str]:
    """(model name, version number) that models:/name@alias or models:/name/version points at.

    Raises ValueError naming the aliases and versions that exist when it points nowhere; `role`
    names the URI in messages ("teacher source", "model URI").
    """
    return _registered_version(source, mlflow_client(tracking_uri), tracking_uri, role)


def _registered_version(
    source: str, client: MlflowClient, tracking_uri: str, role: str = "teacher source"
) -> tuple[str, str]:
    body = source[len("models:/") :].strip("/")
    if "@" in body:
        name, _, alias = body.rpartition("@")
        version_number = None
    else:
        name, _, version_text = body.rpartition("/")
        alias = None
        if not name or not version_text.isdigit():
            raise ValueError(f"{role} {source!r}: expected models:/<name>@<alias> or models:/<name>/<version number>")
        version_number = str(int(version_text))
    if "'" in name:
        raise ValueError(f"{role} {source!r}: a model name cannot contain quotes")
    model = _registered_model(client, name, source, tracking_uri, role)
    versions = sorted(int(version.version) for version in client.search_model_versions(f"name = '{name}'"))
    aliases = {key: int(value) for key, value in sorted(model.aliases.items())}  # REST gives str versions
    if alias is not None:
        if alias not in aliases:
            raise ValueError(
                f"{role} {source!r}: model {name!r} has no alias {alias!r}; "
                f"its aliases are {aliases or 'none'}, versions {versions}"
            )
        version_number = str(aliases[alias])
    if int(version_number) not in versions:
        raise ValueError(
            f"{role} {source!r}: model {name!r} has no version {version_number}; "
            f"versions {versions}, aliases {aliases or 'none'}"
        )
    return name, version_number


def _registered_model(client: MlflowClient, name: str, source: str, tracking_uri: str, role: str):
    try:
        return client.get_registered_model(name)
    except MlflowException as error:
        if not is_not_found(error):
            raise
    existing = sorted(model.name for model in client.search_registered_models(max_results=1000))
    raise ValueError(
        f"{role} {source!r}: no registered model {name!r} in {redact_uri(tracking_uri)}; "
        f"registered models: {shown_names(existing) if existing else 'none'}"
    ) from None


def listing(directory: Path) -> str:
    try:
        names = sorted(entry.name for entry in directory.iterdir())
    except OSError:
        return "nothing readable"
    return shown_names(names) if names else "nothing"


def shown_names(names: Sequence[str]) -> str:
    shown = list(names[:_MAX_NAMES_SHOWN])
    more = f" and {len(names) - len(shown)} more" if len(names) > len(shown) else ""
    return f"{shown}{more}"
