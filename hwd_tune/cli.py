"""The `hwd-tune` command line: parses arguments and calls the layers; no logic of its own."""

from __future__ import annotations

import typer
from rich.console import Console

from hwd_tune import __version__

app = typer.Typer(
    help="Distil semantic-segmentation models with HWD and tune tau, mu, beta with Ray + Optuna.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


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


@app.command()
def quickstart() -> None:
    """Train a synthetic teacher, run a small HWD sweep and print the best tau, mu, beta."""
    console.print(
        "[yellow]hwd-tune quickstart is not yet available:[/yellow] the losses, models, data "
        "and metric layers are in place; the Ray Train loop and the sweep service come next "
        "(see the README's roadmap)."
    )
    raise typer.Exit(code=2)


if __name__ == "__main__":
    app()
