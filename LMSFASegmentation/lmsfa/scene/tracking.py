"""Instance identity over time: match instances of one class between frames by mask IoU.

Pure numpy, usable without MRML. The tracker numbers tracks per class (1, 2, 3, ...), so
the scene writer can name a segment "<class name> <track id>" and "nerve 1" keeps its
name on every frame where it stays matched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..errors import InputError
from ..results import Instance

logger = logging.getLogger(__name__)


@dataclass
class _Track:
    class_id: int
    track_id: int
    mask: np.ndarray
    box: tuple[int, int, int, int]
    area: int
    last_seen: int


def mask_box(mask: np.ndarray) -> Optional[tuple[int, int, int, int]]:
    """Return the tight integer box ``(x1, y1, x2, y2)`` of a boolean (H, W) mask, end exclusive.

    Returns ``None`` for an empty mask.
    """
    # max over a uint8 view is faster than any() over bool, and the column search
    # needs only the rows that hold the mask.
    values = np.ascontiguousarray(mask, dtype=bool).view(np.uint8)
    rows = np.flatnonzero(values.max(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(values[rows[0] : rows[-1] + 1].max(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def mask_iou(
    mask_a: np.ndarray,
    box_a: Optional[tuple[int, int, int, int]],
    area_a: int,
    mask_b: np.ndarray,
    box_b: Optional[tuple[int, int, int, int]],
    area_b: int,
) -> float:
    """Return the intersection over union of two boolean (H, W) masks of the same shape.

    The boxes (from :func:`mask_box`) and areas (pixel counts) are precomputed by the
    caller, so the intersection is counted only inside the overlap of the two boxes.
    """
    if box_a is None or box_b is None:
        return 0.0
    x1 = max(box_a[0], box_b[0])
    y1 = max(box_a[1], box_b[1])
    x2 = min(box_a[2], box_b[2])
    y2 = min(box_a[3], box_b[3])
    if x1 >= x2 or y1 >= y2:
        return 0.0
    intersection = int(np.count_nonzero(mask_a[y1:y2, x1:x2] & mask_b[y1:y2, x1:x2]))
    union = area_a + area_b - intersection
    return intersection / union if union > 0 else 0.0


class IouTracker:
    """Keep instance identities over consecutive frames, per class, by greedy mask IoU.

    Each call to :meth:`update` matches the frame's instances against the tracks of the
    same class seen within the last ``max_missed_frames + 1`` calls. Pairs are taken in
    order of decreasing IoU, and a pair needs an IoU of at least ``min_iou``. A matched
    instance gets the track's id. An unmatched instance starts a new track with the next
    unused id of its class, so an id is never given to a second structure.

    Args:
        min_iou: minimum mask IoU in (0, 1] for two instances to be the same structure.
        max_missed_frames: how many calls a track may go unmatched (for example a missed
            detection) and still be matched again afterwards.
    """

    def __init__(self, min_iou: float = 0.3, max_missed_frames: int = 5):
        if not 0.0 < min_iou <= 1.0:
            raise InputError(f"min_iou must be in (0, 1], got {min_iou}")
        if max_missed_frames < 0:
            raise InputError(f"max_missed_frames must be 0 or more, got {max_missed_frames}")
        self.min_iou = float(min_iou)
        self.max_missed_frames = int(max_missed_frames)
        self._tracks: list[_Track] = []
        self._next_id: dict[int, int] = {}
        self._step = 0
        self._frame_shape: Optional[tuple[int, int]] = None

    def reset(self) -> None:
        """Forget all tracks and restart the numbering of every class at 1."""
        self._tracks.clear()
        self._next_id.clear()
        self._step = 0
        self._frame_shape = None

    def update(self, instances: Sequence[Instance]) -> list[int]:
        """Set ``track_id`` on each instance of one frame and return the ids in input order.

        Args:
            instances: the instances of the next frame, with boolean (H, W) masks of one
                frame size. Their ``track_id`` is overwritten.

        Returns:
            The per-class track id of each instance (1 for the first track of a class).
        """
        self._step += 1
        self._check_shapes(instances)
        self._tracks = [t for t in self._tracks if self._step - t.last_seen <= self.max_missed_frames + 1]

        masks = [np.asarray(inst.mask, dtype=bool) for inst in instances]
        boxes = [mask_box(mask) for mask in masks]
        areas = [int(np.count_nonzero(mask)) for mask in masks]

        pairs = []
        for i, inst in enumerate(instances):
            for j, track in enumerate(self._tracks):
                if track.class_id != inst.class_id:
                    continue
                iou = mask_iou(masks[i], boxes[i], areas[i], track.mask, track.box, track.area)
                if iou >= self.min_iou:
                    pairs.append((iou, i, j))
        pairs.sort(key=lambda pair: pair[0], reverse=True)

        assigned: dict[int, int] = {}
        used_tracks: set[int] = set()
        for _, i, j in pairs:
            if i in assigned or j in used_tracks:
                continue
            assigned[i] = j
            used_tracks.add(j)

        ids = []
        for i, inst in enumerate(instances):
            if i in assigned:
                track = self._tracks[assigned[i]]
            else:
                track = _Track(inst.class_id, self._new_id(inst.class_id), masks[i], boxes[i], areas[i], self._step)
                self._tracks.append(track)
            track.mask, track.box, track.area, track.last_seen = masks[i], boxes[i], areas[i], self._step
            inst.track_id = track.track_id
            ids.append(track.track_id)
        return ids

    def _new_id(self, class_id: int) -> int:
        track_id = self._next_id.get(class_id, 1)
        self._next_id[class_id] = track_id + 1
        return track_id

    def _check_shapes(self, instances: Sequence[Instance]) -> None:
        for inst in instances:
            shape = tuple(np.shape(inst.mask))
            if len(shape) != 2:
                raise InputError(f"instance mask must be a 2-D (H, W) array, got shape {shape}")
            if self._frame_shape is None:
                self._frame_shape = shape
            elif shape != self._frame_shape:
                raise InputError(
                    f"instance mask shape {shape} differs from the earlier frames' {self._frame_shape}: "
                    "call reset() before tracking a video of another size"
                )
