"""Post-processing: network outputs to instances in frame pixels.

Steps per image: confidence threshold on the best class of each anchor, class-aware
non-maximum suppression (OpenCV's ``cv2.dnn.NMSBoxesBatched``), a cap on the number of
detections, then one mask per detection from the prototype masks and its 32 coefficients.

Masks are assembled in frame pixels directly. For each frame pixel whose centre lies in the
detection box, the mask logit (coefficients x prototypes) is sampled bilinearly at the
matching prototype-grid position. The pixel is set where the logit is above 0
(probability above 0.5). Only the box region is interpolated, never the whole frame, and a
box smaller than one pixel still gets the pixel under its centre, so instances of a few
pixels survive. A detection whose mask has no pixel above 0 is dropped, because an empty
instance cannot be drawn, edited or exported; ``counts["empty_mask"]`` counts these.
"""

from __future__ import annotations

import logging
import math
from typing import Optional, Sequence

import cv2
import numpy as np

from ..classes import ClassTable
from ..errors import InputError
from ..results import Instance
from .letterbox import Letterbox

logger = logging.getLogger(__name__)

MAX_NMS_CANDIDATES = 30000
"""Candidates above the confidence threshold that go into NMS at most (highest scores first)."""

DFL_BINS = 16


def postprocess(
    pred: np.ndarray,
    protos: np.ndarray,
    letterboxes: Sequence[Letterbox],
    class_table: ClassTable,
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
    counts: Optional[dict] = None,
) -> list[list[Instance]]:
    """Turn a batch of network outputs into instances per image.

    ``pred`` is (B, 4 + nc + nm, N) float: boxes (cx, cy, w, h) in network input pixels,
    class probabilities in 0..1 and nm raw mask coefficients per anchor. ``protos`` is
    (B, nm, H_in / s, W_in / s) float prototype masks on a grid of stride s (4 for LMSF-A).
    ``letterboxes[b]`` is the geometry that made input ``b``. Returns, per image, instances
    sorted by decreasing score with boxes in frame pixels and boolean masks of frame size.
    ``counts``, when given, gets ``"detections"`` and ``"empty_mask"`` added to.
    """
    pred = np.asarray(pred)
    protos = np.asarray(protos)
    if pred.ndim != 3 or protos.ndim != 4 or pred.shape[0] != protos.shape[0]:
        raise InputError(f"expected pred (B, C, N) and protos (B, nm, h, w), got {pred.shape} and {protos.shape}")
    if len(letterboxes) != pred.shape[0]:
        raise InputError(f"expected one letterbox per image: got {len(letterboxes)} for a batch of {pred.shape[0]}")
    nm = protos.shape[1]
    nc = pred.shape[1] - 4 - nm
    if nc != len(class_table):
        raise InputError(
            f"the network output has {nc} classes but the class table has {len(class_table)}: {class_table.names}"
        )

    results = []
    for b, geometry in enumerate(letterboxes):
        detections = select_detections(pred[b], nc, conf, iou, max_det)
        results.append(_build_instances(detections, pred[b], protos[b], geometry, class_table, counts))
    return results


def select_detections(pred: np.ndarray, nc: int, conf: float, iou: float, max_det: int) -> np.ndarray:
    """Threshold and NMS one image's (4 + nc + nm, N) prediction.

    Returns the kept anchor indices, int64, sorted by decreasing score, at most ``max_det``.
    NMS is class-aware: boxes of different classes never suppress each other.
    """
    class_probs = pred[4 : 4 + nc]
    if nc == 1:
        scores = class_probs[0]
        class_ids = np.zeros(scores.shape, dtype=np.int32)
    else:
        class_ids = class_probs.argmax(axis=0).astype(np.int32)
        scores = np.take_along_axis(class_probs, class_ids[None].astype(np.int64), axis=0)[0]

    candidates = np.flatnonzero(scores > conf)
    if candidates.size == 0:
        return candidates.astype(np.int64)
    if candidates.size > MAX_NMS_CANDIDATES:
        top = np.argpartition(-scores[candidates], MAX_NMS_CANDIDATES - 1)[:MAX_NMS_CANDIDATES]
        candidates = candidates[top]

    cx, cy, w, h = (pred[i, candidates].astype(np.float64) for i in range(4))
    boxes_xywh = np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)
    kept = cv2.dnn.NMSBoxesBatched(
        boxes_xywh, scores[candidates].astype(np.float32), class_ids[candidates],
        float(conf), float(iou), 1.0, int(max_det),
    )
    kept = np.asarray(kept, dtype=np.int64).reshape(-1)
    return candidates[kept]


def _build_instances(
    detections: np.ndarray,
    pred: np.ndarray,
    protos: np.ndarray,
    geometry: Letterbox,
    class_table: ClassTable,
    counts: Optional[dict],
) -> list[Instance]:
    if detections.size == 0:
        return []
    nm = protos.shape[0]
    nc = pred.shape[0] - 4 - nm
    grid_stride = geometry.input_hw[1] / protos.shape[2]
    frame_to_grid = geometry.frame_to_grid_matrix(grid_stride)

    cxcywh = pred[0:4, detections].T.astype(np.float64)
    boxes_input = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], axis=1)
    boxes_frame = geometry.boxes_to_frame(boxes_input)
    class_probs = pred[4 : 4 + nc, detections]
    coefficients = pred[4 + nc :, detections].T.astype(np.float32)

    instances = []
    for k in range(detections.size):
        class_id = int(class_probs[:, k].argmax())
        mask = assemble_mask(coefficients[k], protos, boxes_frame[k], geometry.frame_hw, frame_to_grid)
        if mask is None:
            logger.debug("dropped a %s detection (score %.3f) whose mask is empty",
                         class_table[class_id].name, class_probs[class_id, k])
            if counts is not None:
                counts["empty_mask"] = counts.get("empty_mask", 0) + 1
            continue
        instances.append(Instance(
            class_id=class_id,
            class_name=class_table[class_id].name,
            score=float(class_probs[class_id, k]),
            box=boxes_frame[k],
            mask=mask,
        ))
    if counts is not None:
        counts["detections"] = counts.get("detections", 0) + len(instances)
    return instances


def assemble_mask(
    coefficients: np.ndarray,
    protos: np.ndarray,
    box: np.ndarray,
    frame_hw: tuple[int, int],
    frame_to_grid: np.ndarray,
) -> Optional[np.ndarray]:
    """Build one instance mask at frame resolution, or return None when it is empty.

    ``coefficients`` (nm,) float32, ``protos`` (nm, h, w) prototype grid, ``box``
    ``(x1, y1, x2, y2)`` in frame pixels (already clipped to the frame), ``frame_to_grid``
    the 2x3 map from frame pixel indices to grid indices
    (:meth:`Letterbox.frame_to_grid_matrix`). Returns a (H, W) bool mask that is False
    outside the box.
    """
    frame_h, frame_w = frame_hw
    col0, col1 = _pixel_span(box[0], box[2], frame_w)
    row0, row1 = _pixel_span(box[1], box[3], frame_h)

    # The grid cells that bilinear sampling of this pixel block can touch, plus one cell.
    grid_h, grid_w = protos.shape[1:]
    corners = np.array([[col0, row0, 1.0], [col1 - 1, row1 - 1, 1.0]]) @ frame_to_grid.T
    g_col0 = max(0, math.floor(corners[0, 0]) - 1)
    g_row0 = max(0, math.floor(corners[0, 1]) - 1)
    g_col1 = min(grid_w, math.ceil(corners[1, 0]) + 2)
    g_row1 = min(grid_h, math.ceil(corners[1, 1]) + 2)
    crop = protos[:, g_row0:g_row1, g_col0:g_col1]
    crop_h, crop_w = crop.shape[1:]
    logits = (coefficients @ crop.reshape(crop.shape[0], -1).astype(np.float32)).reshape(crop_h, crop_w)

    # Pixel (row0 + i, col0 + j) of the block samples the crop at this affine position.
    block_to_crop = frame_to_grid.copy()
    block_to_crop[0, 2] += frame_to_grid[0, 0] * col0 - g_col0
    block_to_crop[1, 2] += frame_to_grid[1, 1] * row0 - g_row0
    block = cv2.warpAffine(
        logits, block_to_crop, (col1 - col0, row1 - row0),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
    )
    inside = block > 0
    if not inside.any():
        return None
    mask = np.zeros((frame_h, frame_w), dtype=bool)
    mask[row0:row1, col0:col1] = inside
    return mask


def _pixel_span(low: float, high: float, size: int) -> tuple[int, int]:
    """Return the [start, stop) pixel indices whose centres lie in [low, high), at least one pixel."""
    start = max(0, math.ceil(low - 0.5))
    stop = min(size, math.ceil(high - 0.5))
    if stop <= start:
        centre = min(size - 1, max(0, math.floor((low + high) / 2)))
        return centre, centre + 1
    return start, stop


def decode_raw_maps(raw_maps: Sequence[np.ndarray], strides: Sequence[float], nc: int) -> np.ndarray:
    """Decode raw head maps into boxes and class probabilities (DFL decoding).

    ``raw_maps[i]`` is (B, 4 * 16 + nc, H_i, W_i): 16 distribution logits per box side
    (left, top, right, bottom, in that order) then nc class logits, on a grid of stride
    ``strides[i]``. Each side distance is the expectation of the softmax over bins 0..15, in
    grid cells, measured from the cell centre. Returns (B, 4 + nc, N) float32: boxes
    (cx, cy, w, h) in input pixels and sigmoid class probabilities, anchors level by level
    and row-major, the layout of the network's eval-mode output.
    """
    outputs = []
    for raw, stride in zip(raw_maps, strides):
        raw = np.asarray(raw, dtype=np.float32)
        b, channels, h, w = raw.shape
        if channels != 4 * DFL_BINS + nc:
            raise InputError(f"raw map has {channels} channels, expected {4 * DFL_BINS + nc} for nc={nc}")
        flat = raw.reshape(b, channels, h * w)
        logits = flat[:, : 4 * DFL_BINS].reshape(b, 4, DFL_BINS, h * w)
        logits = logits - logits.max(axis=2, keepdims=True)
        weights = np.exp(logits)
        weights /= weights.sum(axis=2, keepdims=True)
        distances = (weights * np.arange(DFL_BINS, dtype=np.float32)[None, None, :, None]).sum(axis=2)

        grid_y, grid_x = np.meshgrid(np.arange(h, dtype=np.float32) + 0.5,
                                     np.arange(w, dtype=np.float32) + 0.5, indexing="ij")
        anchor_x = grid_x.reshape(-1)
        anchor_y = grid_y.reshape(-1)
        x1 = anchor_x - distances[:, 0]
        y1 = anchor_y - distances[:, 1]
        x2 = anchor_x + distances[:, 2]
        y2 = anchor_y + distances[:, 3]
        boxes = np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1) * np.float32(stride)
        probs = 1.0 / (1.0 + np.exp(-flat[:, 4 * DFL_BINS :]))
        outputs.append(np.concatenate([boxes, probs], axis=1))
    return np.concatenate(outputs, axis=2).astype(np.float32)


def mask_to_polygons(mask: np.ndarray) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """Trace a binary (H, W) mask into polygons with holes.

    Returns one ``(exterior, holes)`` pair per connected region (8-connected), where
    ``exterior`` and each hole are (K, 2) float64 ``(x, y)`` vertices in frame pixels at the
    centres of the boundary pixels (index + 0.5, the convention of :mod:`lmsfa.results`).
    A region inside a hole is a separate pair.
    """
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    hierarchy = hierarchy[0]
    polygons = []
    for index, contour in enumerate(contours):
        if hierarchy[index][3] != -1:
            continue  # a hole: collected under its parent below
        exterior = contour.reshape(-1, 2).astype(np.float64) + 0.5
        holes = []
        child = hierarchy[index][2]
        while child != -1:
            holes.append(contours[child].reshape(-1, 2).astype(np.float64) + 0.5)
            child = hierarchy[child][0]
        polygons.append((exterior, holes))
    return polygons
