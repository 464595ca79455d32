"""Tests of the task-aligned assigner, the CIoU and the anchor grid."""

from __future__ import annotations

import math

import pytest
import torch

from lmsfa.training.assigner import TaskAlignedAssigner, box_ciou, make_anchors


def test_ciou_identical_boxes_is_one():
    box = torch.tensor([2.0, 3.0, 10.0, 7.0])
    assert box_ciou(box, box).item() == pytest.approx(1.0, abs=1e-6)


def test_ciou_matches_hand_computation():
    # Two 2x2 squares shifted by 1 along x: IoU 2/6, centre distance 1, enclosing box 3x2.
    first = torch.tensor([0.0, 0.0, 2.0, 2.0])
    second = torch.tensor([1.0, 0.0, 3.0, 2.0])
    expected = 1 / 3 - 1 / 13
    assert box_ciou(first, second).item() == pytest.approx(expected, abs=1e-5)


def test_ciou_penalises_aspect_ratio():
    # Both boxes share their centre, so only the aspect-ratio term lowers the CIoU below the IoU.
    square = torch.tensor([0.0, 0.0, 4.0, 4.0])
    wide = torch.tensor([-1.0, 1.0, 5.0, 3.0])
    inter = 4 * 2
    iou = inter / (16 + 12 - inter)
    assert box_ciou(square, wide).item() < iou


def test_ciou_of_far_boxes_is_negative():
    first = torch.tensor([0.0, 0.0, 1.0, 1.0])
    second = torch.tensor([50.0, 50.0, 51.0, 51.0])
    assert box_ciou(first, second).item() < 0


def test_anchors_cover_three_levels():
    points, strides = make_anchors([(80, 80), (40, 40), (20, 20)], [8, 16, 32])
    assert points.shape == (8400, 2)
    assert strides.shape == (8400, 1)
    assert points[0].tolist() == [0.5, 0.5]
    assert points[1].tolist() == [1.5, 0.5]  # row-major: x runs first
    assert points[80].tolist() == [0.5, 1.5]
    assert strides[0].item() == 8
    assert strides[6400].item() == 16
    assert strides[-1].item() == 32
    assert points[-1].tolist() == [19.5, 19.5]


def _grid(size: int) -> torch.Tensor:
    """Anchor centres of one size x size level with stride 1."""
    points, _ = make_anchors([(size, size)], [1])
    return points


def test_assigner_picks_anchors_inside_box():
    anchors = _grid(8)  # 64 anchors, centres at .5
    gt_box = torch.tensor([[[2.0, 2.0, 5.0, 5.0]]])  # contains the 3x3 anchors (2.5..4.5)
    pred_boxes = gt_box.expand(1, 64, 4).clone()
    pred_scores = torch.full((1, 64, 3), 0.5)
    assigner = TaskAlignedAssigner(top_k=10, num_classes=3)

    result = assigner(pred_scores, pred_boxes, anchors, torch.tensor([[2]]), gt_box, torch.tensor([[True]]))

    inside = ((anchors > 2) & (anchors < 5)).all(dim=1)
    assert result.foreground[0].tolist() == inside.tolist()
    assert int(result.foreground.sum()) == 9
    assert (result.labels[0][inside] == 2).all()
    assert torch.allclose(result.boxes[0][inside], gt_box[0, 0].expand(9, 4))
    # Soft targets: the best anchor of the box gets the box's best IoU (1 here), other classes 0.
    assert result.scores[0, inside, 2].max().item() == pytest.approx(1.0, abs=1e-5)
    assert result.scores[0, :, :2].abs().sum().item() == 0
    assert result.scores[0, ~inside].abs().sum().item() == 0


def test_assigner_keeps_top_k_by_alignment():
    anchors = _grid(8)
    gt_box = torch.tensor([[[0.0, 0.0, 8.0, 8.0]]])  # every anchor is inside
    pred_boxes = gt_box.expand(1, 64, 4).clone()
    pred_scores = torch.full((1, 64, 1), 0.1)
    best = torch.tensor([3, 17, 40])
    pred_scores[0, best, 0] = 0.9

    result = TaskAlignedAssigner(top_k=3, num_classes=1)(
        pred_scores, pred_boxes, anchors, torch.tensor([[0]]), gt_box, torch.tensor([[True]])
    )

    assert sorted(torch.nonzero(result.foreground[0]).flatten().tolist()) == best.tolist()


def test_assigner_without_boxes_gives_background():
    anchors = _grid(4)
    result = TaskAlignedAssigner(num_classes=2)(
        torch.rand(2, 16, 2), torch.rand(2, 16, 4), anchors,
        torch.zeros((2, 0), dtype=torch.long), torch.zeros((2, 0, 4)), torch.zeros((2, 0), dtype=torch.bool),
    )
    assert not result.foreground.any()
    assert result.scores.abs().sum().item() == 0


def test_assigner_ignores_padding_boxes():
    anchors = _grid(8)
    gt_boxes = torch.tensor([[[2.0, 2.0, 5.0, 5.0], [0.0, 0.0, 8.0, 8.0]]])
    valid = torch.tensor([[True, False]])
    pred_boxes = torch.tensor([2.0, 2.0, 5.0, 5.0]).expand(1, 64, 4).clone()
    result = TaskAlignedAssigner(num_classes=2)(
        torch.full((1, 64, 2), 0.5), pred_boxes, anchors, torch.tensor([[0, 1]]), gt_boxes, valid
    )
    assert int(result.foreground.sum()) == 9
    assert (result.gt_index[result.foreground] == 0).all()


def test_contested_anchor_goes_to_higher_iou():
    anchors = _grid(8)
    # Both boxes contain the anchors at x 2.5..4.5; predictions match the first box exactly.
    gt_boxes = torch.tensor([[[2.0, 2.0, 5.0, 5.0], [1.0, 1.0, 7.0, 7.0]]])
    pred_boxes = torch.tensor([2.0, 2.0, 5.0, 5.0]).expand(1, 64, 4).clone()
    result = TaskAlignedAssigner(top_k=10, num_classes=2)(
        torch.full((1, 64, 2), 0.5), pred_boxes, anchors, torch.tensor([[0, 1]]), gt_boxes,
        torch.tensor([[True, True]]),
    )
    shared = ((anchors > 2) & (anchors < 5)).all(dim=1)
    assert result.foreground[0, shared].all()
    assert (result.gt_index[0, shared] == 0).all()
    assert (result.labels[0, shared] == 0).all()


def test_assigner_mixed_batch_with_empty_image():
    anchors = _grid(8)
    gt_boxes = torch.tensor([[[2.0, 2.0, 5.0, 5.0]], [[0.0, 0.0, 0.0, 0.0]]])
    valid = torch.tensor([[True], [False]])
    pred_boxes = torch.tensor([2.0, 2.0, 5.0, 5.0]).expand(2, 64, 4).clone()
    result = TaskAlignedAssigner(num_classes=1)(
        torch.full((2, 64, 1), 0.5), pred_boxes, anchors, torch.zeros((2, 1), dtype=torch.long), gt_boxes, valid
    )
    assert int(result.foreground[0].sum()) == 9
    assert not result.foreground[1].any()
    assert math.isfinite(result.scores.sum().item())
