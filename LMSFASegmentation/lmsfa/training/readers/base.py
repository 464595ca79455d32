"""The training sample, the reader base class and the helpers that all readers share.

Coordinates follow ``lmsfa.results``: x to the right, y down, pixel (0, 0) at the top left,
boxes ``(x1, y1, x2, y2)`` in float pixels where the box of pixel (0, 0) alone is ``(0, 0, 1, 1)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np

from ...classes import ClassTable
from ...errors import InputError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class Sample:
    """One training image with its instances, all in the image's own pixel grid.

    ``image`` is (H, W, 3) uint8 RGB. ``masks`` is (N, H, W) bool, one raster mask per
    instance: instances may overlap, may have holes and may consist of several parts.
    ``classes`` is (N,) int64, the 0-based class index of the data set's class table.
    ``boxes`` is (N, 4) float32 ``x1, y1, x2, y2`` in pixels, the tight box of each mask.
    ``ignore_mask`` is an optional (H, W) bool region from COCO ``iscrowd`` annotations. It
    contains objects without instance masks, so a loss may leave those pixels out.
    """

    image: np.ndarray
    masks: np.ndarray
    classes: np.ndarray
    boxes: np.ndarray
    image_id: Union[int, str]
    path: Optional[Path] = None
    ignore_mask: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])

    def __len__(self) -> int:
        return int(self.masks.shape[0])


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """Return the tight (N, 4) float32 xyxy pixel boxes of (N, H, W) bool masks.

    An empty mask gets the box (0, 0, 0, 0).
    """
    count, height, width = masks.shape
    boxes = np.zeros((count, 4), dtype=np.float32)
    if count == 0:
        return boxes
    rows = masks.any(axis=2)
    cols = masks.any(axis=1)
    present = rows.any(axis=1)
    boxes[:, 0] = cols.argmax(axis=1)
    boxes[:, 1] = rows.argmax(axis=1)
    boxes[:, 2] = width - cols[:, ::-1].argmax(axis=1)
    boxes[:, 3] = height - rows[:, ::-1].argmax(axis=1)
    boxes[~present] = 0.0
    return boxes


def make_sample(
    image: np.ndarray,
    masks: list[np.ndarray],
    classes: list[int],
    image_id: Union[int, str],
    path: Optional[Path],
    ignore_mask: Optional[np.ndarray] = None,
) -> Sample:
    """Stack per-instance masks into a :class:`Sample` and derive the boxes from the masks."""
    height, width = image.shape[:2]
    if masks:
        stacked = np.stack(masks).astype(bool, copy=False)
    else:
        stacked = np.zeros((0, height, width), dtype=bool)
    return Sample(
        image=image,
        masks=stacked,
        classes=np.asarray(classes, dtype=np.int64).reshape(-1),
        boxes=boxes_from_masks(stacked),
        image_id=image_id,
        path=path,
        ignore_mask=ignore_mask,
    )


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB; grey images are repeated to three channels.

    16-bit images are scaled to 8 bits. Raises :class:`InputError` when the file is
    missing or cannot be decoded.
    """
    if not path.is_file():
        raise InputError(f"image not found: {path}; check the image folder of the data set")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InputError(f"cannot decode image {path}: the file is not a readable image")
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise InputError(f"image {path} has pixel type {image.dtype}; convert it to 8-bit RGB")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label_map(path: Path) -> np.ndarray:
    """Read a single-channel label map as a 2-D integer array.

    A three-channel file is accepted only when its channels are equal (a grey map saved
    as RGB), because colour-coded maps need a colour table that this reader does not take.
    """
    if not path.is_file():
        raise InputError(f"label map not found: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    labels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if labels is None:
        raise InputError(f"cannot decode label map {path}: the file is not a readable image")
    if labels.ndim == 3:
        if labels.shape[2] == 4:
            labels = labels[:, :, :3]
        if not (np.array_equal(labels[:, :, 0], labels[:, :, 1]) and np.array_equal(labels[:, :, 0], labels[:, :, 2])):
            raise InputError(
                f"label map {path} is a colour image; save one label value per pixel as a single-channel PNG"
            )
        labels = labels[:, :, 0]
    return labels


def find_image(folder: Path, stem: str) -> Optional[Path]:
    """Return the image file ``folder/stem.<image suffix>`` when exactly one exists."""
    for suffix in IMAGE_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


class InstanceDataset:
    """Base class of the readers: a sized, indexable sequence of :class:`Sample`.

    ``class_table`` names the classes in model order. ``flip_map`` maps a class index to
    the index of its mirror-image class, such as left and right teeth, and lists only
    classes that change. ``side_specific`` is true when some classes depend on the side,
    because a flip without ``flip_map`` would then teach wrong labels.
    """

    class_table: ClassTable
    flip_map: Optional[dict[int, int]] = None
    side_specific: bool = False

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        raise NotImplementedError

    def __iter__(self):
        for index in range(len(self)):
            yield self[index]

    def _check_index(self, index: int) -> int:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"sample index must be an integer, got {type(index).__name__}")
        count = len(self)
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError(f"sample index {index} is out of range for a data set of {count} images")
        return int(index)
