"""Which images a sweep's trials are scored on: the held-out list logged on the parent run, and
the one line the summary prints about it (search.tune_on, search.holdout)."""

from __future__ import annotations

from hwd_tune import tracking
from hwd_tune.data.from_config import HeldOutSamples, held_out_samples
from hwd_tune.sweep.config import SweepConfig, trial_train_config

HOLDOUT_ARTIFACT = "sweep/holdout.txt"  # on the parent run: a comment line, then one sample name a line


def tuning_samples(sweep: SweepConfig) -> HeldOutSamples | None:
    """The held-out training samples trials and baselines are scored on; None when tuned on val.

    Lists the training split (names only, no image is read)."""
    if sweep.search.tune_on != "holdout":
        return None
    return held_out_samples(trial_train_config(sweep, {}).data)


def holdout_listing(sweep: SweepConfig, samples: HeldOutSamples) -> str:
    """The text of HOLDOUT_ARTIFACT: `# dataset ..., seed ..., fraction ..., ...` then the names."""
    holdout = sweep.search.holdout
    header = (
        f"# dataset {sweep.train.data.name}, seed {sweep.search.seed}, fraction {holdout.fraction:g}, "
        f"max_images {holdout.max_images}: {len(samples.names)} of {samples.num_images} training images held out"
    )
    return "\n".join([header, *samples.names]) + "\n"


def tuning_split_line(sweep: SweepConfig, samples: HeldOutSamples | None) -> str:
    """One sentence for the summary: what the trials' scores were measured on, and where val comes in."""
    if samples is None:
        return "trials were tuned and scored on val (search.tune_on: val): the best score is optimistic"
    rest = samples.num_images - len(samples.names)
    tuned = (
        f"trials and baselines trained on {rest} training images and were tuned on the {len(samples.names)} "
        f"held out ({HOLDOUT_ARTIFACT} on the parent run)"
    )
    if sweep.search.final.top_k:
        return f"{tuned}; the final stage trains on all {samples.num_images} and reports on val"
    return f"{tuned}; best_config.yaml trains on all {samples.num_images} and reports on val (no final stage ran)"


def log_tuning_split(sweep: SweepConfig, parent: tracking.RunLogger) -> str:
    """Logs the held-out sample names on the sweep's parent run (when tuned on them); returns the
    summary's line about the split."""
    samples = tuning_samples(sweep)
    if samples is not None:
        parent.log_text(holdout_listing(sweep, samples), HOLDOUT_ARTIFACT)
    return tuning_split_line(sweep, samples)
