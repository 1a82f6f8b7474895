"""hwd_tune.reproduce.report on a synthetic plan whose runs sit in a real MLflow sqlite store (no Ray, no mocks).

The plan: ADE20K DeepLabV3-R18 with none / cwd / hwd / hwd-swept (an HWD label) over seeds 0 and 1,
and Cityscapes DeepLabV3-R18 with none / hwd over seed 0. On purpose: cwd seed 1 has only a FAILED
run, Cityscapes hwd has no run at all, hwd seed 0 has an older finished duplicate, one run of the
plan is outside its cells, and a run of another plan has the same cell tags.
"""

import math
import statistics
import time

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image

from hwd_tune import tracking
from hwd_tune.reproduce import report

EXPERIMENT = "plans"
PLAN = "repro <synthetic> & co"  # HTML special characters: the page must escape them
R18 = "deeplabv3_resnet18"
LABELS = ("none", "cwd", "hwd", "hwd-swept")
CELLS = [("ade20k", R18, label, seed) for label in LABELS for seed in (0, 1)] + [
    ("cityscapes", R18, "none", 0),
    ("cityscapes", R18, "hwd", 0),
]
MISSING_CELLS = [("ade20k", R18, "cwd", 1), ("cityscapes", R18, "hwd", 0)]
# Table II, typed again here: (dataset, method) -> mIoU % of DeepLabV3-R18
PAPER = {
    ("ade20k", "none"): 29.86,
    ("ade20k", "cwd"): 32.90,
    ("ade20k", "hwd"): 33.85,
    ("cityscapes", "none"): 71.78,
    ("cityscapes", "hwd"): 74.72,
}


# --------------------------------------------------------------------------------------------
# The plan's runs in MLflow, and the report built from them (once for the module)
# --------------------------------------------------------------------------------------------
def log_plan_run(uri, cell, metrics, *, status="FINISHED", method=None, plan=PLAN, key=None):
    """A run tagged like a reproduction run; metrics: name -> value or [(step, value), ...]."""
    dataset, student, label, seed = cell
    run_key = key or f"{plan}-{dataset}-{student}-{label}-{seed}"
    tags = {
        tracking.PLAN_TAG: plan,
        tracking.PLAN_DATASET_TAG: dataset,
        tracking.PLAN_STUDENT_TAG: student,
        tracking.PLAN_METHOD_TAG: label,
        tracking.PLAN_SEED_TAG: str(seed),
        tracking.CONFIG_HASH_TAG: f"hash-{run_key}",
        report.METHOD_NAME_TAG: method or label,
    }
    run_id = tracking.start_run(
        tracking_uri=uri, experiment=EXPERIMENT, run_key=run_key.replace("'", ""), run_name=run_key, tags=tags
    )
    run_logger = tracking.RunLogger(uri, run_id)
    for name, value in metrics.items():
        for step, number in value if isinstance(value, list) else [(10, value)]:
            run_logger.log_metrics({name: number}, step=step)
    run_logger.finish(status)
    time.sleep(0.01)  # distinct start times: "newest" is well defined
    return run_id


def cost(miou, seconds, gpu_hours, images_per_s):
    return {"best_val_miou": miou, "train_seconds": seconds, "gpu_hours": gpu_hours, "images_per_s": images_per_s}


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    """(tracking_uri, plan run id, {cell: id of the run the report must use}, ids to leave out, report)."""
    uri = tracking.default_tracking_uri(tmp_path_factory.mktemp("store"))
    plan_run_id = tracking.start_run(
        tracking_uri=uri, experiment=EXPERIMENT, run_key="plan-run", run_name="plan", tags={tracking.PLAN_TAG: PLAN}
    )
    used, left_out = {}, {}
    ade = lambda label, seed: ("ade20k", R18, label, seed)  # noqa: E731
    used[ade("none", 0)] = log_plan_run(uri, ade("none", 0), cost(30.10, 100.0, 0.05, [(1, 50.0), (2, 52.0)]))
    used[ade("none", 1)] = log_plan_run(uri, ade("none", 1), cost(30.50, 104.0, 0.06, 54.0))
    used[ade("cwd", 0)] = log_plan_run(uri, ade("cwd", 0), cost(32.40, 110.0, 0.07, 48.0))
    left_out["failed"] = log_plan_run(uri, ade("cwd", 1), cost(99.0, 5.0, 0.01, 1.0), status="FAILED")
    left_out["older"] = log_plan_run(uri, ade("hwd", 0), cost(10.0, 999.0, 9.0, 1.0), key="older-hwd-0")
    used[ade("hwd", 0)] = log_plan_run(uri, ade("hwd", 0), cost(33.20, 130.0, 0.08, 40.0))
    used[ade("hwd", 1)] = log_plan_run(uri, ade("hwd", 1), cost(33.60, 140.0, 0.09, 42.0))
    used[ade("hwd-swept", 0)] = log_plan_run(uri, ade("hwd-swept", 0), cost(34.00, 150.0, 0.10, 39.0), method="hwd")
    used[ade("hwd-swept", 1)] = log_plan_run(uri, ade("hwd-swept", 1), cost(34.30, 146.0, 0.10, 41.0), method="hwd")
    left_out["outside"] = log_plan_run(uri, ade("none", 7), cost(1.0, 1.0, 1.0, 1.0))
    left_out["other plan"] = log_plan_run(uri, ade("none", 0), cost(2.0, 1.0, 1.0, 1.0), plan="other-plan")
    # Cityscapes: no train_seconds or gpu_hours logged (shown as "-"), and no hwd run at all
    used[("cityscapes", R18, "none", 0)] = log_plan_run(
        uri, ("cityscapes", R18, "none", 0), {"best_val_miou": 70.00, "images_per_s": 20.0}
    )

    output_dir = tmp_path_factory.mktemp("report")
    built = report.write_plan_report(
        plan_name=PLAN,
        cells=CELLS,
        tracking_uri=uri,
        experiment=EXPERIMENT,
        output_dir=output_dir,
        paper_table="table2",
        plan_run_id=plan_run_id,
    )
    return uri, plan_run_id, used, left_out, built


@pytest.fixture(scope="module")
def client(plan):
    return MlflowClient(tracking_uri=plan[0])


def logged(client, run_id, metric):
    """The value MLflow holds for a run's metric (the latest), or None."""
    return client.get_run(run_id).data.metrics.get(metric)


def expected_values(client, used, dataset, label):
    """best_val_miou of the runs the report must use for a (dataset, R18, label), in seed order."""
    return [
        logged(client, used[cell], "best_val_miou")
        for cell in CELLS
        if cell[0] == dataset and cell[2] == label and cell in used
    ]


def shown_ours(values, planned):
    std = f"{statistics.stdev(values):.2f}" if len(values) > 1 else "-"
    count = f"n={len(values)}" if len(values) == planned else f"n={len(values)} of {planned}"
    return f"{statistics.mean(values):.2f} ± {std} ({count})"


# --------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------
def test_every_mean_and_std_equals_what_mlflow_holds(plan, client):
    _, _, used, _, built = plan
    for dataset, labels in (("ade20k", LABELS), ("cityscapes", ("none", "hwd"))):
        table = built.tables.dataset(dataset)
        assert table.labels == labels
        for label in labels:
            cell = table.row(R18).cells[label]
            values = expected_values(client, used, dataset, label)
            assert list(cell.values) == values, (dataset, label)
            assert list(cell.run_ids) == [used[c] for c in CELLS if c[0] == dataset and c[2] == label and c in used]
            assert cell.n == len(values)
            if values:
                assert cell.mean == statistics.mean(values)
                assert cell.std == (statistics.stdev(values) if len(values) > 1 else None)
            else:
                assert cell.mean is None and cell.std is None  # missing, not 0
    hwd = built.tables.dataset("ade20k").row(R18).cells["hwd"]
    assert hwd.values == (33.20, 33.60)  # the newer seed-0 run, not the older duplicate (10.0)


def test_paper_numbers_and_differences(plan):
    built = plan[4]
    assert built.tables.paper.name == "table2"
    for dataset, label, method in [
        ("ade20k", "none", "none"),
        ("ade20k", "cwd", "cwd"),
        ("ade20k", "hwd", "hwd"),
        ("ade20k", "hwd-swept", "hwd"),
        ("cityscapes", "none", "none"),
        ("cityscapes", "hwd", "hwd"),
    ]:
        cell = built.tables.dataset(dataset).row(R18).cells[label]
        assert cell.method == method
        assert cell.paper == PAPER[(dataset, method)]
        if cell.mean is None:
            assert cell.difference is None
        else:
            assert cell.difference == cell.mean - PAPER[(dataset, method)]
    assert built.tables.dataset("ade20k").teacher.miou == 42.46
    assert built.tables.dataset("cityscapes").teacher.miou == 78.07


def test_winners_ours_and_the_papers(plan):
    built = plan[4]
    ade = built.tables.dataset("ade20k").row(R18)
    means = {label: cell.mean for label, cell in ade.cells.items()}
    assert ade.winner == max(means, key=means.get) == "hwd-swept"
    assert ade.paper_winner == "hwd"
    city = built.tables.dataset("cityscapes").row(R18)
    assert (city.winner, city.paper_winner) == ("none", "hwd")  # hwd is missing: only none has a result


def test_missing_runs_are_shown_and_counted_never_zero(plan):
    _, _, _, left_out, built = plan
    assert built.missing == MISSING_CELLS
    assert built.tables.expected_runs == 10 and built.tables.found_runs == 8
    assert [table.missing_runs for table in built.tables.datasets] == [1, 1]
    lines = built.text.splitlines()
    city_rows = [line for line in lines if line.startswith(f"| {R18} | 70.00")]
    assert city_rows == [f"| {R18} | 70.00 ± - (n=1) | missing | none |"]
    assert f"| {R18} | {70.00 - 71.78:+.2f} | missing |" in lines  # ours - paper
    assert "Missing runs on ade20k: 1 (deeplabv3_resnet18/cwd seed 1)." in lines
    assert "Missing runs on cityscapes: 1 (deeplabv3_resnet18/hwd seed 0)." in lines
    assert "Runs: 10 planned, 8 finished, 2 missing." in lines
    notes = "\n".join(built.tables.notes)
    assert f"FAILED {left_out['failed']}" in notes
    assert left_out["older"] in notes and "used the newest" in notes
    assert left_out["outside"] in notes
    assert left_out["other plan"] not in notes  # another plan's runs are not read at all


def test_markdown_rows_hold_the_same_numbers(plan, client):
    _, _, used, _, built = plan
    ours = [shown_ours(expected_values(client, used, "ade20k", label), 2) for label in LABELS]
    assert f"| {R18} | {' | '.join(ours)} | hwd-swept |" in built.text.splitlines()
    assert "32.40 ± - (n=1 of 2)" in ours[1]
    paper_row = [f"{PAPER[('ade20k', method)]:.2f}" for method in ("none", "cwd", "hwd", "hwd")]
    assert f"| {R18} | {' | '.join(paper_row)} | hwd |" in built.text.splitlines()
    assert built.markdown_path.read_text(encoding="utf-8") == built.text


def test_cost_table_and_hwd_over_cwd_time(plan, client):
    _, _, used, _, built = plan

    def mean_logged(label, metric):
        return statistics.mean(
            logged(client, used[("ade20k", R18, label, seed)], metric)
            for seed in (0, 1)
            if ("ade20k", R18, label, seed) in used
        )

    cwd_seconds = mean_logged("cwd", "train_seconds")
    for label in LABELS:
        row = built.tables.cost_row("ade20k", R18, label)
        assert row.train_seconds == mean_logged(label, "train_seconds")
        assert row.gpu_hours == mean_logged(label, "gpu_hours")
        assert row.images_per_s == mean_logged(label, "images_per_s")
        assert row.time_vs_cwd == row.train_seconds / cwd_seconds
    assert built.tables.cost_row("ade20k", R18, "none").images_per_s == statistics.mean([52.0, 54.0])  # latest
    hwd = built.tables.cost_row("ade20k", R18, "hwd")
    assert hwd.time_vs_cwd == statistics.mean([130.0, 140.0]) / 110.0  # not the older duplicate's 999 s
    assert f"hwd takes {hwd.time_vs_cwd:.2f}× CWD's training time on ade20k/{R18}" in built.text
    city = built.tables.cost_row("cityscapes", R18, "none")
    assert (city.train_seconds, city.gpu_hours, city.time_vs_cwd, city.images_per_s) == (None, None, None, 20.0)
    assert f"| cityscapes | {R18} | none | 1 | - | - | 20.0 | - |" in built.text.splitlines()
    assert built.tables.cost_row("cityscapes", R18, "hwd").runs == 0


# --------------------------------------------------------------------------------------------
# Files and the plan's MLflow run
# --------------------------------------------------------------------------------------------
def test_files_exist_and_html_is_escaped(plan):
    built = plan[4]
    with Image.open(built.chart_path) as image:
        image.load()
        assert image.format == "PNG" and image.width >= 400 and image.height >= 400
        pixels = np.asarray(image.convert("L"))
    assert len(np.unique(pixels)) > 20  # bars, text and axes, not a blank canvas
    page = built.html_path.read_text(encoding="utf-8")
    assert "repro &lt;synthetic&gt; &amp; co" in page and PLAN not in page
    ade = built.tables.dataset("ade20k").row(R18)
    for label in LABELS:
        assert f"<td>{html_cell(ade.cells[label])}</td>" in page
    assert "<td>missing</td>" in page and "data:image/png;base64," in page


def html_cell(cell):
    std = f"{cell.std:.2f}" if cell.std is not None else "-"
    count = f"n={cell.n}" if cell.n == len(cell.seeds) else f"n={cell.n} of {len(cell.seeds)}"
    return f"{cell.mean:.2f} ± {std} ({count})"


def test_report_is_logged_to_the_plan_run(plan, client, tmp_path):
    _, plan_run_id, _, _, built = plan
    names = sorted(info.path for info in client.list_artifacts(plan_run_id, "report"))
    assert names == ["report/report.html", "report/report.md", "report/report.png"]
    local = client.download_artifacts(plan_run_id, "report/report.md", str(tmp_path))
    assert open(local, encoding="utf-8").read() == built.text
    metrics = client.get_run(plan_run_id).data.metrics
    assert metrics["report_missing_runs"] == 2
    assert metrics["report_expected_runs"] == 10
    assert metrics["report_finished_runs"] == 8


# --------------------------------------------------------------------------------------------
# The pure steps on their own
# --------------------------------------------------------------------------------------------
def found(cell, miou, status="FINISHED", run_id=None, tags=None):
    dataset, student, label, seed = cell
    return tracking.FoundRun(
        run_id=run_id or f"run-{label}-{seed}",
        run_name="",
        status=status,
        tags={
            tracking.PLAN_TAG: "p",
            tracking.PLAN_DATASET_TAG: dataset,
            tracking.PLAN_STUDENT_TAG: student,
            tracking.PLAN_METHOD_TAG: label,
            tracking.PLAN_SEED_TAG: str(seed),
            **(tags or {}),
        },
        params={},
        metrics={"best_val_miou": miou},
    )


def test_without_a_paper_table_and_with_given_label_methods():
    cells = [("synthetic", "tiny", "base", 0), ("synthetic", "tiny", "tuned", 0), ("synthetic", "tiny", "tuned", 1)]
    runs = [found(cells[0], 20.0), found(cells[1], 25.0), found(cells[2], math.nan, run_id="nan-run")]
    collected = report.collect_runs(runs, cells, label_methods={"base": "none"})
    assert collected.label_methods == {"base": "none"}
    assert collected.missing == (cells[2],)  # a NaN best_val_miou is not a result
    assert any("nan-run" in note for note in collected.notes)
    assert any("'tuned'" in note and "unknown" in note for note in collected.notes)
    tables = report.build_tables("p", cells, collected, paper=None)
    row = tables.dataset("synthetic").row("tiny")
    assert (row.cells["tuned"].mean, row.cells["tuned"].std, row.winner) == (25.0, None, "tuned")
    assert row.paper_winner is None and row.cells["base"].paper is None
    text = report.render_markdown(tables)
    assert "No paper table chosen" in text and "### Paper" not in text
    assert "| tiny | 20.00 ± - (n=1) | 25.00 ± - (n=1 of 2) | tuned |" in text.splitlines()


@pytest.mark.parametrize(
    "cells, message",
    [
        ([], "no cells"),
        ([("ade20k", R18, "hwd", "0")], "int seed"),
        ([("ade20k", R18, "hwd", 0), ("ade20k", R18, "hwd", 0)], "repeated"),
    ],
)
def test_bad_cells_are_named(cells, message):
    with pytest.raises(ValueError, match=message):
        report.collect_runs([], cells)
