"""Reader for per-frame Slicer segmentations (``.seg.nrrd``), the module's own corrected output.

Each segment is one instance. Its class comes from, in this order: the ``LMSFA.ClassName``
segment tag, the type of its ``TerminologyEntry`` tag when that names a class, or the
segment name without a trailing instance number (``"surgical tool 2"`` is class
``"surgical tool"``). The frame image is ``<stem>.<image suffix>`` beside the ``.seg.nrrd``
file or in an ``images`` folder beside its folder.

NOTE: corrected scenes saved as ``.mrb`` and segmentation sequences (``.seq.nrrd``) are not
read yet; save each corrected frame as ``.seg.nrrd`` with its image.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ...classes import ClassTable
from ...errors import InputError
from .base import IMAGE_SUFFIXES, InstanceDataset, Sample, find_image, make_sample, read_rgb

logger = logging.getLogger(__name__)

CLASS_TAG = "LMSFA.ClassName"
TERMINOLOGY_TAG = "TerminologyEntry"
SEG_SUFFIX = ".seg.nrrd"
_INSTANCE_NUMBER = re.compile(r"[\s_-]*\d+$")


def segment_class_name(segment: dict, class_names: Optional[set[str]] = None) -> str:
    """Return the class name of one slicerio segment dict (see the module docstring for the order)."""
    tags = segment.get("tags") or {}
    if tags.get(CLASS_TAG):
        return str(tags[CLASS_TAG])
    terminology = tags.get(TERMINOLOGY_TAG)
    if terminology and class_names:
        # Fields are separated by "~": context name, category, type, ...; a coded
        # concept is "scheme^value^meaning".
        fields = str(terminology).split("~")
        if len(fields) > 2:
            meaning = fields[2].split("^")[-1]
            for name in class_names:
                if name.lower() == meaning.lower():
                    return name
    name = str(segment.get("name") or segment.get("id") or "")
    stripped = _INSTANCE_NUMBER.sub("", name)
    return stripped or name


def _segment_is_empty(segment: dict) -> bool:
    extent = segment.get("extent")
    return extent is not None and (extent[1] < extent[0] or extent[3] < extent[2])


def seg_stem(path: Path) -> str:
    return path.name[: -len(SEG_SUFFIX)] if path.name.lower().endswith(SEG_SUFFIX) else path.stem


class SegNrrdDataset(InstanceDataset):
    """Instances from per-frame ``.seg.nrrd`` files, each paired with its frame image.

    ``class_names`` fixes the class table (for example a checkpoint's classes); a segment
    of another class then raises :class:`InputError`. Without it the classes are the
    sorted distinct class names found in the files.
    """

    def __init__(
        self,
        seg_paths: Sequence[Path],
        class_names: Optional[Sequence[str]] = None,
        flip_map: Optional[dict[int, int]] = None,
        side_specific: bool = False,
    ):
        # Imported here, not at module level, so the other readers work without slicerio.
        # The module is not stored on the instance, which must stay picklable for
        # data loader worker processes.
        import slicerio

        self.seg_paths = [Path(path) for path in seg_paths]
        if not self.seg_paths:
            raise InputError("no .seg.nrrd files given")
        headers = []
        for path in self.seg_paths:
            if not path.is_file():
                raise InputError(f"segmentation file not found: {path}")
            try:
                headers.append(slicerio.read_segmentation(str(path), skip_voxels=True))
            except Exception as error:  # slicerio and pynrrd raise several types for a bad file
                raise InputError(f"cannot read segmentation {path}: {error}") from error
        self.image_paths = [self._image_for(path) for path in self.seg_paths]

        known = set(class_names) if class_names else None
        found = [
            segment_class_name(segment, known)
            for header in headers
            for segment in header.get("segments", [])
            if not _segment_is_empty(segment)
        ]
        if not found:
            raise InputError(
                f"the {len(self.seg_paths)} segmentation files (first: {self.seg_paths[0]}) contain no non-empty segment; draw or correct at least one segment"
            )
        if class_names:
            unknown = sorted(set(found) - set(class_names))
            if unknown:
                raise InputError(f"segments of classes {unknown} are not in the class table {list(class_names)}")
            self.class_table = ClassTable.from_names(list(class_names))
        else:
            self.class_table = ClassTable.from_names(sorted(set(found)))
        self._class_index = {name: index for index, name in enumerate(self.class_table.names)}
        self.flip_map = flip_map
        self.side_specific = side_specific
        logger.info("segmentation data set: %d files, %d segments, classes %s", len(self.seg_paths), len(found), self.class_table.names)

    @staticmethod
    def _image_for(seg_path: Path) -> Path:
        stem = seg_stem(seg_path)
        for folder in (seg_path.parent, seg_path.parent.parent / "images"):
            image = find_image(folder, stem)
            if image is not None:
                return image
        raise InputError(
            f"no frame image for {seg_path}: expected {seg_path.parent / stem} or "
            f"{seg_path.parent.parent / 'images' / stem} with one of {', '.join(IMAGE_SUFFIXES)}"
        )

    def __len__(self) -> int:
        return len(self.seg_paths)

    def __getitem__(self, index: int) -> Sample:
        index = self._check_index(index)
        seg_path = self.seg_paths[index]
        image_path = self.image_paths[index]
        image = read_rgb(image_path)
        import slicerio

        segmentation = slicerio.read_segmentation(str(seg_path))
        frame_masks = self._frame_masks(segmentation, image.shape[:2], seg_path)
        masks, classes = [], []
        for segment, mask in frame_masks:
            if not mask.any():
                continue
            masks.append(mask)
            classes.append(self._class_index[segment_class_name(segment, set(self.class_table.names))])
        return make_sample(image, masks, classes, seg_stem(seg_path), image_path)

    @staticmethod
    def _frame_masks(segmentation: dict, frame_hw: tuple[int, int], seg_path: Path) -> list[tuple[dict, np.ndarray]]:
        """Return (segment, (H, W) bool mask) pairs in the frame's pixel grid.

        The voxel array is indexed (i, j, k), optionally with a leading layer axis. With
        identity IJK-to-LPS directions, as Slicer gives frames stored from 2-D images, i
        runs along image columns and j along rows.
        """
        voxels = np.asarray(segmentation["voxels"])
        if voxels.ndim == 3:
            voxels = voxels[None]
        if voxels.ndim != 4 or voxels.shape[3] != 1:
            raise InputError(f"{seg_path} is not a single-frame 2-D segmentation (voxel array shape {voxels.shape})")
        directions = np.asarray(segmentation["ijkToLPS"])[:3, :3]
        if not (np.allclose(directions, np.diag(np.diag(directions))) and (np.diag(directions) > 0).all()):
            # NOTE: only the geometry that Slicer gives frames read from 2-D images is handled.
            raise InputError(
                f"{seg_path} has IJK-to-LPS directions {directions.tolist()}; only positive axis-aligned "
                "directions (frames stored as 2-D images) are supported"
            )
        offset = segmentation.get("referenceImageExtentOffset") or [0, 0, 0]
        column0, row0 = int(offset[0]), int(offset[1])
        columns, rows = voxels.shape[1], voxels.shape[2]
        height, width = frame_hw
        if column0 < 0 or row0 < 0 or column0 + columns > width or row0 + rows > height:
            raise InputError(
                f"{seg_path} covers columns {column0}..{column0 + columns - 1} and rows {row0}..{row0 + rows - 1}, "
                f"outside its {height}x{width} frame; save the segmentation with the frame as reference geometry"
            )
        pairs = []
        for segment in segmentation.get("segments", []):
            layer = int(segment.get("layer", 0))
            mask = np.zeros((height, width), dtype=bool)
            mask[row0 : row0 + rows, column0 : column0 + columns] = (voxels[layer, :, :, 0] == int(segment["labelValue"])).T
            pairs.append((segment, mask))
        return pairs
