"""One picture per validation image: image | ground truth | each model's prediction, with a legend.

Pure numpy and PIL (no MLflow): the loop and the sweep render with it, the tracking layer logs the
result. Tiles sit side by side under their titles at `tile_box(k, ...)`; the legend below names the
colour of every class that appears in a tile (and of ignored pixels, when there are some).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from hwd_tune.data.palette import Palette, colorize

DISPLAY_MAX_SIDE = 512  # longer side of a tile: larger images are shrunk for display (labels: nearest)
MARGIN = 4  # pixels around the panel and between legend entries
GAP = 4  # pixels between tiles
TITLE_HEIGHT = 16  # the row of tile titles above the tiles
LEGEND_ROW_HEIGHT = 16
SWATCH = 12  # side of a legend's colour square
BACKGROUND = (255, 255, 255)
TEXT_COLOUR = (0, 0, 0)


def display_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) of a tile showing an image of this size: at most DISPLAY_MAX_SIDE on its longer side."""
    scale = min(1.0, DISPLAY_MAX_SIDE / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def tile_box(index: int, tile_height: int, tile_width: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of tile `index` (0 = the image) in a panel, right/bottom exclusive."""
    left = MARGIN + index * (tile_width + GAP)
    top = MARGIN + TITLE_HEIGHT
    return left, top, left + tile_width, top + tile_height


def render_panel(
    image: np.ndarray | torch.Tensor,
    columns: Sequence[tuple[str, np.ndarray | torch.Tensor]],
    palette: Palette,
    class_names: Sequence[str],
) -> np.ndarray:
    """[H', W', 3] uint8 panel: `image` ([H, W, 3] or [3, H, W] uint8), then each (title, class ids
    [H, W]) of `columns` painted with `palette` (e.g. ground truth, teacher, student), and a legend."""
    pixels = _as_hwc_uint8(image)
    height, width = pixels.shape[:2]
    tile_height, tile_width = display_size(height, width)
    tiles = [("image", _shrunk(pixels, tile_height, tile_width, Image.Resampling.BILINEAR))]
    present: set[int] = set()
    for title, labels in columns:
        ids = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        if ids.shape != (height, width):
            raise ValueError(f"column {title!r}: labels of shape {ids.shape}, expected the image's {(height, width)}")
        present.update(int(value) for value in np.unique(ids))
        tiles.append((title, _shrunk(colorize(ids, palette), tile_height, tile_width, Image.Resampling.NEAREST)))

    font = ImageFont.load_default()
    entries = _legend_entries(present, palette, class_names)
    entry_widths = [SWATCH + MARGIN + _text_width(font, name) + 2 * MARGIN for name, _ in entries]
    tiles_right = tile_box(len(tiles) - 1, tile_height, tile_width)[2]
    panel_width = max(tiles_right, max(entry_widths, default=0)) + MARGIN
    rows = _legend_rows(entry_widths, panel_width - 2 * MARGIN)
    legend_top = MARGIN + TITLE_HEIGHT + tile_height + MARGIN
    panel_height = legend_top + len(rows) * LEGEND_ROW_HEIGHT + MARGIN

    panel = Image.new("RGB", (panel_width, panel_height), BACKGROUND)
    draw = ImageDraw.Draw(panel)
    for index, (title, tile) in enumerate(tiles):
        left, top, _, _ = tile_box(index, tile_height, tile_width)
        panel.paste(_title_strip(title, tile_width, font), (left, MARGIN))  # cut at the tile's width
        panel.paste(Image.fromarray(tile), (left, top))
    for row_index, row in enumerate(rows):
        x, y = MARGIN, legend_top + row_index * LEGEND_ROW_HEIGHT
        for entry in row:
            name, colour = entries[entry]
            draw.rectangle((x, y, x + SWATCH - 1, y + SWATCH - 1), fill=colour, outline=TEXT_COLOUR)
            draw.text((x + SWATCH + MARGIN, y), name, fill=TEXT_COLOUR, font=font)
            x += entry_widths[entry]
    return np.asarray(panel)


def _as_hwc_uint8(image: np.ndarray | torch.Tensor) -> np.ndarray:
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3] or [3, H, W], got {array.dtype} {array.shape}")
    return np.ascontiguousarray(array)


def _shrunk(picture: np.ndarray, height: int, width: int, resample: Image.Resampling) -> np.ndarray:
    if picture.shape[:2] == (height, width):
        return picture
    return np.asarray(Image.fromarray(picture).resize((width, height), resample))


def _title_strip(title: str, width: int, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> Image.Image:
    strip = Image.new("RGB", (width, TITLE_HEIGHT - 2), BACKGROUND)
    ImageDraw.Draw(strip).text((0, 0), title, fill=TEXT_COLOUR, font=font)
    return strip


def _legend_entries(
    present: set[int], palette: Palette, class_names: Sequence[str]
) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, colour) of each class id present, in id order, then "ignored" if any pixel is."""
    known = sorted(value for value in present if 0 <= value < palette.num_classes)
    entries = [(str(class_names[value]), tuple(int(c) for c in palette.colours[value])) for value in known]
    if len(known) < len(present):
        entries.append(("ignored", tuple(palette.ignore_colour)))
    return entries


def _legend_rows(widths: list[int], room: int) -> list[list[int]]:
    """Entry indices per legend row, filled left to right within `room` pixels (one entry at least)."""
    rows: list[list[int]] = []
    used = room
    for index, width in enumerate(widths):
        if used + width > room:
            rows.append([])
            used = 0
        rows[-1].append(index)
        used += width
    return rows


def _text_width(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return int(right - left)
