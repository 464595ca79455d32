"""COCO instance annotations with compressed RLE masks, one annotation per instance.

Output folder::

    annotations.json     images, annotations and categories
    images/<stem>.png    the frames, lossless (only when the input has frames)

RLE keeps every pixel of every instance, so overlapping instances stay intact. Category
``k + 1`` is class ``k`` of the class table, and every class is listed, with or without
instances. Each image entry carries ``frame_index`` (the frame's index in its source)
and ``timestamp_s``. Each annotation carries ``score`` and ``track_id``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import numpy as np
from pycocotools import mask as mask_utils

from ..progress import Progress
from .atomic import atomic_folder
from .common import ExportReport, frame_stem, label_value, non_empty, write_png
from .inputs import ExportInput

logger = logging.getLogger(__name__)

ANNOTATIONS_FILE = "annotations.json"


def encode_rle(mask: np.ndarray) -> dict:
    """Return the compressed COCO RLE of a boolean (H, W) mask, with ``counts`` as an ASCII string."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def categories(export_input: ExportInput) -> list[dict]:
    entries = []
    for class_id, info in enumerate(export_input.class_table.classes):
        entry = {"id": label_value(class_id), "name": info.name, "supercategory": "object", "color": list(info.color)}
        if info.type is not None:
            entry["snomed_type"] = {"code_value": info.type.code_value, "coding_scheme": info.type.coding_scheme,
                                    "code_meaning": info.type.code_meaning}
        entries.append(entry)
    return entries


def export_coco(
    export_input: ExportInput,
    output: Path,
    first: Optional[int] = None,
    last: Optional[int] = None,
    overwrite: bool = False,
    progress: Optional[Progress] = None,
    images: bool = True,
) -> ExportReport:
    """Write a COCO instance data set of the frames ``first..last`` into the folder ``output``.

    Args:
        images: also write each frame as ``images/<stem>.png``; ignored for an input
            without frames, whose ``file_name`` entries then name images that do not exist.
    """
    progress = progress or Progress()
    report = ExportReport("coco", Path(output))
    total = export_input.count(first, last)
    with atomic_folder(output, overwrite) as folder:
        image_entries, annotations = [], []
        for position, frame in enumerate(export_input.frames(first, last)):
            progress.check_cancelled()
            stem = frame_stem(export_input.name, frame.index)
            image_id = position + 1
            image_entries.append({
                "id": image_id,
                "file_name": f"{stem}.png",
                "height": frame.shape[0],
                "width": frame.shape[1],
                "frame_index": frame.index,
                "timestamp_s": frame.timestamp_s,
            })
            if images and frame.image is not None:
                write_png(folder / "images" / f"{stem}.png", frame.image, rgb=True)
            for instance in non_empty(frame.instances, report, frame.index):
                rle = encode_rle(instance.mask)
                annotations.append({
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label_value(instance.class_id),
                    "segmentation": rle,
                    "area": int(np.count_nonzero(instance.mask)),
                    "bbox": [float(v) for v in mask_utils.toBbox({**rle, "counts": rle["counts"].encode("ascii")})],
                    "iscrowd": 0,
                    "score": float(instance.score),
                    "track_id": instance.track_id,
                })
                report.mask_pixels += annotations[-1]["area"]
            report.frame_indices.append(frame.index)
            progress.update(position + 1, total, f"COCO: frame {frame.index}")
        data = {
            "info": {"description": f"{export_input.name}: LMSF-A instance masks", "version": "1.0"},
            "images": image_entries,
            "annotations": annotations,
            "categories": categories(export_input),
        }
        (folder / ANNOTATIONS_FILE).write_text(json.dumps(data), encoding="utf-8")
        report.instances = len(annotations)
    if images and not export_input.has_images:
        report.notice("the input has no frames, so no images were written; copy the frames into images/")
    return report
