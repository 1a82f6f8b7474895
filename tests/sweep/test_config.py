"""Sweep files: every shipped search space loads, and every bad file names the file and the field."""

import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from hwd_tune import sweep as sweep_wing
from hwd_tune.config import ConfigError, CWDParams, HoldoutConfig, HWDParams, NoDistillationParams
from hwd_tune.data.holdout import holdout_count
from hwd_tune.sweep.config import (
    SweepConfig,
    baseline_method,
    baseline_train_config,
    check_resources,
    final_job_config,
    final_train_config,
    grid_size,
    load,
    startup_trials,
    trial_train_config,
    tuned_baseline_sweep,
    tuning_holdout,
)

SEARCH_SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
SHIPPED = sorted(SEARCH_SPACES.glob("*.yaml"))
TABLE_I_MU = {"ade20k": 0.0, "cityscapes": 1.0, "cocostuff": 0.1}  # the supplementary's Table I
PAPER_FILES = {
    "ade20k_deeplabv3_resnet18": ("ade20k", "deeplabv3_resnet18"),
    "ade20k_deeplabv3_mobilenetv2": ("ade20k", "deeplabv3_mobilenetv2"),
    "ade20k_pspnet_resnet18": ("ade20k", "pspnet_resnet18"),
    "cityscapes_deeplabv3_resnet18": ("cityscapes", "deeplabv3_resnet18"),
    "cocostuff_deeplabv3_resnet18": ("cocostuff", "deeplabv3_resnet18"),
}


def quickstart_raw() -> dict:
    return yaml.safe_load((SEARCH_SPACES / "quickstart.yaml").read_text())


def write(tmp_path: Path, raw: dict, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def cwd_sweep_raw() -> dict:
    """The quickstart recipe tuning a baseline's own parameter: CWD's tau."""
    raw = quickstart_raw()
    raw["train"]["method"] = {"name": "cwd", "params": {}}
    raw["search"]["space"] = {"tau": {"type": "loguniform", "low": 1.0, "high": 8.0}}
    raw["search"]["points_to_evaluate"] = [{"tau": 4.0}]
    return raw


# --------------------------------------------------------------------------------------------
# The shipped files
# --------------------------------------------------------------------------------------------
def test_every_table_ii_setting_and_the_quickstart_are_shipped():
    assert {path.stem for path in SHIPPED} == set(PAPER_FILES) | {"quickstart"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.stem)
def test_shipped_file_loads_with_table_i_first(path):
    sweep = load(path)
    assert sweep.name == path.stem and sweep.source == str(path)
    assert sweep.train.job == "distill" and sweep.train.method.name == "hwd"
    space = sweep.search.space
    assert (space["tau"].type, space["tau"].low, space["tau"].high) == ("loguniform", 1.0, 8.0)
    assert (space["mu"].type, space["mu"].low, space["mu"].high) == ("uniform", -1.0, 2.0)
    assert (space["beta"].type, space["beta"].low, space["beta"].high) == ("loguniform", 0.01, 1.0)
    mu = TABLE_I_MU.get(sweep.train.data.name, 0.0)
    assert sweep.search.points_to_evaluate[0] == {"tau": 4.0, "mu": mu, "beta": 0.1}
    hwd = sweep.train.method.resolved_params()
    assert (hwd.tau, hwd.mu, hwd.beta, hwd.weight) == (4.0, mu, 0.1, 3.0)
    assert [baseline_method(entry) for entry in sweep.search.baselines] == ["none", "cwd"]
    if path.stem != "quickstart":  # Table II settings: CWD tuned beside HWD, on the same budget
        tuned = sweep.search.baselines[1]
        assert set(tuned.space) == {"tau", "weight"} and tuned.space["tau"].contains(4.0)
        assert sweep.search.final.seeds == [0, 1, 2] and sweep.search.final.include == ["table_i", "baselines"]
    scheduler = sweep.search.scheduler
    assert scheduler.type == "asha" and scheduler.reduction_factor == 3.0
    assert scheduler.max_t == sweep.train.schedule.max_iters
    assert scheduler.grace_period <= scheduler.max_t
    assert sweep.search.storage == f"sqlite:///outputs/{path.stem}/optuna.db"


@pytest.mark.parametrize("stem", sorted(PAPER_FILES))
def test_paper_files_hold_the_papers_recipe(stem):
    sweep = load(SEARCH_SPACES / f"{stem}.yaml")
    dataset, student = PAPER_FILES[stem]
    train = sweep.train
    assert (train.data.name, train.student.arch) == (dataset, student)
    assert train.teacher.arch == "deeplabv3_resnet101"
    assert train.teacher.source == f"models:/teacher-{dataset}-deeplabv3_resnet101@iter-80k"
    assert train.data.crop_size == 512 and train.data.scale_range == (0.5, 2.0)
    schedule = train.schedule
    assert (schedule.max_iters, schedule.batch_size, schedule.val_interval) == (40000, 8, 400)
    assert (train.optimizer.lr, train.optimizer.momentum, train.optimizer.weight_decay) == (0.01, 0.9, 1e-4)
    assert train.student.aux == (student != "deeplabv3_mobilenetv2")
    assert (train.resources.num_workers, train.resources.gpus_per_worker) == (4, 1.0)
    hwd = train.method.resolved_params()
    assert (hwd.distance, hwd.process, hwd.on, hwd.pixel_norm) == ("mse", "exp", "probs", "none")


def test_quickstart_is_small_and_fits_two_cores():
    sweep = load(SEARCH_SPACES / "quickstart.yaml")
    train = sweep.train
    assert train.data.name == "synthetic" and train.data.synthetic.num_classes == 4
    assert (train.student.width_multiplier, train.teacher.width_multiplier) == (0.125, 0.25)
    assert train.teacher.source == "models:/teacher-synthetic-deeplabv3_resnet18@best"
    assert (train.schedule.max_iters, train.schedule.val_interval, train.schedule.batch_size) == (150, 50, 8)
    assert (sweep.search.num_samples, sweep.search.scheduler.grace_period) == (6, 50)
    # ASHA's rungs (50, 150) are validations: a trial is judged on a score measured where it stops
    assert sweep.search.scheduler.grace_period % train.schedule.val_interval == 0
    assert sweep.resources.trial_cpus == 0.01 and train.resources.gpus_per_worker == 0.0
    assert check_resources(sweep, {"CPU": 2.0}) == 2  # 0.51 CPU a trial: 3 fit, capped at 2
    # trials validate on as many held-out training images as val has: validation costs the same
    holdout = sweep.search.holdout
    assert sweep.search.tune_on == "holdout" and (holdout.fraction, holdout.max_images) == (0.1, 32)
    assert holdout_count(train.data.synthetic.train_samples, holdout.fraction, holdout.max_images) == 32
    assert train.data.synthetic.val_samples == 32


def test_the_sweep_wing_exports_the_sweep_loader():
    sweep = sweep_wing.load(SEARCH_SPACES / "quickstart.yaml", ["search.num_samples=3"])
    assert isinstance(sweep, SweepConfig) and sweep.search.num_samples == 3


def test_overrides_and_resolved_defaults(tmp_path):
    raw = quickstart_raw()
    del raw["search"]["scheduler"]["grace_period"]
    path = write(tmp_path, raw)
    sweep = load(path, ["train.schedule.max_iters=120", "train.output_dir=/runs", "search.final.top_k=2"])
    assert (sweep.search.scheduler.max_t, sweep.search.scheduler.grace_period) == (120, 12)  # a tenth
    assert sweep.search.final.max_iters == 120
    assert sweep.search.storage == "sqlite:////runs/quickstart/optuna.db"
    explicit = load(path, ["search.storage=postgresql://db/optuna", "search.scheduler.max_t=100"])
    assert explicit.search.storage == "postgresql://db/optuna" and explicit.search.scheduler.max_t == 100


def test_a_baselines_own_parameter_can_be_swept(tmp_path):
    sweep = load(write(tmp_path, cwd_sweep_raw()))
    assert sweep.train.method.name == "cwd" and list(sweep.search.space) == ["tau"]
    trial = trial_train_config(sweep, {"tau": 2.0})
    assert trial.method.resolved_params() == CWDParams(tau=2.0)


# --------------------------------------------------------------------------------------------
# Bad files: each error names the file and the field
# --------------------------------------------------------------------------------------------
BAD_OVERRIDES = [
    # unknown keys, one per level
    (["nmae=x"], r"nmae: Extra inputs are not permitted"),
    (["train.schedul.max_iters=5"], r"train\.schedul: Extra inputs are not permitted"),
    (["train.method.params.betta=0.2"], r"train\.method: .*betta: Extra inputs"),
    (["search.sead=1"], r"search\.sead: Extra inputs are not permitted"),
    (["search.space.tau.lo=1"], r"search\.space\.tau\.lo: Extra inputs are not permitted"),
    (["search.scheduler.grace=5"], r"search\.scheduler\.grace: Extra inputs are not permitted"),
    (["search.final.topk=1"], r"search\.final\.topk: Extra inputs are not permitted"),
    (["resources.trial_cpu=1"], r"resources\.trial_cpu: Extra inputs are not permitted"),
    # wrong types
    (["search.num_samples=many"], r"search\.num_samples: Input should be a valid integer"),
    (["search.space.tau.low=abc"], r"search\.space\.tau\.low\..*Input should be a valid"),
    (["search.points_to_evaluate=5"], r"search\.points_to_evaluate: Input should be a valid list"),
    (["search.space.tau.type=normal"], r"search\.space\.tau\.type: Input should be 'uniform'"),
    (["search.metric=loss"], r"search\.metric: Input should be 'val_miou'"),
    # ranges
    (["search.space.tau.low=9"], r"search\.space\.tau: .*inverted range: low \(9\) must be < high \(8\.0\)"),
    (["search.space.mu.low=2.0"], r"search\.space\.mu: .*low \(2\.0\) must be < high \(2\.0\)"),
    (["search.space.tau={type: choice, values: []}"], r"search\.space\.tau: .*non-empty list of `values`"),
    (["search.space.tau={type: choice, low: 1, high: 2}"], r"search\.space\.tau: .*takes `values`"),
    (["search.space.tau={type: uniform, low: 1}"], r"search\.space\.tau: .*needs both low and high"),
    (["search.space.tau.type=int"], r"search\.space\.tau: .*whole-number bounds"),
    (["search.space.beta.high=1.5"], r"search\.space\.beta\.high: 1\.5 is not allowed .*or equal to 1"),
    (["search.space.tau.type=uniform", "search.space.tau.low=0"], r"space\.tau\.low: 0 .*greater than 0"),
    (["search.space.mu.type=loguniform", "search.space.mu.low=0"], r"space\.mu: .*loguniform .*low > 0"),
    (["search.space.alpha={type: uniform, low: 0.0, high: 1.0}"], r"space\.alpha: not a parameter of .*'hwd'"),
    (["search.space.distance={type: choice, values: [mse, cosine]}"], r"space\.distance\.values\[1\]: 'cosine'"),
    (["search.space={}"], r"search\.space: .*at least 1 item"),
    # first points
    (
        ["search.points_to_evaluate=[{tau: 4.0, mu: 5.0, beta: 0.1}]"],
        r"search\.points_to_evaluate\[0\]\.mu: 5\.0 is outside .*\[-1\.0, 2\.0\]",
    ),
    (
        ["search.points_to_evaluate=[{tau: 4.0, mu: 0.0, beta: 0.1, weight: 3.0}]"],
        r"search\.points_to_evaluate\[0\]\.weight: not in search\.space",
    ),
    (["search.points_to_evaluate=[{tau: 4.0, mu: 0.0}]"], r"points_to_evaluate\[0\]: missing \['beta'\]"),
    (
        [
            "search.num_samples=1",
            "search.points_to_evaluate=[{tau: 4.0, mu: 0.0, beta: 0.1}, {tau: 2.0, mu: 1.0, beta: 0.5}]",
        ],
        r"search\.num_samples: 1 is fewer than the 2 points_to_evaluate",
    ),
    # scheduler, stages, baselines
    (["search.scheduler.grace_period=500"], r"search\.scheduler\.grace_period: 500 exceeds max_t \(150"),
    (["search.scheduler.max_t=400"], r"search\.scheduler\.max_t: 400 exceeds .*max_iters \(150\)"),
    (["search.scheduler.reduction_factor=1"], r"scheduler\.reduction_factor: Input should be greater than 1"),
    (["search.final.top_k=9"], r"search\.final\.top_k: 9 exceeds search\.num_samples \(6\)"),
    (["search.baselines=[none, fancy]"], r"search\.baselines\[1\]: unknown method 'fancy'"),
    (["search.baselines=[cwd, cwd]"], r"search\.baselines: each method at most once"),
    (
        ["search.baselines=[none, {name: cwd, space: {tau: {type: uniform, low: 0.0, high: 2.0}}}]"],
        r"search\.baselines\[1\]\.space\.tau\.low: 0\.0 is not allowed for tau of method 'cwd'",
    ),
    (
        ["search.baselines=[{name: cwd, space: {mu: {type: uniform, low: 0.0, high: 2.0}}}]"],
        r"search\.baselines\[0\]\.space\.mu: not a parameter of method 'cwd'; expected one of \['tau', 'weight'\]",
    ),
    (
        ["search.baselines=[{name: hwd, space: {tau: {type: uniform, low: 1.0, high: 2.0}}}]"],
        r"search\.baselines\[0\]\.name: 'hwd' is the method this sweep tunes",
    ),
    (
        ["search.baselines=[{name: cwd, space: {}}]"],
        r"search\.baselines\.0\..*space: Dictionary should have at least 1",
    ),
    (["search.final.seeds=[0, 1, 0]"], r"search\.final\.seeds: each seed at most once, got \[0, 1, 0\]"),
    (["search.final.seeds=[]"], r"search\.final\.seeds: List should have at least 1 item"),
    (["search.final.include=[everything]"], r"search\.final\.include\.0: Input should be 'table_i' or 'baselines'"),
    (["search.storage=outputs/optuna.db"], r"search\.storage: expected an Optuna storage URL"),
    (["search.startup_trials=-1"], r"search\.startup_trials: Input should be greater than or equal to 0"),
    (["search.max_concurrent_trials=0"], r"search\.max_concurrent_trials: .*greater than or equal to 1"),
    (["search.tune_on=test"], r"search\.tune_on: Input should be 'holdout' or 'val' \(got 'test'\)"),
    (["search.holdout.fraction=0"], r"search\.holdout\.fraction: Input should be greater than 0 \(got 0\)"),
    (["search.holdout.fraction=1"], r"search\.holdout\.fraction: Input should be less than 1 \(got 1\)"),
    (["search.holdout.max_images=0"], r"search\.holdout\.max_images: .*greater than or equal to 1 \(got 0\)"),
    (["search.holdout.seed=3"], r"search\.holdout\.seed: Extra inputs are not permitted"),  # search.seed is it
    (
        ["train.data.synthetic.train_samples=1"],
        r"train\.data\.synthetic\.train_samples: too few training images .*num_images=1; or set search\.tune_on",
    ),
    (["train.data.holdout.fraction=0.2"], r"train\.data\.holdout: must be unset in a sweep: search\.tune_on"),
    (["resources.trial_cpus=-1"], r"resources\.trial_cpus: Input should be greater than or equal to 0"),
    (["resources.trial_max_failures=-2"], r"resources\.trial_max_failures: .*greater than or equal to -1 \(got -2\)"),
    # the training job
    (["train.name=fixed"], r"train\.name: must be unset in a sweep"),
    (["train.method.params.beta=2"], r"train\.method: .*beta: Input should be less than or equal to 1"),
    (["name=../escape"], r"name: String should match pattern"),
]


@pytest.mark.parametrize(
    ("overrides", "expected"), BAD_OVERRIDES, ids=[" ".join(case[0])[:60] for case in BAD_OVERRIDES]
)
def test_bad_sweep_names_file_and_field(tmp_path, overrides, expected):
    path = write(tmp_path, quickstart_raw(), "bad_sweep.yaml")
    with pytest.raises(ConfigError) as error:
        load(path, overrides)
    message = str(error.value)
    assert re.search(expected, message), message
    assert all(line.startswith(f"{path}: ") for line in message.splitlines()), message


def test_a_teacher_job_is_not_a_sweep(tmp_path):
    raw = cwd_sweep_raw()
    raw["train"]["job"] = "teacher"
    raw["train"]["method"] = {"name": "none"}
    raw["search"]["space"] = {"tau": {"type": "uniform", "low": 1.0, "high": 2.0}}
    raw["search"]["points_to_evaluate"] = []
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as error:
        load(path)
    assert f"{path}: train.job: a sweep tunes a distillation: must be 'distill'" in str(error.value)
    assert f"{path}: search.space.tau: not a parameter of method 'none'" in str(error.value)


def test_whole_number_parameters_need_int_or_choice(tmp_path):
    raw = cwd_sweep_raw()
    raw["train"]["method"] = {"name": "skd", "params": {}}
    raw["search"]["space"] = {"discriminator_width": {"type": "uniform", "low": 16, "high": 128}}
    raw["search"]["points_to_evaluate"] = []
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError, match=r"search\.space\.discriminator_width\.type: .*use type 'int'"):
        load(path)
    raw["search"]["space"]["discriminator_width"]["type"] = "int"
    raw["search"]["points_to_evaluate"] = [{"discriminator_width": 64}]
    sweep = load(write(tmp_path, raw))
    assert sweep.search.space["discriminator_width"].contains(128)
    assert not sweep.search.space["discriminator_width"].contains(64.5)
    raw["search"]["points_to_evaluate"] = [{"discriminator_width": 1000}]
    with pytest.raises(ConfigError, match=r"points_to_evaluate\[0\]\.discriminator_width: 1000 is outside"):
        load(write(tmp_path, raw))


def test_choice_membership_keeps_bools_apart(tmp_path):
    raw = quickstart_raw()
    raw["search"]["space"]["process"] = {"type": "choice", "values": ["exp", "softmax"]}
    raw["search"]["points_to_evaluate"] = [{"tau": 4.0, "mu": 0.0, "beta": 0.1, "process": "softmax"}]
    sweep = load(write(tmp_path, raw))
    process = sweep.search.space["process"]
    assert process.contains("exp") and not process.contains("kl")
    raw = cwd_sweep_raw()
    raw["train"]["method"] = {"name": "dist", "params": {}}
    raw["search"]["space"] = {"softmax": {"type": "choice", "values": [True, False]}}
    raw["search"]["points_to_evaluate"] = [{"softmax": True}]
    softmax = load(write(tmp_path, raw)).search.space["softmax"]
    assert softmax.contains(False) and not softmax.contains(0) and not softmax.contains(1)


def test_sweep_built_in_code_is_validated_too():
    raw = quickstart_raw()
    raw["search"]["space"]["beta"]["high"] = 2.0
    with pytest.raises(ValueError, match=r"search\.space\.beta\.high: 2\.0 is not allowed"):
        SweepConfig.model_validate(raw)


def test_unreadable_sweep_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        load(tmp_path / "missing.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match=r"empty\.yaml: name: Field required"):
        load(empty)


# --------------------------------------------------------------------------------------------
# Resources
# --------------------------------------------------------------------------------------------
def reference_concurrency(cpus_per_trial, gpus_per_trial, available, cap):
    """Counts trials one at a time until the next would not fit."""
    have_cpus, have_gpus = available.get("CPU", 0.0), available.get("GPU", 0.0)
    count = 0

    def fits(trials):
        return trials * cpus_per_trial <= have_cpus + 1e-9 and trials * gpus_per_trial <= have_gpus + 1e-9

    while fits(count + 1):
        count += 1
    return count if cap is None else min(count, cap)


@pytest.mark.parametrize(
    ("workers", "cpus", "gpus", "trial_cpus", "cap", "available"),
    [
        (1, 0.5, 0.0, 0.01, None, {"CPU": 2.0}),  # 0.51 a trial: 3
        (1, 0.5, 0.0, 0.01, 2, {"CPU": 2.0}),
        (1, 1.0, 0.0, 0.0, None, {"CPU": 2.0}),  # exactly 2
        (2, 1.0, 0.0, 0.01, None, {"CPU": 8.0, "GPU": 0.0}),  # 2.01 a trial: 3
        (4, 4.0, 1.0, 0.01, None, {"CPU": 64.0, "GPU": 8.0}),  # GPU-bound: 2
        (4, 4.0, 1.0, 0.01, None, {"CPU": 64.0, "GPU": 16.0}),  # CPU-bound: 16.01 a trial, 3
        (4, 4.0, 1.0, 0.01, None, {"CPU": 16.01, "GPU": 4.0}),  # exactly one
        (2, 2.0, 0.5, 0.01, 10, {"CPU": 40.0, "GPU": 3.0, "memory": 1e12}),  # 1 GPU a trial: 3
    ],
)
def test_check_resources_counts_concurrent_trials(tmp_path, workers, cpus, gpus, trial_cpus, cap, available):
    raw = quickstart_raw()
    raw["train"]["resources"] = {"num_workers": workers, "cpus_per_worker": cpus, "gpus_per_worker": gpus}
    raw["resources"]["trial_cpus"] = trial_cpus
    raw["search"]["max_concurrent_trials"] = cap
    sweep = load(write(tmp_path, raw))
    expected = reference_concurrency(workers * cpus + trial_cpus, workers * gpus, available, cap)
    assert check_resources(sweep, available) == expected >= 1


@pytest.mark.parametrize(
    ("available", "expected"),
    [
        (
            {"CPU": 16.0, "GPU": 8.0},
            r"train\.resources\.num_workers x cpus_per_worker \+ resources\.trial_cpus: one trial needs 16\.01 CPUs, "
            r"the cluster has 16;",
        ),
        ({"CPU": 64.0}, r"train\.resources\.num_workers x gpus_per_worker: one trial needs 4 GPUs, the cluster has 0;"),
        ({"CPU": 64.0, "GPU": 3.0}, r"gpus_per_worker: one trial needs 4 GPUs, the cluster has 3"),
    ],
)
def test_check_resources_refuses_a_cluster_too_small(available, expected):
    path = SEARCH_SPACES / "ade20k_deeplabv3_resnet18.yaml"
    with pytest.raises(ConfigError, match=expected) as error:
        check_resources(load(path), available)
    assert str(error.value).startswith(f"{path}: ")


def test_check_resources_quickstart_on_half_a_core():
    sweep = load(SEARCH_SPACES / "quickstart.yaml")
    with pytest.raises(ConfigError, match=r"one trial needs 0\.51 CPUs, the cluster has 0\.5"):
        check_resources(sweep, {"CPU": 0.5})


# --------------------------------------------------------------------------------------------
# The training jobs of trials and baselines
# --------------------------------------------------------------------------------------------
def recipe(train_config) -> dict:
    """Everything but the method and the held-out images: what trials, baselines and the final
    stage must share (the held-out images are checked by the tests of the tuning split)."""
    dumped = train_config.model_dump()
    del dumped["method"]
    del dumped["data"]["holdout"]
    return dumped


def test_trial_config_applies_sampled_values_and_keeps_the_recipe():
    sweep = load(SEARCH_SPACES / "cityscapes_deeplabv3_resnet18.yaml")
    trial = trial_train_config(sweep, {"tau": 2.5, "mu": -0.5, "beta": 0.3})
    assert trial.method.name == "hwd"
    assert trial.method.resolved_params() == HWDParams(tau=2.5, mu=-0.5, beta=0.3)
    assert recipe(trial) == recipe(sweep.train)
    assert sweep.train.method.resolved_params().mu == 1.0  # the sweep itself is untouched


def test_trial_config_takes_numpy_scalars_and_partial_params():
    sweep = load(SEARCH_SPACES / "quickstart.yaml")
    trial = trial_train_config(sweep, {"tau": np.float64(1.5), "beta": np.float32(0.25)})
    params = trial.method.resolved_params()
    assert (params.tau, params.mu) == (1.5, 0.0) and math.isclose(params.beta, 0.25)
    assert type(trial.method.params["beta"]) is float


def test_final_stage_config_changes_only_the_length_and_trains_on_every_image():
    sweep = load(SEARCH_SPACES / "ade20k_deeplabv3_resnet18.yaml")
    table_i = {"tau": 4.0, "mu": 0.0, "beta": 0.1}
    final = final_train_config(sweep, table_i)
    assert final.schedule.max_iters == 80000  # search.final.max_iters
    expected = recipe(sweep.train)
    expected["schedule"]["max_iters"] = 80000
    assert recipe(final) == expected
    assert final.data.holdout == HoldoutConfig() and final.data.holdout.validate_on == "val"
    assert final.method.resolved_params() == HWDParams(tau=4.0, mu=0.0, beta=0.1)
    reseeded = final_train_config(sweep, table_i, seed=3)
    assert reseeded.seed == 3 and final.seed == sweep.train.seed == 0
    assert final_train_config(sweep, table_i, max_iters=40000).schedule.max_iters == 40000
    with pytest.raises(ValueError, match=r"trial parameters \['weight'\] are not in search\.space"):
        final_train_config(sweep, {"weight": 1.0})


def test_trials_and_baselines_are_scored_on_held_out_training_images_by_default():
    sweep = load(SEARCH_SPACES / "ade20k_deeplabv3_resnet18.yaml", ["search.seed=7"])
    assert sweep.search.tune_on == "holdout"
    assert (sweep.search.holdout.fraction, sweep.search.holdout.max_images) == (0.1, 2000)
    tuned = HoldoutConfig(fraction=0.1, max_images=2000, seed=7, validate_on="holdout")
    assert tuning_holdout(sweep) == tuned
    assert trial_train_config(sweep, {"tau": 2.0}).data.holdout == tuned
    assert trial_train_config(sweep, {"tau": 2.0}, max_iters=100).data.holdout == tuned
    assert baseline_train_config(sweep, "cwd").data.holdout == tuned
    assert sweep.train.data.holdout == HoldoutConfig()  # the sweep's own job is untouched


def test_tune_on_val_scores_trials_on_val_with_every_training_image(tmp_path):
    raw = quickstart_raw()
    raw["search"]["tune_on"] = "val"
    sweep = load(write(tmp_path, raw))
    assert tuning_holdout(sweep) == HoldoutConfig()
    assert trial_train_config(sweep, {"tau": 2.0}).data.holdout == HoldoutConfig()
    assert baseline_train_config(sweep, "none").data.holdout == HoldoutConfig()


def test_every_shipped_sweep_tunes_on_held_out_images():
    for path in SHIPPED:
        search = load(path).search
        assert search.tune_on == "holdout", path
        assert search.holdout.fraction == 0.1 and search.holdout.max_images in (32, 2000), path


def test_trial_config_rejects_unknown_and_invalid_values():
    sweep = load(SEARCH_SPACES / "quickstart.yaml")
    with pytest.raises(ValueError, match=r"quickstart\.yaml: trial parameters \['weight'\] are not in search"):
        trial_train_config(sweep, {"tau": 2.0, "weight": 1.0})
    with pytest.raises(ConfigError, match=r"quickstart\.yaml .*beta: Input should be less than or equal"):
        trial_train_config(sweep, {"beta": 1.5})


@pytest.mark.parametrize(
    ("method", "expected"),
    [("none", NoDistillationParams()), ("cwd", CWDParams(tau=4.0, weight=3.0)), ("hwd", HWDParams())],
)
def test_baseline_config_uses_the_methods_defaults(method, expected):
    sweep = load(SEARCH_SPACES / "cityscapes_deeplabv3_resnet18.yaml")  # tuned mu 1.0 must not leak
    baseline = baseline_train_config(sweep, method)
    assert baseline.method.name == method and baseline.method.params == {}
    assert baseline.method.resolved_params() == expected
    assert recipe(baseline) == recipe(sweep.train)


def test_baseline_config_rejects_unknown_methods():
    sweep = load(SEARCH_SPACES / "quickstart.yaml")
    with pytest.raises(ValueError, match=r"unknown baseline method 'fancy'; expected one of \['cirkd'"):
        baseline_train_config(sweep, "fancy")


# --------------------------------------------------------------------------------------------
# search.sampler: grid
# --------------------------------------------------------------------------------------------
GRID_SPACE = {
    "tau": {"type": "choice", "values": [1.0, 2.83, 8.0]},
    "mu": {"type": "choice", "values": [-1.0, 0.5, 2.0]},
    "beta": {"type": "choice", "values": [0.01, 0.1, 1.0]},
}


def grid_raw(**search) -> dict:
    """The quickstart as a 3 x 3 x 3 grid over tau, mu, beta with the Table I point in it."""
    raw = quickstart_raw()
    raw["search"].update(
        {
            "sampler": "grid",
            "num_samples": 27,
            "space": GRID_SPACE,
            "scheduler": {"type": "none"},
            "points_to_evaluate": [{"tau": 2.83, "mu": 0.5, "beta": 0.1}],
            **search,
        }
    )
    return raw


def test_sampler_defaults_to_tpe_and_a_full_grid_loads(tmp_path):
    assert load(SEARCH_SPACES / "quickstart.yaml").search.sampler == "tpe"
    sweep = load(write(tmp_path, grid_raw()))
    assert sweep.search.sampler == "grid" and sweep.search.num_samples == 27
    assert grid_size(sweep.search) == 27
    assert grid_size(load(SEARCH_SPACES / "quickstart.yaml").search) is None  # continuous ranges
    no_points = load(write(tmp_path, grid_raw(points_to_evaluate=[], num_samples=27)))
    assert no_points.search.points_to_evaluate == []
    # a one-parameter grid of strings, and a mixed 2 x 3 grid
    mixed = grid_raw(
        num_samples=6,
        points_to_evaluate=[],
        space={"distance": {"type": "choice", "values": ["mse", "l1"]}, "tau": GRID_SPACE["tau"]},
    )
    assert grid_size(load(write(tmp_path, mixed)).search) == 6


BAD_GRIDS = [
    # every searched parameter must be a choice, each named
    (
        {"space": {**GRID_SPACE, "tau": {"type": "loguniform", "low": 1.0, "high": 8.0}}},
        [r"search\.space\.tau\.type: a grid sweep \(search\.sampler: grid\) needs type 'choice'.*got 'loguniform'"],
    ),
    (
        {
            "space": {
                **GRID_SPACE,
                "mu": {"type": "uniform", "low": -1.0, "high": 2.0},
                "beta": {"type": "loguniform", "low": 0.01, "high": 1.0},
            }
        },
        [r"search\.space\.mu\.type: .*got 'uniform'", r"search\.space\.beta\.type: .*got 'loguniform'"],
    ),
    # the trial count is the grid's size, the expected number named (write() sorts the keys)
    (
        {"num_samples": 8},
        [r"search\.num_samples: a grid sweep runs every combination once: must be 27 \(3 beta x 3 mu x 3 tau\), got 8"],
    ),
    ({"num_samples": 28}, [r"search\.num_samples: .*must be 27 .*got 28"]),
    # first points must be grid points
    (
        {"points_to_evaluate": [{"tau": 4.0, "mu": 0.5, "beta": 0.1}]},
        [r"search\.points_to_evaluate\[0\]\.tau: 4\.0 is outside search\.space\.tau: choice \[1\.0, 2\.83, 8\.0\]"],
    ),
    (
        {"points_to_evaluate": [{"tau": 2.83, "mu": 0.5, "beta": 0.1}, {"tau": 8.0, "mu": 0.0, "beta": 1.0}]},
        [r"search\.points_to_evaluate\[1\]\.mu: 0\.0 is outside"],
    ),
    # an unknown sampler
    ({"sampler": "random"}, [r"search\.sampler: Input should be 'tpe' or 'grid'"]),
]


@pytest.mark.parametrize(
    ("search", "expected"),
    BAD_GRIDS,
    ids=[str(sorted(case[0]))[:40] + str(index) for index, case in enumerate(BAD_GRIDS)],
)
def test_bad_grid_sweep_names_the_field(tmp_path, search, expected):
    path = write(tmp_path, grid_raw(**search), "bad_grid.yaml")
    with pytest.raises(ConfigError) as error:
        load(path)
    message = str(error.value)
    for pattern in expected:
        assert re.search(pattern, message), message
    assert all(line.startswith(f"{path}: ") for line in message.splitlines()), message


def test_a_grid_with_a_continuous_range_is_not_counted(tmp_path):
    """With a non-choice parameter the grid's size is unknown: only the type is reported."""
    continuous_tau = {**GRID_SPACE, "tau": {"type": "uniform", "low": 1, "high": 8}}
    path = write(tmp_path, grid_raw(num_samples=5, space=continuous_tau))
    with pytest.raises(ConfigError) as error:
        load(path)
    assert "search.space.tau.type" in str(error.value) and "search.num_samples" not in str(error.value)


@pytest.mark.parametrize(
    ("num_samples", "configured", "expected"),
    [(1, None, 2), (8, None, 2), (16, None, 4), (27, None, 6), (200, None, 10), (8, 5, 5)],
)
def test_tpe_startup_is_a_quarter_of_the_sweep_within_two_to_ten(num_samples, configured, expected):
    search = load(SEARCH_SPACES / "quickstart.yaml").search.model_copy(
        update={"num_samples": num_samples, "startup_trials": configured}
    )
    assert startup_trials(search) == expected


def test_a_tuned_baseline_gets_the_same_budget_its_own_space_and_study(tmp_path):
    raw = quickstart_raw()
    raw["search"]["baselines"] = [
        "none",
        {"name": "cwd", "space": {"tau": {"type": "loguniform", "low": 1.0, "high": 8.0}}},
    ]
    sweep = load(write(tmp_path, raw), ["train.output_dir=/runs"])
    tuned = tuned_baseline_sweep(sweep, sweep.search.baselines[1])
    assert tuned.name == "quickstart-cwd" and tuned.train.method.name == "cwd" and tuned.train.method.params == {}
    assert set(tuned.search.space) == {"tau"} and tuned.search.points_to_evaluate == [{"tau": 4.0}]  # CWD's default
    same = ("sampler", "num_samples", "max_concurrent_trials", "seed", "scheduler", "metric", "mode")
    assert all(getattr(tuned.search, name) == getattr(sweep.search, name) for name in same)
    assert tuned.train.schedule == sweep.train.schedule and tuned.train.data == sweep.train.data
    assert tuned.search.baselines == [] and tuned.search.final.top_k == 0
    assert tuned.search.storage == "sqlite:////runs/quickstart-cwd/optuna.db"  # its own study, beside the sweep's
    assert "search.baselines: cwd" in tuned.source
    server = load(write(tmp_path, raw), ["search.storage=postgresql://db/optuna"])
    assert tuned_baseline_sweep(server, server.search.baselines[1]).search.storage == "postgresql://db/optuna"
    outside = {"name": "cwd", "space": {"tau": {"type": "uniform", "low": 5.0, "high": 8.0}}}
    raw["search"]["baselines"] = [outside]
    narrow = load(write(tmp_path, raw))
    assert tuned_baseline_sweep(narrow, narrow.search.baselines[0]).search.points_to_evaluate == []  # 4 is outside


def test_final_job_config_sets_the_seed_the_length_and_the_method():
    sweep = load(SEARCH_SPACES / "ade20k_deeplabv3_resnet18.yaml")
    table_i = {"tau": 4.0, "mu": 0.0, "beta": 0.1}
    run = final_job_config(sweep, "hwd", table_i, seed=3)
    assert (run.seed, run.schedule.max_iters, run.method.name) == (3, 80000, "hwd")
    assert run.method.params == {**sweep.train.method.params, **table_i}
    assert final_job_config(sweep, "hwd", table_i, seed=None).seed == sweep.train.seed
    cwd = final_job_config(sweep, "cwd", {"tau": 2.0}, seed=0)
    assert cwd.method.name == "cwd" and cwd.method.params == {"tau": 2.0}  # not HWD's params
    assert cwd.data == sweep.train.data and cwd.student == sweep.train.student
    with pytest.raises(ValueError, match="unknown method 'fancy'"):
        final_job_config(sweep, "fancy", {}, seed=0)
