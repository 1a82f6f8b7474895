"""`hwd-tune reproduce` on real Ray, MLflow (sqlite) and Tune: the synthetic plan's nine methods
train, each run carries its cell's tags and cost, a failed run is recorded while the others go on,
and a second reproduction skips finished runs, resumes the failed one from its checkpoint and runs
only the cell the plan gained; a third has nothing to do."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from hwd_tune import tracking
from hwd_tune.cli import app
from hwd_tune.config import ConfigError, DataConfig, ModelConfig
from hwd_tune.data.from_config import training_set
from hwd_tune.data.stream import TrainingStream
from hwd_tune.losses.task import TaskLoss, total_loss
from hwd_tune.reproduce.plan import Cell, Plan, load
from hwd_tune.reproduce.runner import (
    ReproduceSummary,
    cell_tags,
    check_before_start,
    finished_runs,
    log_cost,
    plan_dir,
    plan_run_key,
    reproduce,
)
from tests.trainables.helpers import TINY_TEACHER, tiny_config
from trainables.checks import NotStarted
from trainables.launch import run_key, run_name
from trainables.loop import model_from_config

PLAN_FILE = Path(__file__).resolve().parents[2] / "search_spaces" / "plans" / "quickstart.yaml"
METHODS = ["none", "kd", "skd", "ifvd", "cwd", "cirkd", "dist", "mgd", "hwd"]
FIRST_METHODS = METHODS[:-1]  # the first reproduction's plan lacks hwd: it is the cell added later
FAILING = "kd"  # made to fail in the first reproduction
STUDENT = "deeplabv3_resnet18"
FAIL_AT = 9  # where the FAILING run of the first reproduction fails, after its checkpoint of iteration 6
TINY_DATA = {
    "crop_size": 48,
    "scale_range": [1.0, 1.0],
    "loader_workers": 0,
    "synthetic": {"num_classes": 4, "image_size": 48, "train_samples": 64, "val_samples": 8},
}


def tiny_overrides(output: Path, teacher: str) -> list[str]:
    """The shipped quickstart plan at test size: 48 px, 12 iterations, validation every 6, the test teacher."""
    return [
        f"train.output_dir={output}",
        f"train.tracking={{uri: 'sqlite:///{output}/mlflow/mlflow.db', experiment: tests}}",
        f"train.data={yaml.safe_dump(TINY_DATA, default_flow_style=True).strip()}",
        "train.schedule={max_iters: 12, batch_size: 4, val_interval: 6, log_interval: 3}",
        f"datasets=[{{data: {{name: synthetic}}, teacher: {{source: '{teacher}'}}}}]",
    ]


def words(text: str) -> str:
    """Console output with its line wrapping undone."""
    return " ".join(text.split())


def cell(method: str, seed: int = 0) -> Cell:
    return Cell("synthetic", STUDENT, method, seed)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> str:
    """A tiny teacher trained for 40 iterations on the synthetic training stream, saved as a plain
    state_dict model.pt. Trained in this process with SGD on the task loss: a Ray Train run of any
    length costs ~25 CPU-seconds of actor start-up, and the reproductions below need 10 already."""
    data = DataConfig.model_validate({**TINY_DATA, "name": "synthetic"})
    stream = TrainingStream(*training_set(data), seed=0)
    teacher = model_from_config(ModelConfig.model_validate(TINY_TEACHER), data.synthetic.num_classes)
    task = TaskLoss()
    optimizer = torch.optim.SGD(teacher.parameters(), lr=0.05, momentum=0.9)
    teacher.train()
    losses = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on two cores busy with Ray are ~50x slower here
    try:
        for step in range(40):
            images, labels = zip(*(stream[4 * step + index] for index in range(4)))
            loss = total_loss(task(teacher(torch.stack(images)), torch.stack(labels)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    assert sum(losses[-5:]) < sum(losses[:5])  # it learnt something
    path = tmp_path_factory.mktemp("plan-teacher") / "model.pt"
    torch.save(teacher.state_dict(), path)
    return str(path)


@dataclass
class Reproductions:
    """The plan reproduced three times, with what MLflow and Tune held after each."""

    plan: Plan  # the shipped quickstart plan at test size: the nine methods
    client: MlflowClient
    first: ReproduceSummary  # the plan without hwd, FAILING made to fail at iteration FAIL_AT
    second: ReproduceSummary  # the whole plan: FAILING again and the new hwd only
    third: ReproduceSummary  # the whole plan again: nothing left
    runs: list[dict[str, tuple]]  # after each: run id -> (status, end time, failure reason); plan run left out
    plan_runs: list[tuple[str, str | None]]  # after each: the plan run's status and failure reason
    tune_trials: list[set[str]]  # after each: the trial folders of the plan's Tune experiment


@pytest.fixture(scope="module")
def reproductions(ray_local, teacher_file, tmp_path_factory) -> Reproductions:
    """10 training runs in all: a Ray Train run costs ~25 CPU-seconds of start-up alone."""
    output = tmp_path_factory.mktemp("plan")
    plan = load(PLAN_FILE, tiny_overrides(output, teacher_file))
    raw = plan.model_dump(mode="json")
    raw["methods"] = [entry for entry in raw["methods"] if entry["name"] != "hwd"]
    without_hwd = Plan.model_validate(raw)
    client = MlflowClient(tracking_uri=f"sqlite:///{output}/mlflow/mlflow.db")
    runs, plan_runs, trials = [], [], []

    def snapshot(summary: ReproduceSummary):
        experiment = client.get_experiment_by_name("tests")
        found = client.search_runs([experiment.experiment_id], filter_string="tags.`hwd.job` != 'plan'")
        runs.append(
            {
                run.info.run_id: (run.info.status, run.info.end_time, run.data.tags.get(tracking.FAILURE_REASON_TAG))
                for run in found
            }
        )
        plan_run = client.get_run(summary.plan_run_id)
        plan_runs.append((plan_run.info.status, plan_run.data.tags.get(tracking.FAILURE_REASON_TAG)))
        trials.append({path.name for path in (plan_dir(plan) / "tune").glob("*") if path.is_dir()})

    def fail_one(planned: Cell):  # nested: Ray pickles it by value for the trial actors
        return {"fail_at_iteration": FAIL_AT} if planned.method == FAILING else {}

    first = reproduce(without_hwd, loop_config_hook=fail_one)
    snapshot(first)
    second = reproduce(plan)
    snapshot(second)
    third = reproduce(plan)
    snapshot(third)
    return Reproductions(plan, client, first, second, third, runs, plan_runs, trials)


# --------------------------------------------------------------------------------------------
# Without training
# --------------------------------------------------------------------------------------------
def test_only_finished_runs_of_the_same_plan_and_config_are_skipped(tmp_path):
    """Runs in every status, of another plan and of another config: only FINISHED ones of this
    plan whose config hash is the cell's count as done (a killed run is RUNNING or KILLED)."""
    plan = load(PLAN_FILE, tiny_overrides(tmp_path, "teacher.pt"))
    uri = f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    ids = {}
    for method, status, plan_name, hash_of in [
        ("none", "FINISHED", "quickstart", "none"),
        ("kd", "RUNNING", "quickstart", "kd"),  # a driver killed mid-run leaves it RUNNING
        ("skd", "KILLED", "quickstart", "skd"),
        ("ifvd", "FAILED", "quickstart", "ifvd"),
        ("cwd", "FINISHED", "another-plan", "cwd"),
        ("cirkd", "FINISHED", "quickstart", "dist"),  # tags of cirkd, config hash of dist
    ]:
        tags = {
            **cell_tags(plan, cell(method), plan.train_config(cell(method))),
            tracking.PLAN_TAG: plan_name,
            tracking.CONFIG_HASH_TAG: run_key(plan.train_config(cell(hash_of))),
        }
        run_id = tracking.start_run(
            tracking_uri=uri, experiment="tests", run_key=f"run-{method}", run_name=method, tags=tags
        )
        if status != "RUNNING":
            tracking.RunLogger(uri, run_id).finish(status)
        ids[method] = run_id
    found = finished_runs(plan, uri)
    skipped = {planned: run.run_id for planned, run in found.items()}
    assert skipped == {cell("none"): ids["none"], cell("dist"): ids["cirkd"]}


def test_a_renamed_label_keeps_its_finished_run_and_nothing_is_trained(tmp_path):
    """Every cell finished earlier (one under an old label): no Ray, no Tuner; the old run is
    re-tagged with the new label (same training job) and the report counts all nine."""
    plan = load(PLAN_FILE, tiny_overrides(tmp_path, "teacher.pt"))
    uri = f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    for planned in plan.cells():
        tags = cell_tags(plan, planned, plan.train_config(planned))
        if planned.method == "hwd":
            tags[tracking.PLAN_METHOD_TAG] = "hwd-table1"  # the label an earlier version of the plan gave
        run_id = tracking.start_run(
            tracking_uri=uri,
            experiment="tests",
            run_key=f"run-{planned.method}",
            run_name=planned.method,
            tags={**tags, "hwd.method": planned.method},
        )
        logger = tracking.RunLogger(uri, run_id)
        logger.log_metrics({"best_val_miou": 10.0 + len(planned.method)}, step=12)
        logger.finish("FINISHED")
    summary = reproduce(plan)
    assert summary.scheduled == [] and summary.skipped == plan.cells() and summary.failed == []
    hwd = summary.outcome(cell("hwd"))
    assert tracking.find_runs(uri, "tests", {tracking.PLAN_METHOD_TAG: "hwd"})[0].run_id == hwd.run_id
    assert hwd.best_val_miou == 13.0 and summary.report.tables.found_runs == 9
    assert not (plan_dir(plan) / "tune").exists()  # no Tuner was built


def test_log_cost_sums_wall_time_over_attempts_and_counts_gpu_hours(tmp_path):
    config = tiny_config(
        tmp_path,
        job="distill",
        method={"name": "cwd"},
        teacher={"source": "t.pt"},
        resources={"num_workers": 2, "cpus_per_worker": 1.0, "gpus_per_worker": 0.5},
        tracking={"experiment": "tests", "uri": f"sqlite:///{tmp_path}/mlflow.db"},
    )
    uri = config.tracking.uri
    run_id = tracking.start_run(tracking_uri=uri, experiment="tests", run_key=run_name(config), run_name="r")
    log_cost(config, uri, 1800.0)
    assert tracking.latest_metrics(uri, run_id) == {"train_seconds": 1800.0, "gpu_hours": 0.5}  # 2 x 0.5 GPU x 0.5 h
    log_cost(config, uri, 900.0)  # a resumed attempt adds its time
    assert tracking.latest_metrics(uri, run_id) == {"train_seconds": 2700.0, "gpu_hours": 0.75}
    history = MlflowClient(uri).get_metric_history(run_id, "train_seconds")
    assert [(metric.step, metric.value) for metric in history] == [(0, 1800.0), (0, 2700.0)]


@pytest.mark.slow  # starts the session's Ray: `make test-fast` skips it
def test_a_plan_that_does_not_fit_fails_before_anything_starts(ray_local, tmp_path):
    plan = load(PLAN_FILE, [*tiny_overrides(tmp_path, "teacher.pt"), "train.resources.cpus_per_worker=3"])
    with pytest.raises(NotStarted, match=r"cpus_per_worker.*one run needs 3\.01 CPUs, the cluster has 2") as error:
        reproduce(plan)
    assert isinstance(error.value.__cause__, ConfigError)
    assert tracking.find_runs(f"sqlite:///{tmp_path}/mlflow/mlflow.db", "tests", {}) == []  # no plan run either
    assert not plan_dir(plan).exists()


@pytest.mark.slow  # starts the session's Ray: `make test-fast` skips it
def test_a_missing_teacher_fails_before_anything_starts(ray_local, tmp_path):
    plan = load(PLAN_FILE, tiny_overrides(tmp_path, str(tmp_path / "no-teacher.pt")))
    expected = r"quickstart\.yaml: dataset 'synthetic': teacher\.source: teacher source .*no-teacher\.pt"
    with pytest.raises(ValueError, match=expected):
        reproduce(plan)
    assert tracking.find_runs(f"sqlite:///{tmp_path}/mlflow/mlflow.db", "tests", {}) == []


def test_the_checks_before_start_name_the_plan_and_create_no_store(tmp_path):
    plan = load(PLAN_FILE, tiny_overrides(tmp_path, str(tmp_path / "no-teacher.pt")))
    assert finished_runs(plan, f"sqlite:///{tmp_path}/mlflow/mlflow.db") == {}  # no store: nothing finished
    with pytest.raises(ValueError, match=r"quickstart\.yaml: teacher\.source: teacher source .*no-teacher\.pt"):
        check_before_start(plan)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# The full matrix on real Ray
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_every_method_trains_and_its_task_loss_falls(reproductions):
    """Each of the nine methods finishes its 12 iterations; its training cross-entropy over the last
    3 iterations is below 90 % of the first 3 (it starts near ln 4 and falls towards the entropy of
    the class frequencies); its best_val_miou is the best of its two validations."""
    client, plan = reproductions.client, reproductions.plan
    outcomes = {outcome.cell: outcome for outcome in reproductions.second.outcomes}
    assert list(outcomes) == [cell(method) for method in METHODS]
    for method in METHODS:
        outcome = outcomes[cell(method)]
        run = client.get_run(outcome.run_id)
        assert run.info.status == "FINISHED", method
        assert run.data.params["method"] == method and run.data.metrics["iteration"] == 12
        ce = [metric.value for metric in client.get_metric_history(outcome.run_id, "loss/ce")]
        assert ce[-1] < 0.9 * ce[0], (method, ce)
        validations = client.get_metric_history(outcome.run_id, "val_miou")
        assert [metric.step for metric in validations] == [6, 12], method
        assert math.isfinite(outcome.best_val_miou) and 0.0 <= outcome.best_val_miou <= 100.0
        assert outcome.best_val_miou == pytest.approx(max(metric.value for metric in validations))
        assert run.data.metrics["best_val_miou"] == outcome.best_val_miou
        assert plan.train_config(cell(method)).method.name == method


@pytest.mark.slow
def test_each_run_carries_its_cell_its_plan_and_its_cost(reproductions):
    client, plan, second = reproductions.client, reproductions.plan, reproductions.second
    plan_run = client.get_run(second.plan_run_id)
    assert plan_run.data.tags[tracking.PLAN_TAG] == "quickstart" and plan_run.data.tags["hwd.job"] == "plan"
    assert plan_run.data.tags[tracking.RUN_KEY_TAG] == plan_run_key(plan)
    logged_plan = Path(client.download_artifacts(second.plan_run_id, "plan/plan.yaml"))
    assert yaml.safe_load(logged_plan.read_text()) == plan.model_dump(mode="json")  # the latest plan
    for outcome in second.outcomes:
        run = client.get_run(outcome.run_id)
        config = plan.train_config(outcome.cell)
        assert run.data.tags[tracking.PLAN_TAG] == "quickstart"
        assert run.data.tags[tracking.PLAN_DATASET_TAG] == "synthetic"
        assert run.data.tags[tracking.PLAN_STUDENT_TAG] == STUDENT
        assert run.data.tags[tracking.PLAN_METHOD_TAG] == outcome.cell.method
        assert run.data.tags[tracking.PLAN_SEED_TAG] == "0"
        assert run.data.tags[tracking.CONFIG_HASH_TAG] == run_key(config)
        assert run.data.tags["mlflow.parentRunId"] == second.plan_run_id
        assert run.info.run_name == run_name(config)
        seconds = run.data.metrics["train_seconds"]
        assert 0.0 < seconds < 600.0 and outcome.train_seconds == seconds
        assert run.data.metrics["gpu_hours"] == 0.0  # CPU workers: train_seconds x 1 worker x 0 GPUs
        assert run.data.metrics["images_per_s"] > 0.0
        attempts = client.get_metric_history(outcome.run_id, "train_seconds")
        assert [metric.step for metric in attempts] == [0] * (2 if outcome.cell.method == FAILING else 1)
    retried = client.get_metric_history(second.outcome(cell(FAILING)).run_id, "train_seconds")
    assert 0.0 < retried[0].value < retried[1].value  # the failed attempt's time, then that plus the retry's


@pytest.mark.slow
def test_a_failed_run_is_recorded_and_the_others_go_on(reproductions):
    first = reproductions.first
    assert first.scheduled == [cell(method) for method in FIRST_METHODS] and first.skipped == []
    assert first.failed == [cell(FAILING)]
    assert [outcome.status for outcome in first.outcomes] == [
        "failed" if method == FAILING else "finished" for method in FIRST_METHODS
    ]
    failed = first.outcome(cell(FAILING))
    assert (
        failed.reason == f"RuntimeError: failing on purpose at iteration {FAIL_AT} "
        "(loop_config fail_at_iteration test hook)"
    )
    status, _, reason = reproductions.runs[0][failed.run_id]
    assert status == "FAILED" and failed.reason in reason
    assert reproductions.plan_runs[0] == ("FAILED", f"1 of 8 runs failed: synthetic/{STUDENT}/{FAILING}/0")


@pytest.mark.slow
def test_rerunning_skips_finished_runs_and_resumes_the_failed_one_from_its_checkpoint(reproductions):
    first, second, client = reproductions.first, reproductions.second, reproductions.client
    assert second.scheduled == [cell(FAILING), cell("hwd")]
    assert second.skipped == [cell(method) for method in FIRST_METHODS if method != FAILING]
    assert [outcome.status for outcome in second.outcomes] == [
        "finished" if method in (FAILING, "hwd") else "finished earlier" for method in METHODS
    ]
    retried = second.outcome(cell(FAILING)).run_id
    assert retried == first.outcome(cell(FAILING)).run_id  # the failed run reopened, not a new one
    before, after = reproductions.runs[0], reproductions.runs[1]
    assert after[retried][0::2] == ("FINISHED", None)  # the failure reason goes once it finishes
    untouched = set(before) - {retried}
    assert {run_id: after[run_id] for run_id in untouched} == {run_id: before[run_id] for run_id in untouched}
    assert client.get_run(retried).data.tags[tracking.RESUME_COUNT_TAG] == "1"
    # Resumed from its checkpoint of iteration 6, not trained again: validation 6 is logged once;
    # iterations 7-9 are trained again (the failed attempt logged 9, then failed in the 10th), but
    # each metric is logged once per step, so step 9 is not logged a second time.
    assert [metric.step for metric in client.get_metric_history(retried, "val_miou")] == [6, 12]
    assert [metric.step for metric in client.get_metric_history(retried, "loss/ce")] == [3, 6, 9, 12]
    assert second.plan_run_id == first.plan_run_id  # one plan run, reopened
    assert reproductions.plan_runs[1] == ("FINISHED", None)


@pytest.mark.slow
def test_a_cell_added_to_the_plan_runs_alone(reproductions):
    second = reproductions.second
    new = set(reproductions.runs[1]) - set(reproductions.runs[0])
    assert new == {second.outcome(cell("hwd")).run_id}  # one new run: the added cell's
    assert reproductions.runs[1][new.pop()][0] == "FINISHED"
    assert len(reproductions.tune_trials[1] - reproductions.tune_trials[0]) == 2  # the retry and hwd only


@pytest.mark.slow
def test_nothing_left_to_run_builds_no_tuner_and_touches_no_run(reproductions):
    third = reproductions.third
    assert third.scheduled == [] and third.skipped == [cell(method) for method in METHODS]
    assert [outcome.status for outcome in third.outcomes] == ["finished earlier"] * len(METHODS)
    assert reproductions.runs[2] == reproductions.runs[1]  # same ids, statuses and end times
    assert reproductions.tune_trials[2] == reproductions.tune_trials[1]  # no Tune trial
    assert reproductions.plan_runs[2] == ("FINISHED", None)


@pytest.mark.slow
def test_the_report_is_written_logged_and_holds_mlflows_numbers(reproductions):
    third, client = reproductions.third, reproductions.client
    report = third.report
    assert third.report_error is None
    row = report.tables.dataset("synthetic").row(STUDENT)
    for outcome in third.outcomes:
        held = client.get_run(outcome.run_id).data.metrics["best_val_miou"]
        assert row.cells[outcome.cell.method].values == (held,)
    assert report.markdown_path.parent == plan_dir(reproductions.plan) / "report"
    assert report.markdown_path.read_text() == report.text
    assert report.html_path.read_text().startswith("<!DOCTYPE html>")
    assert report.chart_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    logged = {Path(item.path).name for item in client.list_artifacts(third.plan_run_id, "report")}
    assert logged == {"report.md", "report.html", "report.png"}


@pytest.mark.slow
def test_cli_reproduce_and_report_on_a_finished_plan(reproductions, teacher_file):
    """The commands on the shipped plan file with --set: nothing left to run; the report is rewritten."""
    plan = reproductions.plan
    output = Path(plan.train.output_dir)
    arguments = [item for setting in tiny_overrides(output, teacher_file) for item in ("--set", setting)]
    report_file = plan_dir(plan) / "report" / "report.md"
    report_file.unlink()

    result = CliRunner().invoke(app, ["reproduce", str(PLAN_FILE), *arguments], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "plan quickstart: 9 runs, 9 finished earlier, 0 to run" in words(result.output)
    assert "# Reproduction report: quickstart" in result.output and report_file.is_file()

    report_file.unlink()
    result = CliRunner().invoke(app, ["report", str(PLAN_FILE), *arguments], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "# Reproduction report: quickstart" in result.output and report_file.is_file()
    assert "Runs: 9 planned, 9 finished, 0 missing." in report_file.read_text()


def test_cli_refuses_a_bad_plan_naming_the_field(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN_FILE.read_text())
    for command in ("reproduce", "report"):
        result = CliRunner().invoke(app, [command, str(path), "--set", "seeds=[1, 1]"])
        assert result.exit_code == 2, result.output
        assert f"{path}: seeds: each seed at most once" in words(result.output)
