"""hwd_tune.tracking.params: every config value under its dotted key, plus the aliases."""

import pytest

from hwd_tune import tracking
from hwd_tune.config import TrainConfig
from tests.tracking.helpers import PASSWORD


def reference_leaves(node, prefix=""):
    """Every (dotted key, value) leaf of a nested dict, written independently of the module."""
    leaves = {}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            leaves.update(reference_leaves(value, dotted + "."))
        else:
            leaves[dotted] = value
    return leaves


def test_flatten_params_has_every_value_and_the_aliases():
    config = TrainConfig.model_validate(
        {
            "teacher": {"source": "models:/teacher-ade20k-deeplabv3_resnet101@iter-80k"},
            "method": {"name": "hwd", "params": {"tau": 2.0, "mu": 0.5}},
            "data": {"name": "ade20k"},
            "schedule": {"max_iters": 1234},
            "tracking": {"uri": f"http://alice:{PASSWORD}@mlflow:5000"},
        }
    )
    flat = tracking.flatten_params(config.model_dump(mode="json"))
    assert all(isinstance(value, str) for value in flat.values())
    for key, value in reference_leaves(config.model_dump(mode="json")).items():
        if key == "method.params":
            continue
        expected = "http://alice:***@mlflow:5000" if key == "tracking.uri" else str(value)
        assert flat[key] == expected, key
    # method.params completed with HWD's defaults (beta 0.1, weight 3.0, ...), given values kept
    assert flat["method.params.tau"] == "2.0" and flat["method.params.mu"] == "0.5"
    assert flat["method.params.beta"] == "0.1" and flat["method.params.weight"] == "3.0"
    assert flat["data.scale_range"] == "[0.5, 2.0]" and flat["teacher.milestones"] == "[80000, 160000]"
    aliases = {key: flat[key] for key in tracking.PARAM_ALIASES}
    assert aliases == {
        "tau": "2.0",
        "mu": "0.5",
        "beta": "0.1",
        "method": "hwd",
        "dataset": "ade20k",
        "student": "deeplabv3_resnet18",
        "teacher": "models:/teacher-ade20k-deeplabv3_resnet101@iter-80k",
        "max_iters": "1234",
    }
    assert all(PASSWORD not in value for value in flat.values())
    assert tracking.flatten_params(config) == flat  # a pydantic config directly gives the same


def test_flatten_params_for_a_teacher_job_and_other_methods():
    teacher_job = TrainConfig.model_validate({"job": "teacher", "method": {"name": "none"}})
    flat = tracking.flatten_params(teacher_job.model_dump(mode="json"))
    assert flat["teacher"] == "none" and flat["method"] == "none" and flat["method.params"] == "{}"
    assert not {"tau", "mu", "beta"} & set(flat)
    cwd = TrainConfig.model_validate({"method": {"name": "cwd"}, "teacher": {"source": "/w/t.pth"}})
    flat = tracking.flatten_params(cwd.model_dump(mode="json"))
    assert flat["tau"] == "4.0" and "mu" not in flat and flat["teacher"] == "/w/t.pth"


def test_flatten_params_truncates_values_beyond_mlflows_limit():
    flat = tracking.flatten_params({"long": "x" * 7000, "nested": {"ok": [1, (2, 3)]}})
    assert len(flat["long"]) == 6000 and flat["long"].endswith(tracking.TRUNCATION_MARKER)
    assert flat["long"].startswith("x" * 5000)
    assert flat["nested.ok"] == "[1, (2, 3)]"
    with pytest.raises(ValueError, match="config must be a mapping"):
        tracking.flatten_params(["not", "a", "mapping"])
