"""Tests of the LMSF-A loss on hand-built head outputs and on the real network."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lmsfa.model import LMSFA
from lmsfa.training.collate import collate_samples
from lmsfa.training.loss import (
    LOSS_NAMES,
    REG_MAX,
    LossGains,
    SegmentationLoss,
    boxes_to_distances,
    decode_distances,
    distances_to_boxes,
)

SIZE = 64
STRIDES = (8, 16, 32)


def _sample(boxes: list[list[int]], classes: list[int], size: int = SIZE) -> SimpleNamespace:
    """A grey image with one rectangular instance mask per box (x1, y1, x2, y2 in pixels)."""
    masks = np.zeros((len(boxes), size, size), dtype=bool)
    for index, (x1, y1, x2, y2) in enumerate(boxes):
        masks[index, y1:y2, x1:x2] = True
    return SimpleNamespace(
        image=np.full((size, size, 3), 100, dtype=np.uint8),
        masks=masks,
        classes=np.asarray(classes, dtype=np.int64),
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        image_id=0,
        path="synthetic.png",
    )


def _random_outputs(batch: int, num_classes: int, size: int = SIZE, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    raw_maps = [
        torch.randn(batch, 4 * REG_MAX + num_classes, size // s, size // s, generator=generator).requires_grad_()
        for s in STRIDES
    ]
    anchors = sum((size // s) ** 2 for s in STRIDES)
    coeffs = torch.randn(batch, 32, anchors, generator=generator).requires_grad_()
    protos = torch.randn(batch, 32, size // 4, size // 4, generator=generator).requires_grad_()
    return raw_maps, coeffs, protos


def test_distance_box_round_trip():
    anchors = torch.tensor([[4.5, 3.5], [10.5, 2.5]])
    boxes = torch.tensor([[1.0, 1.0, 8.0, 6.0], [9.0, 0.0, 14.0, 5.0]])
    distances = boxes_to_distances(boxes, anchors, max_distance=15)
    assert torch.allclose(distances_to_boxes(distances, anchors), boxes)


def test_box_distances_are_clamped():
    anchors = torch.tensor([[0.5, 0.5]])
    boxes = torch.tensor([[-30.0, 0.0, 40.0, 1.0]])
    distances = boxes_to_distances(boxes, anchors, max_distance=14.99)
    assert distances.max().item() == pytest.approx(14.99)
    assert distances.min().item() >= 0


def test_decode_distances_takes_expectation():
    logits = torch.full((1, 1, 4, REG_MAX), -30.0)
    for side, bin_index in enumerate((0, 3, 7, 15)):
        logits[0, 0, side, bin_index] = 30.0
    distances = decode_distances(logits.view(1, 1, 4 * REG_MAX))
    assert distances[0, 0].tolist() == pytest.approx([0.0, 3.0, 7.0, 15.0], abs=1e-4)

    uniform = decode_distances(torch.zeros(1, 1, 4 * REG_MAX))
    assert uniform[0, 0].tolist() == pytest.approx([7.5] * 4)


def test_loss_with_instances_is_finite_with_gradients():
    batch = collate_samples([_sample([[8, 8, 40, 40], [30, 10, 60, 30]], [0, 2]), _sample([[0, 32, 64, 64]], [1])])
    outputs = _random_outputs(2, 3)
    total, items = SegmentationLoss(3)(outputs, batch)

    assert items.shape == (len(LOSS_NAMES),)
    assert all(math.isfinite(v) for v in items.tolist())
    assert all(v > 0 for v in items.tolist())
    assert total.item() == pytest.approx(items.sum().item() * 2, rel=1e-5)
    total.backward()
    for tensor in (*outputs[0], outputs[1], outputs[2]):
        assert tensor.grad is not None
        assert torch.isfinite(tensor.grad).all()
    assert outputs[2].grad.abs().sum() > 0


def test_loss_without_instances_trains_classes_only():
    batch = collate_samples([_sample([], [])])
    outputs = _random_outputs(1, 2)
    total, items = SegmentationLoss(2)(outputs, batch)

    box, seg, cls, dfl = items.tolist()
    assert box == 0
    assert seg == 0
    assert dfl == 0
    assert cls > 0
    total.backward()
    assert outputs[0][0].grad.abs().sum() > 0  # class logits learn "background"
    assert outputs[2].grad is not None  # the prototypes stay in the graph


def test_loss_batch_with_one_empty_image():
    batch = collate_samples([_sample([], []), _sample([[8, 8, 40, 40]], [1])])
    total, items = SegmentationLoss(2)(_random_outputs(2, 2), batch)
    assert torch.isfinite(total)
    assert items[1] > 0


def test_loss_gains_scale_terms():
    batch = collate_samples([_sample([[8, 8, 40, 40]], [0])])
    _, default = SegmentationLoss(1)(_random_outputs(1, 1), batch)
    _, doubled = SegmentationLoss(1, gains=LossGains(box=15.0, seg=15.0, cls=1.0, dfl=3.0))(_random_outputs(1, 1), batch)
    assert torch.allclose(doubled, default * 2, rtol=1e-5)


def test_mask_loss_rewards_matching_mask():
    # One instance covering the left half; prototype 0 is +20 there and -20 elsewhere.
    batch = collate_samples([_sample([[0, 0, 32, 64]], [0])])
    raw_maps, coeffs, protos = _random_outputs(1, 1)
    protos = torch.full_like(protos, -20.0)
    protos[:, 0, :, : SIZE // 8] = 20.0
    matching = torch.zeros_like(coeffs)
    matching[:, 0] = 1.0

    loss = SegmentationLoss(1)
    _, good = loss((raw_maps, matching, protos), batch)
    _, bad = loss((raw_maps, -matching, protos), batch)
    seg = LOSS_NAMES.index("seg")
    assert good[seg].item() < 1e-3
    assert bad[seg].item() > 10


def test_loss_rejects_wrong_class_count():
    batch = collate_samples([_sample([[8, 8, 40, 40]], [0])])
    with pytest.raises(ValueError, match="channels"):
        SegmentationLoss(3)(_random_outputs(1, 2), batch)


def test_loss_on_network_outputs_batch_one():
    torch.manual_seed(0)
    model = LMSFA(2).train()
    batch = collate_samples([_sample([[4, 4, 30, 50]], [1])])
    total, items = SegmentationLoss(2)(model(batch["images"]), batch)
    total.backward()
    assert all(math.isfinite(v) for v in items.tolist())
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_collate_downsamples_masks():
    sample = _sample([[0, 0, 2, 4], [8, 8, 64, 64]], [0, 1])
    batch = collate_samples([sample, _sample([], [])])
    assert batch["images"].shape == (2, 3, SIZE, SIZE)
    assert batch["masks"].shape == (2, SIZE // 4, SIZE // 4)
    assert batch["batch_idx"].tolist() == [0, 0]
    # The 2-pixel-wide instance covers half of the first prototype pixel column.
    assert batch["masks"][0, 0, 0].item() == pytest.approx(0.5)
    assert batch["masks"][1, 2:, 2:].min().item() == 1.0
    assert batch["images"].max().item() == pytest.approx(100 / 255)
