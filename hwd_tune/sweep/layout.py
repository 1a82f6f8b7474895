"""Where a sweep's files go and how its MLflow runs are named and tagged.

Ray's files go under `<train.storage>/<sweep name>/` (storage: a shared folder or s3://, gs://;
by default the output folder): `tune/` (Tune's experiment state, what `--resume` restores),
`trials/` (each trial's Ray Train run, named by trial id so a resumed trial continues from its
checkpoint), `final/`. The driver's own files go under `<train.output_dir>/<sweep name>/`:
`report/` (plots, tables, the sweep file), `best_config.yaml`, the default sqlite Optuna study.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hwd_tune.storage import join, ray_storage_root
from hwd_tune.sweep.config import SweepConfig

TUNE_FOLDER = "tune"  # Tune's experiment state: what --resume restores
TRIALS_FOLDER = "trials"  # each trial's Ray Train run (checkpoints), named by trial id
FINAL_FOLDER = "final"  # the final stage's Tune experiment (its runs keep their checkpoints in train.output_dir)
REPORT_FOLDER = "report"  # plots and tables, also logged on the parent run
BEST_CONFIG_FILE = "best_config.yaml"
SWEEP_TAG = "hwd.sweep"
TRIAL_ID_TAG = "hwd.trial_id"
TRIAL_STATUS_TAG = "hwd.trial_status"  # completed | stopped_early | failed
STOPPED_AT_TAG = "hwd.stopped_at_iteration"
RESTARTS_TAG = "hwd.trial_restarts"  # times Tune restarted the trial from its last checkpoint
# Fields that do not change what a sweep searches: a re-run differing only in these continues it.
_NOT_IN_SWEEP_KEY = ("resources",)
_NOT_IN_TRAIN_KEY = ("resources", "tracking", "output_dir", "storage")


def sweep_dir(sweep: SweepConfig) -> Path:
    """`<train.output_dir>/<name>`, absolute: every file of the sweep lives below it."""
    return (Path(sweep.train.output_dir) / sweep.name).resolve()


def sweep_storage(sweep: SweepConfig) -> str:
    """`<train.storage>/<name>` (a folder or URI; the output folder by default): Ray's files of the sweep."""
    return join(ray_storage_root(sweep.train.storage, sweep.train.output_dir), sweep.name)


def experiment_location(sweep: SweepConfig) -> str:
    """The sweep's Tune experiment (`<sweep_storage>/tune/<name>`): what --resume restores."""
    return join(sweep_storage(sweep), TUNE_FOLDER, sweep.name)


def sweep_key(sweep: SweepConfig) -> str:
    """The parent run's key: the name plus a hash of what is searched (not where it runs)."""
    content = sweep.model_dump(mode="json", exclude=set(_NOT_IN_SWEEP_KEY))
    for name in _NOT_IN_TRAIN_KEY:
        content["train"].pop(name, None)
    content["search"].pop("storage", None)
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:10]
    return f"sweep-{sweep.name}-{digest}"


_PARAM_SYMBOLS = {"tau": "τ", "mu": "μ", "beta": "β"}  # as the paper writes them


def trial_run_name(method: str, params: dict[str, Any]) -> str:
    """A trial's MLflow run name, its sampled params: `hwd τ=4 μ=0 β=0.1` (the UI lists runs by name)."""
    shown = " ".join(
        f"{_PARAM_SYMBOLS.get(name, name)}={value:.3g}" if isinstance(value, float) else f"{name}={value}"
        for name, value in params.items()
    )
    return f"{method} {shown}".strip()


def trial_run_key(parent_key: str, trial_id: str) -> str:
    """A trial's child-run key: found again after a resume, since Tune keeps trial ids."""
    return f"{parent_key}-{trial_id}"
