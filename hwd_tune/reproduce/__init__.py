"""The reproduce wing: run the paper's Table II (or any plan) and report it beside the published numbers.

Modules: `plan` (the plan file's schema and its cells), `runner` (`reproduce`: the cells as Ray
Train jobs scheduled by Tune, finished ones skipped), `report` (tables, Markdown, HTML, chart)
and `paper` (the published mIoU, kept as package data in `paper_results.yaml`).
"""

from hwd_tune.reproduce.paper import PaperTable, PaperTeacher, load_table, table_names
from hwd_tune.reproduce.plan import Cell, Plan, check_resources, load
from hwd_tune.reproduce.report import PlanReport, build_tables, collect_runs, write_plan_report
from hwd_tune.reproduce.runner import (
    CellOutcome,
    ReproduceSummary,
    cell_tags,
    check_before_start,
    finished_runs,
    log_cost,
    plan_dir,
    plan_run_key,
    report_from_mlflow,
    reproduce,
)

__all__ = [
    "Cell",
    "CellOutcome",
    "PaperTable",
    "PaperTeacher",
    "Plan",
    "PlanReport",
    "ReproduceSummary",
    "build_tables",
    "cell_tags",
    "check_before_start",
    "check_resources",
    "collect_runs",
    "finished_runs",
    "load",
    "load_table",
    "log_cost",
    "plan_dir",
    "plan_run_key",
    "report_from_mlflow",
    "reproduce",
    "table_names",
    "write_plan_report",
]
