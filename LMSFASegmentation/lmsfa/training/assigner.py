"""Task-aligned label assignment (TOOD) for the anchor-free LMSF-A head.

Every anchor is the centre of one grid cell of the three output levels (strides 8, 16 and
32). For each ground-truth box, the anchors whose centre lies inside the box are scored with
the alignment metric ``s**alpha * u**beta`` (``s`` is the predicted probability of the
box's class, ``u`` the CIoU between predicted and ground-truth box, clamped at 0). The
``top_k`` best anchors of each box become its positives. An anchor claimed by several boxes
keeps the box it overlaps most. Classification targets are soft: the one-hot class scaled
so that, per box, the best aligned anchor gets that box's largest IoU.

Reference: Feng et al., "TOOD: Task-aligned One-stage Object Detection", ICCV 2021. The
hyper-parameters (top-k 10, alpha 0.5, beta 6.0) are those of YOLOv8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

EPS = 1e-9


def box_ciou(box1: torch.Tensor, box2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Compute the complete IoU (Zheng et al., AAAI 2020) of two broadcastable box tensors.

    Boxes are ``(..., 4)`` ``(x1, y1, x2, y2)`` in any common unit. Returns ``(...)`` values
    in [-1, 1]: IoU minus the normalised centre distance minus the aspect-ratio penalty.
    """
    b1_x1, b1_y1, b1_x2, b1_y2 = box1.unbind(-1)
    b2_x1, b2_y1, b2_x2, b2_y2 = box2.unbind(-1)
    w1, h1 = b1_x2 - b1_x1, (b1_y2 - b1_y1).clamp(min=eps)
    w2, h2 = b2_x2 - b2_x1, (b2_y2 - b2_y1).clamp(min=eps)

    inter_w = (torch.minimum(b1_x2, b2_x2) - torch.maximum(b1_x1, b2_x1)).clamp(min=0)
    inter_h = (torch.minimum(b1_y2, b2_y2) - torch.maximum(b1_y1, b2_y1)).clamp(min=0)
    inter = inter_w * inter_h
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union

    # Smallest enclosing box: its squared diagonal normalises the centre distance.
    enclose_w = torch.maximum(b1_x2, b2_x2) - torch.minimum(b1_x1, b2_x1)
    enclose_h = torch.maximum(b1_y2, b2_y2) - torch.minimum(b1_y1, b2_y1)
    diagonal_sq = enclose_w**2 + enclose_h**2 + eps
    centre_dist_sq = ((b2_x1 + b2_x2 - b1_x1 - b1_x2) ** 2 + (b2_y1 + b2_y2 - b1_y1 - b1_y2) ** 2) / 4

    v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (centre_dist_sq / diagonal_sq + v * alpha)


def make_anchors(
    feature_sizes: list[tuple[int, int]], strides: list[float], device=None, dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Build the anchor centres of all output levels, in the model's flattening order.

    ``feature_sizes`` contains ``(H_i, W_i)`` per level. Returns ``anchor_points`` (N, 2)
    ``(x, y)`` in grid units of each anchor's own level (cell centres, ``x + 0.5``) and
    ``stride_tensor`` (N, 1) in input pixels per grid unit. Multiply the two for input pixels.
    """
    points, stride_list = [], []
    for (height, width), stride in zip(feature_sizes, strides):
        xs = torch.arange(width, device=device, dtype=dtype) + 0.5
        ys = torch.arange(height, device=device, dtype=dtype) + 0.5
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((grid_x, grid_y), -1).view(-1, 2))
        stride_list.append(torch.full((height * width, 1), float(stride), device=device, dtype=dtype))
    return torch.cat(points), torch.cat(stride_list)


@dataclass
class Assignment:
    """Per-anchor training targets from :class:`TaskAlignedAssigner`.

    Shapes use B images, N anchors, C classes. ``boxes`` are xyxy in the unit of the
    ground-truth boxes given to the assigner. ``gt_index`` indexes the (padded) boxes of
    each image and is meaningful only where ``foreground`` is true.
    """

    labels: torch.Tensor  # (B, N) int64
    boxes: torch.Tensor  # (B, N, 4) float
    scores: torch.Tensor  # (B, N, C) float, soft one-hot
    foreground: torch.Tensor  # (B, N) bool
    gt_index: torch.Tensor  # (B, N) int64


class TaskAlignedAssigner:
    """Assign ground-truth boxes to anchors by the task-alignment metric (see module docs)."""

    def __init__(self, top_k: int = 10, num_classes: int = 80, alpha: float = 0.5, beta: float = 6.0):
        self.top_k = top_k
        self.num_classes = num_classes
        self.alpha = alpha
        self.beta = beta

    @torch.no_grad()
    def __call__(
        self,
        pred_scores: torch.Tensor,
        pred_boxes: torch.Tensor,
        anchor_points: torch.Tensor,
        gt_labels: torch.Tensor,
        gt_boxes: torch.Tensor,
        gt_valid: torch.Tensor,
    ) -> Assignment:
        """Assign targets.

        Args:
            pred_scores: (B, N, C) class probabilities (after sigmoid).
            pred_boxes: (B, N, 4) predicted xyxy boxes, same unit as ``anchor_points``.
            anchor_points: (N, 2) anchor centres ``(x, y)``, same unit as the boxes.
            gt_labels: (B, M) int64 class indices, padded to M boxes per image.
            gt_boxes: (B, M, 4) xyxy ground-truth boxes.
            gt_valid: (B, M) bool, false for padding.
        """
        batch, anchors, _ = pred_scores.shape
        max_boxes = gt_boxes.shape[1]
        device = pred_scores.device
        if max_boxes == 0:
            return Assignment(
                labels=torch.zeros((batch, anchors), dtype=torch.long, device=device),
                boxes=torch.zeros((batch, anchors, 4), dtype=pred_boxes.dtype, device=device),
                scores=torch.zeros_like(pred_scores),
                foreground=torch.zeros((batch, anchors), dtype=torch.bool, device=device),
                gt_index=torch.zeros((batch, anchors), dtype=torch.long, device=device),
            )

        inside = self._anchors_inside(anchor_points, gt_boxes) & gt_valid[..., None]  # (B, M, N)
        metric, overlaps = self._alignment(pred_scores, pred_boxes, gt_labels, gt_boxes, inside)
        candidates = self._top_k_mask(metric) & inside
        positives, gt_index, foreground = self._resolve_conflicts(candidates, overlaps)

        labels, boxes, scores = self._gather_targets(gt_labels, gt_boxes, gt_index, foreground)

        # Soft class targets: per box, rescale its metric so the best anchor gets its best IoU.
        metric = metric * positives
        best_metric = metric.amax(dim=-1, keepdim=True)  # (B, M, 1)
        best_overlap = (overlaps * positives).amax(dim=-1, keepdim=True)  # (B, M, 1)
        normalised = (metric * best_overlap / (best_metric + EPS)).amax(dim=1)  # (B, N)
        scores = scores * normalised[..., None]
        return Assignment(labels, boxes, scores, foreground, gt_index)

    @staticmethod
    def _anchors_inside(anchor_points: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
        """Return (B, M, N) true where the anchor centre lies strictly inside the box."""
        left_top = anchor_points[None, None] - gt_boxes[..., None, :2]
        right_bottom = gt_boxes[..., None, 2:] - anchor_points[None, None]
        return torch.cat((left_top, right_bottom), dim=-1).amin(dim=-1) > EPS

    def _alignment(self, pred_scores, pred_boxes, gt_labels, gt_boxes, inside):
        """Return the alignment metric and the clamped CIoU, both (B, M, N), zero outside ``inside``."""
        batch, max_boxes, anchors = inside.shape
        overlaps = torch.zeros(inside.shape, dtype=pred_boxes.dtype, device=pred_boxes.device)
        class_scores = torch.zeros_like(overlaps)

        image_index = torch.arange(batch, device=inside.device)[:, None].expand(batch, max_boxes)
        # (B, M, N): probability that each anchor gives to the class of each box.
        scores_per_box = pred_scores[image_index, :, gt_labels.clamp(min=0)]
        class_scores[inside] = scores_per_box[inside].to(class_scores.dtype)

        gt_expanded = gt_boxes[:, :, None, :].expand(-1, -1, anchors, -1)[inside]
        pred_expanded = pred_boxes[:, None, :, :].expand(-1, max_boxes, -1, -1)[inside]
        overlaps[inside] = box_ciou(gt_expanded, pred_expanded).clamp(min=0).to(overlaps.dtype)

        metric = class_scores.pow(self.alpha) * overlaps.pow(self.beta)
        return metric, overlaps

    def _top_k_mask(self, metric: torch.Tensor) -> torch.Tensor:
        """Return (B, M, N) true for the ``top_k`` anchors with the largest metric per box."""
        k = min(self.top_k, metric.shape[-1])
        top_index = metric.topk(k, dim=-1).indices  # (B, M, k)
        mask = torch.zeros(metric.shape, dtype=torch.bool, device=metric.device)
        mask.scatter_(-1, top_index, True)
        return mask

    @staticmethod
    def _resolve_conflicts(candidates: torch.Tensor, overlaps: torch.Tensor):
        """Keep one box per anchor: the one with the highest IoU where several claim it.

        Returns ``positives`` (B, M, N) bool, ``gt_index`` (B, N) and ``foreground`` (B, N).
        """
        claims = candidates.sum(dim=1)  # (B, N)
        contested = claims > 1
        if contested.any():
            best_box = overlaps.argmax(dim=1)  # (B, N)
            best_one_hot = torch.zeros_like(candidates)
            best_one_hot.scatter_(1, best_box[:, None, :], True)
            candidates = torch.where(contested[:, None, :], best_one_hot, candidates)
        foreground = candidates.any(dim=1)
        gt_index = candidates.to(torch.uint8).argmax(dim=1)
        return candidates, gt_index, foreground

    def _gather_targets(self, gt_labels, gt_boxes, gt_index, foreground):
        batch, max_boxes = gt_labels.shape
        flat_index = gt_index + torch.arange(batch, device=gt_index.device)[:, None] * max_boxes
        labels = gt_labels.reshape(-1)[flat_index].clamp(min=0)  # (B, N)
        boxes = gt_boxes.reshape(-1, 4)[flat_index]  # (B, N, 4)
        scores = torch.nn.functional.one_hot(labels, self.num_classes).to(gt_boxes.dtype)
        scores = scores * foreground[..., None]
        return labels, boxes, scores
