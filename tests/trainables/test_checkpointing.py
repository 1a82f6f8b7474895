"""trainables.checkpointing: atomic files, a manifest of sizes and SHA-256, damage named by file."""

import hashlib
import json

import pytest
import torch

from trainables.checkpointing import (
    MANIFEST_FILE,
    META_FILE,
    MODEL_FILE,
    STATE_FILE,
    CorruptCheckpointError,
    best_whole_checkpoint_in,
    checkpoint_problems,
    load_checkpoint,
    save_checkpoint,
)


@pytest.fixture
def checkpoint(tmp_path):
    model = {"weight": torch.arange(12.0).reshape(3, 4), "bias": torch.zeros(3)}
    state = {"iteration": 8, "best_miou": 41.5, "optimizer": {"lr": torch.tensor(0.01)}}
    return save_checkpoint(tmp_path / "ckpt", model_state=model, train_state=state, meta={"iteration": 8}), model


def test_the_manifest_holds_each_files_size_and_sha256_and_the_checkpoint_loads(checkpoint):
    directory, model = checkpoint
    manifest = json.loads((directory / MANIFEST_FILE).read_text())["files"]
    assert set(manifest) == {MODEL_FILE, STATE_FILE, META_FILE}
    for name, entry in manifest.items():
        data = (directory / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert checkpoint_problems(directory) == []
    weights, state, meta = load_checkpoint(directory)
    assert torch.equal(weights["weight"], model["weight"]) and state["iteration"] == 8 and meta == {"iteration": 8}
    assert not list(directory.glob("*.partial"))  # every file was renamed into place


def test_a_truncated_file_is_named_with_both_sizes(checkpoint):
    directory, _ = checkpoint
    path = directory / MODEL_FILE
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 2])
    assert checkpoint_problems(directory) == [f"{path}: {size // 2} bytes, the manifest says {size}"]
    with pytest.raises(CorruptCheckpointError, match=rf"checkpoint {directory} is damaged: {path}: "):
        load_checkpoint(directory)


def test_a_changed_byte_of_the_same_size_fails_the_checksum(checkpoint):
    directory, _ = checkpoint
    path = directory / STATE_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert checkpoint_problems(directory) == [
        f"{path}: SHA-256 differs from the manifest's (the file changed after it was written)"
    ]


def test_a_missing_file_and_a_broken_manifest_are_named(checkpoint):
    directory, _ = checkpoint
    (directory / META_FILE).unlink()
    assert checkpoint_problems(directory) == [f"{directory / META_FILE}: missing"]
    assert checkpoint_problems(directory, files=(MODEL_FILE,)) == []  # published weights: only what is asked
    (directory / MANIFEST_FILE).write_text("{not json")
    assert checkpoint_problems(directory)[0].startswith(f"{directory / MANIFEST_FILE}: unreadable manifest")


def test_checkpoints_from_before_manifests_load_when_whole(checkpoint):
    directory, _ = checkpoint
    (directory / MANIFEST_FILE).unlink()
    assert checkpoint_problems(directory) == []
    (directory / MODEL_FILE).write_bytes(b"not a torch file")
    problems = checkpoint_problems(directory)
    assert len(problems) == 1 and f"checkpoint file {directory / MODEL_FILE} is unreadable or corrupt" in problems[0]


def test_the_best_whole_checkpoint_of_a_run_skips_damaged_better_ones(tmp_path):
    def write(name, miou):
        return save_checkpoint(
            tmp_path / name, model_state={"w": torch.ones(2)}, train_state={"iteration": 1}, meta={"val_miou": miou}
        )

    best, second, third = write("checkpoint_a", 50.0), write("checkpoint_b", 45.0), write("checkpoint_c", 40.0)
    (tmp_path / "checkpoint_manager_snapshot.json").write_text("{}")  # Ray's file beside the folders
    assert best_whole_checkpoint_in(tmp_path) == (best, [])
    (best / MODEL_FILE).write_bytes(b"cut")
    chosen, notes = best_whole_checkpoint_in(tmp_path)
    assert chosen == second and len(notes) == 1
    assert notes[0].startswith(f"checkpoint {best} (val_miou 50.00) is damaged, skipped: {best / MODEL_FILE}: 3 bytes")
    for folder in (second, third):
        (folder / STATE_FILE).unlink()
    assert best_whole_checkpoint_in(tmp_path)[0] is None
    assert best_whole_checkpoint_in(tmp_path / "missing") == (None, [])
