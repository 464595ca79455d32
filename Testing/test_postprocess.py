"""Post-processing on synthetic network outputs whose instances are known in advance."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from lmsfa.classes import ClassTable
from lmsfa.errors import InputError
from lmsfa.inference import Letterbox, decode_raw_maps, mask_to_polygons, postprocess
from lmsfa.model.head import DFL, distances_to_boxes, make_anchors

NM = 2  # prototypes in these synthetic outputs (the network has 32)
TABLE = ClassTable.from_names(["vocal folds", "tool", "pathology"])


def _outputs(detections, input_hw=(64, 64), nm=NM):
    """Build (pred, protos) for one image from (cx, cy, w, h, class_id, score, coefficients) rows.

    Prototype 0 is +1 everywhere and prototype 1 is -1 everywhere, so coefficients (1, 0)
    give a full box mask and (0, 1) an empty one.
    """
    nc = len(TABLE)
    pred = np.zeros((1, 4 + nc + nm, max(len(detections), 1)), dtype=np.float32)
    for k, (cx, cy, w, h, class_id, score, coefficients) in enumerate(detections):
        pred[0, 0:4, k] = (cx, cy, w, h)
        pred[0, 4 + class_id, k] = score
        pred[0, 4 + nc :, k] = coefficients
    protos = np.empty((1, nm, input_hw[0] // 4, input_hw[1] // 4), dtype=np.float32)
    protos[0, 0] = 1.0
    protos[0, 1] = -1.0
    return pred, protos


def _run(detections, frame_hw=(64, 64), **kwargs):
    geometry = Letterbox.fit(frame_hw, (64, 64))
    pred, protos = _outputs(detections)
    counts = {}
    [instances] = postprocess(pred, protos, [geometry], TABLE, counts=counts, **kwargs)
    return instances, counts


def test_box_mask_class_and_score():
    instances, _ = _run([(20, 30, 10, 8, 1, 0.8, (1, 0))])
    assert len(instances) == 1
    instance = instances[0]
    assert instance.class_id == 1
    assert instance.class_name == "tool"
    assert instance.score == pytest.approx(0.8)
    np.testing.assert_allclose(instance.box, [15, 26, 25, 34])
    assert instance.mask.dtype == bool
    assert instance.mask.shape == (64, 64)
    rows, cols = np.nonzero(instance.mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (26, 33, 15, 24)
    assert instance.mask.sum() == 80


def test_confidence_threshold():
    instances, _ = _run([(20, 20, 8, 8, 0, 0.3, (1, 0)), (40, 40, 8, 8, 0, 0.2, (1, 0))], conf=0.25)
    assert [i.score for i in instances] == [pytest.approx(0.3)]


def test_nms_suppresses_same_class_overlap():
    instances, _ = _run([(20, 20, 10, 10, 0, 0.9, (1, 0)), (21, 20, 10, 10, 0, 0.8, (1, 0))])
    assert len(instances) == 1
    assert instances[0].score == pytest.approx(0.9)


def test_nms_keeps_other_class_overlap():
    instances, _ = _run([(20, 20, 10, 10, 0, 0.9, (1, 0)), (21, 20, 10, 10, 2, 0.8, (1, 0))])
    assert [i.class_name for i in instances] == ["vocal folds", "pathology"]


def test_nms_iou_threshold_is_used():
    # The two boxes overlap with IoU 1/3.
    rows = [(10, 10, 10, 10, 0, 0.9, (1, 0)), (15, 10, 10, 10, 0, 0.8, (1, 0))]
    kept, _ = _run(rows, iou=0.34)
    suppressed, _ = _run(rows, iou=0.3)
    assert len(kept) == 2
    assert len(suppressed) == 1


def test_max_det_keeps_highest_scores():
    rows = [(8 + 12 * k, 32, 6, 6, 0, 0.5 + 0.1 * k, (1, 0)) for k in range(5)]
    instances, _ = _run(rows, max_det=2)
    assert [round(i.score, 3) for i in instances] == [0.9, 0.8]


def test_empty_mask_is_dropped_and_counted():
    instances, counts = _run([(20, 20, 10, 10, 0, 0.9, (0, 1)), (45, 45, 10, 10, 1, 0.7, (1, 0))])
    assert [i.class_name for i in instances] == ["tool"]
    assert counts["empty_mask"] == 1
    assert counts["detections"] == 1


def test_no_candidates_gives_empty_list():
    instances, _ = _run([(20, 20, 10, 10, 0, 0.1, (1, 0))])
    assert instances == []


def test_class_count_mismatch_is_rejected():
    geometry = Letterbox.fit((64, 64), (64, 64))
    pred, protos = _outputs([(20, 20, 10, 10, 0, 0.9, (1, 0))])
    with pytest.raises(InputError, match="3 classes but the class table has 2"):
        postprocess(pred, protos, [geometry], ClassTable.from_names(["a", "b"]))


def test_mask_stays_inside_box():
    """A mask logit that is positive everywhere still gives a mask limited to the box."""
    instances, _ = _run([(32.3, 32.7, 20.4, 9.2, 0, 0.9, (1, 0))])
    rows, cols = np.nonzero(instances[0].mask)
    x1, y1, x2, y2 = instances[0].box
    assert cols.min() + 0.5 >= x1
    assert cols.max() + 0.5 < x2
    assert rows.min() + 0.5 >= y1
    assert rows.max() + 0.5 < y2


def test_few_pixel_instance_survives_upsampling():
    """A 3x3-pixel object in a full HD frame: 1/12 of a prototype cell."""
    frame_hw = (1080, 1920)
    geometry = Letterbox.fit(frame_hw, (640, 640), rectangular=True)
    input_h, input_w = geometry.input_hw
    protos = np.full((1, 1, input_h // 4, input_w // 4), -1.0, dtype=np.float32)
    centre_frame = np.array([1001.5, 500.5])
    gx, gy = geometry.frame_to_input(centre_frame) / 4
    protos[0, 0, int(gy), int(gx)] = 5.0  # only the cell under the object is positive

    (ix1, iy1), (ix2, iy2) = geometry.frame_to_input(np.array([centre_frame - 1.5, centre_frame + 1.5]))
    pred = np.array([[(ix1 + ix2) / 2], [(iy1 + iy2) / 2], [ix2 - ix1], [iy2 - iy1], [0.9], [1.0]], dtype=np.float32)
    [instances] = postprocess(pred[None], protos, [geometry], ClassTable.from_names(["tool"]))
    assert len(instances) == 1
    rows, cols = np.nonzero(instances[0].mask)
    assert instances[0].mask.sum() == 9
    assert (rows.min(), cols.min()) == (499, 1000)


def test_sub_pixel_box_gets_one_pixel():
    instances, _ = _run([(20.2, 30.6, 0.3, 0.2, 0, 0.9, (1, 0))])
    assert len(instances) == 1
    assert np.argwhere(instances[0].mask).tolist() == [[30, 20]]


def test_letterbox_maps_boxes_to_frame():
    """Frame 32x64 letterboxed into 64x64: scale 1, 16 rows of padding on top."""
    geometry = Letterbox.fit((32, 64), (64, 64))
    pred, protos = _outputs([(20, 30, 10, 8, 0, 0.9, (1, 0))])
    [instances] = postprocess(pred, protos, [geometry], TABLE)
    np.testing.assert_allclose(instances[0].box, [15, 10, 25, 18])
    assert instances[0].mask.shape == (32, 64)
    assert instances[0].mask[10:18, 15:25].all()
    assert instances[0].mask.sum() == 80


def test_batch_uses_its_own_letterbox():
    geometries = [Letterbox.fit((64, 64), (64, 64)), Letterbox.fit((32, 64), (64, 64))]
    pred, protos = _outputs([(20, 30, 10, 8, 0, 0.9, (1, 0))])
    pred = np.concatenate([pred, pred])
    protos = np.concatenate([protos, protos])
    first, second = postprocess(pred, protos, geometries, TABLE)
    np.testing.assert_allclose(first[0].box, [15, 26, 25, 34])
    np.testing.assert_allclose(second[0].box, [15, 10, 25, 18])


def test_decode_raw_maps_known_distances():
    nc = 2
    raw = np.full((1, 64 + nc, 2, 3), -20.0, dtype=np.float32)
    # Anchor at row 1, column 2 (centre 2.5, 1.5 cells): distances l=1, t=2, r=3, b=4 bins.
    for side, distance in enumerate((1, 2, 3, 4)):
        raw[0, side * 16 + distance, 1, 2] = 20.0
    raw[0, 64 + 1, 1, 2] = 0.0  # class 1 probability 0.5
    decoded = decode_raw_maps([raw], [8], nc)
    assert decoded.shape == (1, 4 + nc, 6)
    anchor = 1 * 3 + 2
    x1, y1, x2, y2 = (2.5 - 1) * 8, (1.5 - 2) * 8, (2.5 + 3) * 8, (1.5 + 4) * 8
    np.testing.assert_allclose(decoded[0, :4, anchor], [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], atol=1e-4)
    np.testing.assert_allclose(decoded[0, 5, anchor], 0.5)


def test_decode_raw_maps_matches_network_head():
    """The NumPy DFL decoding agrees with the network's own (PyTorch) decoding."""
    nc = 3
    generator = torch.Generator().manual_seed(0)
    raw_maps = [torch.randn(2, 64 + nc, s, s + 1, generator=generator) * 3 for s in (8, 4, 2)]
    strides = torch.tensor([8.0, 16.0, 32.0])
    flat = torch.cat([m.reshape(2, 64 + nc, -1) for m in raw_maps], dim=2)
    anchors, anchor_strides = make_anchors(raw_maps, strides)
    boxes = distances_to_boxes(DFL()(flat[:, :64]), anchors.transpose(0, 1).unsqueeze(0))
    expected = torch.cat([boxes * anchor_strides.transpose(0, 1), flat[:, 64:].sigmoid()], dim=1)

    decoded = decode_raw_maps([m.numpy() for m in raw_maps], [8, 16, 32], nc)
    np.testing.assert_allclose(decoded, expected.numpy(), rtol=1e-5, atol=1e-4)


def test_polygons_with_hole():
    mask = np.zeros((40, 40), dtype=bool)
    mask[10:30, 10:30] = True
    mask[15:25, 15:25] = False
    mask[18:22, 18:22] = True  # an island inside the hole
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 2
    outer = max(polygons, key=lambda p: np.ptp(p[0][:, 0]))
    exterior, holes = outer
    assert exterior.min(axis=0).tolist() == [10.5, 10.5]
    assert exterior.max(axis=0).tolist() == [29.5, 29.5]
    assert len(holes) == 1
    assert holes[0].min(axis=0).tolist() == [14.5, 14.5]
    assert holes[0].max(axis=0).tolist() == [25.5, 25.5]


def test_polygons_redraw_the_mask():
    mask = np.zeros((30, 30), dtype=np.uint8)
    cv2.circle(mask, (15, 12), 8, 1, -1)
    [(exterior, holes)] = mask_to_polygons(mask.astype(bool))
    redrawn = np.zeros_like(mask)
    cv2.fillPoly(redrawn, [np.round(exterior - 0.5).astype(np.int32)], 1)
    assert holes == []
    assert np.array_equal(redrawn, mask)


def test_polygons_of_empty_mask():
    assert mask_to_polygons(np.zeros((5, 5), dtype=bool)) == []
