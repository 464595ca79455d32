"""Reader for semantic label-map folders: one label map per image, instances from connected components."""

from __future__ import annotations

import fnmatch
import logging
import time
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from ...classes import ClassTable
from ...errors import InputError
from .base import IMAGE_SUFFIXES, InstanceDataset, Sample, find_image, make_sample, read_label_map, read_rgb

logger = logging.getLogger(__name__)

LOSSY_SUFFIXES = (".jpg", ".jpeg")


class LabelMapDataset(InstanceDataset):
    """Instances from semantic label maps in ``labels_dir`` paired with images in ``images_dir``.

    ``labels_dir/a/b/0001.png`` pairs with ``images_dir/a/b/0001.<image suffix>``.
    ``class_values`` maps each label value to its class name; class indices follow the
    ascending label values. ``background`` values are no class. Every 8-connected region of
    one class with at least ``min_area`` pixels is one instance, holes included, so two
    touching regions of one class become one instance and separate parts become several.

    ``include`` limits the data set to label files whose path relative to ``labels_dir``
    matches one of the glob patterns, or lies under one of the listed folders.

    JPEG label maps are lossy: their values are snapped to the nearest declared value with
    a warning, instead of every compression artefact becoming a class. A lossless map with
    an undeclared value raises :class:`InputError`.
    """

    def __init__(
        self,
        images_dir: Path,
        labels_dir: Path,
        class_values: dict[int, str],
        min_area: int = 64,
        include: Optional[Sequence[str]] = None,
        background: Sequence[int] = (0,),
        flip_map: Optional[dict[int, int]] = None,
        side_specific: bool = False,
    ):
        self.images_dir = Path(images_dir)
        self.labels_dir = Path(labels_dir)
        if not class_values:
            raise InputError("a label-map data set needs a class table: map each label value to a class name")
        if min_area < 1:
            raise InputError(f"min_area must be at least 1 pixel, got {min_area}")
        overlap = set(class_values) & set(background)
        if overlap:
            raise InputError(f"label values {sorted(overlap)} are declared both as classes and as background")
        self.values = sorted(int(value) for value in class_values)
        self.class_table = ClassTable.from_names([str(class_values[value]) for value in self.values])
        self.background = tuple(int(value) for value in background)
        self.min_area = int(min_area)
        self.flip_map = flip_map
        self.side_specific = side_specific

        for folder, role in ((self.images_dir, "image"), (self.labels_dir, "label map")):
            if not folder.is_dir():
                raise InputError(f"{role} folder not found: {folder}")
        self.label_paths = self._list_label_maps(include)
        self.image_paths = []
        for label_path in self.label_paths:
            relative = label_path.relative_to(self.labels_dir)
            image_path = find_image(self.images_dir / relative.parent, relative.stem)
            if image_path is None:
                raise InputError(
                    f"no image for label map {label_path}: expected {self.images_dir / relative.parent / relative.stem}"
                    f" with one of {', '.join(IMAGE_SUFFIXES)}"
                )
            self.image_paths.append(image_path)
        self._check_values_and_instances()

    def _list_label_maps(self, include: Optional[Sequence[str]]) -> list[Path]:
        paths = sorted(p for p in self.labels_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if include:
            patterns = [str(pattern).strip("/") for pattern in include]
            paths = [p for p in paths if self._matches(p.relative_to(self.labels_dir).as_posix(), patterns)]
            if not paths:
                raise InputError(f"no label map under {self.labels_dir} matches {list(include)}")
        if not paths:
            raise InputError(f"no label maps found under {self.labels_dir} ({', '.join(IMAGE_SUFFIXES)})")
        return paths

    @staticmethod
    def _matches(relative: str, patterns: list[str]) -> bool:
        """Return whether the file, or one of the folders above it, matches a glob pattern."""
        parts = relative.split("/")
        candidates = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
        return any(fnmatch.fnmatchcase(candidate, pattern) for pattern in patterns for candidate in candidates)

    def _check_values_and_instances(self) -> None:
        """Check every map for undeclared values, and check that at least one instance exists.

        Reading every map once at open time costs a few milliseconds a map, and turns a
        wrong class table into an error before training starts instead of in a later epoch.
        """
        started = time.perf_counter()
        allowed = set(self.values) | set(self.background)
        found_instance = False
        lossy = 0
        for label_path in self.label_paths:
            labels = read_label_map(label_path)
            if self._is_lossy(label_path):
                lossy += 1
                labels = self._snap_lossy(labels)
            else:
                unknown = sorted(set(np.unique(labels).tolist()) - allowed)
                if unknown:
                    raise InputError(
                        f"label map {label_path} contains values {unknown[:20]} that the class table does not declare "
                        f"(classes {self.values}, background {list(self.background)}); add them to the class table "
                        "or set them to a background value"
                    )
            if not found_instance:
                found_instance = bool(self._instances(labels)[0])
        if lossy:
            logger.warning(
                "%d of %d label maps under %s are lossy JPEG files; each of their pixels is set to the nearest "
                "declared value %s. Save label maps as PNG to keep exact labels.",
                lossy, len(self.label_paths), self.labels_dir, sorted(allowed),
            )
        if not found_instance:
            raise InputError(
                f"none of the {len(self.label_paths)} label maps under {self.labels_dir} has a region of a declared class "
                f"with at least min_area={self.min_area} pixels; check the class values or lower min_area"
            )
        logger.info(
            "label-map data set %s: %d maps, %d classes, checked in %.1f s",
            self.labels_dir, len(self.label_paths), len(self.values), time.perf_counter() - started,
        )

    @staticmethod
    def _is_lossy(path: Path) -> bool:
        return path.suffix.lower() in LOSSY_SUFFIXES

    def _snap_lossy(self, labels: np.ndarray) -> np.ndarray:
        """Map every value of a JPEG label map to the nearest declared class or background value.

        For a binary 0/255 mask this is a threshold at 128, and it restores maps whose label
        values lie far apart exactly. NOTE: with close values (0, 1, 2, ...), ringing at an
        edge between two classes can leave thin strips of a third class. Only strips
        smaller than ``min_area`` are removed.
        """
        targets = np.array(sorted(set(self.values) | set(self.background)), dtype=np.int64)
        lookup = np.arange(int(labels.max()) + 1)
        nearest = np.abs(lookup[:, None] - targets[None, :]).argmin(axis=1)
        return targets[nearest][labels]

    def _instances(self, labels: np.ndarray) -> tuple[list[np.ndarray], list[int]]:
        masks, classes = [], []
        for class_index, value in enumerate(self.values):
            region = (labels == value).astype(np.uint8)
            if not region.any():
                continue
            count, components, stats, _ = cv2.connectedComponentsWithStats(region, connectivity=8)
            for component in range(1, count):
                if stats[component, cv2.CC_STAT_AREA] >= self.min_area:
                    masks.append(components == component)
                    classes.append(class_index)
        return masks, classes

    def __len__(self) -> int:
        return len(self.label_paths)

    def __getitem__(self, index: int) -> Sample:
        index = self._check_index(index)
        label_path = self.label_paths[index]
        image_path = self.image_paths[index]
        image = read_rgb(image_path)
        labels = read_label_map(label_path)
        if labels.shape != image.shape[:2]:
            raise InputError(
                f"label map {label_path} is {labels.shape[0]}x{labels.shape[1]} but image {image_path} is "
                f"{image.shape[0]}x{image.shape[1]} (height x width); a label map must have the size of its image"
            )
        if self._is_lossy(label_path):
            labels = self._snap_lossy(labels)
        masks, classes = self._instances(labels)
        image_id = label_path.relative_to(self.labels_dir).with_suffix("").as_posix()
        return make_sample(image, masks, classes, image_id, image_path)
