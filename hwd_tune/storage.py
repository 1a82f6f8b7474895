"""Where a job keeps its files: the output folder and Ray's storage (a folder, a shared mount or s3://, gs://).

Ray Train and Tune need one storage that every node sees (trial folders, checkpoints); a local
folder works on one machine only. The image sets `HWD_STORAGE` and `HWD_OUTPUT_DIR` so a sweep
file's own values need not change between a laptop and a cluster. Inside a `ray job submit`
driver the working directory is an uploaded copy that Ray deletes, so a relative path there is
refused with what to set instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

STORAGE_ENV = "HWD_STORAGE"  # default of TrainConfig.storage (the image sets it on every node)
OUTPUT_DIR_ENV = "HWD_OUTPUT_DIR"  # folder a relative output_dir is taken from (the image sets it)
OPTUNA_STORAGE_ENV = "HWD_OPTUNA_STORAGE"  # default Optuna storage URL of a sweep
# Set by Ray's job supervisor for the driver of a `ray job submit` job only (not for its workers).
RAY_JOB_DRIVER_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
# URI schemes of pyarrow's filesystems (pyarrow.fs.FileSystem.from_uri), which Ray uses for storage_path.
REMOTE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


def in_ray_job_driver() -> bool:
    """True in the driver of a `ray job submit` job, whose working directory Ray deletes afterwards."""
    return bool(os.environ.get(RAY_JOB_DRIVER_ENV))


def is_remote(location: str) -> bool:
    """True for a URI of a remote filesystem (s3://, gs://, ...), False for a local path or file://."""
    return urlsplit(location).scheme in REMOTE_SCHEMES


def resolve_output_dir(output_dir: str) -> str:
    """`output_dir` made absolute against HWD_OUTPUT_DIR when that is set; a relative one is kept
    as is outside a Ray job and refused inside one (it would vanish with the job's working dir)."""
    path = Path(output_dir).expanduser()
    if path.is_absolute():
        return str(path)
    base = os.environ.get(OUTPUT_DIR_ENV)
    if base:
        if not Path(base).is_absolute():
            raise ValueError(f"{OUTPUT_DIR_ENV}={base!r} must be an absolute folder")
        return str(Path(base) / path)
    if in_ray_job_driver():
        raise ValueError(
            f"{output_dir!r} is relative, and this runs in a Ray job whose working directory Ray deletes "
            f"when the job ends; set {OUTPUT_DIR_ENV} on the head (an absolute folder) or an absolute output_dir"
        )
    return output_dir


def resolve_storage(storage: str | None) -> str | None:
    """`storage`, else HWD_STORAGE, checked: a remote URI of a known scheme or a folder (a relative
    folder is refused inside a Ray job). None when neither is set: the output folder is used."""
    value = storage if storage is not None else os.environ.get(STORAGE_ENV) or None
    if value is None:
        return None
    scheme = urlsplit(value).scheme
    if "://" in value and scheme not in (*REMOTE_SCHEMES, "file"):
        raise ValueError(
            f"{value!r}: unknown filesystem scheme {scheme!r}; expected a folder or one of "
            f"{', '.join(s + '://' for s in (*REMOTE_SCHEMES, 'file'))}"
        )
    if is_remote(value):
        if not urlsplit(value).netloc:
            raise ValueError(f"{value!r} names no bucket; expected e.g. s3://my-bucket/hwd-tune")
        return value
    path = Path(urlsplit(value).path if scheme == "file" else value).expanduser()
    if not path.is_absolute() and in_ray_job_driver():
        raise ValueError(
            f"{value!r} is relative, and this runs in a Ray job whose working directory Ray deletes when "
            f"the job ends; set storage (or {STORAGE_ENV}) to a shared folder or an s3:// / gs:// URI"
        )
    return str(path)


def ray_storage_root(storage: str | None, output_dir: str) -> str:
    """Where Ray keeps a job's trials and checkpoints: `storage` (a URI or an absolute folder),
    else the output folder, made absolute."""
    if storage is not None and is_remote(storage):
        return storage
    return str(Path(storage if storage is not None else output_dir).expanduser().resolve())


def join(location: str, *parts: str) -> str:
    """`location/part/...` for a folder or a URI (query options such as ?endpoint_override= kept)."""
    if not is_remote(location):
        return str(Path(location, *parts))
    split = urlsplit(location)
    path = "/".join([split.path.rstrip("/"), *parts])
    return urlunsplit(split._replace(path=path))


def filesystem(location: str):
    """(pyarrow filesystem, path in it) of a folder or URI; S3 honours AWS_ENDPOINT_URL."""
    from pyarrow import fs

    if not is_remote(location):
        return fs.LocalFileSystem(), str(Path(location).resolve())
    return fs.FileSystem.from_uri(location)


def exists(location: str) -> bool:
    """True when a file or folder exists at `location` (local or remote)."""
    from pyarrow import fs

    filesystem_, path = filesystem(location)
    return filesystem_.get_file_info(path).type != fs.FileType.NotFound


def list_folders(location: str) -> list[str]:
    """Names of the folders directly inside `location` ([] when it does not exist)."""
    from pyarrow import fs

    filesystem_, path = filesystem(location)
    if filesystem_.get_file_info(path).type == fs.FileType.NotFound:
        return []
    selector = fs.FileSelector(path, allow_not_found=True)
    return sorted(info.base_name for info in filesystem_.get_file_info(selector) if info.type == fs.FileType.Directory)


def download_folder(location: str, destination: str | Path) -> Path:
    """A local copy of the folder at `location` in `destination` (replaced if there); a local
    `location` is returned as is."""
    if not is_remote(location):
        return Path(location)
    from pyarrow import fs

    destination = Path(destination)
    shutil.rmtree(destination, ignore_errors=True)
    destination.mkdir(parents=True)
    source, path = filesystem(location)
    fs.copy_files(path, str(destination), source_filesystem=source, destination_filesystem=fs.LocalFileSystem())
    return destination
