"""A saved view of the MLflow UI: a link that opens an experiment's runs table on a comparison.

MLflow 3.17's UI opens a link `#/experiments/<id>/runs?viewStateShareKey=<key>` on the view kept
in the experiment tag `mlflow.sharedViewState.<key>` (what its "Share" button writes): the search
filter, the sort and the table's columns. Tagging the experiment `mlflow.experimentKind =
custom_model_development` makes the UI open it on its model-training pages, not GenAI traces.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from urllib.parse import quote

from hwd_tune.tracking.store import mlflow_client

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"  # the UI's model-training (not GenAI) pages
SAVED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
VIEW_KEY_PARAMETER = "viewStateShareKey"
DEFAULT_UI_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui --host 127.0.0.1 --port 5000` serves


def save_runs_view(
    tracking_uri: str,
    experiment: str,
    *,
    key: str,
    name: str,
    search_filter: str,
    params: Sequence[str],
    metrics: Sequence[str],
    order_by_metric: str,
    ascending: bool = False,
) -> str:
    """Saves a runs-table view (the runs matching `search_filter`, with columns `params` then
    `metrics`, sorted by `order_by_metric`) on `experiment`; returns the view's URL fragment
    `#/experiments/<id>/runs?viewStateShareKey=<key>`. Also marks the experiment as model training.

    Sorting by a metric also keeps child runs out of their parent's fold (the UI only fetches
    parents when sorting by date), so the matching runs are listed one per row.
    """
    if not key or any(not (char.isalnum() or char in "-_") for char in key):
        raise ValueError(f"a view key must be letters, digits, '-' or '_', got {key!r}")
    client = mlflow_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ValueError(f"MLflow experiment {experiment!r} not found: a view is saved on an experiment with runs")
    columns = [f"params.`{param}`" for param in params] + [f"metrics.`{metric}`" for metric in metrics]
    state = {
        "searchFilter": search_filter,
        "orderByKey": f"metrics.`{order_by_metric}`",
        "orderByAsc": ascending,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "modelVersionFilter": "All Runs",
        "datasetsFilter": [],
        "selectedColumns": columns,
        "columnOrder": columns,
    }
    now_ms = int(time.time() * 1000)
    envelope = {"name": name, "createdAt": now_ms, "updatedAt": now_ms, "state": json.dumps(state)}
    client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    client.set_experiment_tag(found.experiment_id, f"{SAVED_VIEW_TAG_PREFIX}{key}", json.dumps(envelope))
    return f"#/experiments/{found.experiment_id}/runs?{VIEW_KEY_PARAMETER}={quote(key)}"


def ui_link(fragment: str, address: str = DEFAULT_UI_ADDRESS) -> str:
    """The full link of a view fragment (see `save_runs_view`) on an MLflow UI at `address`."""
    return f"{address.rstrip('/')}/{fragment}"
