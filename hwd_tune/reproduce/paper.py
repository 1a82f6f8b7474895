"""The paper's published mIoU (Table II and the 80K-iteration figures), read from package data.

The numbers live in `paper_results.yaml` next to this module (shipped in the wheel), keyed by this
package's own names: dataset = DataConfig.name, student = model arch, method = MethodConfig.name.
`hwd-tune report` puts them beside ours; nothing here imports Ray or MLflow.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType

from pydantic import Field, ValidationError

from hwd_tune.config import METHOD_PARAMS, ConfigError, DataConfig, StrictModel, format_validation_error, safe_load_yaml

DATA_FILE = "paper_results.yaml"  # in the hwd_tune.reproduce package
DEFAULT_TABLE = "table2"  # Table II: 40K distillation iterations, the paper's main comparison
_DATASETS = frozenset(typing.get_args(DataConfig.model_fields["name"].annotation))


# --------------------------------------------------------------------------------------------
# The file's schema
# --------------------------------------------------------------------------------------------
class PaperSource(StrictModel):
    """Where a table's numbers are printed."""

    title: str
    authors: str
    venue: str
    arxiv: str | None = None
    location: str  # which table of which document
    code: str | None = None

    def citation(self) -> str:
        """One line: title, venue, location (and arXiv id when known)."""
        arxiv = f", arXiv:{self.arxiv}" if self.arxiv else ""
        return f'"{self.title}" ({self.venue}{arxiv}), {self.location}'


class PaperTeacher(StrictModel):
    """The teacher the paper distils from on one dataset, and its mIoU."""

    arch: str
    miou: float = Field(ge=0.0, le=100.0)


class _TableFile(StrictModel):
    source: PaperSource
    notes: list[str] = []
    teachers: dict[str, PaperTeacher] = {}
    methods: list[str]
    results: dict[str, dict[str, dict[str, float]]]  # dataset -> student -> method -> mIoU %


class _DataFile(StrictModel):
    tables: dict[str, _TableFile]


# --------------------------------------------------------------------------------------------
# The table as the report uses it
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PaperRow:
    """One row of a paper table: a student on a dataset, its mIoU (%) per method."""

    dataset: str
    student: str
    miou: Mapping[str, float]  # method name -> mIoU %


@dataclass(frozen=True)
class PaperTable:
    """A published table: its source, notes, teachers, method columns and rows."""

    name: str
    source: PaperSource
    notes: tuple[str, ...]
    methods: tuple[str, ...]  # the table's columns, in the paper's order
    rows: tuple[PaperRow, ...]
    teachers: Mapping[str, PaperTeacher]  # dataset -> teacher

    def miou(self, dataset: str, student: str, method: str) -> float | None:
        """The published mIoU (%) of `student` distilled with `method` on `dataset`; None if not published."""
        for row in self.rows:
            if row.dataset == dataset and row.student == student:
                return row.miou.get(method)
        return None

    def teacher(self, dataset: str) -> PaperTeacher | None:
        """The teacher (arch and mIoU %) the table distils from on `dataset`; None if not stated."""
        return self.teachers.get(dataset)

    def winner(self, dataset: str, student: str, methods: tuple[str, ...] | None = None) -> str | None:
        """The method with the highest published mIoU in a row (among `methods` if given); None if none."""
        published = {
            method: value
            for method in (methods or self.methods)
            if (value := self.miou(dataset, student, method)) is not None
        }
        return max(published, key=published.__getitem__) if published else None


def table_names() -> tuple[str, ...]:
    """Names of the tables in the package's data file (e.g. `table2`, `table2_80k`)."""
    return tuple(_load_all())


def load_table(name: str = DEFAULT_TABLE) -> PaperTable:
    """The paper table `name`; KeyError naming the tables that exist when there is no such table."""
    tables = _load_all()
    if name not in tables:
        raise KeyError(f"no paper table {name!r} in hwd_tune/reproduce/{DATA_FILE}; available tables: {sorted(tables)}")
    return tables[name]


@functools.cache
def _load_all() -> dict[str, PaperTable]:
    text = resources.files("hwd_tune.reproduce").joinpath(DATA_FILE).read_text(encoding="utf-8")
    source = f"hwd_tune/{DATA_FILE}"
    try:
        parsed = _DataFile.model_validate(safe_load_yaml(text))
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None
    return {name: _table(name, table, source) for name, table in parsed.tables.items()}


def _table(name: str, table: _TableFile, source: str) -> PaperTable:
    """Checks that every key is one of this package's names, then freezes the table."""
    unknown_methods = sorted(set(table.methods) - set(METHOD_PARAMS))
    if unknown_methods:
        raise ConfigError(
            f"{source}: tables.{name}.methods: unknown methods {unknown_methods}; "
            f"expected names from {sorted(METHOD_PARAMS)}"
        )
    rows = []
    for dataset, students in table.results.items():
        if dataset not in _DATASETS:
            raise ConfigError(
                f"{source}: tables.{name}.results: unknown dataset {dataset!r}; expected one of {sorted(_DATASETS)}"
            )
        for student, values in students.items():
            extra = sorted(set(values) - set(table.methods))
            if extra:
                raise ConfigError(
                    f"{source}: tables.{name}.results.{dataset}.{student}: methods {extra} "
                    f"are not columns of the table {table.methods}"
                )
            rows.append(PaperRow(dataset, student, MappingProxyType(dict(values))))
    return PaperTable(
        name=name,
        source=table.source,
        notes=tuple(table.notes),
        methods=tuple(table.methods),
        rows=tuple(rows),
        teachers=MappingProxyType(dict(table.teachers)),
    )
