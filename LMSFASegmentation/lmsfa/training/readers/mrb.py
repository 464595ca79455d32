"""Corrected frames of a Slicer scene bundle (``.mrb``) as training samples.

The bundle is one written by ``lmsfa segment`` or saved from the Slicer module: a sequence
browser with a frame sequence and a segmentation sequence. Every frame is a sample, a frame
without segments is a negative, and each segment is one instance (overlaps kept).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ...errors import InputError
from .base import InstanceDataset, Sample, make_sample

MRB_SUFFIX = ".mrb"


class MrbDataset(InstanceDataset):
    """Frames and segments of the segmentation sequence in a ``.mrb`` file.

    ``clip`` names the sequence browser when the bundle has several. The class table comes
    from the scene, where the scene writer stores the model's table. A segment drawn by hand
    gets its class from its name ("nerve 3"). The scene stays loaded while the data set
    lives, and frames are read on access, so it works with ``workers=0`` only (VTK objects
    cannot be sent to worker processes).
    """

    def __init__(self, path: Path, clip: Optional[str] = None, flip_map=None, side_specific: bool = False):
        from ...exports.inputs import open_scene_bundle

        self.path = Path(path)
        self._input = open_scene_bundle(self.path, clip)
        if not self._input.has_images:
            raise InputError(f"{self.path} has a segmentation sequence but no frame sequence, so there are no images")
        self.class_table = self._input.class_table
        self.flip_map = flip_map
        self.side_specific = side_specific
        self._indices = [index for _, index in self._input._items(None, None)]
        if not self._indices:
            raise InputError(f"{self.path} has no segmented frames")

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int) -> Sample:
        index = self._check_index(index)
        frame_index = self._indices[index]
        frame = next(self._input.frames(frame_index, frame_index))
        return make_sample(
            frame.image,
            [inst.mask for inst in frame.instances],
            [inst.class_id for inst in frame.instances],
            image_id=frame_index,
            path=self.path,
        )
