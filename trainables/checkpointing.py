"""Training checkpoints: a directory with model.pt, train_state.pt, meta.json and manifest.json.

model.pt is a plain state_dict (loadable by `hwd_tune.models.load_weights`); train_state.pt
holds what a resumed run needs (optimizer, scheduler, scaler, distiller, iteration, RNG states,
best mIoU); meta.json says what the weights are; manifest.json, written last, holds each file's
size and SHA-256, so a checkpoint cut short or damaged later is detected before it is used.
Every file is written under a temporary name and renamed. Everything is read with weights_only=True.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

MODEL_FILE = "model.pt"
STATE_FILE = "train_state.pt"
META_FILE = "meta.json"
MANIFEST_FILE = "manifest.json"
CHECKPOINT_FILES = (MODEL_FILE, STATE_FILE, META_FILE)


class CorruptCheckpointError(ValueError):
    """A checkpoint whose files are missing, cut short or changed since they were written."""


def capture_rng_state() -> dict[str, Any]:
    """Every RNG the loop draws from, as tensors and plain values (weights_only-loadable)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    directory: str | Path,
    *,
    model_state: dict[str, torch.Tensor],
    train_state: dict[str, Any],
    meta: dict[str, Any],
) -> Path:
    """Writes the three files, then the manifest of their sizes and SHA-256, into `directory`
    (created); each file appears complete or not at all, and the manifest only after all three."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    writers = {
        MODEL_FILE: lambda path: torch.save(model_state, path),
        STATE_FILE: lambda path: torch.save(train_state, path),
        META_FILE: lambda path: path.write_text(json.dumps(meta, indent=2, default=str)),
    }
    manifest = {"files": {name: _write_atomically(directory / name, write) for name, write in writers.items()}}
    _write_atomically(directory / MANIFEST_FILE, lambda path: path.write_text(json.dumps(manifest, indent=2)))
    return directory


def checkpoint_problems(directory: str | Path, files: tuple[str, ...] = CHECKPOINT_FILES) -> list[str]:
    """What is wrong with `files` of a checkpoint directory ([] when whole), checked against its
    manifest: each present, of its size and SHA-256. A checkpoint written before manifests existed
    is accepted when its files load. `files`: e.g. (model.pt, meta.json) for published weights."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        return _legacy_problems(directory, files)
    try:
        listed = json.loads(manifest_path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return [f"{manifest_path}: unreadable manifest ({error})"]
    problems = []
    for name in files:
        path, expected = directory / name, listed.get(name)
        if expected is None:
            problems.append(f"{manifest_path}: does not list {name}")
        elif not path.is_file():
            problems.append(f"{path}: missing")
        elif path.stat().st_size != expected["size"]:
            problems.append(f"{path}: {path.stat().st_size} bytes, the manifest says {expected['size']}")
        elif _sha256(path) != expected["sha256"]:
            problems.append(f"{path}: SHA-256 differs from the manifest's (the file changed after it was written)")
    return problems


def best_whole_checkpoint_in(run_dir: str | Path, metric: str = "val_miou") -> tuple[Path | None, list[str]]:
    """The checkpoint folder of a run (`<run_dir>/checkpoint_*`) with the highest `metric` in its
    meta.json among those that verify, and one note per better-scoring one skipped as damaged."""
    scored = []
    for folder in Path(run_dir).glob("checkpoint_*"):
        if not folder.is_dir():
            continue
        try:
            value = float(json.loads((folder / META_FILE).read_text()).get(metric, float("-inf")))
        except (OSError, ValueError):
            value = float("-inf")  # no readable meta: ranked last, and verified like the others
        scored.append((value, folder))
    notes = []
    for value, folder in sorted(scored, key=lambda pair: pair[0], reverse=True):
        problems = checkpoint_problems(folder)
        if not problems:
            return folder, notes
        notes.append(f"checkpoint {folder} ({metric} {value:.2f}) is damaged, skipped: " + "; ".join(problems))
    return None, notes


def verify_checkpoint(directory: str | Path, files: tuple[str, ...] = CHECKPOINT_FILES) -> None:
    """Raises CorruptCheckpointError naming every damaged file of the checkpoint."""
    problems = checkpoint_problems(directory, files)
    if problems:
        raise CorruptCheckpointError(f"checkpoint {directory} is damaged: " + "; ".join(problems))


def load_checkpoint(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(model state_dict, train state, meta) of a checkpoint directory, verified first; errors
    (CorruptCheckpointError, FileNotFoundError) name the file."""
    directory = Path(directory)
    for name in (MODEL_FILE, STATE_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"checkpoint {directory} has no {name}")
    verify_checkpoint(directory)
    loaded = [_load_tensors(directory / name) for name in (MODEL_FILE, STATE_FILE)]
    meta_path = directory / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return loaded[0], loaded[1], meta


def read_meta(directory: str | Path) -> dict[str, Any]:
    """meta.json of a checkpoint directory."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {directory} an hwd-tune checkpoint directory?")
    return json.loads(path.read_text())


def _load_tensors(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise CorruptCheckpointError(f"checkpoint file {path} is unreadable or corrupt: {error}") from None


def _legacy_problems(directory: Path, files: tuple[str, ...]) -> list[str]:
    """A checkpoint without a manifest: whole if its tensor files are there and load."""
    problems = []
    for name in (name for name in files if name in (MODEL_FILE, STATE_FILE)):
        path = directory / name
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        try:
            _load_tensors(path)
        except CorruptCheckpointError as error:
            problems.append(str(error))
    return problems


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomically(path: Path, write: Callable[[Path], Any]) -> dict[str, Any]:
    """`write`s under a temporary name, hashes what was written (still in the page cache), then
    renames it to `path`, so a reader sees all of it or nothing; returns its manifest entry.

    No fsync: the loop writes into a scratch folder that Ray Train then copies to the run's storage,
    and the manifest verifies the copy wherever it lands (fsync here doubled the write time)."""
    temporary = path.with_name(path.name + ".partial")
    write(temporary)
    entry = {"size": temporary.stat().st_size, "sha256": _sha256(temporary)}
    temporary.replace(path)
    return entry
