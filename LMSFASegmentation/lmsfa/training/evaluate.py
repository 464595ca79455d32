"""COCO box and mask metrics of an LMSF-A model on a data set, computed with pycocotools.

:class:`TorchPredictor` runs the torch model on one or more frames (letterbox, forward,
class-aware NMS, prototype masks, back to frame pixels). :func:`evaluate_model` runs it over
a data set, builds the ground truth in COCO form from the data set's masks and returns AP,
AP50 and AP75 for boxes (``bbox``) and masks (``segm``), overall and per class.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..classes import ClassTable
from ..errors import InputError
from ..fileio import make_shareable
from ..inference.letterbox import letterbox
from ..inference.postprocess import postprocess
from ..progress import NULL_PROGRESS, Progress
from ..results import Instance

logger = logging.getLogger(__name__)

METRIC_NAMES = ("AP", "AP50", "AP75")


class TorchPredictor:
    """Run an :class:`lmsfa.model.LMSFA` torch model on RGB frames.

    Pre- and post-processing are those of :mod:`lmsfa.inference` (letterbox, class-aware
    NMS, prototype masks in frame pixels), so evaluation scores what inference produces.
    ``conf`` is the minimum class probability, ``iou`` the NMS IoU threshold and ``max_det``
    the maximum number of instances per frame. The model is run in eval mode and put back
    into its previous mode afterwards.
    """

    def __init__(self, model, input_hw: tuple[int, int], class_table: ClassTable, conf: float = 0.25,
                 iou: float = 0.7, max_det: int = 300, device: str | torch.device = "cpu"):
        self.model = model
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.class_table = class_table
        self.conf = conf
        self.iou = iou
        self.max_det = max_det
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray]) -> list[list[Instance]]:
        """Detect instances in a list of (H, W, 3) uint8 RGB frames (sizes may differ).

        Returns one list of :class:`lmsfa.results.Instance` per frame, boxes and masks in
        frame pixels, sorted by decreasing score.
        """
        inputs, geometries = zip(*(letterbox(image, self.input_hw) for image in images))
        batch = torch.from_numpy(np.stack(inputs)).to(self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            pred, (_, _, protos) = self.model(batch)
        finally:
            self.model.train(was_training)
        return postprocess(
            pred.float().cpu().numpy(),
            protos.float().cpu().numpy(),
            geometries,
            self.class_table,
            conf=self.conf,
            iou=self.iou,
            max_det=self.max_det,
        )


def _encode_mask(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _xywh(box) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def ground_truth_coco(samples_meta: list[dict], class_names: Sequence[str]) -> dict:
    """Build a COCO ground-truth dictionary from per-image annotations.

    ``samples_meta`` contains one dict per image with ``id``, ``height``, ``width``, ``file_name``
    and ``annotations``: a list of ``(class_index, box_xyxy, mask)`` with ``mask`` an (H, W)
    bool array. Category ids are class index + 1.

    NOTE: every annotation gets ``iscrowd`` 0 because samples carry crowd regions only as
    an ignore mask, so detections on crowd regions count as false positives.
    """
    images, annotations = [], []
    for image in samples_meta:
        images.append({k: image[k] for k in ("id", "height", "width", "file_name")})
        for class_index, box, mask in image["annotations"]:
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image["id"],
                "category_id": int(class_index) + 1,
                "bbox": _xywh(box),
                "area": float(mask.sum()),
                "segmentation": _encode_mask(mask),
                "iscrowd": 0,
            })
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def instances_to_coco(image_id: int, instances: Sequence[Instance]) -> list[dict]:
    """Turn one frame's detected instances into COCO result entries (bbox and segmentation)."""
    return [
        {
            "image_id": image_id,
            "category_id": int(instance.class_id) + 1,
            "bbox": _xywh(instance.box),
            "score": float(instance.score),
            "segmentation": _encode_mask(instance.mask),
        }
        for instance in instances
    ]


def coco_metrics(ground_truth: dict, results: list[dict], class_names: Sequence[str]) -> dict:
    """Run COCOeval for ``bbox`` and ``segm``.

    Returns ``{"bbox": {...}, "segm": {...}}``, each with ``AP`` (IoU 0.50:0.95), ``AP50``,
    ``AP75`` in 0..1 and ``per_class``: ``{name: {"AP", "AP50", "AP75", "instances"}}``. A
    class without ground truth in the data set has ``None`` values. Metrics are 0 when there
    are no detections.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    instances = {name: 0 for name in class_names}
    for annotation in ground_truth["annotations"]:
        instances[class_names[annotation["category_id"] - 1]] += 1

    metrics = {}
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        coco_gt = COCO()
        coco_gt.dataset = json.loads(json.dumps(ground_truth))
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(json.loads(json.dumps(results))) if results else None
    for iou_type in ("bbox", "segm"):
        per_class = {}
        if coco_dt is None or not ground_truth["annotations"]:
            overall = dict.fromkeys(METRIC_NAMES, 0.0)
            for name in class_names:
                value = 0.0 if instances[name] else None
                per_class[name] = {**dict.fromkeys(METRIC_NAMES, value), "instances": instances[name]}
        else:
            evaluator = COCOeval(coco_gt, coco_dt, iou_type)
            with contextlib.redirect_stdout(quiet):
                evaluator.evaluate()
                evaluator.accumulate()
                evaluator.summarize()
            overall = {name: float(max(evaluator.stats[i], 0.0)) for i, name in enumerate(METRIC_NAMES)}
            per_class = _per_class(evaluator, class_names, instances)
        metrics[iou_type] = {**overall, "per_class": per_class}
    logger.debug("pycocotools output:\n%s", quiet.getvalue())
    return metrics


def _per_class(evaluator, class_names, instances) -> dict:
    """Read per-class AP from COCOeval's precision array (IoU x recall x class x area x maxDets)."""
    precision = evaluator.eval["precision"]  # (10, 101, K, 4, 3); -1 where undefined
    iou_thresholds = evaluator.params.iouThrs
    index_50 = int(np.argmin(np.abs(iou_thresholds - 0.5)))
    index_75 = int(np.argmin(np.abs(iou_thresholds - 0.75)))
    category_ids = list(evaluator.params.catIds)
    per_class = {}
    for class_index, name in enumerate(class_names):
        entry = {"instances": instances[name]}
        if not instances[name] or (class_index + 1) not in category_ids:
            per_class[name] = {**dict.fromkeys(METRIC_NAMES), **entry}
            continue
        k = category_ids.index(class_index + 1)
        values = {}
        for metric, iou_slice in (("AP", slice(None)), ("AP50", index_50), ("AP75", index_75)):
            p = precision[iou_slice, :, k, 0, -1]
            valid = p[p > -1]
            values[metric] = float(valid.mean()) if valid.size else 0.0
        per_class[name] = {**values, **entry}
    return per_class


def evaluate_model(
    model,
    dataset,
    input_hw: tuple[int, int],
    class_table: Optional[ClassTable] = None,
    batch_size: int = 4,
    conf: float = 0.001,
    iou: float = 0.7,
    max_det: int = 300,
    device: str | torch.device = "cpu",
    progress: Progress = NULL_PROGRESS,
    predictor=None,
) -> dict:
    """Compute COCO box and mask metrics of ``model`` on every image of ``dataset``.

    ``dataset[i]`` returns a sample with an (H, W, 3) uint8 RGB ``image`` and its ground
    truth (``masks``, ``classes``, ``boxes`` in frame pixels). ``class_table`` defaults to
    ``dataset.class_table`` and must list the model's classes in the model's order.
    Returns the :func:`coco_metrics` dictionary plus ``images`` and ``instances`` counts.
    ``predictor`` replaces the default :class:`TorchPredictor` (any callable from a list of
    frames to a list of instance lists per frame).
    """
    if class_table is None:
        class_table = dataset.class_table
    class_names = list(class_table.names)
    if len(dataset) == 0:
        raise InputError("the evaluation data set has no images; check its path and split")
    if predictor is None:
        predictor = TorchPredictor(model, input_hw, class_table, conf=conf, iou=iou, max_det=max_det, device=device)

    meta, results = [], []
    total = len(dataset)
    for start in range(0, total, batch_size):
        progress.check_cancelled()
        samples = [dataset[i] for i in range(start, min(start + batch_size, total))]
        detections = predictor([s.image for s in samples])
        for offset, (sample, found) in enumerate(zip(samples, detections)):
            image_id = start + offset + 1
            height, width = sample.image.shape[:2]
            annotations = list(zip(np.asarray(sample.classes).tolist(), np.asarray(sample.boxes), sample.masks))
            meta.append({"id": image_id, "height": height, "width": width,
                         "file_name": str(sample.path), "annotations": annotations})
            results.extend(instances_to_coco(image_id, found))
        progress.update(min(start + batch_size, total), total, "evaluating")

    ground_truth = ground_truth_coco(meta, class_names)
    metrics = coco_metrics(ground_truth, results, class_names)
    metrics["images"] = total
    metrics["instances"] = len(ground_truth["annotations"])
    return metrics


def format_table(metrics: dict) -> str:
    """Format metrics as a fixed-width text table: one row per class plus ``all``, in percent."""
    header = f"{'class':<24}{'instances':>10}" + "".join(
        f"{kind + ' ' + name:>12}" for kind in ("box", "mask") for name in METRIC_NAMES
    )
    lines = [header, "-" * len(header)]

    def cell(value):
        return f"{'-':>12}" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:>12.1f}"

    row = f"{'all':<24}{metrics.get('instances', ''):>10}"
    row += "".join(cell(metrics[kind][name]) for kind in ("bbox", "segm") for name in METRIC_NAMES)
    lines.append(row)
    for name, box_entry in metrics["bbox"]["per_class"].items():
        mask_entry = metrics["segm"]["per_class"][name]
        row = f"{name[:23]:<24}{box_entry['instances']:>10}"
        row += "".join(cell(box_entry[m]) for m in METRIC_NAMES)
        row += "".join(cell(mask_entry[m]) for m in METRIC_NAMES)
        lines.append(row)
    return "\n".join(lines)


def write_json(data: dict, path: str | os.PathLike) -> None:
    """Write ``data`` as indented JSON, atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        make_shareable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
