"""One Slicer segmentation file (``.seg.nrrd``) per frame, written by Slicer's own storage node.

Output folder::

    segmentations/<stem>.seg.nrrd   one segment per instance; overlaps go to extra layers
    images/<stem>.png               the frames (only when the input has frames)

Each segment keeps its name, colour, terminology and the ``LMSFA.*`` tags. This is the
layout that the project's ``.seg.nrrd`` training reader expects.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..progress import Progress
from .atomic import atomic_folder
from .common import ExportReport, frame_stem, non_empty, write_png
from .inputs import ExportFrame, ExportInput

logger = logging.getLogger(__name__)


class _SegmentationBuilder:
    """Builder of one frame's segmentation node from its instances, with the scene writer.

    NOTE: the headless scene keeps every written frame until the export ends, as the
    scene writer does for ``lmsfa segment``. So memory grows with the number of frames.
    """

    def __init__(self, export_input: ExportInput):
        from ..scene import SceneContext, SequenceWriter

        self.context = SceneContext.headless()
        self.writer = SequenceWriter(
            self.context, export_input.name, export_input.class_table, model_name="lmsfa export",
            spacing_mm=export_input.spacing_mm, tracker=None,
        )

    def segmentation_node(self, frame: ExportFrame, instances: list) -> Any:
        used = {instance.track_id for instance in instances if instance.track_id is not None}
        next_id = max(used, default=0) + 1
        tracked = []
        for instance in instances:
            if instance.track_id is None:
                # Segment IDs are "<class>_<track id>", so every instance needs a distinct id.
                instance = dataclasses.replace(instance, track_id=next_id)
                next_id += 1
            tracked.append(instance)
        image = frame.image if frame.image is not None else np.zeros((*frame.shape, 3), dtype=np.uint8)
        self.writer.add_frame(frame.index, frame.timestamp_s, image, tracked)
        return self.writer.segmentation_sequence_node.GetDataNodeAtValue(str(frame.index))


def export_seg_nrrd(
    export_input: ExportInput,
    output: Path,
    first: Optional[int] = None,
    last: Optional[int] = None,
    overwrite: bool = False,
    progress: Optional[Progress] = None,
) -> ExportReport:
    """Write one ``.seg.nrrd`` per frame of ``first..last`` into the folder ``output``.

    A frame from a scene is saved as it is in the scene, including segments that are
    empty after correction. Instances from inference results become segments through
    the scene writer; those with empty masks get no segment.
    """
    from ..scene import save_segmentation_nrrd

    progress = progress or Progress()
    report = ExportReport("nrrd", Path(output))
    total = export_input.count(first, last)
    builder = None
    with atomic_folder(output, overwrite) as folder:
        (folder / "segmentations").mkdir()
        for position, frame in enumerate(export_input.frames(first, last)):
            progress.check_cancelled()
            stem = frame_stem(export_input.name, frame.index)
            node = frame.segmentation_node
            instances = frame.instances
            if node is None:
                instances = non_empty(frame.instances, report, frame.index)
                builder = builder or _SegmentationBuilder(export_input)
                node = builder.segmentation_node(frame, instances)
            save_segmentation_nrrd(node, folder / "segmentations" / f"{stem}.seg.nrrd")
            if frame.image is not None:
                write_png(folder / "images" / f"{stem}.png", frame.image, rgb=True)
            report.instances += len(instances)
            report.mask_pixels += sum(int(np.count_nonzero(instance.mask)) for instance in instances)
            report.frame_indices.append(frame.index)
            progress.update(position + 1, total, f".seg.nrrd: frame {frame.index}")
    return report
