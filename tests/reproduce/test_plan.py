"""Reproduction plans: the shipped plans are Table II's cells with the sweeps' recipe, cells and jobs
are built as documented, and every bad plan is refused naming the file and the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from hwd_tune.config import ConfigError, HWDParams
from hwd_tune.reproduce.paper import load_table
from hwd_tune.reproduce.plan import Cell, Plan, check_resources, load
from hwd_tune.sweep.config import load as load_sweep
from trainables.launch import run_key

SEARCH_SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
PLANS = SEARCH_SPACES / "plans"
TABLE_II_METHODS = ["none", "skd", "ifvd", "cwd", "cirkd", "dist", "mgd", "hwd"]  # method.md, Table II columns
TABLE_II_ROWS = {  # method.md, Table II rows: dataset -> students
    "ade20k": ["deeplabv3_resnet18", "deeplabv3_mobilenetv2", "pspnet_resnet18"],
    "cityscapes": ["deeplabv3_resnet18"],
    "cocostuff": ["deeplabv3_resnet18"],
}
TABLE_I_MU = {"ade20k": 0.0, "cityscapes": 1.0, "cocostuff": 0.1}  # the supplementary's Table I


def quickstart_raw() -> dict:
    return yaml.safe_load((PLANS / "quickstart.yaml").read_text())


def write(tmp_path: Path, raw: dict, name: str = "plan.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def best_config(tmp_path: Path, **changes) -> Path:
    """A sweep's best_config.yaml: the quickstart sweep's training job with HWD's tuned params."""
    train = load_sweep(SEARCH_SPACES / "quickstart.yaml").train.model_dump(mode="json")
    train["method"]["params"] = {"tau": 2.5, "mu": 0.5, "beta": 0.3}
    train.update(changes)
    path = tmp_path / "best_config.yaml"
    path.write_text("# Best configuration of sweep 'quickstart'\n" + yaml.safe_dump(train))
    return path


# --------------------------------------------------------------------------------------------
# The shipped plans
# --------------------------------------------------------------------------------------------
def test_the_three_table_ii_plans_and_the_quickstart_are_shipped():
    assert {path.stem for path in PLANS.glob("*.yaml")} == {
        "table2_ade20k",
        "table2_cityscapes",
        "table2_cocostuff",
        "quickstart",
    }


@pytest.mark.parametrize("dataset", sorted(TABLE_II_ROWS))
def test_table_ii_plan_cells_are_the_rows_and_columns_of_table_ii(dataset):
    plan = load(PLANS / f"table2_{dataset}.yaml")
    assert plan.name == f"table2_{dataset}" and plan.paper == "table2" and plan.seeds == [0]
    expected = [Cell(dataset, student, method, 0) for student in TABLE_II_ROWS[dataset] for method in TABLE_II_METHODS]
    assert plan.cells() == expected
    # ...and every cell has a published number in the package's copy of Table II
    table = load_table("table2")
    assert all(table.miou(cell.dataset, cell.student, cell.method) is not None for cell in plan.cells())


@pytest.mark.parametrize("dataset", sorted(TABLE_II_ROWS))
def test_table_ii_plans_hold_the_sweeps_recipe_and_the_published_settings(dataset):
    """Each HWD cell is exactly the matching sweep file's training job (Table I values), and every
    other method runs with its published defaults on the same recipe."""
    plan = load(PLANS / f"table2_{dataset}.yaml")
    for student in TABLE_II_ROWS[dataset]:
        sweep = load_sweep(SEARCH_SPACES / f"{dataset}_{student}.yaml")
        hwd = plan.train_config(Cell(dataset, student, "hwd", 0))
        assert hwd == sweep.train
        params = hwd.method.resolved_params()
        assert (params.tau, params.mu, params.beta, params.weight) == (4.0, TABLE_I_MU[dataset], 0.1, 3.0)
        for method in TABLE_II_METHODS[:-1]:
            config = plan.train_config(Cell(dataset, student, method, 0))
            assert config.method.name == method and config.method.params == {}
            assert config.model_dump(exclude={"method"}) == hwd.model_dump(exclude={"method"})
    assert check_resources(plan, {"CPU": 64.0, "GPU": 8.0}) == 2  # 4 GPUs a run (method.md: 4 GPUs)


def test_quickstart_plan_runs_every_method_small_on_two_cores():
    plan = load(PLANS / "quickstart.yaml")
    assert plan.paper is None
    assert [cell.method for cell in plan.cells()] == ["none", "kd", "skd", "ifvd", "cwd", "cirkd", "dist", "mgd", "hwd"]
    config = plan.train_config(plan.cells()[0])
    assert config.data.name == "synthetic" and config.resources.gpus_per_worker == 0.0
    assert (config.student.width_multiplier, config.teacher.width_multiplier) == (0.125, 0.25)
    assert config.teacher.source == "models:/teacher-synthetic-deeplabv3_resnet18@best"
    assert config.schedule.max_iters <= 100
    cirkd = plan.train_config(Cell("synthetic", "deeplabv3_resnet18", "cirkd", 0)).method.resolved_params()
    assert cirkd.pixel_memory_size <= 1024 and cirkd.region_memory_size <= 128  # not the published 20000
    assert check_resources(plan, {"CPU": 2.0}) == 3  # 0.51 CPU a run


# --------------------------------------------------------------------------------------------
# Cells and their training jobs
# --------------------------------------------------------------------------------------------
def test_cells_are_datasets_x_students_x_methods_x_seeds_in_order(tmp_path):
    raw = quickstart_raw()
    raw["students"] = [{"arch": "deeplabv3_resnet18"}, {"arch": "pspnet_resnet18", "aux": False}]
    raw["methods"] = ["none", {"name": "hwd", "label": "hwd-mu1", "params": {"mu": 1.0}}]
    raw["seeds"] = [3, 1]
    plan = load(write(tmp_path, raw))
    student_a, student_b = "deeplabv3_resnet18", "pspnet_resnet18"
    assert plan.cells() == [
        Cell("synthetic", student_a, "none", 3),
        Cell("synthetic", student_a, "none", 1),
        Cell("synthetic", student_a, "hwd-mu1", 3),
        Cell("synthetic", student_a, "hwd-mu1", 1),
        Cell("synthetic", student_b, "none", 3),
        Cell("synthetic", student_b, "none", 1),
        Cell("synthetic", student_b, "hwd-mu1", 3),
        Cell("synthetic", student_b, "hwd-mu1", 1),
    ]
    config = plan.train_config(Cell("synthetic", student_b, "hwd-mu1", 1))
    assert config.seed == 1 and config.name is None and config.job == "distill"
    assert (config.student.arch, config.student.aux, config.student.width_multiplier) == (student_b, False, 0.125)
    assert config.method.name == "hwd" and config.method.resolved_params() == HWDParams(mu=1.0)
    assert config.teacher.source == "models:/teacher-synthetic-deeplabv3_resnet18@best"
    assert config.teacher.width_multiplier == 0.25  # train.teacher kept under the dataset's teacher
    assert plan.method_names() == {"none": "none", "hwd-mu1": "hwd"}
    hashes = {run_key(plan.train_config(cell)) for cell in plan.cells()}
    assert len(hashes) == len(plan.cells())  # one run per cell
    with pytest.raises(ValueError, match=r"not a cell of plan 'quickstart'"):
        plan.train_config(Cell("synthetic", student_a, "none", 2))


def test_dataset_sections_merge_key_by_key_over_the_recipe(tmp_path):
    raw = quickstart_raw()
    raw["datasets"] = [
        {"data": {"name": "synthetic", "synthetic": {"num_classes": 6}}, "teacher": {"source": "teacher.pt"}},
        {"data": {"name": "voc", "root": "/data/voc", "crop_size": 64}, "teacher": {"source": "voc.pt", "arch": "x"}},
    ]
    raw["methods"] = ["cwd"]
    plan = load(write(tmp_path, raw))
    synthetic = plan.train_config(Cell("synthetic", "deeplabv3_resnet18", "cwd", 0))
    assert synthetic.data.synthetic.num_classes == 6
    assert synthetic.data.synthetic.image_size == 96 and synthetic.data.crop_size == 96  # from train.data
    assert (synthetic.teacher.source, synthetic.teacher.arch) == ("teacher.pt", "deeplabv3_resnet18")
    voc = plan.train_config(Cell("voc", "deeplabv3_resnet18", "cwd", 0))
    assert (voc.data.name, voc.data.root, voc.data.crop_size, voc.data.loader_workers) == ("voc", "/data/voc", 64, 0)
    assert (voc.teacher.source, voc.teacher.arch) == ("voc.pt", "x")


def test_methods_from_a_sweeps_best_config(tmp_path):
    raw = quickstart_raw()
    raw["methods"] = ["hwd", {"name": "hwd", "label": "hwd-swept", "params_from": str(best_config(tmp_path))}]
    plan = load(write(tmp_path, raw))
    swept = plan.train_config(Cell("synthetic", "deeplabv3_resnet18", "hwd-swept", 0))
    assert swept.method.resolved_params() == HWDParams(tau=2.5, mu=0.5, beta=0.3)
    assert swept.data == plan.train_config(Cell("synthetic", "deeplabv3_resnet18", "hwd", 0)).data  # the plan's recipe
    assert plan.method_names() == {"hwd": "hwd", "hwd-swept": "hwd"}


def test_overrides_a_plan_built_in_code_and_a_round_trip():
    plan = load(PLANS / "quickstart.yaml", ["seeds=[0, 1]", "train.schedule.max_iters=10", "max_concurrent_runs=2"])
    assert len(plan.cells()) == 18 and plan.source == str(PLANS / "quickstart.yaml")
    assert plan.train_config(plan.cells()[-1]).schedule.max_iters == 10
    assert check_resources(plan, {"CPU": 2.0}) == 2  # capped by max_concurrent_runs
    again = Plan.model_validate(plan.model_dump(mode="json"))
    assert again.cells() == plan.cells() and again.source == "plan"
    assert all(again.train_config(cell) == plan.train_config(cell) for cell in plan.cells())


@pytest.mark.parametrize(
    ("available", "expected"),
    [
        (
            {"CPU": 0.3},
            r"quickstart\.yaml: train\.resources\.num_workers x cpus_per_worker \+ resources\.trial_cpus: "
            r"one run needs 0\.51 CPUs, the cluster has 0\.3",
        ),
        ({}, r"one run needs 0\.51 CPUs, the cluster has 0"),
    ],
)
def test_check_resources_refuses_a_cluster_too_small(available, expected):
    with pytest.raises(ConfigError, match=expected):
        check_resources(load(PLANS / "quickstart.yaml"), available)


def test_check_resources_counts_gpus():
    plan = load(PLANS / "table2_cityscapes.yaml")  # 4 workers x (4 CPU, 1 GPU) + 0.01 CPU
    assert check_resources(plan, {"CPU": 33.0, "GPU": 8.0}) == 2
    assert check_resources(plan, {"CPU": 32.0, "GPU": 8.0}) == 1  # 2 x 16.01 CPUs do not fit in 32
    with pytest.raises(ConfigError, match=r"gpus_per_worker: one run needs 4 GPUs, the cluster has 2"):
        check_resources(plan, {"CPU": 64.0, "GPU": 2.0})


# --------------------------------------------------------------------------------------------
# Bad plans: each error names the file and the field
# --------------------------------------------------------------------------------------------
BAD_OVERRIDES = [
    # unknown keys and wrong types, one per level
    (["nmae=x"], r"nmae: Extra inputs are not permitted"),
    (["train.schedul.max_iters=5"], r"train\.schedul: Extra inputs are not permitted"),
    (["resources.trial_cpu=1"], r"resources\.trial_cpu: Extra inputs are not permitted"),
    (["seeds=[0, x]"], r"seeds\.1: Input should be a valid integer"),
    (["name=../escape"], r"name: String should match pattern"),
    (["max_concurrent_runs=0"], r"max_concurrent_runs: Input should be greater than or equal to 1"),
    (["resources.trial_cpus=-1"], r"resources\.trial_cpus: Input should be greater than or equal to 0"),
    (
        ["paper=table9"],
        r"paper: no published table 'table9' in hwd_tune\.reproduce\.paper; expected one of \[.*'table2'",
    ),
    # empty lists, repeats
    (["datasets=[]"], r"datasets: List should have at least 1 item"),
    (["students=[]"], r"students: List should have at least 1 item"),
    (["methods=[]"], r"methods: List should have at least 1 item"),
    (["seeds=[]"], r"seeds: List should have at least 1 item"),
    (["seeds=[0, 1, 0]"], r"seeds: each seed at most once, got \[0, 1, 0\]"),
    # the recipe
    (["train.method={name: hwd}"], r"train: .*train\.method is set per run from `methods:`"),
    (["train.job=teacher"], r"train\.job: a plan runs distillations: must be 'distill', got 'teacher'"),
    (["train.name=fixed"], r"train\.name: must be unset in a plan"),
    (["train.schedule.batch_size=3", "train.resources.num_workers=2"], r"train: .*batch_size \(3\) must be divisible"),
    # datasets and teachers
    (["datasets=[{data: {root: /x}, teacher: {source: t.pt}}]"], r"datasets\[0\]\.data\.name: required"),
    (
        ["datasets=[{data: {name: mnist}, teacher: {source: t.pt}}]"],
        r"datasets\[0\]\.data\.name: Input should be 'ade20k'",
    ),
    (
        ["datasets=[{data: {name: synthetic, crop: 3}, teacher: {source: t.pt}}]"],
        r"datasets\[0\]\.data\.crop: Extra inputs are not permitted",
    ),
    (
        ["datasets=[{data: {name: synthetic}, teacher: {source: t.pt, widht_multiplier: 2}}]"],
        r"datasets\[0\]\.teacher\.widht_multiplier: Extra inputs",
    ),
    (
        ["datasets=[{data: {name: synthetic}}]"],
        r"datasets\[0\]\.teacher\.source: required: methods \['kd', 'skd', .*distil from a teacher on 'synthetic'",
    ),
    (
        [
            "datasets=[{data: {name: synthetic}, teacher: {source: a.pt}},"
            " {data: {name: synthetic}, teacher: {source: b.pt}}]"
        ],
        r"datasets\[1\]\.data\.name: 'synthetic' is also datasets\[0\]",
    ),
    (["datasets=[{data: {name: synthetic}, techer: {}}]"], r"datasets\.0\.techer: Extra inputs are not permitted"),
    # students
    (["students=[{aux: false}]"], r"students\[0\]\.arch: required"),
    (
        ["students=[{arch: deeplabv3_resnet18, width_multiplier: 0}]"],
        r"students\[0\]\.width_multiplier: Input should be greater than 0",
    ),
    (
        ["students=[{arch: deeplabv3_resnet18}, {arch: deeplabv3_resnet18, aux: false}]"],
        r"students\[1\]\.arch: 'deeplabv3_resnet18' is also students\[0\]",
    ),
    # methods
    (["methods=[none, fancy]"], r"methods\[1\]\.name: unknown method 'fancy'; expected one of \['cirkd'"),
    (
        ["methods=[hwd, {name: hwd, params: {mu: 1.0}}]"],
        r"methods\[1\]\.label: 'hwd' is also the label of methods\[0\]",
    ),
    (["methods=[{name: hwd, label: 'a b'}]"], r"methods\.0\.label: String should match pattern"),
    (
        ["methods=[{name: hwd, params: {beta: 2}}]"],
        r"methods\[0\]\.params\.beta: Input should be less than or equal to 1",
    ),
    (["methods=[{name: cwd, params: {mu: 1.0}}]"], r"methods\[0\]\.params\.mu: Extra inputs are not permitted"),
    (["methods=[{name: hwd, prams: {}}]"], r"methods\.0\.prams: Extra inputs are not permitted"),
    (
        ["methods=[hwd, {name: hwd, label: again, params: {tau: 4.0, beta: 0.1}}]"],
        r"methods\[1\]: same method and params as methods\[0\] \('hwd'\)",
    ),
    (
        ["methods=[{name: hwd, params: {}, params_from: best.yaml}]"],
        r"methods\[0\]: give either `params` or `params_from`, not both",
    ),
    (
        ["methods=[{name: hwd, params_from: missing/best_config.yaml}]"],
        r"methods\[0\]\.params_from: file not found: missing/best_config\.yaml",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "expected"), BAD_OVERRIDES, ids=[" ".join(case[0])[:60] for case in BAD_OVERRIDES]
)
def test_bad_plan_names_file_and_field(tmp_path, overrides, expected):
    path = write(tmp_path, quickstart_raw(), "bad_plan.yaml")
    with pytest.raises(ConfigError) as error:
        load(path, overrides)
    message = str(error.value)
    assert re.search(expected, message), message
    assert all(line.startswith(f"{path}: ") for line in message.splitlines()), message


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"job": "teacher", "method": {"name": "none"}}, r"is a 'teacher' job; expected a distillation config"),
        ({"method": {"name": "cwd", "params": {}}}, r"trains method 'cwd', not 'hwd'"),
        ({"schedule": {"max_iters": 0}}, r"not a valid training config: .*schedule\.max_iters: Input should be"),
    ],
)
def test_params_from_must_be_a_distillation_of_the_same_method(tmp_path, changes, expected):
    raw = quickstart_raw()
    raw["methods"] = [{"name": "hwd", "label": "hwd-swept", "params_from": str(best_config(tmp_path, **changes))}]
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}: methods\[0\]\.params_from: .*{expected}"):
        load(path)


def test_unreadable_plan_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.yaml: config file not found"):
        load(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load(broken)
