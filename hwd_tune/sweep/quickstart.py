"""The README's main job: a tiny teacher on synthetic data, then a small HWD sweep with baselines.

Three steps, each resumable: (1) train the teacher of search_spaces/train/quickstart_teacher.yaml
and register it (skipped when its `best` alias exists), (2) run search_spaces/quickstart.yaml
(HWD's tau, mu, beta by Optuna + ASHA; then the best trial, Table I and the student-only and CWD
baselines retrained with two seeds each), (3) print the table, the verdict against the seed noise,
the best tau, mu, beta and how to open the MLflow UI. A second run reuses everything.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from hwd_tune import tracking
from hwd_tune.config import TrainConfig, load_train_config
from hwd_tune.sweep.config import SweepConfig
from hwd_tune.sweep.config import load as load_sweep
from hwd_tune.sweep.layout import TUNE_FOLDER, sweep_dir
from hwd_tune.sweep.service import check_before_start as check_sweep
from hwd_tune.sweep.service import run as run_sweep
from trainables import checks
from trainables.launch import run_training

TEACHER_FILE = Path("train") / "quickstart_teacher.yaml"
SWEEP_FILE = Path("quickstart.yaml")


def search_spaces_dir() -> Path:
    """search_spaces/ of the current directory, else of the source checkout this package is in."""
    for candidate in (Path.cwd() / "search_spaces", Path(__file__).resolve().parents[2] / "search_spaces"):
        if (candidate / SWEEP_FILE).is_file():
            return candidate
    raise FileNotFoundError(
        "search_spaces/quickstart.yaml not found: run `hwd-tune quickstart` from the hwd-tune checkout "
        "(the folder that holds search_spaces/)"
    )


def teacher_is_registered(tracking_uri: str, source: str) -> bool:
    """Whether the registry URI `source` (models:/name@alias) already resolves to a version (a local
    store that does not exist yet is not created to find out)."""
    if tracking.missing_local_store(tracking_uri) is not None:
        return False
    try:
        tracking.registered_version(tracking_uri, source)
    except (ValueError, FileNotFoundError):
        return False
    return True


def quickstart_jobs(output_dir: str) -> tuple[TrainConfig, SweepConfig]:
    """(the teacher's training job, the sweep) of the quickstart, writing under `output_dir`."""
    folder = search_spaces_dir()
    teacher = load_train_config(folder / TEACHER_FILE, [f"output_dir={output_dir}"])
    return teacher, load_sweep(folder / SWEEP_FILE, [f"train.output_dir={output_dir}"])


def check_quickstart(output_dir: str = "outputs") -> None:
    """What can be checked before Ray starts or a file is written: the teacher's job, and the sweep's
    jobs (their teacher's source once it is registered: until then step 1 trains it)."""
    teacher, sweep = quickstart_jobs(output_dir)
    checks.check_before_start(teacher, source=str(search_spaces_dir() / TEACHER_FILE))
    tracking_uri = tracking.resolve_tracking_uri(sweep.train.tracking.uri, sweep.train.output_dir)
    check_sweep(sweep, teacher_sources=teacher_is_registered(tracking_uri, sweep.train.teacher.source))


def run_quickstart(*, output_dir: str = "outputs", console: Console | None = None):
    """Runs (or resumes) the three steps; returns the sweep's `SweepSummary`. Ray must be up."""
    console = console or Console()
    teacher, sweep = quickstart_jobs(output_dir)
    tracking_uri = tracking.resolve_tracking_uri(sweep.train.tracking.uri, sweep.train.output_dir)

    console.rule("[bold]1/3 teacher")
    if teacher_is_registered(tracking_uri, sweep.train.teacher.source):
        console.print(f"reusing the registered teacher {sweep.train.teacher.source}")
    else:
        outcome = run_training(teacher, progress=console)
        console.print(
            f"teacher: best val mIoU {outcome['metrics'].get('best_val_miou', float('nan')):.2f}, "
            f"registered as {sweep.train.teacher.source}"
        )

    console.rule("[bold]2/3 HWD sweep over tau, mu, beta, then a seeded final stage with the baselines")
    resume = (sweep_dir(sweep) / TUNE_FOLDER / sweep.name).exists()
    summary = run_sweep(sweep, resume=resume, console=console)

    console.rule("[bold]3/3 result")
    best = ", ".join(f"{name} = {value:.3g}" for name, value in summary.best_params.items())
    if summary.final_stage is not None:
        console.print(
            f"best HWD setting: {best} -> val mIoU {summary.best_val_miou:.2f}, chosen by {summary.chosen_by}"
        )
    else:
        scored_on = "the held-out training images" if sweep.search.tune_on == "holdout" else "val"
        console.print(f"best HWD setting: {best} -> mIoU {summary.best_val_miou:.2f} on {scored_on}")
        console.print("one run per configuration cannot separate differences smaller than the seed noise")
    console.print(f"compare the trials in the MLflow UI: {summary.mlflow_ui_hint()}")
    return summary
