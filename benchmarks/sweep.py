"""Whether an Optuna TPE + ASHA sweep on a quarter of a grid's compute picks an HWD configuration
as good as the grid's pick, judged by re-training both picks with fresh seeds.

Run:  python benchmarks/sweep.py [--setting full|quick] [--seeds 0 1 2] [--workdir DIR] [--output FILE]
      python benchmarks/sweep.py --pilot [--setting full|quick]     (noise and spread only, ~12 min)

Everything runs on the built-in synthetic dataset (nothing is downloaded) through the real pipeline,
in one local Ray session on 2 CPUs, with its own MLflow store (sqlite under --workdir, a new
temporary folder by default; the repository's outputs/ is untouched):
1. a teacher is trained once and registered in that store;
2. the GRID: 3 x 3 x 3 values of HWD's tau, mu, beta, each trained once (training seed 0) to the
   full budget (FIFO), by `hwd_tune.sweep.run` with `search.sampler: grid`; its pick is its best trial;
3. per search seed, two sweeps over the same ranges (log-uniform tau and beta, uniform mu) with the
   same ASHA scheduler, trial budget, training seed and first point (the paper's Table I):
   TPE (Optuna's TPESampler, multivariate) and RANDOM (the same sampler with startup_trials =
   num_samples, which draws every trial at random); each one's pick is its best trial;
4. RETRAINING: the grid's pick and every sweep's pick are trained again at full length with the
   same 5 fresh training seeds (none of them used by the searches) and scored on the validation
   split, by the sweep wing's final stage (`run_final_stage` with these candidates). It is the code
   that scores a sweep's winners for users: the runs go side by side as the 2 CPUs fit, runs of an
   equal configuration are trained once (the grid's pick serves every search seed), a killed
   benchmark resumes with its finished runs kept, and it reports on the validation split whatever
   split the trials were tuned on (search.tune_on, once it lands);
5. the verdict, per search seed: TPE's total compute (training iterations summed over its trials,
   stopped ones counted to where they stopped) is <= 25 % of the grid's, and its pick is not
   significantly worse than the grid's: scipy.stats.ttest_rel(tpe, grid, alternative="less") has
   p >= 0.05 over the paired seeds AND the mean difference is >= -0.3 mIoU; and over the search
   seeds, TPE's re-trained means average higher than RANDOM's.

Noise and spread (why this setting). A configuration's score is its run's best val_miou (0-100).
- noise: one run's seed noise, the pooled within-configuration standard deviation over training
  seeds, sqrt(mean over configurations of each one's sample variance over its seeds);
- spread: the standard deviation over the grid's points of their true mean scores, estimated from
  k grid points with s seeds each as sqrt(max(0, var(the k means) - noise^2 / s)), the seed noise
  left in each mean taken out;
- the setting must have spread >= 3 x noise, or "the best configuration" is decided by luck.
`--pilot` measures both: k grid points drawn at random (numpy seed 0), s seeds each, trained by the
same final stage. The full run prints them again from its own data: noise from the re-trained
picks, spread from the grid's 27 single runs as sqrt(max(0, var(grid) - noise^2)); that noise is
the good region's, where runs agree best, so this spread leans high.

The setting (FULL). The quickstart's data and models trained for 600 iterations left all 27 points
of its narrow ranges within 2.6 mIoU while one run's noise was 0.3-0.4: the student (x0.125 width)
matched a teacher trained for only 400 iterations, and tau in [1, 8] with mu in [-1, 2] barely
changed a run. Here the teacher (x0.25, 1000 iterations, ~60 mIoU on 4 classes at 96 px) is
clearly better than the student alone (~50 after 300 iterations), and the ranges are wide: tau in
[0.5, 16], mu in [-3, 3], beta in [0.001, 1]. Weights that spread over the channels (mu = 3 with
a small beta gives CWD's equal weights) help the student past 55; weights that pile onto one or
two channels (mu <= 0 with a small beta, the paper's Table I point among them) leave it below 30
after 300 iterations. Budget: 300 iterations a
trial; ASHA rungs at 100 and 200 iterations (grace 100, reduction factor 2; validations every 50,
so a rung sees the trial's 100th-iteration score); 8 trials a sweep, Table I's first, so a sweep
costs ~4.7 full trials (ASHA's expected 8 x 100 + 4 x 100 + 2 x 100), ~17 % of the grid's 27.
In all: 27 grid trials, 6 sweeps (~28 full trials) and 35 re-trained runs (5 seeds x the grid's
pick and 6 sweep picks), ~90 trials' worth of 300 iterations, ~40 min on the quiet 2-core VM.

What the pilot measured for FULL (2026-12, 6 grid points x 3 seeds): noise 7.9 mIoU, spread 8.7,
ratio 1.1 -- NOT enough. Most points are bimodal over seeds (a run takes off to ~50 or stays near
25, where the student labels almost everything background), and a plain-PyTorch probe of the same
models showed the student alone (50.5) level with HWD at Table I (49.8 / 55.9 / 47.9 over 3 seeds):
at 300 iterations on this data HWD's parameters barely move the mean. Before a full run, find a
setting that passes the pilot: longer runs (600-1,000 iterations; the issue measured 0.3-0.4 mIoU
noise at 600), more and imbalanced classes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy import stats

from hwd_tune.config import TrainConfig
from hwd_tune.sweep.config import SweepConfig
from hwd_tune.sweep.statistics import paired_difference, seed_stats

TOLERANCE = 0.3  # mIoU points (0-100): the search's pick may be at most this much worse on average
ALPHA = 0.05  # one-sided paired t-test: "the search's pick is significantly worse than the grid's"
TARGET_RATIO = 0.25  # the search gets at most a quarter of the grid's compute
MIN_SIGNAL_TO_NOISE = 3.0  # spread over the grid / one run's seed noise
TABLE_I = {"tau": 4.0, "mu": 0.0, "beta": 0.1}  # every sweep's first point (ADE20K values)
RANGES = {"tau": (0.5, 16.0, "log"), "mu": (-3.0, 3.0, "linear"), "beta": (0.001, 1.0, "log")}
TEACHER_SOURCE = "models:/teacher-synthetic-deeplabv3_resnet18@best"  # registered by step 1
EXPERIMENT = "benchmark-sweep"


@dataclass(frozen=True)
class Setting:
    """Sizes of one benchmark run: data, teacher, trial budget, grid, sweeps, re-training, pilot."""

    image_size: int
    num_classes: int
    train_samples: int
    val_samples: int
    teacher_iters: int
    max_iters: int  # every trial's budget (grid and sweeps) and the re-trained runs' length
    val_interval: int
    grid_values: int  # values per parameter: the grid has grid_values ** 3 trials
    num_samples: int  # trials per sweep, Table I's point included
    grace_period: int  # ASHA's first rung, in iterations
    reduction_factor: float
    retrain_seeds: tuple[int, ...]  # fresh training seeds (the searches train with seed 0)
    pilot_points: int  # grid points the pilot trains
    pilot_seeds: tuple[int, ...]
    max_concurrent_trials: int = 2
    cpus_per_worker: float = 0.5


FULL = Setting(
    image_size=96,
    num_classes=4,
    train_samples=512,
    val_samples=128,
    teacher_iters=1000,
    max_iters=300,
    val_interval=50,
    grid_values=3,
    num_samples=8,
    grace_period=100,
    reduction_factor=2.0,
    retrain_seeds=(101, 102, 103, 104, 105),
    pilot_points=6,
    pilot_seeds=(201, 202, 203),
)
# A smoke test of the whole pipeline (minutes): a 2 x 2 x 2 grid, 4-trial sweeps, 20 iterations.
QUICK = Setting(
    image_size=48,
    num_classes=4,
    train_samples=64,
    val_samples=8,
    teacher_iters=40,
    max_iters=20,
    val_interval=10,
    grid_values=2,
    num_samples=4,
    grace_period=10,
    reduction_factor=2.0,
    retrain_seeds=(101, 102),
    pilot_points=3,
    pilot_seeds=(201, 202),
)
SETTINGS = {"full": FULL, "quick": QUICK}


def grid_values(low: float, high: float, spacing: str, count: int) -> list[float]:
    """`count` values from low to high, both included, evenly spaced (in log for "log")."""
    values = np.geomspace(low, high, count) if spacing == "log" else np.linspace(low, high, count)
    return [float(f"{value:.4g}") for value in values]  # 2.828, not 2.8284271247461903


def grid_points(setting: Setting) -> list[dict[str, float]]:
    """Every combination of the grid's values, in a fixed order."""
    axes = {name: grid_values(low, high, spacing, setting.grid_values) for name, (low, high, spacing) in RANGES.items()}
    mesh = np.meshgrid(*axes.values(), indexing="ij")
    return [dict(zip(axes, map(float, values))) for values in zip(*(axis.ravel() for axis in mesh))]


def tracking_uri(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'mlflow' / 'mlflow.db'}"


def data_section(setting: Setting) -> dict[str, Any]:
    return {
        "name": "synthetic",
        "crop_size": setting.image_size,
        "scale_range": [0.75, 1.5],
        "loader_workers": 0,
        "synthetic": {
            "num_classes": setting.num_classes,
            "image_size": setting.image_size,
            "train_samples": setting.train_samples,
            "val_samples": setting.val_samples,
            "seed": 0,
        },
    }


def teacher_config(setting: Setting, workdir: Path) -> TrainConfig:
    """The teacher: search_spaces/train/quickstart_teacher.yaml's model, trained longer."""
    return TrainConfig.model_validate(
        {
            "job": "teacher",
            "name": "benchmark-teacher",
            "method": {"name": "none"},
            "output_dir": str(workdir),
            "data": data_section(setting),
            "student": {"arch": "deeplabv3_resnet18", "width_multiplier": 0.25},
            "teacher": {"milestones": [setting.teacher_iters]},
            "optimizer": {"lr": 0.05},
            "schedule": {
                "max_iters": setting.teacher_iters,
                "batch_size": 8,
                "val_interval": max(1, setting.teacher_iters // 5),
                "log_interval": 50,
            },
            "resources": {"num_workers": 1, "cpus_per_worker": 1.0},
            "tracking": {"uri": tracking_uri(workdir), "experiment": EXPERIMENT},
        }
    )


def distill_section(setting: Setting, workdir: Path) -> dict[str, Any]:
    """The training job every trial and re-trained run shares (HWD's published loss weight 3.0)."""
    return {
        "job": "distill",
        "seed": 0,
        "output_dir": str(workdir),
        "data": data_section(setting),
        "student": {"arch": "deeplabv3_resnet18", "width_multiplier": 0.125, "aux": True},
        "teacher": {"arch": "deeplabv3_resnet18", "width_multiplier": 0.25, "source": TEACHER_SOURCE},
        "method": {"name": "hwd", "params": dict(TABLE_I)},
        "optimizer": {"lr": 0.05},
        "schedule": {
            "max_iters": setting.max_iters,
            "batch_size": 8,
            "val_interval": setting.val_interval,
            "log_interval": setting.val_interval,
        },
        "resources": {"num_workers": 1, "cpus_per_worker": setting.cpus_per_worker, "gpus_per_worker": 0},
        "tracking": {"uri": tracking_uri(workdir), "experiment": EXPERIMENT},
    }


def sweep_config(setting: Setting, workdir: Path, name: str, search: dict[str, Any]) -> SweepConfig:
    """A sweep of HWD's tau, mu, beta around the shared job; `search` holds what differs."""
    common = {
        "max_concurrent_trials": setting.max_concurrent_trials,
        "baselines": [],
        "space": {
            parameter: {"type": "loguniform" if spacing == "log" else "uniform", "low": low, "high": high}
            for parameter, (low, high, spacing) in RANGES.items()
        },
    }
    return SweepConfig.model_validate(
        {"name": name, "train": distill_section(setting, workdir), "search": {**common, **search}}
    )


def grid_sweep(setting: Setting, workdir: Path) -> SweepConfig:
    """Every combination of the grid's values, each trained to max_iters (FIFO)."""
    space = {
        name: {"type": "choice", "values": grid_values(low, high, spacing, setting.grid_values)}
        for name, (low, high, spacing) in RANGES.items()
    }
    search = {
        "sampler": "grid",
        "num_samples": len(grid_points(setting)),
        "space": space,
        "scheduler": {"type": "none"},
    }
    return sweep_config(setting, workdir, "grid", search)


def asha_sweep(setting: Setting, workdir: Path, kind: str, seed: int) -> SweepConfig:
    """TPE ("tpe") or random search ("random": every trial a TPE startup trial) + ASHA, Table I first."""
    search = {
        "sampler": "tpe",
        "num_samples": setting.num_samples,
        "seed": seed,
        "points_to_evaluate": [dict(TABLE_I)],
        "scheduler": {
            "type": "asha",
            "grace_period": setting.grace_period,
            "reduction_factor": setting.reduction_factor,
        },
    }
    if kind == "random":
        search["startup_trials"] = setting.num_samples
    return sweep_config(setting, workdir, f"{kind}-asha-seed{seed}", search)


def retrain_sweep(setting: Setting, workdir: Path, name: str, seeds: tuple[int, ...]) -> SweepConfig:
    """The sweep whose final stage re-trains given configurations with `seeds` at full length."""
    return sweep_config(setting, workdir, name, {"num_samples": 1, "final": {"seeds": list(seeds)}})


@dataclass(frozen=True)
class SearchOutcome:
    """One search (the grid or a sweep): its pick and what it cost, in training iterations."""

    name: str
    pick: dict[str, float]  # the best trial's params
    pick_val_miou: float | None  # that trial's own best val_miou (one draw, training seed 0)
    total_compute: int  # iterations summed over all trials
    trials: int
    stopped_early: int
    failed: int
    wall_s: float
    trial_table: list[dict[str, Any]]  # params, val_miou, iterations, status of every trial, in order


def outcome_of(summary, wall_s: float) -> SearchOutcome:
    return SearchOutcome(
        name=summary.name,
        pick={name: float(value) for name, value in summary.best_params.items()},
        pick_val_miou=summary.best_val_miou,
        total_compute=sum(row.iterations for row in summary.trials),
        trials=len(summary.trials),
        stopped_early=sum(row.status == "stopped early" for row in summary.trials),
        failed=sum(row.status == "failed" for row in summary.trials),
        wall_s=round(wall_s, 1),
        trial_table=[
            {"params": row.params, "val_miou": row.val_miou, "iterations": row.iterations, "status": row.status}
            for row in summary.trials
        ],
    )


@dataclass(frozen=True)
class NoiseAndSpread:
    """One run's seed noise, the spread of true means over the grid, and their ratio (module docstring)."""

    noise: float
    spread: float
    ratio: float
    configurations: int
    seeds_each: int  # 1 for the grid's single runs


def pooled_noise(values: list[list[float]]) -> float:
    """sqrt of the mean over configurations of each one's sample variance over seeds (>= 2 seeds each)."""
    variances = [float(np.var(scores, ddof=1)) for scores in values if len(scores) >= 2]
    return math.sqrt(sum(variances) / len(variances)) if variances else math.nan


def noise_and_spread(values: list[list[float]], noise: float | None = None) -> NoiseAndSpread:
    """From each configuration's scores over s seeds: noise (pooled, or the given one) and the spread
    of their true means, sqrt(max(0, var(means) - noise^2 / s))."""
    seeds_each = min(len(scores) for scores in values)
    noise = pooled_noise(values) if noise is None else noise
    means = [float(np.mean(scores[:seeds_each])) for scores in values]
    spread = math.sqrt(max(0.0, float(np.var(means, ddof=1)) - noise**2 / seeds_each))
    if noise > 0:
        ratio = spread / noise
    else:  # identical scores: no noise, and a spread of 0 says nothing either
        ratio = math.inf if spread > 0 else math.nan
    return NoiseAndSpread(noise, spread, ratio, len(values), seeds_each)


@dataclass(frozen=True)
class Comparison:
    """A re-trained pick against the grid's on the same seeds: `pick - grid`."""

    mean_difference: float
    ci_low: float
    ci_high: float
    p_worse: float  # one-sided paired t-test, H1: the pick scores less than the grid's; NaN if undefined
    compute_ratio: float  # the search's total compute / the grid's

    @property
    def not_worse(self) -> bool:
        significant = not math.isnan(self.p_worse) and self.p_worse < ALPHA
        return not significant and self.mean_difference >= -TOLERANCE

    @property
    def passed(self) -> bool:
        return self.not_worse and self.compute_ratio <= TARGET_RATIO


def compare(pick: dict[int, float], grid: dict[int, float], compute_ratio: float) -> Comparison:
    """The paired comparison of `pick` with `grid` ({seed: score} each) on their common seeds."""
    seeds = sorted(set(pick) & set(grid))
    difference = paired_difference(pick, grid)
    p_worse = math.nan
    if len(seeds) >= 2 and len({pick[seed] - grid[seed] for seed in seeds}) > 1:
        result = stats.ttest_rel([pick[s] for s in seeds], [grid[s] for s in seeds], alternative="less")
        p_worse = float(result.pvalue)
    return Comparison(difference.mean, difference.ci_low, difference.ci_high, p_worse, compute_ratio)


def ensure_teacher(setting: Setting, workdir: Path, console: Console) -> float | None:
    """Trains and registers the teacher unless this workdir's store already has it; its best mIoU."""
    from hwd_tune.sweep.quickstart import teacher_is_registered
    from trainables.launch import run_training

    if teacher_is_registered(tracking_uri(workdir), TEACHER_SOURCE):
        console.print(f"reusing the registered teacher {TEACHER_SOURCE}")
        return None
    outcome = run_training(teacher_config(setting, workdir))
    best = float(outcome["metrics"]["best_val_miou"])
    console.print(f"teacher: best val_miou {best:.2f} after {setting.teacher_iters} iterations")
    return best


def run_search(sweep: SweepConfig, log: Console) -> SearchOutcome:
    """Runs (or, in a reused workdir, continues) one sweep."""
    from hwd_tune import sweep as sweep_service
    from hwd_tune.storage import exists
    from hwd_tune.sweep.layout import experiment_location

    resume = exists(experiment_location(sweep))
    start = time.perf_counter()
    summary = sweep_service.run(sweep, resume=resume, console=log)
    return outcome_of(summary, time.perf_counter() - start)


def retrain(sweep: SweepConfig, picks: dict[str, dict[str, float]]) -> dict[str, dict[int, float]]:
    """Each pick (label -> params) trained with every seed of sweep.search.final by the final stage,
    under one MLflow parent run; label -> {seed: best val_miou}. Failed runs are missing."""
    import ray

    from hwd_tune import tracking
    from hwd_tune.sweep import Candidate, check_resources
    from hwd_tune.sweep.final_stage import run_final_stage

    uri = tracking_uri(Path(sweep.train.output_dir))
    parent = tracking.RunLogger(
        uri,
        tracking.start_run(
            tracking_uri=uri,
            experiment=EXPERIMENT,
            run_key=f"benchmark-{sweep.name}",
            run_name=sweep.name,
            tags={"hwd.job": "benchmark"},
        ),
    )
    chosen = [Candidate(label, "hwd", dict(params), "tuned") for label, params in picks.items()]
    result = run_final_stage(
        sweep,
        chosen,
        parent_run_id=parent.run_id,
        tracking_uri=uri,
        max_concurrent=check_resources(sweep, ray.cluster_resources()),
    )
    parent.finish("FINISHED")
    for outcome in result.results:
        for seed, error in outcome.errors.items():
            print(f"{outcome.candidate.label} seed {seed} failed: {error}", file=sys.stderr)
    return {outcome.candidate.label: dict(outcome.values) for outcome in result.results}


def shown_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{name} {value:.3g}" for name, value in params.items())


def shown_stats(values: dict[int, float]) -> str:
    if not values:
        return "-"
    summary = seed_stats([values[seed] for seed in sorted(values)])
    return f"{summary.mean:.2f} [{summary.ci_low:.2f}, {summary.ci_high:.2f}]"


def write_json(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")


def print_noise(label: str, measured: NoiseAndSpread, console: Console) -> None:
    if math.isnan(measured.ratio):
        verdict = "not measurable: every score identical"
    else:
        verdict = "enough" if measured.ratio >= MIN_SIGNAL_TO_NOISE else "NOT enough"
    console.print(
        f"{label}: noise {measured.noise:.2f} mIoU (one run, seed to seed), spread {measured.spread:.2f} "
        f"(true means over the grid), ratio {measured.ratio:.1f} ({verdict}: >= {MIN_SIGNAL_TO_NOISE:g} wanted; "
        f"{measured.configurations} configurations x {measured.seeds_each} seeds)"
    )


def run_pilot(setting: Setting, workdir: Path, record: dict[str, Any], output: Path, console: Console) -> None:
    """Trains `pilot_points` random grid points with every pilot seed; prints noise, spread, ratio."""
    points = grid_points(setting)
    chosen = np.random.default_rng(0).choice(len(points), size=setting.pilot_points, replace=False)
    picks = {f"point-{index}": points[index] for index in sorted(int(i) for i in chosen)}
    console.rule(f"pilot: {len(picks)} grid points x {len(setting.pilot_seeds)} seeds, {setting.max_iters} iterations")
    start = time.perf_counter()
    values = retrain(retrain_sweep(setting, workdir, "pilot", setting.pilot_seeds), picks)
    measured = noise_and_spread([list(values[label].values()) for label in picks if len(values[label]) >= 2])
    record["pilot"] = {
        "points": {label: {"params": picks[label], "values": values[label]} for label in picks},
        **asdict(measured),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    write_json(output, record)
    for label, params in picks.items():
        console.print(f"{label} ({shown_params(params)}): {shown_stats(values[label])}")
    print_noise("pilot", measured, console)


def run_benchmark(
    setting: Setting, seeds: list[int], workdir: Path, record: dict[str, Any], output: Path, console: Console
) -> None:
    """The grid, the TPE and random sweeps per search seed, the re-training and the verdict."""
    log = Console(file=(workdir / "sweeps.log").open("a"), width=160)  # each sweep's own tables
    console.rule(f"grid: {len(grid_points(setting))} trials of {setting.max_iters} iterations")
    grid = run_search(grid_sweep(setting, workdir), log)
    record["grid"] = asdict(grid)
    console.print(f"grid pick {shown_params(grid.pick)}: {grid.pick_val_miou:.2f} ({grid.wall_s:.0f} s)")
    write_json(output, record)

    sweeps: dict[str, SearchOutcome] = {}
    for seed in seeds:
        for kind in ("tpe", "random"):
            label = f"{kind}-seed{seed}"
            console.rule(f"{kind} + ASHA, search seed {seed}: {setting.num_samples} trials")
            sweeps[label] = run_search(asha_sweep(setting, workdir, kind, seed), log)
            outcome = sweeps[label]
            console.print(
                f"{label} pick {shown_params(outcome.pick)}: {outcome.pick_val_miou:.2f}; compute "
                f"{outcome.total_compute / grid.total_compute:.1%} of the grid's ({outcome.wall_s:.0f} s)"
            )
            record.setdefault("sweeps", {})[label] = asdict(outcome)
            write_json(output, record)

    console.rule(f"re-training the {1 + len(sweeps)} picks with seeds {list(setting.retrain_seeds)}")
    start = time.perf_counter()
    picks = {"grid": grid.pick} | {label: outcome.pick for label, outcome in sweeps.items()}
    values = retrain(retrain_sweep(setting, workdir, "retrain", setting.retrain_seeds), picks)
    record["retrained"] = {
        label: {
            "params": picks[label],
            "values": values[label],
            "stats": asdict(seed_stats(list(values[label].values()))),
        }
        for label in picks
        if values[label]
    }
    record["retrain_wall_s"] = round(time.perf_counter() - start, 1)
    write_json(output, record)
    judge_and_report(setting, seeds, grid, sweeps, picks, values, record, console)


def judge_and_report(
    setting: Setting,
    seeds: list[int],
    grid: SearchOutcome,
    sweeps: dict[str, SearchOutcome],
    picks: dict[str, dict[str, float]],
    values: dict[str, dict[int, float]],
    record: dict[str, Any],
    console: Console,
) -> None:
    """Comparisons with the grid's pick, TPE against random, noise and spread, the table and verdict."""
    comparisons = {
        label: compare(values[label], values["grid"], outcome.total_compute / grid.total_compute)
        for label, outcome in sweeps.items()
        if len(values[label]) >= 2 and len(values["grid"]) >= 2
    }
    record["comparisons"] = {label: {**asdict(c), "not_worse": c.not_worse} for label, c in comparisons.items()}

    def mean_of(kind: str) -> float:
        means = [float(np.mean(list(values[f"{kind}-seed{seed}"].values()))) for seed in seeds]
        return float(np.mean(means)) if all(map(math.isfinite, means)) else math.nan

    tpe_mean, random_mean = mean_of("tpe"), mean_of("random")
    tpe_passed = [
        comparisons.get(f"tpe-seed{seed}") is not None and comparisons[f"tpe-seed{seed}"].passed for seed in seeds
    ]
    distinct = {json.dumps(params, sort_keys=True): label for label, params in picks.items()}
    own = noise_and_spread([list(values[label].values()) for label in distinct.values() if len(values[label]) >= 2])
    grid_scores = [[row["val_miou"]] for row in grid.trial_table if row["val_miou"] is not None]
    grid_spread = noise_and_spread(grid_scores, noise=own.noise)
    record["noise_and_spread"] = {"noise_from_retrained": asdict(own), "spread_from_grid": asdict(grid_spread)}
    record["summary"] = {
        "grid_pick": grid.pick,
        "grid_total_compute": grid.total_compute,
        "tpe_mean_over_search_seeds": tpe_mean,
        "random_mean_over_search_seeds": random_mean,
        "tpe_beats_random": tpe_mean > random_mean,
        "tpe_not_worse_within_budget": dict(zip(map(str, seeds), tpe_passed)),
        "target_met": all(tpe_passed) and tpe_mean > random_mean,
    }

    table = Table(
        "search",
        "pick: tau, mu, beta",
        "own run",
        "compute",
        f"re-trained ({len(setting.retrain_seeds)} seeds) [95 % CI]",
        "minus grid [95 % CI]",
        "p (worse)",
        "verdict",
        "wall s",
        title=f"picks re-trained with fresh seeds (compute: training iterations; the grid's = {grid.total_compute})",
    )
    for label, outcome in [("grid", grid), *sweeps.items()]:
        comparison = comparisons.get(label)
        table.add_row(
            label,
            shown_params(outcome.pick),
            "-" if outcome.pick_val_miou is None else f"{outcome.pick_val_miou:.2f}",
            f"{outcome.total_compute} ({outcome.total_compute / grid.total_compute:.0%})",
            shown_stats(values[label]),
            "-"
            if comparison is None
            else f"{comparison.mean_difference:+.2f} [{comparison.ci_low:+.2f}, {comparison.ci_high:+.2f}]",
            "-" if comparison is None or math.isnan(comparison.p_worse) else f"{comparison.p_worse:.3f}",
            "-" if comparison is None else ("not worse" if comparison.not_worse else "WORSE"),
            f"{outcome.wall_s:.0f}",
        )
    console.print(table)
    print_noise("this run (noise: re-trained picks)", own, console)
    print_noise("this run (spread: the grid's single runs)", grid_spread, console)
    console.print(
        f"TPE's re-trained mean over search seeds {tpe_mean:.2f} vs random search's {random_mean:.2f}: "
        f"{'TPE ahead' if tpe_mean > random_mean else 'TPE NOT ahead'}"
    )
    verdict = "met" if record["summary"]["target_met"] else "NOT met"
    console.print(
        f"target (every search seed: TPE's pick not worse than the grid's [one-sided p >= {ALPHA}, mean difference "
        f">= -{TOLERANCE}] on <= {TARGET_RATIO:.0%} of its compute; TPE ahead of random): {verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="full")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="search seeds of the sweeps")
    parser.add_argument("--pilot", action="store_true", help="only measure the setting's noise and spread")
    parser.add_argument("--output", type=Path, default=None, help="default: benchmarks/results/sweep_retrained.json")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new temporary folder")
    args = parser.parse_args()
    setting = SETTINGS[args.setting]
    default_name = "sweep_pilot.json" if args.pilot else "sweep_retrained.json"
    output = args.output or Path("benchmarks/results") / default_name
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="hwd-benchmark-sweep-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    width = None if sys.stdout.isatty() else 180  # a wide table in a log file
    console = Console(width=width, markup=False)  # brackets in the verdicts are text
    console.print(f"workdir {workdir}; MLflow: mlflow ui --backend-store-uri {tracking_uri(workdir)}")

    import ray

    from trainables.launch import start_local_ray

    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    start_local_ray(num_cpus=2, log_to_driver=False)
    record: dict[str, Any] = {
        "setting_name": args.setting,
        "setting": asdict(setting),
        "ranges": RANGES,
        "table_i": TABLE_I,
        "search_seeds": args.seeds,
        "tolerance_miou": TOLERANCE,
        "alpha": ALPHA,
        "target_ratio": TARGET_RATIO,
        "machine": {"cpus_for_ray": 2, "host_cpus": os.cpu_count(), "platform": platform.platform()},
        "workdir": str(workdir),
    }
    started = time.perf_counter()
    try:
        console.rule("teacher")
        start = time.perf_counter()
        record["teacher_best_val_miou"] = ensure_teacher(setting, workdir, console)
        record["teacher_wall_s"] = round(time.perf_counter() - start, 1)
        if args.pilot:
            run_pilot(setting, workdir, record, output, console)
        else:
            run_benchmark(setting, args.seeds, workdir, record, output, console)
    finally:
        ray.shutdown()
    record["wall_s"] = round(time.perf_counter() - started, 1)
    write_json(output, record)
    console.print(f"{record['wall_s']:.0f} s in all; written to {output}")


if __name__ == "__main__":
    main()
