"""The report of a reproduction plan: our mIoU beside the paper's, per dataset, and the training cost.

Pure steps, so the numbers are testable without files: `collect_runs` (MLflow runs -> one result
per plan cell), `build_tables` (means, stds, paper numbers, winners, cost), then
`render_markdown` / `render_html` / `render_chart`. `write_plan_report` runs them all, writes
report.md, report.html and report.png, and logs them to the plan's MLflow run.
A cell without a finished run is shown as "missing", never as 0.
"""

from __future__ import annotations

import base64
import html
import math
import shutil
import statistics
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from hwd_tune import tracking
from hwd_tune.config import METHOD_PARAMS
from hwd_tune.reproduce.paper import PaperTable, PaperTeacher, load_table

Cell = tuple[str, str, str, int]  # (dataset, student, method label, seed) of one planned run
METHOD_NAME_TAG = "hwd.method"  # the method's real name on a plan run (its label may be e.g. hwd-swept)
COMPARED_METRIC = "best_val_miou"  # best validation mIoU (%) of the run: the number set beside the paper's
COST_METRICS = ("train_seconds", "gpu_hours", "images_per_s")  # latest values; may be absent
MISSING = "missing"
NOT_AVAILABLE = "-"
REPORT_ARTIFACT_PATH = "report"  # folder of the plan run's artifacts
MARKDOWN_FILE, HTML_FILE, CHART_FILE = "report.md", "report.html", "report.png"


# --------------------------------------------------------------------------------------------
# Step 1: runs -> one result per cell
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunResult:
    """The finished run used for one plan cell, and the numbers the report takes from it."""

    cell: Cell
    run_id: str
    method: str | None  # the method's real name (tag hwd.method, else param `method`)
    miou: float  # best_val_miou, %
    train_seconds: float | None
    gpu_hours: float | None
    images_per_s: float | None  # the latest logged value


@dataclass(frozen=True)
class CollectedRuns:
    """Results of the cells that have a finished run, the missing cells, and what was noticed on the way."""

    results: Mapping[Cell, RunResult]
    missing: tuple[Cell, ...]  # in the plan's order
    label_methods: Mapping[str, str]  # method label -> real method name, where known
    notes: tuple[str, ...]


def collect_runs(
    runs: Sequence[tracking.FoundRun],
    cells: Sequence[Cell],
    label_methods: Mapping[str, str] | None = None,
) -> CollectedRuns:
    """Matches a plan's runs to its cells by their plan tags; only FINISHED runs count, the newest per cell.

    `runs` are oldest first (as `tracking.find_runs` returns them). Runs of other statuses, runs
    outside the cells and duplicates are left out and listed in the notes.
    """
    cells = _checked_cells(cells)
    notes: list[str] = []
    finished = _finished_by_cell(runs, set(cells), notes)
    methods = _label_methods(runs, cells, label_methods, notes)
    results: dict[Cell, RunResult] = {}
    for cell, candidates in finished.items():
        if len(candidates) > 1:
            older = ", ".join(run.run_id for run in candidates[:-1])
            notes.append(
                f"{_cell_name(cell)}: {len(candidates)} finished runs; used the newest, "
                f"{candidates[-1].run_id} (left out: {older})"
            )
        result = _result(cell, candidates[-1], methods.get(cell[2]))
        if result is None:
            notes.append(
                f"{_cell_name(cell)}: run {candidates[-1].run_id} finished without a finite "
                f"{COMPARED_METRIC}; counted as missing"
            )
        else:
            results[cell] = result
    missing = tuple(cell for cell in cells if cell not in results)
    ordered = {cell: results[cell] for cell in cells if cell in results}
    return CollectedRuns(MappingProxyType(ordered), missing, MappingProxyType(methods), tuple(notes))


def _finished_by_cell(
    runs: Sequence[tracking.FoundRun], cells: set[Cell], notes: list[str]
) -> dict[Cell, list[tracking.FoundRun]]:
    """The FINISHED runs of each cell, oldest first; what else the plan holds goes to `notes`."""
    finished: dict[Cell, list[tracking.FoundRun]] = {}
    unfinished: dict[Cell, list[str]] = {}
    outside: list[str] = []
    untagged = 0
    for run in runs:
        cell = _cell_of(run)
        if cell is None:
            untagged += 1
        elif cell not in cells:
            outside.append(f"{_cell_name(cell)} ({run.run_id})")
        elif run.status == "FINISHED":
            finished.setdefault(cell, []).append(run)
        else:
            unfinished.setdefault(cell, []).append(f"{run.status} {run.run_id}")
    for cell, listing in unfinished.items():
        if cell not in finished:
            notes.append(f"{_cell_name(cell)}: no finished run; not counted: {', '.join(listing)}")
    if outside:
        notes.append(f"{len(outside)} run(s) of the plan are not cells of it and were left out: {', '.join(outside)}")
    if untagged:
        notes.append(f"{untagged} run(s) of the plan carry no cell tags (e.g. the plan's own run) and were left out")
    return finished


def _cell_of(run: tracking.FoundRun) -> Cell | None:
    """The (dataset, student, label, seed) a run's plan tags name; None if a tag is absent or the seed no int."""
    tags = run.tags
    keys = (tracking.PLAN_DATASET_TAG, tracking.PLAN_STUDENT_TAG, tracking.PLAN_METHOD_TAG, tracking.PLAN_SEED_TAG)
    if any(key not in tags for key in keys):
        return None
    try:
        seed = int(tags[tracking.PLAN_SEED_TAG])
    except ValueError:
        return None
    return tags[keys[0]], tags[keys[1]], tags[keys[2]], seed


def _label_methods(
    runs: Sequence[tracking.FoundRun], cells: Sequence[Cell], given: Mapping[str, str] | None, notes: list[str]
) -> dict[str, str]:
    """Real method name per label: `given`, else the runs' hwd.method tag (or param), else the label itself
    when it is a method name."""
    seen: dict[str, set[str]] = {}
    for run in runs:
        cell = _cell_of(run)
        method = run.tags.get(METHOD_NAME_TAG) or run.params.get("method")
        if cell is not None and method:
            seen.setdefault(cell[2], set()).add(method)
    methods: dict[str, str] = {}
    for label in dict.fromkeys(cell[2] for cell in cells):
        found = sorted(seen.get(label, ()))
        if given and label in given:
            methods[label] = given[label]
        elif len(found) == 1:
            methods[label] = found[0]
        elif label in METHOD_PARAMS:
            methods[label] = label
        if len(found) > 1 or (found and label in methods and methods[label] not in found):
            notes.append(f"method label {label!r}: runs name the methods {found}; compared as {methods.get(label)!r}")
        if label not in methods:
            notes.append(f"method label {label!r}: its method is unknown (no run names it); no paper number")
    return methods


def _result(cell: Cell, run: tracking.FoundRun, method: str | None) -> RunResult | None:
    miou = _finite(run.metrics.get(COMPARED_METRIC))
    if miou is None:
        return None
    cost = {name: _finite(run.metrics.get(name)) for name in COST_METRICS}
    return RunResult(cell=cell, run_id=run.run_id, method=method, miou=miou, **cost)


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _checked_cells(cells: Sequence[Cell]) -> tuple[Cell, ...]:
    """The cells as a tuple, each checked to be (dataset, student, label, int seed), without repeats."""
    checked: list[Cell] = []
    for cell in cells:
        if (
            not isinstance(cell, (tuple, list))
            or len(cell) != 4
            or not all(isinstance(part, str) and part for part in cell[:3])
            or isinstance(cell[3], bool)
            or not isinstance(cell[3], int)
        ):
            raise ValueError(f"a plan cell must be (dataset, student, method label, int seed), got {cell!r}")
        checked.append(tuple(cell))  # type: ignore[arg-type]
    if not checked:
        raise ValueError("the plan has no cells: nothing to report")
    repeated = sorted(_cell_name(cell) for cell, count in Counter(checked).items() if count > 1)
    if repeated:
        raise ValueError(f"plan cells must be distinct; repeated: {repeated}")
    return tuple(checked)


def _cell_name(cell: Cell) -> str:
    dataset, student, label, seed = cell
    return f"{dataset}/{student}/{label} seed {seed}"


# --------------------------------------------------------------------------------------------
# Step 2: results -> tables of numbers
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CellStats:
    """Ours (over the seeds found) beside the paper's number, for one student and method label."""

    label: str
    method: str | None
    seeds: tuple[int, ...]  # the seeds the plan asks for
    values: tuple[float, ...]  # best_val_miou of the seeds found, in `found_seeds` order
    found_seeds: tuple[int, ...]
    run_ids: tuple[str, ...]
    mean: float | None  # None: every seed missing
    std: float | None  # sample std (n - 1); None for n < 2
    paper: float | None  # None: the paper has no such number
    difference: float | None  # mean - paper

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def missing_seeds(self) -> tuple[int, ...]:
        return tuple(seed for seed in self.seeds if seed not in self.found_seeds)


@dataclass(frozen=True)
class StudentRow:
    """One student on one dataset: a CellStats per method label and the winners."""

    student: str
    cells: Mapping[str, CellStats]  # label -> stats
    winner: str | None  # the label with our highest mean
    paper_winner: str | None  # the method with the paper's highest number among this row's methods


@dataclass(frozen=True)
class DatasetTable:
    """Rows = students, columns = method labels, for one dataset."""

    dataset: str
    labels: tuple[str, ...]
    rows: tuple[StudentRow, ...]
    teacher: PaperTeacher | None  # the paper's teacher on this dataset
    missing_runs: int

    def row(self, student: str) -> StudentRow:
        for row in self.rows:
            if row.student == student:
                return row
        raise KeyError(f"no student {student!r} on {self.dataset}; students: {[row.student for row in self.rows]}")


@dataclass(frozen=True)
class CostRow:
    """Mean training cost of one method label for one student on one dataset (None: not logged)."""

    dataset: str
    student: str
    label: str
    method: str | None
    runs: int  # finished runs found
    train_seconds: float | None
    gpu_hours: float | None
    images_per_s: float | None
    time_vs_cwd: float | None  # train_seconds / CWD's train_seconds for the same dataset and student


@dataclass(frozen=True)
class ReportTables:
    """Every number of the report."""

    plan_name: str
    paper: PaperTable | None
    datasets: tuple[DatasetTable, ...]
    cost: tuple[CostRow, ...]
    missing: tuple[Cell, ...]
    notes: tuple[str, ...]
    expected_runs: int

    @property
    def found_runs(self) -> int:
        return self.expected_runs - len(self.missing)

    def dataset(self, name: str) -> DatasetTable:
        for table in self.datasets:
            if table.dataset == name:
                return table
        raise KeyError(f"no dataset {name!r} in the report; datasets: {[table.dataset for table in self.datasets]}")

    def cost_row(self, dataset: str, student: str, label: str) -> CostRow:
        for row in self.cost:
            if (row.dataset, row.student, row.label) == (dataset, student, label):
                return row
        raise KeyError(f"no cost row for {dataset}/{student}/{label}")


def build_tables(
    plan_name: str, cells: Sequence[Cell], collected: CollectedRuns, paper: PaperTable | None
) -> ReportTables:
    """Per dataset the students x labels table (mean ± std, paper, difference, winners), and the cost rows.

    Datasets, students, labels and seeds keep the plan's order.
    """
    cells = _checked_cells(cells)
    datasets = []
    cost = []
    for dataset in _ordered(cell[0] for cell in cells):
        dataset_cells = [cell for cell in cells if cell[0] == dataset]
        labels = _ordered(cell[2] for cell in dataset_cells)
        rows = []
        for student in _ordered(cell[1] for cell in dataset_cells):
            stats = {}
            for label in labels:
                seeds = tuple(cell[3] for cell in dataset_cells if cell[1] == student and cell[2] == label)
                if seeds:
                    stats[label] = _cell_stats(dataset, student, label, seeds, collected, paper)
            rows.append(_student_row(student, stats))
            cost += _cost_rows(dataset, student, stats, collected)
        teacher = paper.teacher(dataset) if paper is not None else None
        missing_runs = sum(1 for cell in collected.missing if cell[0] == dataset)
        datasets.append(DatasetTable(dataset, labels, tuple(rows), teacher, missing_runs))
    return ReportTables(plan_name, paper, tuple(datasets), tuple(cost), collected.missing, collected.notes, len(cells))


def _cell_stats(
    dataset: str,
    student: str,
    label: str,
    seeds: tuple[int, ...],
    collected: CollectedRuns,
    paper: PaperTable | None,
) -> CellStats:
    """Ours over the seeds found (mean, sample std), the paper's number for the label's method, the difference."""
    found = [
        collected.results[(dataset, student, label, seed)]
        for seed in seeds
        if (dataset, student, label, seed) in collected.results
    ]
    values = tuple(result.miou for result in found)
    method = collected.label_methods.get(label)
    mean = statistics.mean(values) if values else None
    published = paper.miou(dataset, student, method) if paper is not None and method else None
    return CellStats(
        label=label,
        method=method,
        seeds=seeds,
        values=values,
        found_seeds=tuple(result.cell[3] for result in found),
        run_ids=tuple(result.run_id for result in found),
        mean=mean,
        std=statistics.stdev(values) if len(values) > 1 else None,
        paper=published,
        difference=mean - published if mean is not None and published is not None else None,
    )


def _student_row(student: str, stats: dict[str, CellStats]) -> StudentRow:
    """The row with its winners: our best label by mean, the paper's best method among the row's methods."""
    ours = {label: cell.mean for label, cell in stats.items() if cell.mean is not None}
    published: dict[str, float] = {}
    for cell in stats.values():
        if cell.paper is not None and cell.method is not None:
            published[cell.method] = cell.paper
    return StudentRow(
        student=student,
        cells=MappingProxyType(stats),
        winner=max(ours, key=ours.__getitem__) if ours else None,
        paper_winner=max(published, key=published.__getitem__) if published else None,
    )


def _cost_rows(dataset: str, student: str, stats: dict[str, CellStats], collected: CollectedRuns) -> list[CostRow]:
    """Mean cost per label over the runs found; time ÷ CWD against the label whose method is cwd."""

    def mean_of(results: list[RunResult], metric: str) -> float | None:
        values = [getattr(result, metric) for result in results if getattr(result, metric) is not None]
        return statistics.mean(values) if values else None

    results = {
        label: [collected.results[(dataset, student, label, seed)] for seed in cell.found_seeds]
        for label, cell in stats.items()
    }
    seconds = {label: mean_of(found, "train_seconds") for label, found in results.items()}
    cwd_labels = [label for label, cell in stats.items() if cell.method == "cwd" and seconds[label] is not None]
    cwd_label = "cwd" if "cwd" in cwd_labels else (cwd_labels[0] if cwd_labels else None)
    cwd_seconds = seconds[cwd_label] if cwd_label is not None else None
    return [
        CostRow(
            dataset=dataset,
            student=student,
            label=label,
            method=stats[label].method,
            runs=len(found),
            train_seconds=seconds[label],
            gpu_hours=mean_of(found, "gpu_hours"),
            images_per_s=mean_of(found, "images_per_s"),
            time_vs_cwd=(seconds[label] / cwd_seconds if seconds[label] is not None and cwd_seconds else None),
        )
        for label, found in results.items()
    ]


def _ordered(values) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


# --------------------------------------------------------------------------------------------
# Step 3: tables -> a document (headings, paragraphs, tables), then Markdown / HTML / PNG
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Heading:
    level: int
    text: str


@dataclass(frozen=True)
class _Paragraph:
    text: str


@dataclass(frozen=True)
class _Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: str  # per column: "l" (names) or "r" (numbers)


@dataclass(frozen=True)
class _Bullets:
    items: tuple[str, ...]


def _document(tables: ReportTables) -> list:
    """The report's content, independent of the output format."""
    paper = tables.paper
    blocks: list = [
        _Heading(1, f"Reproduction report: {tables.plan_name}"),
        _Paragraph(
            f"Runs: {tables.expected_runs} planned, {tables.found_runs} finished, {len(tables.missing)} missing."
        ),
        _Paragraph(
            f"Ours: best validation mIoU (%) of each run ({COMPARED_METRIC}), mean ± sample std "
            f"over seeds (n = finished runs; std '{NOT_AVAILABLE}' for n = 1). "
            f"Cells without a finished run are shown as '{MISSING}'."
        ),
    ]
    if paper is not None:
        blocks.append(_Paragraph(f"Paper ({paper.name}): {paper.source.citation()}."))
        blocks.append(_Bullets(paper.notes))
    else:
        blocks.append(_Paragraph("No paper table chosen: ours only."))
    for table in tables.datasets:
        blocks += _dataset_blocks(table, paper is not None)
    blocks += _cost_blocks(tables.cost)
    if tables.notes:
        blocks += [_Heading(2, "Notes"), _Bullets(tables.notes)]
    return blocks


def _dataset_blocks(table: DatasetTable, with_paper: bool) -> list:
    blocks: list = [_Heading(2, table.dataset)]
    if table.teacher is not None:
        blocks.append(_Paragraph(f"The paper's teacher: {table.teacher.arch}, {_miou(table.teacher.miou)} mIoU."))
    labels = table.labels

    def cells_of(row: StudentRow, shown) -> tuple[str, ...]:
        return tuple(shown(row.cells[label]) if label in row.cells else NOT_AVAILABLE for label in labels)

    blocks += [
        _Heading(3, "Ours"),
        _Table(
            ("student", *labels, "best (ours)"),
            tuple((row.student, *cells_of(row, _ours), row.winner or NOT_AVAILABLE) for row in table.rows),
            align=f"l{'r' * len(labels)}l",
        ),
    ]
    if with_paper:
        blocks += [
            _Heading(3, "Paper"),
            _Table(
                ("student", *labels, "best (paper)"),
                tuple((row.student, *cells_of(row, _paper), row.paper_winner or NOT_AVAILABLE) for row in table.rows),
                align=f"l{'r' * len(labels)}l",
            ),
            _Heading(3, "Ours - paper"),
            _Table(
                ("student", *labels),
                tuple((row.student, *cells_of(row, _difference)) for row in table.rows),
                align=f"l{'r' * len(labels)}",
            ),
        ]
    missing = [
        f"{row.student}/{label} seed {seed}"
        for row in table.rows
        for label, cell in row.cells.items()
        for seed in cell.missing_seeds
    ]
    blocks.append(
        _Paragraph(
            f"Missing runs on {table.dataset}: {table.missing_runs}" + (f" ({', '.join(missing)})." if missing else ".")
        )
    )
    return blocks


def _cost_blocks(rows: tuple[CostRow, ...]) -> list:
    blocks: list = [
        _Heading(2, "Training cost"),
        _Paragraph(
            "Means over the finished runs: training wall time (train_seconds), GPU-hours, "
            "images/s (latest logged value); time ÷ CWD compares train_seconds on the same dataset "
            f"and student. '{NOT_AVAILABLE}': not logged."
        ),
        _Table(
            ("dataset", "student", "method", "runs", "train time (s)", "GPU-hours", "images/s", "time ÷ CWD"),
            tuple(
                (
                    row.dataset,
                    row.student,
                    row.label,
                    str(row.runs),
                    _number(row.train_seconds, ".1f"),
                    _number(row.gpu_hours, ".4g"),
                    _number(row.images_per_s, ".1f"),
                    _ratio(row.time_vs_cwd),
                )
                for row in rows
            ),
            align="lllrrrrr",
        ),
    ]
    hwd = [row for row in rows if row.method == "hwd" and row.time_vs_cwd is not None]
    if hwd:
        blocks.append(
            _Bullets(
                tuple(
                    f"{row.label} takes {_ratio(row.time_vs_cwd)} CWD's training time on {row.dataset}/{row.student}"
                    for row in hwd
                )
            )
        )
    return blocks


def _miou(value: float) -> str:
    return f"{value:.2f}"


def _ours(cell: CellStats) -> str:
    if cell.mean is None:
        return MISSING
    std = f"{cell.std:.2f}" if cell.std is not None else NOT_AVAILABLE
    count = f"n={cell.n}" if cell.n == len(cell.seeds) else f"n={cell.n} of {len(cell.seeds)}"
    return f"{_miou(cell.mean)} ± {std} ({count})"


def _paper(cell: CellStats) -> str:
    return _miou(cell.paper) if cell.paper is not None else NOT_AVAILABLE


def _difference(cell: CellStats) -> str:
    if cell.mean is None:
        return MISSING
    if cell.difference is None:
        return NOT_AVAILABLE
    shown = f"{cell.difference:+.2f}"
    return "+0.00" if shown == "-0.00" else shown


def _number(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else NOT_AVAILABLE


def _ratio(value: float | None) -> str:
    return f"{value:.2f}×" if value is not None else NOT_AVAILABLE


def render_markdown(tables: ReportTables) -> str:
    """The report as Markdown (GitHub tables)."""
    lines: list[str] = []
    for block in _document(tables):
        if isinstance(block, _Heading):
            lines += [f"{'#' * block.level} {_md(block.text)}", ""]
        elif isinstance(block, _Paragraph):
            lines += [_md(block.text), ""]
        elif isinstance(block, _Bullets):
            lines += [*(f"- {_md(item)}" for item in block.items), ""]
        else:
            lines.append("| " + " | ".join(_md(text) for text in block.header) + " |")
            lines.append("|" + "|".join(":--" if side == "l" else "--:" for side in block.align) + "|")
            lines += ["| " + " | ".join(_md(text) for text in row) + " |" for row in block.rows]
            lines.append("")
    return "\n".join(lines)


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell: no pipes or line breaks."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_html(tables: ReportTables, chart_png: bytes | None = None) -> str:
    """The report as one self-contained HTML page (inline style, the chart embedded); all text escaped."""
    body: list[str] = []
    for block in _document(tables):
        if isinstance(block, _Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, _Paragraph):
            body.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, _Bullets):
            body.append("<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in block.items) + "</ul>")
        else:
            header = "".join(
                f"<th{_html_align(side)}>{html.escape(text)}</th>" for text, side in zip(block.header, block.align)
            )
            rows = "".join(
                "<tr>"
                + "".join(f"<td{_html_align(side)}>{html.escape(text)}</td>" for text, side in zip(row, block.align))
                + "</tr>"
                for row in block.rows
            )
            body.append(f"<table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>")
        if chart_png is not None and isinstance(block, _Heading) and block.level == 1:
            encoded = base64.b64encode(chart_png).decode("ascii")
            body.append(f'<img alt="ours vs paper" src="data:image/png;base64,{encoded}">')
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:90em}"
        "table{border-collapse:collapse;margin:0.5em 0}"
        "th,td{border:1px solid #bbb;padding:0.25em 0.6em;text-align:right}"
        ".l{text-align:left}img{max-width:100%}"
    )
    title = html.escape(f"Reproduction report: {tables.plan_name}")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{style}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _html_align(side: str) -> str:
    return ' class="l"' if side == "l" else ""


def render_chart(tables: ReportTables, path: Path) -> None:
    """Grouped bars, one subplot per dataset: per student, ours (mean, std error bar) beside the paper's."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    from matplotlib.patches import Patch

    with_paper = tables.paper is not None
    bars_per_label = 2 if with_paper else 1
    labels = _ordered(label for table in tables.datasets for label in table.labels)
    colors = {label: f"C{index % 10}" for index, label in enumerate(labels)}  # one color per label everywhere
    widest = max(len(table.rows) * len(table.labels) for table in tables.datasets)
    figure = Figure(
        figsize=(min(max(5.0, 0.35 * widest * bars_per_label), 24.0) + 2.5, 3.2 * len(tables.datasets) + 0.6),
        dpi=100,
        layout="constrained",
    )
    FigureCanvasAgg(figure)
    for axes, table in zip(figure.subplots(len(tables.datasets), 1, squeeze=False)[:, 0], tables.datasets):
        width = 0.8 / (bars_per_label * len(table.labels))
        for group, row in enumerate(table.rows):
            for index, label in enumerate(table.labels):
                cell = row.cells.get(label)
                if cell is None:
                    continue
                center = group - 0.4 + width * (bars_per_label * index + 0.5)
                if cell.mean is None:
                    axes.text(center, 0.5, MISSING, rotation=90, ha="center", va="bottom", fontsize=7, color="grey")
                else:
                    axes.bar(center, cell.mean, width, yerr=cell.std or 0.0, capsize=2, color=colors[label])
                if with_paper and cell.paper is not None:
                    axes.bar(
                        center + width,
                        cell.paper,
                        width,
                        color=colors[label],
                        alpha=0.35,
                        hatch="//",
                        edgecolor=colors[label],
                    )
        axes.set_xticks(range(len(table.rows)), [row.student for row in table.rows])
        axes.set_ylabel("mIoU (%)")
        axes.set_title(table.dataset)
    handles = [Patch(color=colors[label], label=label) for label in labels]
    if with_paper:
        handles += [
            Patch(facecolor="grey", label="ours (± std)"),
            Patch(facecolor="grey", alpha=0.35, hatch="//", edgecolor="grey", label="paper"),
        ]
    figure.legend(handles=handles, loc="outside right center", fontsize=8)
    figure.suptitle(f"{tables.plan_name}: best val mIoU, mean over seeds")
    figure.savefig(path, format="png")


# --------------------------------------------------------------------------------------------
# All steps: MLflow -> files -> the plan's run
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlanReport:
    """What `write_plan_report` wrote, and the numbers in it."""

    markdown_path: Path
    html_path: Path
    chart_path: Path
    text: str  # the Markdown
    tables: ReportTables
    missing: list[Cell]


def write_plan_report(
    *,
    plan_name: str,
    cells: Sequence[Cell],
    tracking_uri: str,
    experiment: str,
    output_dir: Path,
    paper_table: str | None,
    plan_run_id: str | None,
    label_methods: Mapping[str, str] | None = None,
) -> PlanReport:
    """Reads the plan's runs from MLflow and writes report.md, report.html and report.png to `output_dir`.

    cells: the plan's (dataset, student, method label, seed). paper_table: a table of
    `hwd_tune.reproduce.paper` (e.g. "table2") or None. label_methods: real method per label where the runs
    cannot tell (a label with no run). With plan_run_id, the three files go to that run under
    `report/` with metrics report_expected_runs, report_finished_runs, report_missing_runs.
    """
    cells = _checked_cells(cells)
    paper = load_table(paper_table) if paper_table is not None else None
    runs = [
        run
        for run in tracking.find_runs(tracking_uri, experiment, {tracking.PLAN_TAG: plan_name})
        if run.run_id != plan_run_id
    ]
    tables = build_tables(plan_name, cells, collect_runs(runs, cells, label_methods), paper)

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    chart_path = output_dir / CHART_FILE
    render_chart(tables, chart_path)
    text = render_markdown(tables)
    markdown_path = output_dir / MARKDOWN_FILE
    markdown_path.write_text(text, encoding="utf-8")
    html_path = output_dir / HTML_FILE
    html_path.write_text(render_html(tables, chart_path.read_bytes()), encoding="utf-8")

    if plan_run_id is not None:
        _log_to_run(tracking_uri, plan_run_id, (markdown_path, html_path, chart_path), tables)
    return PlanReport(markdown_path, html_path, chart_path, text, tables, list(tables.missing))


def _log_to_run(tracking_uri: str, run_id: str, files: Sequence[Path], tables: ReportTables) -> None:
    """Uploads only the report's files (output_dir may hold more) and its counts to the plan's run."""
    run_logger = tracking.RunLogger(tracking_uri, run_id)
    with tempfile.TemporaryDirectory(prefix="hwd-report-") as scratch:
        for path in files:
            shutil.copy2(path, Path(scratch) / path.name)
        run_logger.log_artifact_dir(scratch, REPORT_ARTIFACT_PATH)
    run_logger.log_metrics(
        {
            "report_expected_runs": tables.expected_runs,
            "report_finished_runs": tables.found_runs,
            "report_missing_runs": len(tables.missing),
        },
        step=0,
    )
