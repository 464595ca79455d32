"""Read a segmentation sequence back into per-frame instances (for exports and training).

Segments written by :class:`~lmsfa.scene.writer.SequenceWriter` carry their class id in
the ``LMSFA.ClassId`` tag. Segments that a user added in Segment Editor have no tag, so
they get their class from their name ("nerve 3" or "nerve") when a class table is given.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Iterator, Optional

import numpy as np

from ..classes import ClassTable
from ..errors import InputError
from ..results import FrameResult, Instance
from .tracking import mask_box
from .writer import (
    BINARY_LABELMAP,
    CLASS_ID_TAG,
    CLASS_NAME_TAG,
    CONFIDENCE_TAG,
    FRAME_INDEX_ATTRIBUTE,
    TIMESTAMP_ATTRIBUTE,
    TRACK_ID_TAG,
)

logger = logging.getLogger(__name__)


def segment_tag(segment: Any, tag: str) -> Optional[str]:
    """Return the value of a segment tag, or ``None`` when the segment lacks it."""
    import vtk

    # vtkSegment.GetTag fills a vtk.reference out-parameter and returns whether the tag exists.
    value = vtk.reference("")
    if not segment.GetTag(tag, value):
        return None
    return str(value)


def reference_geometry(segmentation_node: Any) -> Any:
    """Return the segmentation's reference image geometry as an empty ``vtkOrientedImageData``.

    Raises:
        InputError: the segmentation has no reference geometry (it was not written by
            this package, and no master volume was ever set for it).
    """
    import slicer

    segmentation = segmentation_node.GetSegmentation()
    serialized = segmentation.GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    )
    geometry = slicer.vtkOrientedImageData()
    if not serialized or not slicer.vtkSegmentationConverter.DeserializeImageGeometry(serialized, geometry, False):
        raise InputError(
            f"segmentation {segmentation_node.GetName()!r} has no reference image geometry: "
            "set its source volume in the Segmentations module, then read it again"
        )
    return geometry


def segment_mask(segmentation_node: Any, segment_id: str, geometry: Any) -> np.ndarray:
    """Return a segment's binary labelmap as a boolean (H, W) mask in the frame's pixels.

    ``geometry`` is the frame geometry from :func:`reference_geometry`. A labelmap in
    other geometry (for example after an edit with a different source volume) is
    resampled onto it by Slicer's ``vtkOrientedImageDataResample``.
    """
    import slicer
    from vtk.util import numpy_support

    segmentation = segmentation_node.GetSegmentation()
    segment = segmentation.GetSegment(segment_id)
    labelmap = segment.GetRepresentation(BINARY_LABELMAP)
    x0, x1, y0, y1, _, _ = geometry.GetExtent()
    height, width = y1 - y0 + 1, x1 - x0 + 1
    mask = np.zeros((height, width), dtype=bool)
    if labelmap is None or labelmap.IsEmpty():
        return mask

    if not _same_geometry(labelmap, geometry):
        resampled = slicer.vtkOrientedImageData()
        slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            labelmap, geometry, resampled, False, False
        )
        labelmap = resampled

    ex0, ex1, ey0, ey1, ez0, ez1 = labelmap.GetExtent()
    if ex0 > ex1 or ey0 > ey1 or ez0 > 0 or ez1 < 0:
        return mask
    scalars = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars())
    depth = ez1 - ez0 + 1
    values = scalars.reshape(depth, ey1 - ey0 + 1, ex1 - ex0 + 1)[-ez0]
    label = segment.GetLabelValue()
    # Clip the labelmap extent to the frame: an edit may paint outside the frame.
    cx0, cx1 = max(ex0, x0), min(ex1, x1)
    cy0, cy1 = max(ey0, y0), min(ey1, y1)
    if cx0 > cx1 or cy0 > cy1:
        return mask
    region = values[cy0 - ey0 : cy1 - ey0 + 1, cx0 - ex0 : cx1 - ex0 + 1]
    mask[cy0 - y0 : cy1 - y0 + 1, cx0 - x0 : cx1 - x0 + 1] = region == label
    return mask


def _same_geometry(image: Any, geometry: Any) -> bool:
    import vtk

    a, b = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(a)
    geometry.GetImageToWorldMatrix(b)
    return all(abs(a.GetElement(r, c) - b.GetElement(r, c)) < 1e-6 for r in range(4) for c in range(4))


def _box_from_mask(mask: np.ndarray) -> np.ndarray:
    box = mask_box(mask)
    return np.array(box if box is not None else (0, 0, 0, 0), dtype=np.float32)


def _class_from_name(name: str, class_table: Optional[ClassTable]) -> tuple[Optional[int], Optional[int]]:
    """Return ``(class id, track id)`` for a segment name such as "nerve 3" or "nerve"."""
    if class_table is None:
        return None, None
    match = re.fullmatch(r"\s*(.*?)(?:\s+(\d+))?\s*", name)
    base = match.group(1).lower()
    for class_id, info in enumerate(class_table.classes):
        if info.name.lower() == base:
            return class_id, int(match.group(2)) if match.group(2) else None
    return None, None


def read_frame_instances(
    segmentation_node: Any, class_table: Optional[ClassTable] = None
) -> tuple[tuple[int, int], list[Instance]]:
    """Read the instances of one frame's segmentation node.

    Args:
        segmentation_node: a ``vtkMRMLSegmentationNode`` (a sequence item, a proxy node,
            or a ``.seg.nrrd`` loaded back).
        class_table: resolves class names, and the class of segments without the
            ``LMSFA.ClassId`` tag; without it the tag's class name is used.

    Returns:
        ``((H, W), instances)``. Instances have boolean (H, W) masks, the score from the
        ``LMSFA.Confidence`` tag (1.0 for segments drawn by a user) and boxes
        ``(x1, y1, x2, y2)`` in pixels. Segments whose class cannot be found are left out
        with a warning that names them.
    """
    geometry = reference_geometry(segmentation_node)
    x0, x1, y0, y1, _, _ = geometry.GetExtent()
    shape = (y1 - y0 + 1, x1 - x0 + 1)
    segmentation = segmentation_node.GetSegmentation()
    instances = []
    for n in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(n)
        segment = segmentation.GetSegment(segment_id)
        class_id_text = segment_tag(segment, CLASS_ID_TAG)
        track_text = segment_tag(segment, TRACK_ID_TAG)
        if class_id_text is not None:
            class_id = int(class_id_text)
            track_id = int(track_text) if track_text else None
        else:
            class_id, track_id = _class_from_name(segment.GetName(), class_table)
        if class_id is None or (class_table is not None and not 0 <= class_id < len(class_table)):
            logger.warning(
                "segment %r of %r has no known class (no %s tag and no class of that name): left out",
                segment.GetName(), segmentation_node.GetName(), CLASS_ID_TAG,
            )
            continue
        if class_table is not None:
            class_name = class_table[class_id].name
        else:
            class_name = segment_tag(segment, CLASS_NAME_TAG) or segment.GetName()
        score_text = segment_tag(segment, CONFIDENCE_TAG)
        mask = segment_mask(segmentation_node, segment_id, geometry)
        instances.append(
            Instance(
                class_id=class_id,
                class_name=class_name,
                score=float(score_text) if score_text else 1.0,
                box=_box_from_mask(mask),
                mask=mask,
                track_id=track_id,
            )
        )
    return shape, instances


def read_segmentation_sequence(
    sequence_node: Any, class_table: Optional[ClassTable] = None
) -> Iterator[FrameResult]:
    """Yield one :class:`FrameResult` per item of a segmentation sequence, in index order.

    Args:
        sequence_node: the ``vtkMRMLSequenceNode`` of segmentations (for example
            ``SequenceWriter.segmentation_sequence_node``, or one loaded from an ``.mrb``).
            Commit pending proxy edits first with :func:`lmsfa.scene.commit_edits`.
        class_table: see :func:`read_frame_instances`.

    Raises:
        InputError: the sequence contains nodes other than segmentations.
    """
    for n in range(sequence_node.GetNumberOfDataNodes()):
        node = sequence_node.GetNthDataNode(n)
        if node is None or not node.IsA("vtkMRMLSegmentationNode"):
            raise InputError(
                f"sequence {sequence_node.GetName()!r} item {n} is not a segmentation "
                f"({node.GetClassName() if node else 'empty'}): pass the segmentation sequence"
            )
        index_value = sequence_node.GetNthIndexValue(n)
        frame_index_text = node.GetAttribute(FRAME_INDEX_ATTRIBUTE)
        try:
            frame_index = int(frame_index_text) if frame_index_text else int(float(index_value))
        except ValueError as error:
            raise InputError(f"sequence item {n} has a non-numeric index value {index_value!r}") from error
        timestamp_text = node.GetAttribute(TIMESTAMP_ATTRIBUTE)
        shape, instances = read_frame_instances(node, class_table)
        yield FrameResult(
            index=frame_index,
            timestamp_s=float(timestamp_text) if timestamp_text else None,
            frame_shape=shape,
            instances=instances,
        )
