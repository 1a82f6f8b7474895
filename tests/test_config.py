"""Config loading: the paper's defaults, overrides, and errors that name file, field and value."""

import pytest
import yaml

from hwd_tune.config import (
    METHOD_PARAMS,
    ConfigError,
    HWDParams,
    TrainConfig,
    apply_overrides,
    load_train_config,
)

TEACHER = "teacher.source=teacher.pt"


def test_defaults_are_the_papers_recipe():
    config = load_train_config(None, [TEACHER])
    assert (config.optimizer.lr, config.optimizer.momentum, config.optimizer.weight_decay) == (0.01, 0.9, 1e-4)
    assert config.optimizer.poly_power == 0.9
    assert (config.schedule.max_iters, config.schedule.batch_size, config.schedule.val_interval) == (40000, 8, 400)
    assert config.data.crop_size == 512 and config.data.scale_range == (0.5, 2.0)
    assert config.teacher.arch == "deeplabv3_resnet101" and config.teacher.milestones == [80000, 160000]
    assert config.task.aux_weight == 0.4 and config.task.ignore_index == -1
    hwd = config.method.resolved_params()
    assert isinstance(hwd, HWDParams)
    assert (hwd.tau, hwd.mu, hwd.beta, hwd.weight) == (4.0, 0.0, 0.1, 3.0)
    assert (hwd.distance, hwd.process, hwd.on, hwd.pixel_norm) == ("mse", "exp", "probs", "none")
    holdout = config.data.holdout  # off: plain runs train on the whole training split, validate on val
    assert (holdout.fraction, holdout.max_images, holdout.seed, holdout.validate_on) == (0.0, None, 0, "val")


def test_every_table_ii_method_has_params():
    assert set(METHOD_PARAMS) == {"none", "kd", "cwd", "hwd", "dist", "mgd", "skd", "ifvd", "cirkd"}


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "method": {"name": "hwd", "params": {"mu": 1.0}},
                "teacher": {"source": "models:/teacher-cityscapes-deeplabv3_resnet101@iter-80k"},
                "schedule": {"max_iters": 100},
            }
        )
    )
    config = load_train_config(path, ["method.params.beta=0.5", "schedule.val_interval=10", "data.root=/data"])
    assert config.method.resolved_params().mu == 1.0
    assert config.method.resolved_params().beta == 0.5
    assert config.schedule.max_iters == 100 and config.schedule.val_interval == 10
    assert config.data.root == "/data"


def test_overrides_do_not_modify_the_input():
    raw = {"schedule": {"max_iters": 5}}
    assert apply_overrides(raw, ["schedule.max_iters=7"]) == {"schedule": {"max_iters": 7}}
    assert raw == {"schedule": {"max_iters": 5}}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["optimizer.lrr=0.1"], r"optimizer\.lrr: Extra inputs are not permitted"),
        (["schedule.max_iters=0"], r"schedule\.max_iters: .*greater than or equal to 1 \(got 0\)"),
        (["method.params.beta=1.5"], r"beta: .*less than or equal to 1"),
        (["method.params.tau=0"], r"tau: .*greater than 0"),
        (["method.name=fancy"], r"unknown method 'fancy'"),
        (["method.name=cwd", "method.params.mu=1"], r"params of method 'cwd': mu: Extra inputs"),
        (["data.name=kitti"], r"data\.name: Input should be"),
        (["schedule.batch_size=3", "resources.num_workers=2"], r"batch_size \(3\) must be divisible"),
        (["job=teacher"], r"method\.name must be 'none'"),
        (["schedule.max_iters"], r"must look like 'section.field=value'"),
        (["data.holdout.fraction=1"], r"data\.holdout\.fraction: Input should be less than 1 \(got 1\)"),
        (["data.holdout.fraction=-0.1"], r"data\.holdout\.fraction: .*greater than or equal to 0"),
        (["data.holdout.max_images=0"], r"data\.holdout\.max_images: .*greater than or equal to 1 \(got 0\)"),
        (["data.holdout.validate_on=test"], r"data\.holdout\.validate_on: Input should be 'val' or 'holdout'"),
        (["data.holdout.validate_on=holdout"], r"data\.holdout: .*validate_on 'holdout' needs images held out"),
    ],
)
def test_bad_values_name_the_field(tmp_path, overrides, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"teacher": {"source": "t.pt"}}))
    with pytest.raises(ConfigError, match=expected) as error:
        load_train_config(path, overrides)
    if "=" in overrides[0]:
        assert str(path) in str(error.value)


def test_distillation_without_a_teacher_is_refused():
    with pytest.raises(ConfigError, match="teacher.source is required"):
        load_train_config(None, [])
    assert TrainConfig(job="teacher", method={"name": "none"}).teacher.source is None


def test_unreadable_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        load_train_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("method: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_train_config(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping"):
        load_train_config(listing)


def test_yaml_reads_only_true_false_as_booleans(tmp_path):
    """HWD's `on:` key must stay a string (YAML 1.1 would read it as True); true/false still work."""
    path = tmp_path / "hwd.yaml"
    path.write_text("teacher: {source: t.pt}\nmethod: {name: hwd, params: {on: logits}}\nstudent: {aux: false}\n")
    config = load_train_config(path, ["precision.channels_last=true"])
    assert config.method.resolved_params().on == "logits"
    assert config.student.aux is False and config.precision.channels_last is True


def test_a_relative_data_root_is_made_absolute_where_the_config_is_loaded(tmp_path, monkeypatch):
    """Ray's workers run in another working directory: they get the path the user meant."""
    monkeypatch.chdir(tmp_path)
    config = load_train_config(None, ["data.name=ade20k", "data.root=my_data", "teacher.source=t.pt"])
    assert config.data.root == str(tmp_path / "my_data")
    assert (
        load_train_config(None, ["data.root=s3://bucket/data", "teacher.source=t.pt"]).data.root == "s3://bucket/data"
    )
