"""The saved runs-table view: the experiment tags MLflow 3.17's UI reads, and the link to them."""

import html
import json
import re
import shutil
import subprocess

import pytest
from mlflow import MlflowClient

from hwd_tune import tracking
from hwd_tune.sweep import layout, summary
from hwd_tune.sweep.config import trial_train_config
from hwd_tune.tracking import ui_view
from tests.sweep.helpers import tiny_sweep
from tests.tracking.helpers import new_run


def test_a_saved_view_tags_the_experiment_for_the_runs_table(store, client):
    new_run(store, "view-run", experiment="view")
    fragment = tracking.save_runs_view(
        store[1],
        "view",
        key="sweep-s_1",
        name="sweep s_1",
        search_filter="tags.`hwd.sweep` = 's_1'",
        params=["tau", "mu"],
        metrics=["val_miou"],
        order_by_metric="val_miou",
    )
    experiment = client.get_experiment_by_name("view")
    assert fragment == f"#/experiments/{experiment.experiment_id}/runs?viewStateShareKey=sweep-s_1"
    assert tracking.ui_link(fragment, "http://127.0.0.1:5000/") == f"http://127.0.0.1:5000/{fragment}"
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    envelope = json.loads(experiment.tags["mlflow.sharedViewState.sweep-s_1"])
    assert envelope["name"] == "sweep s_1" and isinstance(envelope["createdAt"], int)
    state = json.loads(envelope["state"])
    assert state["searchFilter"] == "tags.`hwd.sweep` = 's_1'"
    assert state["orderByKey"] == "metrics.`val_miou`" and state["orderByAsc"] is False
    assert state["selectedColumns"] == ["params.`tau`", "params.`mu`", "metrics.`val_miou`"]


def test_a_view_needs_an_existing_experiment_and_a_plain_key(store):
    common = dict(name="v", search_filter="", params=[], metrics=[], order_by_metric="m")
    with pytest.raises(ValueError, match="experiment 'no-such-experiment' not found"):
        ui_view.save_runs_view(store[1], "no-such-experiment", key="k", **common)
    with pytest.raises(ValueError, match=r"a view key must be letters, digits, '-' or '_', got 'a b'"):
        ui_view.save_runs_view(store[1], "view", key="a b", **common)


CHROMIUM = shutil.which("chromium")
TRIALS = [  # (tau, mu, beta) -> val_miou reported at iterations 2, 4
    ({"tau": 4.0, "mu": 0.0, "beta": 0.1}, [20.5, 31.25]),
    ({"tau": 2.5, "mu": 1.2, "beta": 0.05}, [33.0, 40.75]),
    ({"tau": 7.1, "mu": -0.5, "beta": 0.3}, [9.5, 12.125]),
]


def rendered_page(url: str, timeout_s: float = 300) -> str:
    """The DOM of `url` once headless chromium has run its scripts (virtual time waits for fetches)."""
    result = subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1600,1000"]
        + ["--virtual-time-budget=30000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=True,
    )
    return result.stdout


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_the_printed_link_opens_the_trials_with_their_params_and_val_miou(http_server, tmp_path):
    """A sweep's runs as the sweep logs them (a teacher, the parent, its trials nested under it) on
    a real `mlflow server`; the link the sweep prints lists the trials, by name, with their val mIoU."""
    sweep = tiny_sweep(tmp_path, "teacher.pt")
    sweep.train.tracking.uri = uri = http_server
    sweep.train.tracking.experiment = "ui"
    teacher = tracking.start_run(tracking_uri=uri, experiment="ui", run_key="teacher", run_name="the-teacher")
    tracking.RunLogger(uri, teacher).finish("FINISHED")
    parent_tags = {layout.SWEEP_TAG: sweep.name, "hwd.job": "sweep"}
    parent = tracking.start_run(tracking_uri=uri, experiment="ui", run_key="s", run_name="tiny", tags=parent_tags)
    for number, (params, history) in enumerate(TRIALS):
        trial = tracking.RunLogger(
            uri,
            tracking.start_run(
                tracking_uri=uri,
                experiment="ui",
                run_key=f"s-{number}",
                run_name=layout.trial_run_name("hwd", params),
                tags={layout.SWEEP_TAG: sweep.name, layout.TRIAL_ID_TAG: str(number), "hwd.job": "trial"},
                parent_run_id=parent,
            ),
        )
        trial.log_params(tracking.flatten_params(trial_train_config(sweep, params)))
        for step, value in zip((2, 4), history):
            trial.log_metrics({"val_miou": value}, step=step)
        trial.finish("FINISHED")
    tracking.RunLogger(uri, parent).finish("FINISHED")

    link = summary.trials_view(sweep, uri)  # what the sweep prints
    assert link.startswith(f"{http_server}/#/experiments/")
    page = rendered_page(link)

    client = MlflowClient(uri)
    trials = client.search_runs([client.get_experiment_by_name("ui").experiment_id], "tags.`hwd.job` = 'trial'")
    assert len(trials) == len(TRIALS)
    text = html.unescape(re.sub(r"<[^>]+>", "\n", page))
    cells = [line.strip() for line in text.splitlines() if line.strip()]
    for run in sorted(trials, key=lambda run: -run.data.metrics["val_miou"]):
        assert run.info.run_name in cells, f"trial {run.info.run_name!r} not listed"
        shown = f"{run.data.metrics['val_miou']:g}"  # the latest value, as the runs table shows it
        assert shown in cells, f"val_miou {shown} of {run.info.run_name!r} not listed"
    assert "the-teacher" not in cells and "tiny" not in cells  # only the sweep's trials
