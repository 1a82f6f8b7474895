"""Where MLflow keeps runs: tracking URIs, the client bound to one, and redaction of secrets in URIs.

Everything goes through an `MlflowClient` bound to an explicit tracking URI (never the fluent,
process-global active run), so the driver can create a run and a Ray worker can log to it by id.
Secrets: URIs are shown and logged with their password replaced by `***` (`redact_uri`), and
environment variables are never logged.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
from contextlib import closing
from pathlib import Path
from urllib.parse import unquote, urlparse

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

logger = logging.getLogger(__name__)

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
MLFLOW_FOLDER = "mlflow"  # under output_dir: mlflow.db and artifacts/
TRUNCATION_MARKER = "...[truncated]"
_URI_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#\s]*)@")
_SECRET_QUERY = re.compile(r"(?i)([?&][^=&#]*(?:password|passwd|pwd|token|secret|key|signature|sig)[^=&#]*=)[^&#]*")


_RELOCATION_CHECKED: set[Path] = set()  # sqlite stores this process has checked (relocate_sqlite_store)


def default_tracking_uri(output_dir: str | os.PathLike) -> str:
    """`sqlite:///<abs output_dir>/mlflow/mlflow.db`; its experiments keep artifacts in `mlflow/artifacts`."""
    database = Path(output_dir).expanduser().resolve() / MLFLOW_FOLDER / "mlflow.db"
    return f"sqlite:///{database.as_posix()}"


def resolve_tracking_uri(config_uri: str | None, output_dir: str | os.PathLike) -> str:
    """The tracking URI to use: env MLFLOW_TRACKING_URI, else `tracking.uri`, else the embedded default."""
    from_env = os.environ.get(TRACKING_URI_ENV, "").strip()
    if from_env:
        return _absolute_sqlite(from_env)
    if config_uri is not None and config_uri.strip():
        return _absolute_sqlite(config_uri.strip())
    return default_tracking_uri(output_dir)


def _absolute_sqlite(uri: str) -> str:
    """`sqlite:///relative.db` made absolute (a process in another directory finds the same store)."""
    database = _sqlite_path(uri)
    if database is None:
        return uri
    query = uri.partition("?")[2]
    return f"sqlite:///{database.as_posix()}" + (f"?{query}" if query else "")


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


def redacted_if_uri(text: str) -> str:
    return redact_uri(text) if "://" in text else text


def truncated(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER


def _sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///path` URI (absolute or relative path), else None."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    path_text = tracking_uri[len(prefix) :].split("?", 1)[0]
    if not path_text or path_text == ":memory:":
        return None
    return Path(path_text).resolve()


def relocate_sqlite_store(database: Path) -> list[str]:
    """Points a copied or moved sqlite store's artifact folders at `<its folder>/artifacts`.

    MLflow keeps absolute artifact locations in its database, so a copy of `outputs/` would go on
    writing artifacts into the original. An experiment laid out by `default_artifact_location`
    (`<X>/artifacts` for another folder X) whose run folders are in this store's `artifacts/` was
    copied or moved here: its location, its runs' and its model versions' are rewritten to this
    folder. Returns the prefixes rewritten (old -> new); idempotent, safe from several processes.
    """
    here = (database.parent / "artifacts").resolve()
    if not database.is_file() or not here.is_dir():
        return []
    present = {entry.name for entry in here.iterdir()}
    moved = []
    with closing(sqlite3.connect(database, timeout=30)) as connection, connection:
        try:
            experiments = connection.execute("SELECT experiment_id, artifact_location FROM experiments").fetchall()
        except sqlite3.OperationalError:
            return []  # not (yet) an MLflow store
        for experiment_id, location in experiments:
            if not location or not location.startswith("file://") or not location.endswith("/artifacts"):
                continue
            if Path(unquote(urlparse(location).path)) == here:
                continue
            run_ids = {
                row[0]
                for row in connection.execute("SELECT run_uuid FROM runs WHERE experiment_id = ?", (experiment_id,))
            }
            if not run_ids & present:
                continue
            old, new = location, here.as_uri()
            connection.execute(
                "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (new, experiment_id)
            )
            for table, column in (
                ("runs", "artifact_uri"),
                ("model_versions", "source"),
                ("model_versions", "storage_location"),
            ):
                connection.execute(
                    f"UPDATE {table} SET {column} = ? || substr({column}, ?) WHERE {column} LIKE ? || '/%'",
                    (new, len(old) + 1, old),
                )
            moved.append(f"{old} -> {new}")
    for line in moved:
        logger.warning("the MLflow store %s was copied or moved: artifacts now go to %s", database, line)
    return moved


def missing_local_store(tracking_uri: str) -> Path | None:
    """The file (sqlite) or folder (file store) of a local store that does not exist yet, so holds no
    runs or models; None when it exists, or for a server or a database elsewhere. Lets a check read a
    store without creating it (`mlflow_client` would)."""
    database = _sqlite_path(tracking_uri)
    if database is not None:
        return None if database.is_file() else database
    parsed = urlparse(tracking_uri)
    if parsed.scheme not in ("", "file"):
        return None
    folder = Path(unquote(parsed.path) if parsed.scheme else tracking_uri).expanduser().resolve()
    return None if folder.exists() else folder


def mlflow_client(tracking_uri: str) -> MlflowClient:
    """A client whose registry is the tracking store (MLflow would follow MLFLOW_REGISTRY_URI instead)."""
    if not isinstance(tracking_uri, str) or not tracking_uri.strip():
        raise ValueError(f"tracking_uri must be a non-empty string, got {tracking_uri!r}")
    database = _sqlite_path(tracking_uri)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)  # sqlite creates the file, not its folder
        if database not in _RELOCATION_CHECKED:  # once per process and store
            relocate_sqlite_store(database)
            _RELOCATION_CHECKED.add(database)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def is_not_found(error: MlflowException) -> bool:
    return error.error_code == "RESOURCE_DOES_NOT_EXIST"
