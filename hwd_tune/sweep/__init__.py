"""The sweep wing: tune a method's parameters (HWD's tau, mu, beta) with Ray Tune + Optuna + ASHA.

Modules: `config` (the sweep file's schema and loading), `layout` (where its files go, how its
runs are named), `searcher` (Optuna TPE/grid, ASHA, the resumable searcher), `service` (`run`),
`fidelity` (how far ASHA's rungs agree with the trials' final scores), `summary` (trial rows,
plots, the best config), `tuning_split` (the held-out images trials are scored on),
`final_stage` (the best configurations, Table I and the baselines retrained with several seeds)
with `statistics` (means, intervals, paired tests), `verdict` (the final stage in words),
`board_feed` (Tune's trial events onto the command's screen), `predictions` (the winner beside CWD
in pictures on the parent run) and `quickstart` (the README's main job).
"""

from hwd_tune.sweep.config import (
    ParameterRange,
    SweepConfig,
    TunedBaseline,
    baseline_train_config,
    check_resources,
    final_job_config,
    final_train_config,
    grid_size,
    load,
    startup_trials,
    trial_train_config,
    tuned_baseline_sweep,
    tuning_holdout,
)
from hwd_tune.sweep.fidelity import RungCorrelation
from hwd_tune.sweep.final_stage import Candidate, CandidateResult, FinalStageResult
from hwd_tune.sweep.layout import (
    BEST_CONFIG_FILE,
    REPORT_FOLDER,
    STOPPED_AT_TAG,
    SWEEP_TAG,
    TRIAL_ID_TAG,
    TRIAL_STATUS_TAG,
    TRIALS_FOLDER,
    TUNE_FOLDER,
    sweep_dir,
    sweep_key,
    trial_run_key,
)
from hwd_tune.sweep.searcher import (
    ResumableOptunaSearch,
    absolute_storage_url,
    build_scheduler,
    build_searcher,
    close_orphaned_optuna_trials,
    iteration_budget,
    optuna_storage,
    tune_domain,
)
from hwd_tune.sweep.service import check_before_start, run, sweep_jobs
from hwd_tune.sweep.statistics import PairedDifference, SeedStats, paired_difference, seed_stats
from hwd_tune.sweep.summary import (
    JobResult,
    SweepSummary,
    TrialRow,
    TunedBaselineResult,
    failure_reason,
    final_verdict,
    print_summary,
)

__all__ = [
    "BEST_CONFIG_FILE",
    "REPORT_FOLDER",
    "STOPPED_AT_TAG",
    "SWEEP_TAG",
    "TRIALS_FOLDER",
    "TRIAL_ID_TAG",
    "TRIAL_STATUS_TAG",
    "TUNE_FOLDER",
    "Candidate",
    "CandidateResult",
    "FinalStageResult",
    "JobResult",
    "PairedDifference",
    "ParameterRange",
    "ResumableOptunaSearch",
    "RungCorrelation",
    "SeedStats",
    "SweepConfig",
    "SweepSummary",
    "TrialRow",
    "TunedBaseline",
    "TunedBaselineResult",
    "absolute_storage_url",
    "baseline_train_config",
    "build_scheduler",
    "build_searcher",
    "check_before_start",
    "check_resources",
    "close_orphaned_optuna_trials",
    "failure_reason",
    "final_job_config",
    "final_train_config",
    "final_verdict",
    "grid_size",
    "iteration_budget",
    "load",
    "optuna_storage",
    "paired_difference",
    "print_summary",
    "run",
    "seed_stats",
    "startup_trials",
    "sweep_dir",
    "sweep_jobs",
    "sweep_key",
    "trial_run_key",
    "trial_train_config",
    "tune_domain",
    "tuned_baseline_sweep",
    "tuning_holdout",
]
