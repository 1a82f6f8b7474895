"""MLflow tracking for hwd-tune: the only package that imports mlflow.

Modules, one subject each: `store` (tracking URIs, the client, redaction), `runs` (runs found
again by their key, the tags searched by), `params` (a config as params), `run_logger` (what a
run logs) with `plots` (its tables and pictures), `predictions` (pictures of predictions),
`system_metrics` (MLflow's CPU/memory/GPU monitor), `registry` (teacher versions and aliases),
`teachers` (a teacher source to a local file), `students` (student versions as MLflow pyfunc
models that return class maps, `student_pyfunc` being that model's code; a model URI to a local
checkpoint) and `ui_view` (a link that opens the UI on a comparison). Conventions other parts
rely on".
"""

from hwd_tune.tracking.params import PARAM_ALIASES, flatten_params
from hwd_tune.tracking.predictions import PREDICTIONS_KEY, log_prediction_files, log_prediction_panels
from hwd_tune.tracking.registry import (
    CHECKPOINT_FILE,
    TEACHER_ARTIFACT_ROOT,
    TEACHER_FILES,
    milestone_alias,
    register_teacher,
    registered_version,
    teacher_model_name,
)
from hwd_tune.tracking.run_logger import (
    CHANGED_PARAM_TAG_PREFIX,
    SYSTEM_TAG_PREFIX,
    TERMINAL_STATUSES,
    RunLogger,
    system_facts,
)
from hwd_tune.tracking.runs import (
    CONFIG_HASH_TAG,
    FAILURE_REASON_TAG,
    PLAN_DATASET_TAG,
    PLAN_METHOD_TAG,
    PLAN_SEED_TAG,
    PLAN_STUDENT_TAG,
    PLAN_TAG,
    RESUME_COUNT_TAG,
    RUN_KEY_TAG,
    FoundRun,
    find_run_id,
    find_runs,
    latest_metrics,
    start_run,
)
from hwd_tune.tracking.store import (
    MLFLOW_FOLDER,
    TRACKING_URI_ENV,
    TRUNCATION_MARKER,
    default_artifact_location,
    default_tracking_uri,
    missing_local_store,
    redact_uri,
    relocate_sqlite_store,
    resolve_tracking_uri,
)
from hwd_tune.tracking.students import (
    BEST_CHECKPOINT_ARTIFACT,
    CHAMPION_ALIAS,
    STUDENT_ARTIFACT_ROOT,
    best_alias,
    register_run_student,
    register_student,
    resolve_student,
    student_model_name,
)
from hwd_tune.tracking.system_metrics import (
    NODE_HOSTNAME_TAG,
    NODE_IP_TAG,
    SYSTEM_METRIC_PREFIX,
    start_system_metrics,
)
from hwd_tune.tracking.teachers import TeacherLocation, is_mlflow_source, locate_teacher, resolve_teacher
from hwd_tune.tracking.ui_view import save_runs_view, ui_link

__all__ = [
    "BEST_CHECKPOINT_ARTIFACT",
    "CHAMPION_ALIAS",
    "CHANGED_PARAM_TAG_PREFIX",
    "CHECKPOINT_FILE",
    "CONFIG_HASH_TAG",
    "FAILURE_REASON_TAG",
    "MLFLOW_FOLDER",
    "NODE_HOSTNAME_TAG",
    "NODE_IP_TAG",
    "PARAM_ALIASES",
    "PLAN_DATASET_TAG",
    "PLAN_METHOD_TAG",
    "PLAN_SEED_TAG",
    "PLAN_STUDENT_TAG",
    "PLAN_TAG",
    "PREDICTIONS_KEY",
    "RESUME_COUNT_TAG",
    "RUN_KEY_TAG",
    "STUDENT_ARTIFACT_ROOT",
    "SYSTEM_METRIC_PREFIX",
    "SYSTEM_TAG_PREFIX",
    "TEACHER_ARTIFACT_ROOT",
    "TEACHER_FILES",
    "TERMINAL_STATUSES",
    "TRACKING_URI_ENV",
    "TRUNCATION_MARKER",
    "FoundRun",
    "RunLogger",
    "TeacherLocation",
    "best_alias",
    "default_artifact_location",
    "default_tracking_uri",
    "find_run_id",
    "find_runs",
    "flatten_params",
    "is_mlflow_source",
    "latest_metrics",
    "locate_teacher",
    "log_prediction_files",
    "log_prediction_panels",
    "milestone_alias",
    "missing_local_store",
    "redact_uri",
    "register_run_student",
    "register_student",
    "register_teacher",
    "registered_version",
    "relocate_sqlite_store",
    "resolve_student",
    "resolve_teacher",
    "resolve_tracking_uri",
    "save_runs_view",
    "start_run",
    "start_system_metrics",
    "student_model_name",
    "system_facts",
    "teacher_model_name",
    "ui_link",
]
