"""The `hwd-tune` command line: parses arguments and calls the layers; no logic of its own.

Exit codes, for every command: 0 finished, 1 failed (one line of cause, the full traceback in a log
file whose path is printed), 2 bad input (nothing started), 130 interrupted (Ctrl-C or SIGTERM;
the line to continue is printed).
"""

from __future__ import annotations

import shlex
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hwd_tune import __version__

if TYPE_CHECKING:
    from hwd_tune.console import RunLog
    from hwd_tune.data import DataReport

app = typer.Typer(
    help="Distil semantic-segmentation models with HWD and tune tau, mu, beta with Ray + Optuna.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config value: --set schedule.max_iters=1000 (repeatable)."),
]
WorkersOption = Annotated[int | None, typer.Option("--workers", help="Ray Train workers (resources.num_workers).")]
GpusOption = Annotated[
    float | None, typer.Option("--gpus-per-worker", help="GPUs per worker (resources.gpus_per_worker).")
]
CpusOption = Annotated[
    float | None, typer.Option("--cpus-per-worker", help="CPUs per worker (resources.cpus_per_worker).")
]
VerboseOption = Annotated[
    bool, typer.Option("--verbose", help="Show Ray's and Tune's own output here too (it always goes to the run log).")
]
FAILURE_LOGS = Path(".hwd-tune") / "logs"  # full tracebacks of commands that failed before their run log opened


@contextmanager
def _exit_codes(resume_option: str | None = None, run_log: RunLog | None = None) -> Iterator[None]:
    """Maps what a command ends with to its exit code: Ctrl-C/SIGTERM -> 130 with the command that
    continues (`resume_option` appended when the command needs it), any other error -> 1 with its
    cause in one line and the traceback in the run log (else a log file of its own).
    typer.Exit (0, 2, ...) passes through."""
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        again = ["hwd-tune", *sys.argv[1:]]
        if resume_option and resume_option not in again:
            again.append(resume_option)
        console.print("[yellow]interrupted[/yellow]: what finished is kept; continue with:")
        console.print(f"  {shlex.join(again)}", soft_wrap=True, markup=False, highlight=False)  # one line, to copy
        raise typer.Exit(code=130) from None
    except Exception as error:  # noqa: BLE001 - every failure ends as one line and a log, not a Ray traceback
        from hwd_tune.sweep.summary import failure_reason

        trace = "".join(traceback.format_exception(error))
        if run_log is not None and run_log.opened:
            log, what = run_log.append(trace), " (with Ray's output)"
        else:
            FAILURE_LOGS.mkdir(parents=True, exist_ok=True)
            log, what = FAILURE_LOGS / f"{time.strftime('%Y%m%d-%H%M%S')}-{_command_name()}.log", ""
            log.write_text(trace)
        console.print(f"[red]failed[/red]: {failure_reason(error)}", soft_wrap=True)
        console.print(f"full traceback: {log.resolve()}{what}", soft_wrap=True, markup=False, highlight=False)
        raise typer.Exit(code=1) from None


def _command_name() -> str:
    return sys.argv[1] if len(sys.argv) > 1 else "hwd-tune"


def _run_log(output_dir: str | Path, command: str) -> RunLog:
    """The command's run log under `output_dir` (written only once the command starts)."""
    from hwd_tune.console import RunLog

    return RunLog(output_dir, command)


AddressOption = Annotated[
    str | None,
    typer.Option("--address", help="Ray cluster to join ('auto', ray://...); default: RAY_ADDRESS or a local Ray."),
]


@app.command()
def version() -> None:
    """Print the hwd-tune version and the versions of its stack."""
    import torch

    console.print(f"hwd-tune {__version__} (torch {torch.__version__})")


@app.command()
def methods() -> None:
    """List the distillation methods and their default parameters (the paper's settings)."""
    from hwd_tune.losses import available_distillers, distiller_params

    for name in available_distillers():
        defaults = distiller_params(name)().model_dump()
        console.print(f"[bold]{name}[/bold] {defaults}")


def _overrides(sets: list[str] | None, workers: int | None, gpus: float | None, cpus: float | None) -> list[str]:
    overrides = list(sets or [])
    for key, value in (("num_workers", workers), ("gpus_per_worker", gpus), ("cpus_per_worker", cpus)):
        if value is not None:
            overrides.append(f"resources.{key}={value}")
    return overrides


def _check_before_start(what: str, check: Callable[[], None]) -> None:
    """Runs `check()` (the checks that need neither Ray nor a write); a bad input exits 2, nothing started."""
    try:
        check()
    except (ValueError, FileNotFoundError) as error:
        console.print(f"[red]cannot start {what}[/red]:")
        console.print(str(error), soft_wrap=True, markup=False, highlight=False)  # whole lines, to grep
        raise typer.Exit(code=2) from None


def _train(job: str, config_path: Path, overrides: list[str], address: str | None, verbose: bool) -> None:
    from hwd_tune.config import ConfigError, load_train_config
    from hwd_tune.console import command_screen
    from trainables.checks import NotStarted, check_before_start
    from trainables.launch import ray_connection, resource_plan, run_name, run_training

    forced = ["job=teacher", "method.name=none"] if job == "teacher" else ["job=distill"]
    try:
        config = load_train_config(config_path, overrides + forced)
    except ConfigError as error:
        console.print(f"[red]invalid configuration[/red]\n{error}")
        raise typer.Exit(code=2) from None
    run_log = _run_log(config.output_dir, "train-teacher" if job == "teacher" else "distill")
    with _exit_codes(run_log=run_log):
        _check_before_start("the run", lambda: check_before_start(config, source=str(config_path)))
        with command_screen(console, run_log, verbose=verbose) as board:
            console.print(f"[bold]resource plan[/bold]: {resource_plan(config).describe()}", soft_wrap=True)
            with ray_connection(address):
                board.stage(f"{job} {run_name(config)}", total=1)
                try:
                    outcome = run_training(config, progress=True)
                except NotStarted as error:
                    console.print(f"[red]cannot start[/red]: {error}")
                    raise typer.Exit(code=2) from None
    metrics = outcome["metrics"]
    console.print(
        f"[green]done[/green] {outcome['run_name']}: val_miou {metrics.get('val_miou', float('nan')):.2f}, "
        f"best {metrics.get('best_val_miou', float('nan')):.2f} (MLflow run {outcome['run_id']})"
    )
    console.print(f"checkpoint: {outcome['checkpoint']}")


@app.command("train-teacher")
def train_teacher(
    config: Annotated[Path, typer.Argument(help="Training YAML (see hwd_tune/config.py: TrainConfig).")],
    set_: SetOption = None,
    workers: WorkersOption = None,
    gpus_per_worker: GpusOption = None,
    cpus_per_worker: CpusOption = None,
    address: AddressOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Train a teacher; versions are registered in MLflow at teacher.milestones (aliases iter-80k, ..., best)."""
    _train("teacher", config, _overrides(set_, workers, gpus_per_worker, cpus_per_worker), address, verbose)


@app.command()
def distill(
    config: Annotated[Path, typer.Argument(help="Training YAML with teacher.source and method.")],
    set_: SetOption = None,
    workers: WorkersOption = None,
    gpus_per_worker: GpusOption = None,
    cpus_per_worker: CpusOption = None,
    address: AddressOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Distil a student from a frozen teacher (re-running the same command resumes)."""
    _train("distill", config, _overrides(set_, workers, gpus_per_worker, cpus_per_worker), address, verbose)


@app.command()
def evaluate(
    checkpoint: Annotated[
        str,
        typer.Argument(
            help="A checkpoint directory (model.pt + meta.json), or a model in MLflow: "
            "models:/teacher-<dataset>-<arch>@iter-80k (or /<version>), runs:/<id>/<path>."
        ),
    ],
    data: Annotated[str, typer.Option("--data", help="Dataset name: ade20k, cityscapes, cocostuff, voc, synthetic.")],
    root: Annotated[str | None, typer.Option("--root", help="Dataset directory (not for synthetic).")] = None,
    flip: Annotated[bool, typer.Option("--flip", help="Average with the horizontally flipped image.")] = False,
    scales: Annotated[str, typer.Option("--scales", help="Comma-separated input scales, e.g. 0.75,1.0,1.25.")] = "1.0",
    tracking_uri: TrackingUriOption = None,
    output_dir: OutputDirOption = "outputs",
) -> None:
    """Evaluate a checkpoint on a dataset's validation split: mIoU and per-class IoU."""
    from hwd_tune import tracking
    from trainables.evaluation import evaluate_model

    with _exit_codes():
        try:
            result = evaluate_model(
                checkpoint,
                data,
                tracking_uri=tracking_uri or tracking.resolve_tracking_uri(None, output_dir),
                root=root,
                flip=flip,
                scales=tuple(float(s) for s in scales.split(",")),
            )
        except (ValueError, FileNotFoundError) as error:
            console.print(f"[red]cannot evaluate[/red]: {error}")
            raise typer.Exit(code=2) from None
    table = Table("class", "IoU %")
    for name, iou in zip(result["class_names"], result["iou"]):
        table.add_row(name, "absent" if iou != iou else f"{100 * iou:.2f}")
    console.print(table)
    console.print(
        f"mIoU {result['miou']:.2f} (classes present), {result['miou_all']:.2f} (all classes, the authors'), "
        f"pixel accuracy {result['pixel_acc']:.2f}",
        soft_wrap=True,  # one line, for scripts too
    )


@app.command()
def sweep(
    config: Annotated[Path, typer.Argument(help="Sweep YAML (search_spaces/*.yaml, see hwd_tune/sweep/config.py).")],
    set_: SetOption = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue a killed sweep: finished trials are kept.")
    ] = False,
    address: AddressOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Tune the method's parameters (tau, mu, beta) with Optuna + ASHA; prints the best and the baselines."""
    from hwd_tune import sweep as sweep_service
    from hwd_tune.config import ConfigError
    from hwd_tune.console import command_screen
    from trainables.checks import NotStarted
    from trainables.launch import ray_connection

    try:
        sweep_config = sweep_service.load(config, list(set_ or []))
    except ConfigError as error:
        console.print(f"[red]invalid sweep[/red]\n{error}")
        raise typer.Exit(code=2) from None
    run_log = _run_log(sweep_config.train.output_dir, "sweep")
    with _exit_codes(resume_option="--resume", run_log=run_log):
        _check_before_start("the sweep", lambda: sweep_service.check_before_start(sweep_config))
        with command_screen(console, run_log, verbose=verbose), ray_connection(address):
            try:
                sweep_service.run(sweep_config, resume=resume, console=console)
            except NotStarted as error:
                console.print(f"[red]cannot start the sweep[/red]: {error}")
                raise typer.Exit(code=2) from None


def _load_plan(path: Path, sets: list[str] | None):
    from hwd_tune.config import ConfigError
    from hwd_tune.reproduce.plan import load as load_plan

    try:
        return load_plan(path, list(sets or []))
    except ConfigError as error:
        console.print(f"[red]invalid plan[/red]\n{error}")
        raise typer.Exit(code=2) from None


@app.command()
def reproduce(
    plan: Annotated[
        Path, typer.Argument(help="Plan YAML (search_spaces/plans/*.yaml, see hwd_tune/reproduce/plan.py).")
    ],
    set_: SetOption = None,
    address: AddressOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Run every cell of a plan (datasets x students x methods x seeds) and report it against the paper.

    Runs finished earlier are skipped and interrupted ones resume, so re-running the command continues.
    """
    from hwd_tune import reproduce as reproduce_service
    from hwd_tune.console import command_screen
    from trainables.checks import NotStarted
    from trainables.launch import ray_connection

    plan_config = _load_plan(plan, set_)
    run_log = _run_log(plan_config.train.output_dir, "reproduce")
    with _exit_codes(run_log=run_log):
        _check_before_start("the reproduction", lambda: reproduce_service.check_before_start(plan_config))
        with command_screen(console, run_log, verbose=verbose), ray_connection(address):
            try:
                summary = reproduce_service.reproduce(plan_config, console=console)
            except NotStarted as error:
                console.print(f"[red]cannot start the reproduction[/red]: {error}")
                raise typer.Exit(code=2) from None
    if summary.failed or summary.report is None:
        raise typer.Exit(code=1)


@app.command()
def report(
    plan: Annotated[Path, typer.Argument(help="Plan YAML (search_spaces/plans/*.yaml).")],
    set_: SetOption = None,
) -> None:
    """Write a plan's report from MLflow (Markdown, HTML, bar chart): ours beside the paper, and the cost."""
    from hwd_tune import reproduce as reproduce_service

    plan_config = _load_plan(plan, set_)
    with _exit_codes():
        try:
            reproduce_service.report_from_mlflow(plan_config, console=console)
        except (ValueError, KeyError) as error:
            console.print(f"[red]cannot write the report[/red]: {error}")
            raise typer.Exit(code=2) from None


@app.command()
def quickstart(
    output_dir: Annotated[str, typer.Option("--output-dir", help="Where runs, checkpoints and MLflow go.")] = "outputs",
    address: AddressOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Train a synthetic teacher, run a small HWD sweep (+ baselines) and print the best tau, mu, beta."""
    from hwd_tune.config import ConfigError
    from hwd_tune.console import command_screen
    from hwd_tune.sweep.quickstart import check_quickstart, run_quickstart
    from trainables.launch import ray_connection

    run_log = _run_log(output_dir, "quickstart")
    with _exit_codes(run_log=run_log):
        _check_before_start("the quickstart", lambda: check_quickstart(output_dir))
        with command_screen(console, run_log, verbose=verbose), ray_connection(address):
            try:
                run_quickstart(output_dir=output_dir, console=console)
            except (ConfigError, ValueError, FileNotFoundError) as error:
                console.print(f"[red]quickstart stopped[/red]: {error}")
                raise typer.Exit(code=2) from None


ModelUriArgument = Annotated[
    str,
    typer.Argument(
        help="models:/student-<dataset>-<arch>@champion (or /<version>), runs:/<id>/best_checkpoint, "
        "or a checkpoint directory (model.pt + meta.json)."
    ),
]
TrackingUriOption = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="MLflow store of models:/ and runs:/ URIs; default: MLFLOW_TRACKING_URI, "
        "else the store under --output-dir.",
    ),
]
OutputDirOption = Annotated[str, typer.Option("--output-dir", help="Where the default MLflow store lives.")]


class ExportFormat(str, Enum):
    torchscript = "torchscript"
    onnx = "onnx"


@app.command()
def export(
    model_uri: ModelUriArgument,
    format_: Annotated[ExportFormat, typer.Option("--format", help="The deployable file's format.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="File to write; default student-<dataset>-<arch>.pt|.onnx.")
    ] = None,
    images: Annotated[
        list[Path] | None,
        typer.Option("--images", help="Check on these image files (repeatable); default: validation images."),
    ] = None,
    count: Annotated[int, typer.Option("--count", help="Validation images to check on, without --images.")] = 4,
    tolerance: Annotated[
        float | None, typer.Option("--tolerance", help="Largest accepted |logit difference| (default 0.001).")
    ] = None,
    tracking_uri: TrackingUriOption = None,
    output_dir: OutputDirOption = "outputs",
) -> None:
    """Export a student to TorchScript or ONNX and check it against PyTorch on real images (exit 1 if it differs)."""
    from hwd_tune import deploy, tracking

    with _exit_codes():
        try:
            parity = deploy.export_model(
                model_uri,
                format_.value,
                out=out,
                tracking_uri=tracking_uri or tracking.resolve_tracking_uri(None, output_dir),
                image_paths=images or (),
                count=count,
                tolerance=deploy.DEFAULT_TOLERANCE if tolerance is None else tolerance,
            )
        except (ValueError, FileNotFoundError) as error:
            console.print("[red]cannot export[/red]:")
            console.print(str(error), soft_wrap=True, markup=False, highlight=False)
            raise typer.Exit(code=2) from None
    console.print(parity.describe(), soft_wrap=True, markup=False, highlight=False)
    if not parity.ok:
        console.print(
            f"[red]failed[/red]: the {parity.format} file differs from PyTorch by {parity.max_logit_diff:.3g} > "
            f"tolerance {parity.tolerance:g}; it was removed",
            soft_wrap=True,
        )
        raise typer.Exit(code=1)
    console.print(f"[green]written[/green] {escape(str(parity.path))}", soft_wrap=True)


@app.command()
def predict(
    model_uri: ModelUriArgument,
    images: Annotated[list[Path], typer.Argument(help="Image files (.png, .jpg, ...).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for <stem>_classes.png and <stem>_overlay.png.")],
    tracking_uri: TrackingUriOption = None,
    output_dir: OutputDirOption = "outputs",
) -> None:
    """Run a student on image files: a class-index PNG (uint8, uint16 past 256 classes) and a colour overlay each."""
    from hwd_tune import deploy, tracking

    with _exit_codes():
        try:
            written = deploy.predict_files(
                model_uri, images, out, tracking_uri=tracking_uri or tracking.resolve_tracking_uri(None, output_dir)
            )
        except (ValueError, FileNotFoundError) as error:
            console.print("[red]cannot predict[/red]:")
            console.print(str(error), soft_wrap=True, markup=False, highlight=False)
            raise typer.Exit(code=2) from None
    for files in written:
        console.print(
            f"{files.image} -> {files.classes}, {files.overlay}", soft_wrap=True, markup=False, highlight=False
        )


data_app = typer.Typer(help="Look at a dataset before training on it.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("check")
def data_check(
    config: Annotated[
        Path, typer.Argument(help="Training YAML (its data: section) or sweep YAML (its train.data: section).")
    ],
    set_: SetOption = None,
    samples: Annotated[
        int | None,
        typer.Option("--samples", help="Masks read per split, evenly spaced; 0 = all. Default: data.check_samples."),
    ] = None,
) -> None:
    """Check a dataset: split sizes, pixels per class in the masks read, and every problem found.

    Exit codes: 0 clean; 2 problems in the files or the config (bad input, to fix before training).

    1: the check itself failed (its traceback is logged). In a sweep file, --set train.data.root=DIR.
    """
    from hwd_tune.config import ConfigError
    from hwd_tune.data.from_config import check_data, data_config_from_file

    try:
        data = data_config_from_file(config, list(set_ or []))
    except ConfigError as error:
        console.print(f"[red]invalid configuration[/red]\n{escape(str(error))}")
        raise typer.Exit(code=2) from None
    with _exit_codes():
        report = check_data(data, samples)
    _print_data_report(report)
    if not report.ok:
        raise typer.Exit(code=2)


def _print_data_report(report: DataReport) -> None:
    """Split sizes, the class frequency table (pixels and % per split) and the problems."""
    console.print(f"[bold]{escape(report.dataset)}[/bold]: {report.sampling()}", soft_wrap=True)
    if report.splits:
        sizes = Table("split", "samples", "masks read")
        for scan in report.splits:
            sizes.add_row(scan.split, str(scan.size), str(scan.scanned))
        console.print(sizes)
    if report.class_rows() and report.splits:
        table = Table(
            "id", "class", *[f"{scan.split} {column}" for scan in report.splits for column in ("pixels", "%")]
        )
        for class_id, name, per_split in report.class_rows():
            table.add_row(class_id, escape(name), *[cell for n, pct in per_split for cell in (f"{n:,}", f"{pct:.2f}")])
        console.print(table)
    if report.absent_classes():
        console.print(
            f"[yellow]note[/yellow]: no pixel of {escape(str(report.absent_classes()))} in the train masks read"
        )
    if report.ok:
        console.print("[green]no problems found[/green]")
        return
    console.print(f"[red]{len(report.problems)} problem(s)[/red]:")
    for problem in report.problems:
        console.print(f"  - {problem.describe()}", soft_wrap=True, markup=False, highlight=False)


if __name__ == "__main__":
    app()
