"""The data check: split sizes, pixels per class and the problems found in a sample of the masks."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from torch.utils.data import Dataset

from hwd_tune.config import IGNORE_INDEX
from hwd_tune.data.folder_masks import MaskFileError
from hwd_tune.data.registry import DatasetInfo

NAMED_FILES = 5  # files named per problem (and the count of all)
SHOWN_FOUND = 20  # distinct values or colours named per problem

# kind -> what the files of that kind have in common (MaskFileError kinds, and the scan's own)
PROBLEM_MESSAGES = {
    "values": "masks with label values outside the class ids 0..{last} that are not the ignore value{ignore}",
    "rgb": (
        "RGB masks but no palette: add 'palette' (one [r, g, b] per class) to classes.yaml or "
        "data.folder, or convert the masks to single-channel class ids"
    ),
    "colours": "RGB masks with colours that are not in the palette",
    "mode": "masks in an image mode that is neither class ids (L, P, I;16) nor RGB",
    "size": "masks whose height and width differ from their image's",
    "labels": "label files the dataset cannot map to train ids",
    "unreadable": "files that cannot be read",
}


class DataProblems(ValueError):
    """The data check found problems; the message lists them with the files."""


@dataclass
class Problem:
    """One kind of problem: what it is, the files that have it and what was found in them."""

    message: str
    files: list[str] = field(default_factory=list)
    found: set = field(default_factory=set)

    def describe(self) -> str:
        """One line: the message, the values found, the count of files and the first few of them."""
        text = self.message
        if self.found:
            found = sorted(self.found)
            more = f" and {len(found) - SHOWN_FOUND} more" if len(found) > SHOWN_FOUND else ""
            shown = [list(item) if isinstance(item, tuple) else item for item in found[:SHOWN_FOUND]]
            text += f": found {shown}{more}"
        if self.files:
            more = f" and {len(self.files) - NAMED_FILES} more" if len(self.files) > NAMED_FILES else ""
            text += f"; {len(self.files)} file(s): " + "; ".join(self.files[:NAMED_FILES]) + more
        return text


@dataclass
class SplitScan:
    """One split: its size, how many masks were read, and their pixels per class [C] and ignored."""

    split: str
    size: int
    scanned: int
    class_pixels: np.ndarray
    ignored_pixels: int

    @property
    def pixels_read(self) -> int:
        return int(self.class_pixels.sum()) + self.ignored_pixels


@dataclass
class DataReport:
    """What the data check found: the classes, each split's scan, and the problems."""

    dataset: str  # its name, and its root when it has one
    info: DatasetInfo | None
    splits: list[SplitScan]
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems

    def sampling(self) -> str:
        """'read 200 of 2000 train masks and 50 of 50 val masks' plus how to read them all."""
        parts = [f"{scan.scanned} of {scan.size} {scan.split} masks" for scan in self.splits]
        sampled = any(scan.scanned < scan.size for scan in self.splits)
        note = " (evenly spaced; data.check_samples: 0 or --samples 0 reads all)" if sampled else ""
        return f"read {' and '.join(parts) or 'no masks'}{note}"

    def class_rows(self) -> list[tuple[str, str, list[tuple[int, float]]]]:
        """(id, name, [(pixels, % of the pixels read) per split]) per class, then one row "(ignored)"."""
        if self.info is None:
            return []
        rows = [
            (str(k), name, [int(scan.class_pixels[k]) for scan in self.splits])
            for k, name in enumerate(self.info.class_names)
        ]
        rows.append(("", "(ignored)", [scan.ignored_pixels for scan in self.splits]))
        totals = [max(1, scan.pixels_read) for scan in self.splits]
        return [
            (class_id, name, [(count, 100 * count / total) for count, total in zip(counts, totals)])
            for class_id, name, counts in rows
        ]

    def absent_classes(self, split: str = "train") -> list[str]:
        """Classes with no pixel in the masks read of `split` (worth knowing, not a problem)."""
        scan = next((scan for scan in self.splits if scan.split == split), None)
        if self.info is None or scan is None or not scan.scanned:
            return []
        return [name for name, count in zip(self.info.class_names, scan.class_pixels) if count == 0]

    def error_message(self) -> str:
        """The problems, one per line, under a line that says what was read."""
        lines = [f"data check of {self.dataset}: {len(self.problems)} problem(s); {self.sampling()}:"]
        lines += [f"  - {problem.describe()}" for problem in self.problems]
        return "\n".join(lines)


def sample_indices(size: int, samples: int) -> list[int]:
    """At most `samples` indices spread evenly over [0, size), first and last included; 0 = all."""
    if samples <= 0 or samples >= size:
        return list(range(size))
    return sorted({round(i * (size - 1) / max(1, samples - 1)) for i in range(samples)})


def check_dataset(
    name: str,
    builders: Mapping[str, Callable[[], Dataset]],
    info: Callable[[], DatasetInfo],
    samples: int,
) -> DataReport:
    """Builds each split (untransformed) and reads `samples` of its masks (0 = all): sizes against
    the images, values against the classes, pixels per class. Problems are collected, not raised."""
    problems: dict[str, Problem] = {}
    try:
        dataset_info = info()
    except (ValueError, FileNotFoundError) as error:
        return DataReport(name, None, [], [Problem(f"classes: {error}")])
    scans = []
    for split, build in builders.items():
        try:
            dataset = build()
        except (ValueError, FileNotFoundError) as error:
            problems[f"build {split}"] = Problem(f"{split} split: {error}")
            continue
        scans.append(_scan_split(split, dataset, dataset_info, samples, problems))
    return DataReport(name, dataset_info, scans, list(problems.values()))


def _scan_split(
    split: str, dataset: Dataset, info: DatasetInfo, samples: int, problems: dict[str, Problem]
) -> SplitScan:
    """Reads the sampled masks of one split, adding what is wrong with them to `problems`."""
    size = len(dataset)  # type: ignore[arg-type]
    indices = sample_indices(size, samples)
    pixels = np.zeros(info.num_classes, dtype=np.int64)
    ignored = 0
    for index in indices:
        mask = _read_mask(dataset, index, info, problems)
        if mask is None:
            continue
        labelled = mask[mask != IGNORE_INDEX]
        pixels += np.bincount(labelled, minlength=info.num_classes)[: info.num_classes]
        ignored += int(mask.size - labelled.size)
    return SplitScan(split, size, len(indices), pixels, ignored)


def _read_mask(dataset: Dataset, index: int, info: DatasetInfo, problems: dict[str, Problem]) -> np.ndarray | None:
    """Train ids [H, W] of sample `index`, or None after recording why it cannot be used."""
    pairs = getattr(dataset, "pairs", None)
    if pairs is None:  # generated data: the sample itself
        try:
            return np.asarray(dataset[index][1])
        except ValueError as error:
            _add(problems, "labels", info, f"sample {index}: {error}")
            return None
    image_path, mask_path = pairs[index]
    try:
        mask = np.asarray(dataset.load_label(index))  # type: ignore[attr-defined]
    except MaskFileError as error:
        _add(problems, error.kind, info, f"{mask_path}{_found_suffix(error)}", error.found, dataset)
        return None
    except (ValueError, OSError) as error:
        kind = "unreadable" if isinstance(error, OSError) else "labels"
        _add(problems, kind, info, str(error) if kind == "labels" else f"{mask_path}: {error}")
        return None
    try:
        with PILImage.open(image_path) as image:  # reads the header only
            width, height = image.size
    except OSError as error:
        _add(problems, "unreadable", info, f"{image_path}: {error}")
        return None
    if (height, width) != mask.shape:
        detail = f"{mask_path} is {mask.shape[1]}x{mask.shape[0]}, image {Path(image_path).name} is {width}x{height}"
        _add(problems, "size", info, detail)
        return None
    return mask


def _found_suffix(error: MaskFileError) -> str:
    """' (values [7, 9])' or ' (colours [[1, 2, 3]])' for a file's line in a problem."""
    if not error.found or error.kind not in ("values", "colours", "mode"):
        return ""
    found = [list(item) if isinstance(item, tuple) else item for item in error.found[:SHOWN_FOUND]]
    return f" ({error.kind} {found})"


def _add(
    problems: dict[str, Problem],
    kind: str,
    info: DatasetInfo,
    file_line: str,
    found: tuple = (),
    dataset: Dataset | None = None,
) -> None:
    """Adds one file (and what was found in it) to the problem of its kind."""
    if kind not in problems:
        classes = getattr(dataset, "classes", None)
        ignore = f" {classes.ignore_value}" if classes is not None else ""
        message = PROBLEM_MESSAGES[kind].format(last=info.num_classes - 1, ignore=ignore)
        problems[kind] = Problem(message)
    problems[kind].files.append(file_line)
    problems[kind].found.update(found)
