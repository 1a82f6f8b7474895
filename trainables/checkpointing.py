"""Training checkpoints: a directory with model.pt, train_state.pt and meta.json.

model.pt is a plain state_dict (loadable by `hwd_tune.models.load_weights`); train_state.pt
holds what a resumed run needs (optimizer, scheduler, scaler, distiller, iteration, RNG states,
best mIoU); meta.json says what the weights are. Everything is read with weights_only=True.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

MODEL_FILE = "model.pt"
STATE_FILE = "train_state.pt"
META_FILE = "meta.json"


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
    """Writes the three files into `directory` (created); each file appears complete or not at all."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _write_atomically(directory / MODEL_FILE, lambda path: torch.save(model_state, path))
    _write_atomically(directory / STATE_FILE, lambda path: torch.save(train_state, path))
    _write_atomically(directory / META_FILE, lambda path: path.write_text(json.dumps(meta, indent=2, default=str)))
    return directory


def load_checkpoint(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(model state_dict, train state, meta) of a checkpoint directory; errors name the file."""
    directory = Path(directory)
    loaded = []
    for name in (MODEL_FILE, STATE_FILE):
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {directory} has no {name}")
        try:
            loaded.append(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as error:  # noqa: BLE001 - any unpickling failure means a corrupt file
            raise ValueError(f"checkpoint file {path} is unreadable or corrupt: {error}") from None
    meta_path = directory / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return loaded[0], loaded[1], meta


def read_meta(directory: str | Path) -> dict[str, Any]:
    """meta.json of a checkpoint directory."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {directory} an hwd-tune checkpoint directory?")
    return json.loads(path.read_text())


def _write_atomically(path: Path, write: Any) -> None:
    temporary = path.with_name(path.name + ".partial")
    write(temporary)
    temporary.replace(path)
