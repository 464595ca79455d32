"""Pieces that several export formats share: the report, file names, label maps and PNG files."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from ..classes import ClassTable
from ..errors import LmsfaError
from ..results import Instance

logger = logging.getLogger(__name__)

CLASS_TABLE_FILE = "classes.json"


@dataclass
class ExportReport:
    """The outputs, counts and notices of one export, including what the format could not keep.

    Attributes:
        kind: the format name (``coco``, ``yolo``, ...).
        path: the output file or folder.
        frame_indices: source indices of the exported frames, in order.
        instances: number of instances written.
        skipped_empty: instances with an empty mask that were left out.
        mask_pixels: pixels of all written instance masks, counted per instance.
        reassigned_pixels: for single label map formats, the instance pixels that carry
            another class's label value because a smaller overlapping instance of that
            class is drawn over them.
        polygon_pixels_lost: for polygon formats, instance pixels outside their polygon.
        polygon_pixels_added: for polygon formats, polygon pixels outside the instance
            (filled holes and the one-pixel bridges between parts).
        notices: sentences for the user about what changed or was left out.
        drawn_frames: for pictures that show a selection of the frames (contact sheet),
            the number of frames drawn. ``instances`` then counts only the instances of those frames.
    """

    kind: str
    path: Path
    frame_indices: list[int] = field(default_factory=list)
    instances: int = 0
    skipped_empty: int = 0
    mask_pixels: int = 0
    reassigned_pixels: int = 0
    polygon_pixels_lost: int = 0
    polygon_pixels_added: int = 0
    notices: list[str] = field(default_factory=list)
    drawn_frames: Optional[int] = None

    @property
    def frames(self) -> int:
        return len(self.frame_indices)

    def notice(self, message: str) -> None:
        """Record a notice for the user and log it as a warning."""
        self.notices.append(message)
        logger.warning("%s export: %s", self.kind, message)

    def summary(self) -> str:
        """Return a few lines that describe the export, for the CLI and the Slicer module."""
        if self.drawn_frames is None:
            lines = [f"{self.kind}: wrote {self.instances} instances of {self.frames} frames to {self.path}"]
        else:
            lines = [
                f"{self.kind}: drew {self.instances} instances on {self.drawn_frames} of {self.frames} frames "
                f"in {self.path}"
            ]
        if self.skipped_empty:
            lines.append(f"left out {self.skipped_empty} instances with empty masks")
        if self.reassigned_pixels:
            share = self.reassigned_pixels / max(self.mask_pixels, 1)
            lines.append(
                f"{self.reassigned_pixels} overlapping instance pixels ({share:.2%}) changed owner in the label maps"
            )
        if self.polygon_pixels_lost or self.polygon_pixels_added:
            lines.append(
                f"polygons lost {self.polygon_pixels_lost} and added {self.polygon_pixels_added} pixels "
                f"of {self.mask_pixels} mask pixels ({self.polygon_pixels_lost / max(self.mask_pixels, 1):.2%} lost)"
            )
        lines.extend(self.notices)
        return "\n".join(lines)


def safe_name(name: str) -> str:
    """Return ``name`` with every run of characters other than letters, digits, ``.`` and ``-`` as ``_``."""
    return re.sub(r"[^0-9A-Za-z.-]+", "_", name).strip("_") or "frames"


def frame_stem(name: str, index: int) -> str:
    """Return the file stem of one frame, for example ``seq4_000012`` for frame 12 of ``seq4``."""
    return f"{safe_name(name)}_{index:06d}"


def label_value(class_id: int) -> int:
    """Return the label value of a class in label maps: its class id plus 1, so 0 stays background.

    The value depends only on the class's position in the model's class table, so a
    class without any instance, or one deleted from a scene, never renumbers the others.
    """
    return int(class_id) + 1


def class_label_map(
    instances: Sequence[Instance], shape: tuple[int, int], class_count: int
) -> tuple[np.ndarray, int]:
    """Paint instances into one class label map.

    Instances are painted largest first, so where instances overlap the smaller one (for
    example an instrument over tissue) keeps its pixels.

    Returns:
        ``(labels, reassigned)``: ``labels`` is (H, W) uint8, or uint16 for more than
        254 classes, with :func:`label_value` per pixel and 0 for background.
        ``reassigned`` counts instance pixels that carry another class's value.
    """
    dtype = np.uint8 if class_count < 255 else np.uint16
    labels = np.zeros(shape, dtype=dtype)
    masks = [np.asarray(instance.mask, dtype=bool) for instance in instances]
    order = sorted(range(len(instances)), key=lambda k: -int(masks[k].sum()))
    for k in order:
        labels[masks[k]] = label_value(instances[k].class_id)
    reassigned = 0
    for instance, mask in zip(instances, masks):
        reassigned += int(np.count_nonzero(labels[mask] != label_value(instance.class_id)))
    return labels, reassigned


def write_png(path: Path, image: np.ndarray, rgb: bool = False) -> None:
    """Write a grey (H, W) or, with ``rgb``, an (H, W, 3) RGB image as a lossless PNG.

    Raises:
        LmsfaError: OpenCV could not encode the image.
    """
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if rgb else image
    ok, data = cv2.imencode(".png", pixels)
    if not ok:
        raise LmsfaError(f"encoding {path.name} as PNG failed")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.tobytes())


def write_class_table(path: Path, class_table: ClassTable, extra: Optional[dict] = None) -> None:
    """Write the sidecar class table: ``ClassTable.to_dict()`` plus each class's label value."""
    data = class_table.to_dict()
    for class_id, entry in enumerate(data["classes"]):
        entry["label_value"] = label_value(class_id)
    data["background_label_value"] = 0
    if extra:
        data.update(extra)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def non_empty(instances: Sequence[Instance], report: ExportReport, frame_index: int) -> list[Instance]:
    """Return the instances with at least one pixel; count the others in ``report.skipped_empty``."""
    kept = [instance for instance in instances if np.any(instance.mask)]
    if len(kept) < len(instances):
        report.skipped_empty += len(instances) - len(kept)
        logger.debug("frame %d: left out %d instances with empty masks", frame_index, len(instances) - len(kept))
    return kept
