"""hwd_tune.tracking.teachers: a teacher source (registry URI, run artifact, file) to a local file."""

import pytest
import torch

from hwd_tune import tracking
from tests.tracking.helpers import assert_same_state


@pytest.mark.parametrize(
    "source, which",
    [
        ("models:/teacher-synthetic-deeplabv3_resnet18@iter-100", 0),
        ("models:/teacher-synthetic-deeplabv3_resnet18@iter-200", 1),
        ("models:/teacher-synthetic-deeplabv3_resnet18@best", 1),
        ("models:/teacher-synthetic-deeplabv3_resnet18/1", 0),
        ("models:/teacher-synthetic-deeplabv3_resnet18/2", 1),
        ("runs:/{run_id}/teacher/iter-100/model.pt", 0),
        ("runs:/{run_id}/teacher/iter-200", 1),
    ],
)
def test_resolve_teacher_from_mlflow(store, teachers, tmp_path, source, which):
    source = source.format(run_id=teachers["run_id"])
    cache_dir = tmp_path / "cache"
    path = tracking.resolve_teacher(source, tracking_uri=store[1], cache_dir=cache_dir)
    assert path.is_file() and cache_dir.resolve() in path.parents
    assert_same_state(path, teachers["states"][which])
    mtime = path.stat().st_mtime_ns
    again = tracking.resolve_teacher(source, tracking_uri=store[1], cache_dir=cache_dir)
    assert again == path and again.stat().st_mtime_ns == mtime  # the cached copy is reused
    assert not [entry for entry in path.parent.parent.iterdir() if entry.name.startswith(".download-")]


def test_resolve_teacher_from_plain_files(teachers, tmp_path):
    checkpoint = teachers["checkpoints"][0]
    for source in (str(checkpoint), str(checkpoint / "model.pt"), (checkpoint / "model.pt").as_uri()):
        path = tracking.resolve_teacher(source, tracking_uri=None, cache_dir=tmp_path)
        assert path == (checkpoint / "model.pt").resolve()
        assert_same_state(path, teachers["states"][0])
    authors_file = tmp_path / "deeplabv3_resnet101_citys_best_model.pth"
    torch.save(teachers["states"][1], authors_file)
    assert tracking.resolve_teacher(str(authors_file), tracking_uri=None, cache_dir=tmp_path) == authors_file


def test_resolve_teacher_errors_name_what_exists(store, teachers, tmp_path):
    name, uri = teachers["name"], store[1]
    with pytest.raises(ValueError, match=r"has no alias 'iter-80k'; its aliases are \{'best': 2, 'iter-100': 1"):
        tracking.resolve_teacher(f"models:/{name}@iter-80k", tracking_uri=uri, cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"has no version 9; versions \[1, 2"):
        tracking.resolve_teacher(f"models:/{name}/9", tracking_uri=uri, cache_dir=tmp_path)
    with pytest.raises(ValueError, match=rf"no registered model 'teacher-ade20k-x'.*registered models: \[.*'{name}'"):
        tracking.resolve_teacher("models:/teacher-ade20k-x@best", tracking_uri=uri, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="expected models:/<name>@<alias> or models:/<name>/<version number>"):
        tracking.resolve_teacher(f"models:/{name}/latest", tracking_uri=uri, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="needs a tracking URI"):
        tracking.resolve_teacher(f"models:/{name}@best", tracking_uri=None, cache_dir=tmp_path)
    run_id = teachers["run_id"]
    with pytest.raises(FileNotFoundError, match=r"no artifact 'teacher/iter-300'; teacher holds \['teacher/iter-100'"):
        tracking.resolve_teacher(f"runs:/{run_id}/teacher/iter-300", tracking_uri=uri, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="without '..'"):
        tracking.resolve_teacher(f"runs:/{run_id}/../../etc", tracking_uri=uri, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="run 'deadbeef' not found"):
        tracking.resolve_teacher("runs:/deadbeef/model.pt", tracking_uri=uri, cache_dir=tmp_path)
    (tmp_path / "present.pth").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"no such file or directory .*missing.pth; .* holds \[.*'present.pth'"):
        tracking.resolve_teacher(str(tmp_path / "missing.pth"), tracking_uri=None, cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"has no model.pt; it holds \['present.pth'\]"):
        tracking.resolve_teacher(str(tmp_path), tracking_uri=None, cache_dir=tmp_path / "cache")
    assert not list(tmp_path.glob("models/*"))  # nothing half-downloaded left behind


def test_locate_teacher_finds_a_source_without_downloading(store, teachers, tmp_path):
    registered = tracking.locate_teacher(f"models:/{teachers['name']}@iter-100", tracking_uri=store[1])
    assert registered.weights is None and registered.meta["iteration"] == "100"  # the version's meta.json
    run_artifact = tracking.locate_teacher(f"runs:/{teachers['run_id']}/teacher/iter-200", tracking_uri=store[1])
    assert run_artifact.weights is None and run_artifact.meta == {}
    checkpoint = teachers["checkpoints"][0]
    assert tracking.locate_teacher(str(checkpoint), tracking_uri=None).weights == (checkpoint / "model.pt").resolve()
    with pytest.raises(ValueError, match=r"has no alias 'iter-80k'"):
        tracking.locate_teacher(f"models:/{teachers['name']}@iter-80k", tracking_uri=store[1])
    with pytest.raises(FileNotFoundError, match=r"no artifact 'teacher/iter-300'"):
        tracking.locate_teacher(f"runs:/{teachers['run_id']}/teacher/iter-300", tracking_uri=store[1])
    with pytest.raises(FileNotFoundError, match=r"no such file or directory .*missing\.pt"):
        tracking.locate_teacher(str(tmp_path / "missing.pt"), tracking_uri=None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("source", ["models:/teacher-synthetic-deeplabv3_resnet18@best", "runs:/deadbeef/model.pt"])
def test_a_store_that_does_not_exist_yet_is_not_created_to_find_a_teacher(tmp_path, source):
    uri = tracking.default_tracking_uri(tmp_path / "outputs")
    expected = rf"teacher source '{source}' is not (registered|logged): the MLflow store .* does not exist yet"
    with pytest.raises(ValueError, match=expected):
        tracking.locate_teacher(source, tracking_uri=uri)
    with pytest.raises(ValueError, match=expected):
        tracking.resolve_teacher(source, tracking_uri=uri, cache_dir=tmp_path / "outputs" / "teacher_cache")
    assert not (tmp_path / "outputs").exists()
