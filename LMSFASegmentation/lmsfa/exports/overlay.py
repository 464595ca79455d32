"""Teaching material: an overlay video (MPEG-4 Part 2 in .mp4) and a contact-sheet PNG.

Masks are blended over the frame in their class colour, outlined, and a legend names
the classes by colour. The frame index is printed in the top-right corner.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from ..classes import ClassTable
from ..errors import InputError, LmsfaError
from ..progress import Progress
from ..results import Instance
from .atomic import atomic_file
from .common import ExportReport, non_empty, write_png
from .inputs import ExportFrame, ExportInput

logger = logging.getLogger(__name__)

DEFAULT_FPS = 5.0
MASK_OPACITY = 0.45
FONT = cv2.FONT_HERSHEY_SIMPLEX


def draw_instances(image: np.ndarray, instances: Sequence[Instance], class_table: ClassTable,
                   opacity: float = MASK_OPACITY) -> np.ndarray:
    """Return a copy of an (H, W, 3) uint8 RGB frame with the masks blended in and outlined in class colours."""
    canvas = image.astype(np.float32)
    outlines = []
    for instance in instances:
        mask = np.asarray(instance.mask, dtype=bool)
        color = np.array(class_table[instance.class_id].color, dtype=np.float32)
        canvas[mask] = canvas[mask] * (1.0 - opacity) + color * opacity
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        outlines.append((contours, tuple(int(v) for v in color)))
    result = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    thickness = max(1, round(min(image.shape[:2]) / 300))
    for contours, color in outlines:
        cv2.drawContours(result, contours, -1, color, thickness, cv2.LINE_AA)
    return result


def _text_scale(height: int) -> float:
    return max(0.35, height / 900.0)


def draw_legend(image: np.ndarray, class_table: ClassTable, class_ids: Sequence[int],
                origin: tuple[int, int] = (8, 8), scale: Optional[float] = None) -> None:
    """Draw a colour swatch and the name of each class of ``class_ids`` in place, on a dark box.

    ``scale`` is the OpenCV font scale; by default it follows the image height.
    """
    if not class_ids:
        return
    scale = scale or _text_scale(image.shape[0])
    line_height = int(28 * scale / 0.6)
    swatch = int(line_height * 0.7)
    widths = [cv2.getTextSize(class_table[k].name, FONT, scale, 1)[0][0] for k in class_ids]
    x0, y0 = origin
    box_width = swatch + 12 + max(widths) + 8
    box_height = line_height * len(class_ids) + 8
    region = image[y0 : y0 + box_height, x0 : x0 + box_width]
    region[:] = (region.astype(np.float32) * 0.35).astype(np.uint8)
    for row, class_id in enumerate(class_ids):
        top = y0 + 4 + row * line_height
        color = tuple(int(v) for v in class_table[class_id].color)
        cv2.rectangle(image, (x0 + 4, top + 2), (x0 + 4 + swatch, top + 2 + swatch), color, -1)
        cv2.putText(image, class_table[class_id].name, (x0 + swatch + 12, top + swatch), FONT, scale,
                    (255, 255, 255), 1, cv2.LINE_AA)


def draw_frame_label(image: np.ndarray, text: str) -> None:
    """Write ``text`` in the top-right corner of an RGB image, white on a dark box."""
    scale = _text_scale(image.shape[0])
    (width, height), baseline = cv2.getTextSize(text, FONT, scale, 1)
    x = image.shape[1] - width - 10
    cv2.rectangle(image, (x - 4, 4), (image.shape[1] - 4, 12 + height + baseline), (0, 0, 0), -1)
    cv2.putText(image, text, (x, 8 + height), FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)


def _require_images(export_input: ExportInput, kind: str) -> None:
    if not export_input.has_images:
        raise InputError(f"the {kind} export draws masks over the frames, but the input has no frames: pass the frames too")


def _frame_rate(frames: Sequence[ExportFrame]) -> Optional[float]:
    if len(frames) < 2 or frames[0].timestamp_s is None or frames[1].timestamp_s is None:
        return None
    interval = frames[1].timestamp_s - frames[0].timestamp_s
    return 1.0 / interval if interval > 0 else None


def export_overlay_video(
    export_input: ExportInput,
    output: Path,
    first: Optional[int] = None,
    last: Optional[int] = None,
    overwrite: bool = False,
    progress: Optional[Progress] = None,
    fps: Optional[float] = None,
) -> ExportReport:
    """Write an ``.mp4`` (MPEG-4 Part 2, OpenCV's ``mp4v``) of the frames ``first..last`` with their masks.

    Args:
        fps: frames per second of the video; by default the rate of the first two
            exported frames' timestamps, else 5.
    """
    output = Path(output)
    if output.suffix.lower() != ".mp4":
        raise InputError(f"{output}: the overlay video file name must end with .mp4")
    if fps is not None and not fps > 0:
        raise InputError(f"invalid frame rate {fps!r}: use a positive number of frames per second")
    _require_images(export_input, "overlay video")
    progress = progress or Progress()
    report = ExportReport("overlay", output)
    total = export_input.count(first, last)
    class_ids = list(range(len(export_input.class_table)))
    frames = export_input.frames(first, last)
    head = list(itertools.islice(frames, 2))
    if fps is None:
        fps = _frame_rate(head) or DEFAULT_FPS
    with atomic_file(output, overwrite) as temp_path:
        writer = None
        try:
            for position, frame in enumerate(itertools.chain(head, frames)):
                progress.check_cancelled()
                height, width = frame.shape
                if writer is None:
                    writer = cv2.VideoWriter(str(temp_path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
                    if not writer.isOpened():
                        raise LmsfaError(f"OpenCV could not open an MPEG-4 video writer for {output}")
                    first_shape = frame.shape
                elif frame.shape != first_shape:
                    raise InputError(f"frame {frame.index} is {width}x{height}, but a video needs one frame size")
                instances = non_empty(frame.instances, report, frame.index)
                picture = draw_instances(frame.image, instances, export_input.class_table)
                draw_legend(picture, export_input.class_table, class_ids)
                draw_frame_label(picture, f"frame {frame.index}")
                writer.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
                report.instances += len(instances)
                report.frame_indices.append(frame.index)
                progress.update(position + 1, total, f"overlay video: frame {frame.index}")
        finally:
            if writer is not None:
                writer.release()
    logger.info("wrote %d frames at %.3g frames per second to %s", report.frames, fps, output)
    return report


def export_contact_sheet(
    export_input: ExportInput,
    output: Path,
    first: Optional[int] = None,
    last: Optional[int] = None,
    overwrite: bool = False,
    progress: Optional[Progress] = None,
    max_tiles: int = 16,
    columns: int = 4,
    tile_width: int = 256,
) -> ExportReport:
    """Write a PNG grid of up to ``max_tiles`` frames from ``first..last``, evenly spread, with a class legend.

    Args:
        max_tiles: the maximum number of frames on the sheet.
        columns: tiles per row.
        tile_width: width of each tile in pixels; the height follows the frame's aspect ratio.
    """
    output = Path(output)
    if output.suffix.lower() != ".png":
        raise InputError(f"{output}: the contact sheet file name must end with .png")
    for name, value in (("max_tiles", max_tiles), ("columns", columns), ("tile_width", tile_width)):
        if not isinstance(value, int) or value < 1:
            raise InputError(f"invalid {name} {value!r}: use a whole number of 1 or more")
    _require_images(export_input, "contact sheet")
    progress = progress or Progress()
    report = ExportReport("contact-sheet", output)
    total = export_input.count(first, last)
    # With a known frame count only the chosen frames are drawn. Otherwise every frame
    # is drawn as a tile and the tiles are thinned out at the end.
    chosen = None
    if total:
        chosen = set(np.linspace(0, total - 1, min(total, max_tiles)).round().astype(int).tolist())
    tiles, present = [], set()
    for position, frame in enumerate(export_input.frames(first, last)):
        progress.check_cancelled()
        report.frame_indices.append(frame.index)
        if chosen is not None and position not in chosen:
            continue
        instances = non_empty(frame.instances, report, frame.index)
        picture = draw_instances(frame.image, instances, export_input.class_table)
        height = max(1, round(frame.shape[0] * tile_width / frame.shape[1]))
        tile = cv2.resize(picture, (tile_width, height), interpolation=cv2.INTER_AREA)
        draw_frame_label(tile, f"frame {frame.index}")
        tiles.append((tile, {instance.class_id for instance in instances}, len(instances)))
        progress.update(position + 1, total, f"contact sheet: frame {frame.index}")
    if chosen is None and len(tiles) > max_tiles:
        keep = np.linspace(0, len(tiles) - 1, max_tiles).round().astype(int)
        tiles = [tiles[k] for k in keep]
    report.drawn_frames = len(tiles)
    for _, classes, count in tiles:
        present |= classes
        report.instances += count

    sheet = _assemble(tiles, columns, export_input.class_table, sorted(present))
    with atomic_file(output, overwrite) as temp_path:
        write_png(temp_path, sheet, rgb=True)
    return report


def _assemble(tiles: list, columns: int, class_table: ClassTable, class_ids: list[int]) -> np.ndarray:
    """Place the tiles in a grid with a 4-pixel gap and a legend strip below."""
    gap = 4
    tile_height = max(tile.shape[0] for tile, _, _ in tiles)
    tile_width = tiles[0][0].shape[1]
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    scale = _text_scale(tile_height * 2)
    legend_height = int(28 * scale / 0.6) * len(class_ids) + 16 if class_ids else 0
    sheet_height = rows * (tile_height + gap) + gap + legend_height
    sheet_width = columns * (tile_width + gap) + gap
    legend_width = max([cv2.getTextSize(class_table[k].name, FONT, scale, 1)[0][0] for k in class_ids] or [0]) + 60
    sheet = np.full((sheet_height, max(sheet_width, legend_width), 3), 32, dtype=np.uint8)
    for number, (tile, _, _) in enumerate(tiles):
        row, column = divmod(number, columns)
        y = gap + row * (tile_height + gap)
        x = gap + column * (tile_width + gap)
        sheet[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    if class_ids:
        legend = sheet[rows * (tile_height + gap) + gap :]
        draw_legend(legend, class_table, class_ids, origin=(gap, 4), scale=scale)
    return sheet
