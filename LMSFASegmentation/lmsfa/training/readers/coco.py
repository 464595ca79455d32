"""Reader for COCO instance annotation files (polygons, compressed and uncompressed RLE)."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Optional

import numpy as np
from pycocotools import mask as mask_utils

from ...classes import ClassTable
from ...errors import InputError
from .base import InstanceDataset, Sample, make_sample, read_rgb

logger = logging.getLogger(__name__)


def compressed_rle_length(counts: str) -> int:
    """Return the number of pixels that a compressed COCO RLE string covers.

    The string is the format of the COCO API's ``rleToString``. It stores each run length
    as groups of 5 bits with a continuation bit, offset by 48 into printable ASCII. From
    the third run on, a run is stored as the difference to the run two places before.
    pycocotools 2.0.11 decodes a short string into uninitialised memory, so the length is
    checked before decoding.
    """
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value = 0
        shift = 0
        more = True
        while more:
            if position >= len(counts):
                raise ValueError("the string ends inside a run length")
            code = ord(counts[position]) - 48
            value |= (code & 0x1F) << (5 * shift)
            more = bool(code & 0x20)
            position += 1
            shift += 1
            if not more and code & 0x10:
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
        if value < 0:
            raise ValueError("a run length is negative")
    return sum(runs)


class CocoDataset(InstanceDataset):
    """Instances from a COCO instance JSON file.

    Class indices follow the order of the ``categories`` list: the first category is class
    0. Each annotation is one instance, so a polygon annotation with several parts stays
    one instance. ``iscrowd`` annotations become :attr:`Sample.ignore_mask` instead of
    instances. Images without annotations are kept as negatives.

    ``image_root`` is the folder that ``file_name`` is relative to. By default it is the
    folder ``images/`` beside the JSON file when that exists, else the JSON file's folder.
    """

    def __init__(
        self,
        json_path: Path,
        image_root: Optional[Path] = None,
        flip_map: Optional[dict[int, int]] = None,
        side_specific: bool = False,
    ):
        self.json_path = Path(json_path)
        if image_root is None:
            beside = self.json_path.parent / "images"
            image_root = beside if beside.is_dir() else self.json_path.parent
        self.image_root = Path(image_root)
        data = self._load_json()

        categories = data.get("categories")
        if not isinstance(categories, list) or not categories:
            raise InputError(f"{self.json_path}: 'categories' is missing or empty; a COCO instance file needs its classes")
        try:
            category_ids = [int(category["id"]) for category in categories]
            names = [str(category["name"]) for category in categories]
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"{self.json_path}: every category needs an integer 'id' and a 'name' ({error})") from error
        if len(set(category_ids)) != len(category_ids):
            raise InputError(f"{self.json_path}: category ids are not unique: {category_ids}")
        self.category_to_class = {category_id: index for index, category_id in enumerate(category_ids)}
        self.class_table = ClassTable.from_names(names)
        self.flip_map = flip_map
        self.side_specific = side_specific

        self.images = self._index_images(data.get("images"))
        self.annotations_by_image: dict[int, list[dict]] = defaultdict(list)
        annotations = data.get("annotations") or []
        for annotation in annotations:
            self._check_annotation(annotation)
            self.annotations_by_image[int(annotation["image_id"])].append(annotation)
        if annotations and not any(not a.get("iscrowd", 0) for a in annotations):
            raise InputError(
                f"{self.json_path}: all {len(annotations)} annotations are iscrowd regions, so no image has an "
                "instance to train on; set iscrowd to 0 on the instance annotations"
            )
        positives = sum(1 for image in self.images if self.annotations_by_image.get(image["id"]))
        logger.info(
            "COCO data set %s: %d images (%d with annotations), %d annotations, %d classes",
            self.json_path, len(self.images), positives, len(annotations), len(self.class_table),
        )

    def _load_json(self) -> dict:
        if not self.json_path.is_file():
            raise InputError(f"COCO annotation file not found: {self.json_path}")
        try:
            with open(self.json_path, encoding="utf-8") as file:
                data = json.load(file)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(f"{self.json_path} is not valid JSON: {error}") from error
        if not isinstance(data, dict):
            raise InputError(f"{self.json_path}: a COCO file is a JSON object with 'images', 'annotations', 'categories'")
        return data

    def _index_images(self, images) -> list[dict]:
        if not isinstance(images, list) or not images:
            raise InputError(f"{self.json_path}: 'images' is missing or empty")
        checked = []
        seen = set()
        for image in images:
            try:
                entry = {
                    "id": int(image["id"]),
                    "file_name": str(image["file_name"]),
                    "height": int(image["height"]),
                    "width": int(image["width"]),
                }
            except (KeyError, TypeError, ValueError) as error:
                raise InputError(
                    f"{self.json_path}: image entry {image!r} needs 'id', 'file_name', 'height' and 'width' ({error})"
                ) from error
            if entry["id"] in seen:
                raise InputError(f"{self.json_path}: image id {entry['id']} appears twice; give every image a unique id")
            seen.add(entry["id"])
            checked.append(entry)
        self._image_by_id = {entry["id"]: entry for entry in checked}
        return checked

    def _check_annotation(self, annotation: dict) -> None:
        """Check ids, category and the RLE size of one annotation without decoding it."""
        annotation_id = annotation.get("id", "?")
        try:
            image_id = int(annotation["image_id"])
            category_id = int(annotation["category_id"])
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(
                f"{self.json_path}: annotation {annotation_id} needs integer 'image_id' and 'category_id'"
            ) from error
        image = self._image_by_id.get(image_id)
        if image is None:
            raise InputError(f"{self.json_path}: annotation {annotation_id} refers to image id {image_id}, which is not in 'images'")
        if category_id not in self.category_to_class:
            raise InputError(
                f"{self.json_path}: annotation {annotation_id} has category_id {category_id}, which is not in "
                f"'categories' (ids {sorted(self.category_to_class)})"
            )
        segmentation = annotation.get("segmentation")
        if segmentation is None or segmentation == []:
            raise InputError(
                f"{self.json_path}: annotation {annotation_id} has no 'segmentation'; instance training needs a "
                "polygon or RLE mask for every annotation"
            )
        if isinstance(segmentation, dict):
            self._check_rle(segmentation, image, annotation_id)
        elif isinstance(segmentation, list):
            for polygon in segmentation:
                if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
                    raise InputError(
                        f"{self.json_path}: annotation {annotation_id} has a polygon with {len(polygon) if isinstance(polygon, list) else '?'} "
                        "values; a polygon is a flat list of at least 3 x, y pairs"
                    )
        else:
            raise InputError(f"{self.json_path}: annotation {annotation_id} has a 'segmentation' of type {type(segmentation).__name__}")

    def _check_rle(self, rle: dict, image: dict, annotation_id) -> None:
        height, width = image["height"], image["width"]
        size = rle.get("size")
        counts = rle.get("counts")
        if size is None or counts is None:
            raise InputError(f"{self.json_path}: annotation {annotation_id} has an RLE without 'size' or 'counts'")
        if [int(v) for v in size] != [height, width]:
            raise InputError(
                f"{self.json_path}: annotation {annotation_id} has an RLE of size {list(size)} but its image "
                f"{image['file_name']} is {height}x{width} (height x width)"
            )
        if isinstance(counts, list):
            covered = sum(int(v) for v in counts)
        else:
            try:
                covered = compressed_rle_length(counts if isinstance(counts, str) else counts.decode("ascii"))
            except (ValueError, UnicodeDecodeError) as error:
                raise InputError(f"{self.json_path}: annotation {annotation_id} has a corrupt RLE string ({error})") from error
        if covered != height * width:
            raise InputError(
                f"{self.json_path}: annotation {annotation_id} has RLE counts that cover {covered} pixels, but its "
                f"image is {height}x{width} = {height * width} pixels; re-export the mask for this image size"
            )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Sample:
        image_info = self.images[self._check_index(index)]
        path = self.image_root / image_info["file_name"]
        image = read_rgb(path)
        height, width = image.shape[:2]
        if (height, width) != (image_info["height"], image_info["width"]):
            raise InputError(
                f"{path} is {height}x{width} (height x width) but {self.json_path} gives "
                f"{image_info['height']}x{image_info['width']}; fix the 'height'/'width' of image id {image_info['id']}"
            )
        masks, classes = [], []
        ignore_mask = None
        for annotation in self.annotations_by_image.get(image_info["id"], []):
            mask = self._decode(annotation["segmentation"], height, width)
            if annotation.get("iscrowd", 0):
                ignore_mask = mask if ignore_mask is None else ignore_mask | mask
                continue
            if not mask.any():
                logger.warning(
                    "%s: annotation %s of image %s has an empty mask and is skipped",
                    self.json_path, annotation.get("id", "?"), image_info["file_name"],
                )
                continue
            masks.append(mask)
            classes.append(self.category_to_class[int(annotation["category_id"])])
        return make_sample(image, masks, classes, image_info["id"], path, ignore_mask)

    @staticmethod
    def _decode(segmentation, height: int, width: int) -> np.ndarray:
        """Decode a polygon list or an RLE into one (H, W) bool mask; polygon parts are merged."""
        if isinstance(segmentation, list):
            rles = mask_utils.frPyObjects(segmentation, height, width)
            rle = mask_utils.merge(rles)
        elif isinstance(segmentation["counts"], list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            counts = segmentation["counts"]
            rle = {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        return mask_utils.decode(rle).astype(bool)
