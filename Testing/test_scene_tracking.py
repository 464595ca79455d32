"""Tests of the IoU tracker that keeps instance identities over frames (pure numpy, no MRML)."""

from __future__ import annotations

import numpy as np
import pytest

from lmsfa.errors import InputError
from lmsfa.results import Instance
from lmsfa.scene.tracking import IouTracker, mask_box, mask_iou

SHAPE = (64, 80)


def disc(class_id: int, cx: float, cy: float, radius: float, shape=SHAPE) -> Instance:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    mask = (cols - cx) ** 2 + (rows - cy) ** 2 <= radius**2
    box = np.array([cx - radius, cy - radius, cx + radius, cy + radius], dtype=np.float32)
    return Instance(class_id, f"class {class_id}", 0.9, box, mask)


def test_mask_box_is_tight_and_end_exclusive():
    mask = np.zeros(SHAPE, dtype=bool)
    mask[10:20, 30:35] = True
    assert mask_box(mask) == (30, 10, 35, 20)


def test_mask_box_of_empty_mask_is_none():
    assert mask_box(np.zeros(SHAPE, dtype=bool)) is None


def test_mask_iou_matches_definition():
    a = np.zeros(SHAPE, dtype=bool)
    b = np.zeros(SHAPE, dtype=bool)
    a[0:10, 0:10] = True  # 100 px
    b[5:15, 0:10] = True  # 100 px, 50 shared
    iou = mask_iou(a, mask_box(a), 100, b, mask_box(b), 100)
    assert iou == pytest.approx(50 / 150)


def test_mask_iou_of_disjoint_boxes_is_zero():
    a = np.zeros(SHAPE, dtype=bool)
    b = np.zeros(SHAPE, dtype=bool)
    a[0:5, 0:5] = True
    b[20:25, 20:25] = True
    assert mask_iou(a, mask_box(a), 25, b, mask_box(b), 25) == 0.0


def test_tracker_keeps_id_of_moving_instance():
    tracker = IouTracker(min_iou=0.3)
    ids = [tracker.update([disc(0, 20 + 2 * step, 30, 10)])[0] for step in range(10)]
    assert ids == [1] * 10


def test_tracker_numbers_tracks_per_class():
    tracker = IouTracker()
    first = [disc(0, 15, 15, 6), disc(1, 50, 40, 6), disc(0, 60, 15, 6)]
    assert tracker.update(first) == [1, 1, 2]
    assert [inst.track_id for inst in first] == [1, 1, 2]


def test_tracker_keeps_ids_when_order_changes():
    tracker = IouTracker()
    tracker.update([disc(0, 15, 15, 6), disc(0, 60, 15, 6)])
    swapped = tracker.update([disc(0, 61, 15, 6), disc(0, 16, 15, 6)])
    assert swapped == [2, 1]


def test_tracker_does_not_match_across_classes():
    tracker = IouTracker()
    tracker.update([disc(0, 30, 30, 10)])
    assert tracker.update([disc(1, 30, 30, 10)]) == [1]
    assert tracker.update([disc(0, 30, 30, 10)]) == [1]


def test_tracker_new_structure_gets_unused_id():
    tracker = IouTracker(max_missed_frames=0)
    tracker.update([disc(0, 15, 15, 6)])
    tracker.update([])
    tracker.update([])
    # Track 1 has expired; a structure elsewhere must not inherit its number.
    assert tracker.update([disc(0, 60, 40, 6)]) == [2]


def test_tracker_bridges_missed_detections():
    tracker = IouTracker(max_missed_frames=2)
    tracker.update([disc(0, 30, 30, 10)])
    tracker.update([])
    tracker.update([])
    assert tracker.update([disc(0, 31, 30, 10)]) == [1]


def test_tracker_forgets_after_max_missed_frames():
    tracker = IouTracker(max_missed_frames=1)
    tracker.update([disc(0, 30, 30, 10)])
    tracker.update([])
    tracker.update([])
    assert tracker.update([disc(0, 30, 30, 10)]) == [2]


def test_tracker_low_overlap_starts_new_track():
    tracker = IouTracker(min_iou=0.5)
    tracker.update([disc(0, 20, 30, 8)])
    assert tracker.update([disc(0, 32, 30, 8)]) == [2]


def test_tracker_one_track_per_instance():
    tracker = IouTracker(min_iou=0.1)
    tracker.update([disc(0, 30, 30, 12)])
    # Both halves overlap the old track; only the better match keeps id 1.
    ids = tracker.update([disc(0, 27, 30, 10), disc(0, 38, 30, 6)])
    assert sorted(ids) == [1, 2]
    assert ids[0] == 1


def test_tracker_reset_restarts_numbering():
    tracker = IouTracker()
    tracker.update([disc(0, 30, 30, 10), disc(0, 60, 30, 5)])
    tracker.reset()
    assert tracker.update([disc(0, 60, 30, 5)]) == [1]


def test_tracker_rejects_frame_size_change():
    tracker = IouTracker()
    tracker.update([disc(0, 30, 30, 10)])
    with pytest.raises(InputError, match="reset"):
        tracker.update([disc(0, 30, 30, 10, shape=(32, 32))])


@pytest.mark.parametrize("kwargs", [{"min_iou": 0.0}, {"min_iou": 1.5}, {"max_missed_frames": -1}])
def test_tracker_rejects_invalid_settings(kwargs):
    with pytest.raises(InputError):
        IouTracker(**kwargs)
