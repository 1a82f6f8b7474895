"""The classes of a folder dataset: <root>/classes.yaml, overridden field by field by `data.folder`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hwd_tune.config import FolderClassesConfig, format_validation_error, safe_load_yaml

CLASSES_FILE = "classes.yaml"
DEFAULT_IGNORE_VALUE = 255  # the usual "not labelled" value of 8-bit masks (VOC, COCO-Stuff, mmseg)

CLASSES_EXAMPLE = """\
classes: [background, road, car]    # mask value k is class k
ignore_index: 255                   # mask value for "not labelled" (default 255)
palette: [[0, 0, 0], [128, 64, 128], [0, 0, 142]]   # optional: one [r, g, b] per class, for RGB masks
ignore_color: [255, 255, 255]       # optional: the RGB masks' colour for "not labelled\""""


@dataclass(frozen=True)
class FolderClasses:
    """Resolved classes: names in index order, the masks' ignore value, optional RGB colours."""

    names: tuple[str, ...]
    ignore_value: int
    palette: tuple[tuple[int, int, int], ...] | None
    ignore_color: tuple[int, int, int] | None
    source: str  # where they were read, for messages

    @property
    def num_classes(self) -> int:
        return len(self.names)


def load_folder_classes(root: str | Path, overrides: FolderClassesConfig | Mapping[str, Any] | None) -> FolderClasses:
    """The classes of the folder dataset at `root`: its classes.yaml, then the fields set in `overrides`.

    Raises a ValueError naming the file or `data.folder` and the field when they are missing or
    inconsistent.
    """
    path = Path(root) / CLASSES_FILE
    given = _override_fields(overrides)
    from_file = _read_classes_file(path) if path.is_file() else {}
    sources = [str(path)] if path.is_file() else []
    if given:
        sources.append("data.folder")
    if not sources:
        raise ValueError(
            f"folder dataset {root}: no {CLASSES_FILE} and no data.folder in the config; write "
            f"{path} such as:\n{CLASSES_EXAMPLE}"
        )
    source = " + ".join(sources)
    merged = {**from_file, **given}
    if not merged.get("classes"):
        raise ValueError(f"{source}: 'classes' is required: the class names in index order\n{CLASSES_EXAMPLE}")
    return _resolved(FolderClassesConfig.model_validate(merged), source)


def _override_fields(overrides: FolderClassesConfig | Mapping[str, Any] | None) -> dict[str, Any]:
    """The fields of the config block that are set (None means "take it from classes.yaml")."""
    if overrides is None:
        return {}
    block = overrides if isinstance(overrides, FolderClassesConfig) else FolderClassesConfig.model_validate(overrides)
    return {name: value for name, value in block.model_dump().items() if value is not None}


def _read_classes_file(path: Path) -> dict[str, Any]:
    """The fields of a classes.yaml, validated; errors name the file and the field.

    Read with the config's safe loader (yaml.safe_load with YAML 1.2 booleans), so a class named
    `no` or `on` stays a string.
    """
    try:
        raw = safe_load_yaml(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping with 'classes', got {type(raw).__name__}\n{CLASSES_EXAMPLE}")
    try:
        block = FolderClassesConfig.model_validate(raw)
    except ValidationError as error:
        raise ValueError(format_validation_error(error, str(path))) from None
    return {name: value for name, value in block.model_dump().items() if value is not None}


def _resolved(block: FolderClassesConfig, source: str) -> FolderClasses:
    """FolderClasses from a complete block, after the checks that need several fields at once."""
    names = tuple(block.classes or ())
    if len(names) < 2:
        raise ValueError(f"{source}: 'classes' needs at least 2 names, got {list(names)}")
    blank = [index for index, name in enumerate(names) if not name.strip()]
    if blank:
        raise ValueError(f"{source}: 'classes' has empty names at positions {blank}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{source}: 'classes' names must be unique; repeated: {repeated}")
    ignore_value = DEFAULT_IGNORE_VALUE if block.ignore_index is None else block.ignore_index
    if ignore_value < len(names):
        raise ValueError(
            f"{source}: ignore_index {ignore_value} is a class id (there are {len(names)} classes, "
            f"ids 0..{len(names) - 1}); use a value >= {len(names)}, e.g. 255"
        )
    palette = None if block.palette is None else tuple(tuple(colour) for colour in block.palette)
    if palette is not None:
        if len(palette) != len(names):
            raise ValueError(
                f"{source}: 'palette' has {len(palette)} colours but there are {len(names)} classes; "
                "expected one [r, g, b] per class, in class order"
            )
        repeated_colours = sorted({colour for colour in palette if palette.count(colour) > 1})
        if repeated_colours:
            raise ValueError(f"{source}: 'palette' colours must be distinct; repeated: {repeated_colours}")
    ignore_color = None if block.ignore_color is None else tuple(block.ignore_color)
    if ignore_color is not None and palette is None:
        raise ValueError(f"{source}: ignore_color is only used with a 'palette' (for RGB masks); add one")
    if ignore_color is not None and ignore_color in palette:
        raise ValueError(
            f"{source}: ignore_color {list(ignore_color)} is also the colour of class "
            f"{names[palette.index(ignore_color)]!r} in 'palette'"
        )
    return FolderClasses(names, ignore_value, palette, ignore_color, source)  # type: ignore[arg-type]
