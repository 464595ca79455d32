"""Ultralytics YOLO-seg data set: ``data.yaml``, ``images/<stem>.png`` and ``labels/<stem>.txt``.

Each label line is ``class x1 y1 x2 y2 ...``: the class index and one polygon, with x
divided by the image width and y by the height. The points are the pixel indices of
the mask's boundary pixels, the convention that the project's YOLO-seg reader assumes.

A line contains one polygon without holes, so two kinds of instance change shape:

- Holes are filled. Their pixels are counted in ``polygon_pixels_added``.
- An instance of several separate parts stays one line, because the parts are joined
  into one polygon by zero-width bridges. A bridge runs from the nearest point of the
  polygon so far to the nearest point of the next part, and back. Filling the polygon
  draws each bridge as a one-pixel line, counted in ``polygon_pixels_added`` too.

Every pixel that changes is measured by filling each polygon with OpenCV, as the
project's YOLO-seg reader does, and comparing it with the mask.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import yaml

from ..progress import Progress
from .atomic import atomic_folder
from .common import ExportReport, frame_stem, non_empty, write_png
from .inputs import ExportInput

logger = logging.getLogger(__name__)

COORDINATE_DECIMALS = 6


def mask_polygon(mask: np.ndarray) -> np.ndarray:
    """Return one closed polygon that covers a boolean (H, W) mask, as an (P, 2) int array of (x, y) pixels.

    Outer boundaries only (holes are filled). Several parts are joined by bridges, the
    largest part first. A part of one or two pixels repeats its points so that the
    polygon has at least 3 points.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    parts = [contour.reshape(-1, 2) for contour in contours]
    parts.sort(key=lambda part: (cv2.contourArea(part), len(part)), reverse=True)
    polygon = parts[0]
    for part in parts[1:]:
        polygon = _bridge(polygon, part)
    while len(polygon) < 3:
        polygon = np.concatenate([polygon, polygon[:1]])
    return polygon


def _bridge(polygon: np.ndarray, part: np.ndarray) -> np.ndarray:
    """Join ``part`` to ``polygon`` with a zero-width bridge between their nearest points."""
    distances = ((polygon[:, None, :].astype(np.int64) - part[None, :, :]) ** 2).sum(axis=2)
    i, j = np.unravel_index(int(distances.argmin()), distances.shape)
    # Walk the polygon to point i, cross to part point j, go once around the part back to
    # j, cross back to point i and finish the polygon.
    around_part = np.concatenate([part[j:], part[: j + 1]])
    return np.concatenate([polygon[: i + 1], around_part, polygon[i:]])


def fill_polygon(polygon: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise a polygon of (x, y) pixel indices as a boolean (H, W) mask, boundary included."""
    filled = np.zeros(shape, dtype=np.uint8)
    cv2.fillPoly(filled, [polygon.astype(np.int32)], 1)
    return filled.astype(bool)


def polygon_line(class_id: int, polygon: np.ndarray, shape: tuple[int, int]) -> str:
    height, width = shape
    normalised = polygon.astype(np.float64) / (width, height)
    values = " ".join(f"{value:.{COORDINATE_DECIMALS}f}" for value in normalised.ravel())
    return f"{class_id} {values}"


def data_yaml(export_input: ExportInput) -> str:
    """Return the ``data.yaml`` text. ``train`` and ``val`` both list every exported frame."""
    names = {class_id: info.name for class_id, info in enumerate(export_input.class_table.classes)}
    body = yaml.safe_dump(
        {"path": ".", "train": "images", "val": "images", "nc": len(names), "names": names},
        sort_keys=False, allow_unicode=True,
    )
    header = (
        f"# YOLO-seg data set exported from {export_input.name!r} by lmsfa.\n"
        "# train and val both list all frames: move some images and labels into a\n"
        "# separate folder and point val at it before training.\n"
    )
    return header + body


def export_yolo(
    export_input: ExportInput,
    output: Path,
    first: Optional[int] = None,
    last: Optional[int] = None,
    overwrite: bool = False,
    progress: Optional[Progress] = None,
) -> ExportReport:
    """Write a YOLO-seg data set of the frames ``first..last`` into the folder ``output``.

    The report counts the pixels that each polygon loses or adds compared with its mask.
    """
    progress = progress or Progress()
    report = ExportReport("yolo", Path(output))
    total = export_input.count(first, last)
    holes = multi_part = 0
    with atomic_folder(output, overwrite) as folder:
        (folder / "images").mkdir()
        (folder / "labels").mkdir()
        for position, frame in enumerate(export_input.frames(first, last)):
            progress.check_cancelled()
            stem = frame_stem(export_input.name, frame.index)
            if frame.image is not None:
                write_png(folder / "images" / f"{stem}.png", frame.image, rgb=True)
            lines = []
            for instance in non_empty(frame.instances, report, frame.index):
                mask = np.asarray(instance.mask, dtype=bool)
                polygon = mask_polygon(mask)
                filled = fill_polygon(polygon, frame.shape)
                report.mask_pixels += int(np.count_nonzero(mask))
                report.polygon_pixels_lost += int(np.count_nonzero(mask & ~filled))
                report.polygon_pixels_added += int(np.count_nonzero(filled & ~mask))
                parts, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
                outer = sum(1 for entry in hierarchy[0] if entry[3] < 0)
                multi_part += outer > 1
                holes += outer < len(parts)
                lines.append(polygon_line(instance.class_id, polygon, frame.shape))
                report.instances += 1
            (folder / "labels" / f"{stem}.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
            report.frame_indices.append(frame.index)
            progress.update(position + 1, total, f"YOLO-seg: frame {frame.index}")
        (folder / "data.yaml").write_text(data_yaml(export_input), encoding="utf-8")
    if not export_input.has_images:
        report.notice("the input has no frames, so images/ is empty; copy the frames there before training")
    if holes:
        report.notice(f"{holes} of {report.instances} instances have holes, which their polygons fill")
    if multi_part:
        report.notice(
            f"{multi_part} of {report.instances} instances have several parts, joined into one polygon each "
            "by one-pixel bridges"
        )
    return report
