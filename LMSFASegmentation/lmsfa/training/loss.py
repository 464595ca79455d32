"""The LMSF-A training loss: BCE classification, CIoU and distribution focal loss for the
boxes, and the prototype mask loss, on targets from the task-aligned assigner.

The loss reads the training-mode outputs of :class:`lmsfa.model.LMSFA`. ``raw_maps`` are
three (B, 64 + C, H_i, W_i) maps at strides 8, 16 and 32, whose first 64 channels are
4 box sides x 16 distribution bins, side-major. ``coeffs`` is (B, 32, N) and ``protos``
(B, 32, H/4, W/4). Targets come from :func:`lmsfa.training.collate.collate_samples`.

Gains (YOLOv8 defaults, which LMSF-A keeps): box 7.5, mask 7.5, classification 0.5,
DFL 1.5. The returned total is the weighted sum times the batch size, so that gradient
accumulation over a nominal batch adds up per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .assigner import Assignment, TaskAlignedAssigner, box_ciou, make_anchors

REG_MAX = 16  # distribution bins per box side

LOSS_NAMES = ("box", "seg", "cls", "dfl")


@dataclass(frozen=True)
class LossGains:
    """Weights of the four loss terms."""

    box: float = 7.5
    seg: float = 7.5
    cls: float = 0.5
    dfl: float = 1.5


def decode_distances(box_logits: torch.Tensor) -> torch.Tensor:
    """Turn (B, N, 4 * 16) distribution logits into (B, N, 4) expected side distances.

    The distances (left, top, right, bottom) are in grid units of each anchor's level.
    """
    batch, anchors, _ = box_logits.shape
    probabilities = box_logits.view(batch, anchors, 4, REG_MAX).softmax(dim=-1)
    bins = torch.arange(REG_MAX, device=box_logits.device, dtype=probabilities.dtype)
    return probabilities @ bins


def distances_to_boxes(distances: torch.Tensor, anchor_points: torch.Tensor) -> torch.Tensor:
    """Turn (..., N, 4) ltrb distances around (N, 2) anchors into (..., N, 4) xyxy boxes."""
    left_top, right_bottom = distances.chunk(2, dim=-1)
    return torch.cat((anchor_points - left_top, anchor_points + right_bottom), dim=-1)


def boxes_to_distances(boxes: torch.Tensor, anchor_points: torch.Tensor, max_distance: float) -> torch.Tensor:
    """Turn (..., N, 4) xyxy boxes into ltrb distances from the anchors, clamped to [0, max]."""
    left_top = anchor_points - boxes[..., :2]
    right_bottom = boxes[..., 2:] - anchor_points
    return torch.cat((left_top, right_bottom), dim=-1).clamp(0, max_distance)


class SegmentationLoss:
    """Compute the LMSF-A loss for one batch.

    Call it with the training-mode model output and a batch from ``collate_samples``.
    It returns ``(total, items)``. ``total`` is the scalar to back-propagate, already
    multiplied by the batch size. ``items`` is a detached (4,) tensor of the weighted
    box, seg, cls and dfl terms per image, in :data:`LOSS_NAMES` order.
    """

    def __init__(
        self,
        num_classes: int,
        strides=(8, 16, 32),
        gains: LossGains = LossGains(),
        top_k: int = 10,
        alpha: float = 0.5,
        beta: float = 6.0,
    ):
        self.num_classes = num_classes
        self.strides = [float(s) for s in strides]
        self.gains = gains
        self.assigner = TaskAlignedAssigner(top_k=top_k, num_classes=num_classes, alpha=alpha, beta=beta)

    def __call__(self, outputs, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        raw_maps, coeffs, protos = outputs
        batch_size = raw_maps[0].shape[0]
        device = raw_maps[0].device
        channels = 4 * REG_MAX + self.num_classes
        if raw_maps[0].shape[1] != channels:
            raise ValueError(
                f"model output has {raw_maps[0].shape[1]} channels per anchor, expected "
                f"{channels} for {self.num_classes} classes"
            )

        flat = torch.cat([m.reshape(batch_size, channels, -1) for m in raw_maps], dim=2)
        box_logits = flat[:, : 4 * REG_MAX].permute(0, 2, 1).contiguous()  # (B, N, 64)
        class_logits = flat[:, 4 * REG_MAX :].permute(0, 2, 1).contiguous()  # (B, N, C)
        coeffs = coeffs.permute(0, 2, 1).contiguous()  # (B, N, 32)

        feature_sizes = [tuple(m.shape[2:]) for m in raw_maps]
        anchor_points, stride_tensor = make_anchors(feature_sizes, self.strides, device, flat.dtype)
        pred_boxes = distances_to_boxes(decode_distances(box_logits), anchor_points)  # grid units

        gt_labels, gt_boxes, gt_valid = self._pad_targets(batch, batch_size, device)
        assignment = self.assigner(
            class_logits.detach().sigmoid(),
            (pred_boxes.detach() * stride_tensor).to(gt_boxes.dtype),
            anchor_points * stride_tensor,
            gt_labels,
            gt_boxes,
            gt_valid,
        )
        score_sum = assignment.scores.sum().clamp(min=1)

        loss_cls = F.binary_cross_entropy_with_logits(
            class_logits, assignment.scores.to(class_logits.dtype), reduction="sum"
        ) / score_sum

        foreground = assignment.foreground
        if foreground.any():
            loss_box, loss_dfl = self._box_losses(
                box_logits, pred_boxes, anchor_points, assignment, stride_tensor, score_sum
            )
            loss_seg = self._mask_loss(assignment, batch, coeffs, protos)
        else:
            # Keep every output in the graph so that all parameters get (zero) gradients.
            zero = (box_logits.sum() + coeffs.sum() + protos.sum()) * 0
            loss_box, loss_dfl, loss_seg = zero, zero, zero

        items = torch.stack(
            (
                loss_box * self.gains.box,
                loss_seg * self.gains.seg,
                loss_cls * self.gains.cls,
                loss_dfl * self.gains.dfl,
            )
        )
        return items.sum() * batch_size, items.detach()

    @staticmethod
    def _pad_targets(batch: dict, batch_size: int, device):
        """Pad the flat target list to (B, M) labels, (B, M, 4) boxes and (B, M) validity."""
        image_index = batch["batch_idx"].to(device)
        counts = torch.bincount(image_index, minlength=batch_size) if image_index.numel() else None
        max_boxes = int(counts.max()) if counts is not None else 0
        labels = torch.zeros((batch_size, max_boxes), dtype=torch.long, device=device)
        boxes = torch.zeros((batch_size, max_boxes, 4), dtype=torch.float32, device=device)
        valid = torch.zeros((batch_size, max_boxes), dtype=torch.bool, device=device)
        if max_boxes:
            # Position of each target among the targets of its image (targets are grouped by image).
            slot = torch.arange(image_index.numel(), device=device) - (torch.cumsum(counts, 0) - counts)[image_index]
            labels[image_index, slot] = batch["classes"].to(device)
            boxes[image_index, slot] = batch["boxes"].to(device, torch.float32)
            valid[image_index, slot] = True
        return labels, boxes, valid

    def _box_losses(self, box_logits, pred_boxes, anchor_points, assignment: Assignment, stride_tensor, score_sum):
        """Return the CIoU loss and the distribution focal loss, each weighted by target score."""
        foreground = assignment.foreground
        weight = assignment.scores.sum(-1)[foreground]  # (P,)
        target_boxes = assignment.boxes / stride_tensor  # grid units

        ciou = box_ciou(pred_boxes[foreground], target_boxes[foreground].to(pred_boxes.dtype))
        loss_box = ((1.0 - ciou) * weight).sum() / score_sum

        anchors = anchor_points[None].expand(foreground.shape[0], -1, -1)[foreground]
        target = boxes_to_distances(target_boxes[foreground], anchors, REG_MAX - 1 - 0.01)  # (P, 4)
        logits = box_logits[foreground].view(-1, REG_MAX)  # (P * 4, 16)
        target = target.reshape(-1)
        lower = target.floor().long()
        upper = lower + 1
        lower_weight = upper.to(target.dtype) - target
        upper_weight = 1.0 - lower_weight
        dfl = (
            F.cross_entropy(logits, lower, reduction="none") * lower_weight
            + F.cross_entropy(logits, upper, reduction="none") * upper_weight
        )
        dfl = dfl.view(-1, 4).mean(-1)
        loss_dfl = (dfl * weight).sum() / score_sum
        return loss_box, loss_dfl

    @staticmethod
    def _mask_loss(assignment: Assignment, batch: dict, coeffs, protos):
        """Return the mask BCE, cropped to each positive's box and averaged over positives.

        Each positive anchor's mask logits are its 32 coefficients times the prototypes.
        The per-pixel BCE against the assigned instance mask (at prototype resolution) is
        summed inside the instance's box and divided by the box area in prototype pixels.
        """
        foreground = assignment.foreground
        _, _, mask_h, mask_w = protos.shape
        input_h, input_w = batch["images"].shape[2:]
        gt_masks = batch["masks"].to(protos.device)  # (T, mask_h, mask_w), T targets in the batch
        if gt_masks.shape[1:] != (mask_h, mask_w):
            raise ValueError(
                f"target masks are {tuple(gt_masks.shape[1:])} but the prototypes are {(mask_h, mask_w)}: "
                "collate masks at a quarter of the input size"
            )
        image_index = batch["batch_idx"].to(protos.device)
        first_target = torch.cumsum(torch.bincount(image_index, minlength=foreground.shape[0]), 0)
        first_target = first_target - torch.bincount(image_index, minlength=foreground.shape[0])

        scale = torch.tensor(
            [mask_w / input_w, mask_h / input_h, mask_w / input_w, mask_h / input_h],
            device=protos.device,
            dtype=assignment.boxes.dtype,
        )
        # Left and top edges of the prototype pixels. A pixel belongs to the crop when it
        # overlaps the box, so a box smaller than one prototype pixel still crops one.
        xs = torch.arange(mask_w, device=protos.device, dtype=protos.dtype)
        ys = torch.arange(mask_h, device=protos.device, dtype=protos.dtype)

        total = protos.sum() * 0
        for image in range(foreground.shape[0]):
            positives = foreground[image]
            if not positives.any():
                continue
            target_index = first_target[image] + assignment.gt_index[image][positives]
            target = gt_masks[target_index].to(protos.dtype)  # (P, mask_h, mask_w)
            logits = torch.einsum("pk,khw->phw", coeffs[image][positives], protos[image])
            bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")

            box = (assignment.boxes[image][positives] * scale).to(protos.dtype)  # mask pixels
            inside_x = (xs[None] + 1 > box[:, 0:1]) & (xs[None] < box[:, 2:3])  # (P, mask_w)
            inside_y = (ys[None] + 1 > box[:, 1:2]) & (ys[None] < box[:, 3:4])  # (P, mask_h)
            crop = inside_y[:, :, None] & inside_x[:, None, :]
            area = ((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])).clamp(min=1.0)
            total = total + ((bce * crop).sum(dim=(1, 2)) / area).sum()
        return total / foreground.sum()
