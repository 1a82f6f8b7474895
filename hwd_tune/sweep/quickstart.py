"""The README's main job: a tiny teacher on synthetic data, then a small HWD sweep with baselines.

Three steps, each resumable: (1) train the teacher of search_spaces/train/quickstart_teacher.yaml
and register it (skipped when its `best` alias exists), (2) run search_spaces/quickstart.yaml
(HWD's tau, mu, beta by Optuna + ASHA; then the best trial, Table I and the student-only and CWD
baselines retrained with two seeds each), (3) print the verdict (`hwd_tune.sweep.verdict`): the
table against the seed noise, the best tau, mu, beta and how to open the MLflow UI. A second run
reuses everything.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from hwd_tune import tracking
from hwd_tune.config import TrainConfig, load_train_config
from hwd_tune.console import active_board
from hwd_tune.storage import exists
from hwd_tune.sweep.config import SweepConfig
from hwd_tune.sweep.config import load as load_sweep
from hwd_tune.sweep.layout import experiment_location
from hwd_tune.sweep.service import check_before_start as check_sweep
from hwd_tune.sweep.service import run as run_sweep
from hwd_tune.sweep.verdict import params_text, print_verdict
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
    """Runs (or resumes) the three steps; returns the sweep's `SweepSummary`. Ray must be up.

    Progress goes to the command's board (`hwd_tune.console`); the console gets the verdict."""
    console = console or Console()
    board = active_board()
    teacher, sweep = quickstart_jobs(output_dir)
    tracking_uri = tracking.resolve_tracking_uri(sweep.train.tracking.uri, sweep.train.output_dir)

    board.stage(f"teacher: {teacher.student.arch}, {teacher.schedule.max_iters} iterations", total=1)
    if teacher_is_registered(tracking_uri, sweep.train.teacher.source):
        board.message(f"reusing the registered teacher {sweep.train.teacher.source}")
    else:
        run_training(teacher, progress=True)

    resume = exists(experiment_location(sweep))
    summary = run_sweep(sweep, resume=resume, console=console, show_summary=False)
    board.end_stage()

    console.rule("[bold]result", characters="-")
    print_verdict(summary, console)
    best = params_text(summary.best_params)
    console.print(f"best HWD setting: {best}, chosen by {summary.chosen_by}", soft_wrap=True)
    console.print(
        f"its config: {summary.best_config_path}; every trial, plots and notes: {summary.report_dir}",
        soft_wrap=True,
        highlight=False,
    )
    console.print(f"compare the trials in the MLflow UI: {summary.mlflow_ui_hint()}", soft_wrap=True, highlight=False)
    return summary
