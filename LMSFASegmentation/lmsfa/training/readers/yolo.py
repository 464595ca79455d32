"""Reader for the Ultralytics YOLO segmentation layout: ``data.yaml``, ``images/``, ``labels/*.txt``.

Each line of a label file is ``class x1 y1 x2 y2 ...``: a class index and one polygon in
coordinates normalised to 0..1 by the image width and height. One line is one instance.
Ultralytics joins the parts of a multi-part object into one polygon through zero-width
bridges, so filling the polygon keeps such an object as one instance.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from ...classes import ClassTable
from ...errors import InputError
from .base import IMAGE_SUFFIXES, InstanceDataset, Sample, make_sample, read_rgb

logger = logging.getLogger(__name__)

# Polygon points may sit a little outside 0..1 after rounding by the exporting tool.
COORDINATE_TOLERANCE = 0.01


def yolo_names(data: dict, yaml_path: Path) -> list[str]:
    """Return the class names of a ``data.yaml``: a list, or a dict from index 0..nc-1 to name."""
    names = data.get("names")
    if isinstance(names, dict):
        try:
            indexed = {int(key): str(value) for key, value in names.items()}
        except (TypeError, ValueError) as error:
            raise InputError(f"{yaml_path}: the keys of 'names' must be class indices 0, 1, ... ({error})") from error
        if sorted(indexed) != list(range(len(indexed))):
            raise InputError(f"{yaml_path}: 'names' must number the classes 0..{len(indexed) - 1} without gaps, got {sorted(indexed)}")
        names = [indexed[index] for index in range(len(indexed))]
    if not isinstance(names, list) or not names:
        raise InputError(f"{yaml_path}: 'names' is missing or empty; list the class names in class-index order")
    if "nc" in data and int(data["nc"]) != len(names):
        raise InputError(f"{yaml_path}: 'nc' is {data['nc']} but 'names' lists {len(names)} classes; make them agree")
    return [str(name) for name in names]


def label_path_for(image_path: Path) -> Path:
    """Return the label file of an image: the last ``images`` folder becomes ``labels``, suffix ``.txt``."""
    parts = list(image_path.parts)
    for position in range(len(parts) - 2, -1, -1):
        if parts[position] == "images":
            parts[position] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image_path.with_suffix(".txt")


class YoloSegDataset(InstanceDataset):
    """Instances from an Ultralytics YOLO-seg data set.

    ``yaml_path`` is the ``data.yaml``. Its ``path`` is the root, by default the YAML's
    folder. The split entry (``train``, ``val`` or ``test``) is a folder of images, a
    ``.txt`` list of image paths, or a list of either. An image without a label file, or with an
    empty one, is a negative. Raises :class:`InputError` when the split has images but
    not one label file, because that is a layout error rather than a set of negatives.
    """

    def __init__(
        self,
        yaml_path: Path,
        data: dict,
        split: str = "train",
        flip_map: Optional[dict[int, int]] = None,
        side_specific: bool = False,
    ):
        self.yaml_path = Path(yaml_path)
        self.class_table = ClassTable.from_names(yolo_names(data, self.yaml_path))
        self.flip_map = flip_map
        self.side_specific = side_specific
        root = Path(data.get("path") or self.yaml_path.parent)
        if not root.is_absolute():
            root = (self.yaml_path.parent / root).resolve()
        entry = data.get(split)
        if not entry:
            available = [key for key in ("train", "val", "test") if data.get(key)]
            raise InputError(f"{self.yaml_path} has no '{split}' split; it has {available}")
        entries = entry if isinstance(entry, list) else [entry]
        self.image_paths: list[Path] = []
        for item in entries:
            self.image_paths.extend(self._list_images(root, Path(str(item))))
        if not self.image_paths:
            raise InputError(f"{self.yaml_path}: the '{split}' split {entries} contains no images ({', '.join(IMAGE_SUFFIXES)})")
        self.label_paths = [label_path_for(path) for path in self.image_paths]
        labelled = sum(1 for path in self.label_paths if path.is_file())
        if labelled == 0:
            raise InputError(
                f"{self.yaml_path}: none of the {len(self.image_paths)} '{split}' images has a label file "
                f"(looked for {self.label_paths[0]}); put the .txt files in a 'labels' folder beside 'images'"
            )
        logger.info("YOLO-seg data set %s [%s]: %d images, %d label files", self.yaml_path, split, len(self.image_paths), labelled)

    def _list_images(self, root: Path, item: Path) -> list[Path]:
        path = item if item.is_absolute() else root / item
        if path.is_dir():
            return sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if path.suffix == ".txt" and path.is_file():
            listed = []
            for line in path.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line:
                    image = Path(line)
                    listed.append(image if image.is_absolute() else (root / image))
            return listed
        raise InputError(f"{self.yaml_path}: split entry {item} is neither a folder nor a .txt list ({path} not found)")

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> Sample:
        index = self._check_index(index)
        image_path = self.image_paths[index]
        image = read_rgb(image_path)
        height, width = image.shape[:2]
        masks, classes = [], []
        label_path = self.label_paths[index]
        if label_path.is_file():
            for number, line in enumerate(label_path.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                class_index, polygon = self._parse_line(line, label_path, number)
                mask = np.zeros((height, width), dtype=np.uint8)
                # Ultralytics writes polygons from contour pixel indices divided by the
                # image size, so x * width is a pixel index, not an edge coordinate.
                points = np.round(polygon * (width, height))
                points = np.clip(points, 0, (width - 1, height - 1)).astype(np.int32)
                cv2.fillPoly(mask, [points], 1)
                masks.append(mask.astype(bool))
                classes.append(class_index)
        return make_sample(image, masks, classes, image_path.stem, image_path)

    def _parse_line(self, line: str, label_path: Path, number: int) -> tuple[int, np.ndarray]:
        """Parse ``class x1 y1 ...`` into the class index and an (P, 2) array of normalised points."""
        fields = line.split()
        try:
            class_index = int(fields[0])
            values = np.array([float(value) for value in fields[1:]], dtype=np.float64)
        except ValueError as error:
            raise InputError(f"{label_path}:{number}: expected 'class x1 y1 x2 y2 ...' numbers, got {line!r}") from error
        if not 0 <= class_index < len(self.class_table):
            raise InputError(
                f"{label_path}:{number}: class {class_index} is outside 0..{len(self.class_table) - 1} of {self.yaml_path}"
            )
        if values.size == 4:
            raise InputError(
                f"{label_path}:{number}: the line is a detection box (class cx cy w h), not a polygon; "
                "a segmentation data set needs polygon labels"
            )
        if values.size < 6 or values.size % 2:
            raise InputError(f"{label_path}:{number}: a polygon needs an even number of at least 6 coordinates, got {values.size}")
        if values.min() < -COORDINATE_TOLERANCE or values.max() > 1 + COORDINATE_TOLERANCE:
            raise InputError(
                f"{label_path}:{number}: coordinates must be normalised to 0..1 by the image size, "
                f"got values from {values.min():g} to {values.max():g}"
            )
        return class_index, np.clip(values, 0.0, 1.0).reshape(-1, 2)
