"""Letterbox geometry: sizes, padding, point mapping and a mask round trip with zero shift."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lmsfa.classes import ClassTable
from lmsfa.errors import InputError
from lmsfa.inference import Letterbox, letterbox, postprocess
from lmsfa.inference.letterbox import PAD_VALUE


def test_fit_square_odd_padding():
    geometry = Letterbox.fit((200, 300), (640, 640))
    # 640 / 300 = 2.1333; 200 * 2.1333 = 426.67 -> 427 rows, 213 rows of padding.
    assert geometry.input_hw == (640, 640)
    assert geometry.resized_hw == (427, 640)
    assert geometry.pad_top == 106
    assert geometry.pad_left == 0


def test_fit_rectangular_full_hd():
    geometry = Letterbox.fit((1080, 1920), (640, 640), rectangular=True)
    assert geometry.resized_hw == (360, 640)
    assert geometry.input_hw == (384, 640)
    assert geometry.pad_top == 12


def test_fit_rectangular_portrait():
    geometry = Letterbox.fit((1000, 500), (640, 640), rectangular=True)
    assert geometry.resized_hw == (640, 320)
    assert geometry.input_hw == (640, 320)
    assert geometry.pad_left == 0


def test_fit_scales_small_frames_up():
    geometry = Letterbox.fit((512, 512), (640, 640))
    assert geometry.resized_hw == (640, 640)
    assert geometry.scale_x == pytest.approx(1.25)


@pytest.mark.parametrize("bad", [(0, 10), (10,), "640", (-5, 5)])
def test_fit_rejects_bad_sizes(bad):
    with pytest.raises(InputError):
        Letterbox.fit(bad)


def test_fit_rejects_input_off_stride():
    with pytest.raises(InputError, match="multiple of the stride"):
        Letterbox.fit((480, 640), (600, 600), rectangular=True)


def test_apply_places_frame_and_padding():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    tensor, geometry = letterbox(frame, (640, 640))
    assert tensor.shape == (3, 640, 640)
    assert tensor.dtype == np.float32
    assert geometry.pad_top == 80
    np.testing.assert_allclose(tensor[:, 80:560, :], frame.transpose(2, 0, 1) / 255.0, atol=1e-6)
    np.testing.assert_allclose(tensor[:, :80, :], PAD_VALUE / 255.0)
    np.testing.assert_allclose(tensor[:, 560:, :], PAD_VALUE / 255.0)


def test_apply_writes_into_batch_slice():
    frame = np.full((100, 200, 3), 255, dtype=np.uint8)
    geometry = Letterbox.fit(frame.shape[:2], (64, 64))
    batch = np.zeros((2, 3, 64, 64), dtype=np.float32)
    geometry.apply(frame, out=batch[1])
    assert batch[1, :, 32, 32].tolist() == [1.0, 1.0, 1.0]
    assert not batch[0].any()


def test_apply_rejects_other_frame_size():
    geometry = Letterbox.fit((100, 200), (64, 64))
    with pytest.raises(InputError, match="does not match"):
        geometry.apply(np.zeros((101, 200, 3), dtype=np.uint8))


def test_apply_rejects_grey_frame():
    geometry = Letterbox.fit((100, 200), (64, 64))
    with pytest.raises(InputError, match="uint8 RGB"):
        geometry.apply(np.zeros((100, 200), dtype=np.uint8))


def test_points_round_trip():
    geometry = Letterbox.fit((203, 300), (640, 640))
    points = np.array([[0.0, 0.0], [300.0, 203.0], [17.25, 99.5]])
    back = geometry.input_to_frame(geometry.frame_to_input(points))
    np.testing.assert_allclose(back, points, atol=1e-9)


def test_frame_corners_map_to_resized_region():
    geometry = Letterbox.fit((203, 300), (640, 640))
    corners = geometry.frame_to_input(np.array([[0.0, 0.0], [300.0, 203.0]]))
    top, left = geometry.pad_top, geometry.pad_left
    height, width = geometry.resized_hw
    np.testing.assert_allclose(corners, [[left, top], [left + width, top + height]])


def test_boxes_to_frame_clips():
    geometry = Letterbox.fit((100, 200), (64, 64))
    boxes = geometry.boxes_to_frame(np.array([[-10.0, -10.0, 100.0, 100.0]]))
    np.testing.assert_allclose(boxes, [[0.0, 0.0, 200.0, 100.0]])


def _disc(frame_hw, centre_xy, radius):
    rows, cols = np.mgrid[0 : frame_hw[0], 0 : frame_hw[1]]
    return (cols + 0.5 - centre_xy[0]) ** 2 + (rows + 0.5 - centre_xy[1]) ** 2 <= radius**2


def _centroid(mask):
    rows, cols = np.nonzero(mask)
    return np.array([cols.mean() + 0.5, rows.mean() + 0.5])


def _round_trip(frame_hw, geometry, centre, radius):
    """Take a disc mask through letterbox, the 1/4 prototype grid and postprocess."""
    truth = _disc(frame_hw, centre, radius)
    image = np.repeat(truth[..., None], 3, axis=2).astype(np.uint8) * 255
    network_input = geometry.apply(image)[0]
    input_h, input_w = geometry.input_hw
    grid = cv2.resize(network_input, (input_w // 4, input_h // 4), interpolation=cv2.INTER_AREA)
    protos = (grid - 0.5)[None, None].astype(np.float32)

    x1, y1 = centre[0] - radius - 3, centre[1] - radius - 3
    x2, y2 = centre[0] + radius + 3, centre[1] + radius + 3
    (ix1, iy1), (ix2, iy2) = geometry.frame_to_input(np.array([[x1, y1], [x2, y2]]))
    pred = np.array([[(ix1 + ix2) / 2], [(iy1 + iy2) / 2], [ix2 - ix1], [iy2 - iy1], [0.9], [1.0]])

    table = ClassTable.from_names(["disc"])
    [instances] = postprocess(pred[None].astype(np.float32), protos, [geometry], table)
    return truth, instances


@pytest.mark.parametrize(
    "frame_hw, rectangular",
    [((203, 300), False), ((1000, 1920), True)],
    ids=["square-input", "rectangular-input"],
)
def test_mask_round_trip_has_zero_shift(frame_hw, rectangular):
    """The mask centroid comes back where it was, to a small fraction of an input pixel.

    Resampling a disc to the prototype grid and back moves its centroid by sampling
    noise that depends on the sub-pixel position (about 0.02 input pixel). A geometry
    error, such as a half-pixel offset or padding put on the wrong side, shifts every
    position the same way by at least half an input pixel, so the mean over several
    positions must stay near zero.
    """
    geometry = Letterbox.fit(frame_hw, (640, 640), rectangular=rectangular)
    total_pad = geometry.input_hw[0] - geometry.resized_hw[0]
    assert total_pad % 2 == 1, "this case must split an odd padding unevenly"

    input_per_frame_pixel = np.array([geometry.scale_x, geometry.scale_y])
    radius = 0.2 * min(frame_hw)
    shifts = []
    for step in range(6):
        centre = (0.37 * frame_hw[1] + 1.37 * step, 0.41 * frame_hw[0] + 0.71 * step)
        truth, instances = _round_trip(frame_hw, geometry, centre, radius)
        assert len(instances) == 1
        mask = instances[0].mask
        assert mask.shape == frame_hw
        iou = (mask & truth).sum() / (mask | truth).sum()
        assert iou > 0.97
        shifts.append((_centroid(mask) - _centroid(truth)) * input_per_frame_pixel)

    shifts = np.array(shifts)
    assert np.abs(shifts).max() < 0.15, f"shift in input pixels: {shifts.tolist()}"
    assert abs(shifts[:, 0].mean()) < 0.05
    assert abs(shifts[:, 1].mean()) < 0.05
