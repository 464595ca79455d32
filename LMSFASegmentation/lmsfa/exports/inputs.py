"""Export inputs: frames with their instances, from a scene or from inference results.

Two inputs share one interface, :class:`ExportInput`:

- :class:`SceneInput` reads a segmentation sequence and its frame sequence from an MRML
  scene, in Slicer or headless (for example a ``.mrb`` loaded with :func:`open_scene_bundle`).
- :class:`ResultsInput` takes :class:`~lmsfa.results.FrameResult` objects and, optionally,
  the frames they came from, as ``lmsfa segment`` produces them.

Both yield :class:`ExportFrame` objects in increasing frame index order, limited to the
requested frame range.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

from ..classes import ClassInfo, ClassTable, default_color
from ..errors import InputError
from ..results import FrameResult, Instance

logger = logging.getLogger(__name__)

CLASS_TABLE_ATTRIBUTE = "LMSFA.ClassTable"  # written by lmsfa.scene.writer.SequenceWriter
"""Optional node attribute with the JSON of ``ClassTable.to_dict()`` on a segmentation sequence."""


@dataclass
class ExportFrame:
    """One frame to export.

    ``index`` is the frame's index in its source (the sequence index value).
    ``image`` is the upright frame as uint8 (H, W, 3) RGB, or ``None`` when the input has
    no frames. ``instances`` have boolean (H, W) masks in the frame's pixels, x to the
    right and y down. ``segmentation_node`` is the frame's ``vtkMRMLSegmentationNode``
    when the frame comes from a scene, else ``None``.
    """

    index: int
    timestamp_s: Optional[float]
    shape: tuple[int, int]
    image: Optional[np.ndarray]
    instances: list[Instance]
    segmentation_node: Any = field(default=None, repr=False)


def check_frame_range(first: Optional[int], last: Optional[int]) -> None:
    """Raise :class:`InputError` for a negative bound or a range that ends before it starts."""
    for name, value in (("first", first), ("last", last)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise InputError(f"invalid {name} frame {value!r}: use a frame index of 0 or more")
    if first is not None and last is not None and last < first:
        raise InputError(f"last frame {last} is before first frame {first}: swap them")


def in_range(index: int, first: Optional[int], last: Optional[int]) -> bool:
    return (first is None or index >= first) and (last is None or index <= last)


class ExportInput:
    """Base class of export inputs.

    Attributes:
        name: a base name for output files (the sequence or clip name).
        class_table: the classes; class id ``k`` is ``class_table[k]`` and gets label value ``k + 1``.
        spacing_mm: ``(column, row)`` pixel spacing in mm, or ``None`` for uncalibrated frames.
        dicom: identifiers of the DICOM source (``SourceInfo.dicom``), or ``None``.
    """

    name: str
    class_table: ClassTable
    spacing_mm: Optional[tuple[float, float]] = None
    dicom: Optional[dict] = None

    def frames(self, first: Optional[int] = None, last: Optional[int] = None) -> Iterator[ExportFrame]:
        """Yield the frames with ``first <= index <= last`` (inclusive; ``None`` is open)."""
        raise NotImplementedError

    def count(self, first: Optional[int] = None, last: Optional[int] = None) -> Optional[int]:
        """Return the number of frames in the range, or ``None`` when it is not known in advance."""
        return None

    @property
    def has_images(self) -> bool:
        return True


class ResultsInput(ExportInput):
    """Frames from inference results, optionally with the frames themselves.

    Args:
        results: one :class:`FrameResult` per frame, in increasing ``index`` order.
        frames: the matching frames, each a :class:`lmsfa.sources.Frame` or a uint8
            (H, W, 3) RGB array, in the same order as ``results``. Pass ``None`` to export
            masks only, which COCO, YOLO-seg, PNG, NIfTI and ``.seg.nrrd`` allow.
        class_table: the model's classes.
        name: base name of the output files.
        spacing_mm: ``(column, row)`` pixel spacing in mm, or ``None``.
        dicom: the DICOM identifiers of the source (``SourceInfo.dicom``), or ``None``.
    """

    def __init__(
        self,
        results: Iterable[FrameResult],
        class_table: ClassTable,
        frames: Optional[Iterable[Any]] = None,
        name: str = "frames",
        spacing_mm: Optional[Sequence[float]] = None,
        dicom: Optional[dict] = None,
    ):
        if len(class_table) == 0:
            raise InputError("the class table has no classes: pass the model's class table")
        self._results = results
        self._frames = frames
        self.class_table = class_table
        self.name = name
        self.spacing_mm = tuple(float(v) for v in spacing_mm) if spacing_mm is not None else None
        self.dicom = dicom

    @property
    def has_images(self) -> bool:
        return self._frames is not None

    def count(self, first: Optional[int] = None, last: Optional[int] = None) -> Optional[int]:
        if isinstance(self._results, Sequence):
            return sum(1 for result in self._results if in_range(result.index, first, last))
        return None

    def frames(self, first: Optional[int] = None, last: Optional[int] = None) -> Iterator[ExportFrame]:
        check_frame_range(first, last)
        images = iter(self._frames) if self._frames is not None else None
        previous = None
        yielded = 0
        for result in self._results:
            image = None
            if images is not None:
                image = self._next_image(images, result)
            if previous is not None and result.index <= previous:
                raise InputError(
                    f"frame result {result.index} follows frame {previous}: pass results in increasing index order"
                )
            previous = result.index
            if not in_range(result.index, first, last):
                continue
            for instance in result.instances:
                if not 0 <= instance.class_id < len(self.class_table):
                    raise InputError(
                        f"frame {result.index}: class id {instance.class_id} is outside the class table "
                        f"(0..{len(self.class_table) - 1}): pass the model's own class table"
                    )
                if np.shape(instance.mask) != tuple(result.frame_shape):
                    raise InputError(
                        f"frame {result.index}: an instance mask of shape {np.shape(instance.mask)} does not match "
                        f"the frame shape {tuple(result.frame_shape)}"
                    )
            yielded += 1
            yield ExportFrame(
                index=int(result.index),
                timestamp_s=result.timestamp_s,
                shape=(int(result.frame_shape[0]), int(result.frame_shape[1])),
                image=image,
                instances=list(result.instances),
            )
        if not yielded:
            raise InputError(f"no frame result lies in the range {first}..{last}: there is nothing to export")

    @staticmethod
    def _next_image(images: Iterator[Any], result: FrameResult) -> np.ndarray:
        try:
            frame = next(images)
        except StopIteration:
            raise InputError(f"no frame for result {result.index}: pass one frame per result") from None
        image = getattr(frame, "image", frame)
        frame_index = getattr(frame, "index", None)
        if frame_index is not None and int(frame_index) != int(result.index):
            raise InputError(
                f"frame {frame_index} is paired with the result of frame {result.index}: "
                "pass frames and results in the same order"
            )
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"frame {result.index} must be a uint8 (H, W, 3) RGB array, got {image.dtype} {image.shape}")
        if image.shape[:2] != tuple(result.frame_shape):
            raise InputError(
                f"frame {result.index} is {image.shape[0]}x{image.shape[1]} but its result has frame shape "
                f"{tuple(result.frame_shape)} (height x width)"
            )
        return image


class SceneInput(ExportInput):
    """Frames and instances of a segmentation sequence in an MRML scene.

    Args:
        segmentation_sequence: the ``vtkMRMLSequenceNode`` of segmentations. Commit
            pending proxy edits first (:func:`lmsfa.scene.commit_edits`).
        frame_sequence: the matching ``vtkMRMLSequenceNode`` of frame volumes, or
            ``None`` when only masks are exported.
        class_table: the model's classes. Without it the classes come from the
            sequence's ``LMSFA.ClassTable`` attribute, else from the segments' tags.
        name: base name of the output files; the sequence name by default.
    """

    def __init__(
        self,
        segmentation_sequence: Any,
        frame_sequence: Any = None,
        class_table: Optional[ClassTable] = None,
        name: Optional[str] = None,
    ):
        if segmentation_sequence.GetDataNodeClassName() not in ("", "vtkMRMLSegmentationNode"):
            raise InputError(
                f"sequence {segmentation_sequence.GetName()!r} contains {segmentation_sequence.GetDataNodeClassName()} "
                "items, not segmentations: pass the segmentation sequence"
            )
        if segmentation_sequence.GetNumberOfDataNodes() == 0:
            raise InputError(f"sequence {segmentation_sequence.GetName()!r} is empty: there is nothing to export")
        self.segmentation_sequence = segmentation_sequence
        self.frame_sequence = frame_sequence
        self.name = name or _base_name(segmentation_sequence.GetName())
        self.class_table = class_table or self._scene_class_table()
        self.spacing_mm = self._spacing()

    @property
    def has_images(self) -> bool:
        return self.frame_sequence is not None

    def _items(self, first: Optional[int], last: Optional[int]) -> list[tuple[int, int]]:
        """Return ``(item number, frame index)`` pairs in the range, in increasing index order."""
        from ..scene.writer import FRAME_INDEX_ATTRIBUTE

        items = []
        sequence = self.segmentation_sequence
        for item in range(sequence.GetNumberOfDataNodes()):
            node = sequence.GetNthDataNode(item)
            text = node.GetAttribute(FRAME_INDEX_ATTRIBUTE) if node is not None else None
            value = text or sequence.GetNthIndexValue(item)
            try:
                index = int(float(value))
            except ValueError as error:
                raise InputError(f"sequence item {item} has a non-numeric index value {value!r}") from error
            if in_range(index, first, last):
                items.append((item, index))
        return sorted(items, key=lambda pair: pair[1])

    def count(self, first: Optional[int] = None, last: Optional[int] = None) -> Optional[int]:
        return len(self._items(first, last))

    def frames(self, first: Optional[int] = None, last: Optional[int] = None) -> Iterator[ExportFrame]:
        from ..scene.reader import read_frame_instances
        from ..scene.writer import TIMESTAMP_ATTRIBUTE

        check_frame_range(first, last)
        items = self._items(first, last)
        if not items:
            indices = [index for _, index in self._items(None, None)]
            raise InputError(
                f"no frame of {self.segmentation_sequence.GetName()!r} lies in the range {first}..{last}; "
                f"its frames are {indices[0]}..{indices[-1]}"
            )
        for item, index in items:
            node = self.segmentation_sequence.GetNthDataNode(item)
            shape, instances = read_frame_instances(node, self.class_table)
            timestamp_text = node.GetAttribute(TIMESTAMP_ATTRIBUTE)
            image = self._frame_image(item, index, shape) if self.frame_sequence is not None else None
            yield ExportFrame(
                index=index,
                timestamp_s=float(timestamp_text) if timestamp_text else None,
                shape=shape,
                image=image,
                instances=instances,
                segmentation_node=node,
            )

    def _frame_image(self, item: int, index: int, shape: tuple[int, int]) -> np.ndarray:
        """Return the frame volume at the segmentation item's index value as (H, W, 3) uint8 RGB."""
        from vtk.util import numpy_support

        index_value = self.segmentation_sequence.GetNthIndexValue(item)
        volume = self.frame_sequence.GetDataNodeAtValue(index_value)
        if volume is None or volume.GetImageData() is None:
            raise InputError(
                f"frame sequence {self.frame_sequence.GetName()!r} has no frame at index value {index_value!r} "
                f"(frame {index}): pass the frame sequence of the same browser"
            )
        image_data = volume.GetImageData()
        width, height, depth = image_data.GetDimensions()
        scalars = numpy_support.vtk_to_numpy(image_data.GetPointData().GetScalars())
        components = image_data.GetNumberOfScalarComponents()
        if depth != 1 or (height, width) != tuple(shape) or components not in (1, 3):
            raise InputError(
                f"frame {index} of {self.frame_sequence.GetName()!r} is {width}x{height}x{depth} with "
                f"{components} components, but its segmentation is {shape[1]}x{shape[0]}: export needs "
                "2-D grey or RGB frames of the segmentation's size"
            )
        # The frame volume stores rows from the top (see lmsfa.scene.geometry), so the
        # C-ordered scalars reshape to (H, W, components) directly.
        image = scalars.reshape(height, width, components)
        if image.dtype != np.uint8:
            raise InputError(f"frame {index} has pixel type {image.dtype}; export needs 8-bit frames")
        if components == 1:
            image = np.repeat(image, 3, axis=2)
        return np.ascontiguousarray(image)

    def _spacing(self) -> Optional[tuple[float, float]]:
        from ..scene.geometry import SPACING_ATTRIBUTE, UNCALIBRATED

        text = self.segmentation_sequence.GetAttribute(SPACING_ATTRIBUTE)
        if not text or text == UNCALIBRATED:
            return None
        try:
            column, row = (float(value) for value in text.split())
        except ValueError:
            logger.warning("ignoring the invalid pixel spacing attribute %r of %r", text, self.segmentation_sequence.GetName())
            return None
        return column, row

    def _scene_class_table(self) -> ClassTable:
        """Build the class table from the sequence attribute or from the segments' tags."""
        from ..scene.reader import segment_tag
        from ..scene.writer import CLASS_ID_TAG, CLASS_NAME_TAG

        text = self.segmentation_sequence.GetAttribute(CLASS_TABLE_ATTRIBUTE)
        if text:
            try:
                return ClassTable.from_dict(json.loads(text))
            except json.JSONDecodeError as error:
                raise InputError(f"the {CLASS_TABLE_ATTRIBUTE} attribute is not valid JSON: {error}") from error

        found: dict[int, ClassInfo] = {}
        sequence = self.segmentation_sequence
        for item in range(sequence.GetNumberOfDataNodes()):
            segmentation = sequence.GetNthDataNode(item).GetSegmentation()
            for n in range(segmentation.GetNumberOfSegments()):
                segment = segmentation.GetNthSegment(n)
                class_id_text = segment_tag(segment, CLASS_ID_TAG)
                if class_id_text is None or int(class_id_text) in found:
                    continue
                name = segment_tag(segment, CLASS_NAME_TAG) or segment.GetName()
                color = tuple(int(round(channel * 255)) for channel in segment.GetColor())
                found[int(class_id_text)] = ClassInfo(name, color)
        if not found:
            raise InputError(
                f"no segment of {sequence.GetName()!r} carries an LMSFA.ClassId tag, so the classes are unknown: "
                "pass the model's class table"
            )
        count = max(found) + 1
        missing = [class_id for class_id in range(count) if class_id not in found]
        if missing:
            # NOTE: a class with no segment in the whole sequence cannot be named from the
            # tags. Its label value stays reserved, but its name is a placeholder.
            logger.warning(
                "classes %s have no segment in %r, so their names are unknown; pass the model's class table "
                "to name them", missing, sequence.GetName(),
            )
        classes = [found.get(k) or ClassInfo(f"class {k}", default_color(k, count)) for k in range(count)]
        return ClassTable(classes)


def _base_name(sequence_name: str) -> str:
    suffix = " segmentation"
    return sequence_name[: -len(suffix)] if sequence_name.endswith(suffix) else sequence_name


def find_sequences(context: Any, name: Optional[str] = None) -> tuple[Any, Any]:
    """Return ``(segmentation sequence, frame sequence)`` of the scene's only, or named, browser.

    Args:
        context: a :class:`~lmsfa.scene.SceneContext`.
        name: the name of the sequence browser (the clip name that ``lmsfa segment``
            gave it), or ``None`` when the scene has exactly one browser with segmentations.

    Raises:
        InputError: no browser synchronises a segmentation sequence, the name is not
            found, or several browsers match and no name was given.
    """
    import vtk

    scene = context.scene
    candidates = []
    for n in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode")):
        browser = scene.GetNthNodeByClass(n, "vtkMRMLSequenceBrowserNode")
        collection = vtk.vtkCollection()
        browser.GetSynchronizedSequenceNodes(collection, True)
        sequences = [collection.GetItemAsObject(k) for k in range(collection.GetNumberOfItems())]
        segmentations = [s for s in sequences if s.GetDataNodeClassName() == "vtkMRMLSegmentationNode"]
        frames = [s for s in sequences if s.GetDataNodeClassName() in ("vtkMRMLVectorVolumeNode", "vtkMRMLScalarVolumeNode")]
        if segmentations:
            candidates.append((browser.GetName(), segmentations[0], frames[0] if frames else None))
    if not candidates:
        raise InputError("the scene has no sequence browser with a segmentation sequence: nothing to export")
    if name is not None:
        matches = [c for c in candidates if c[0] == name]
        if not matches:
            raise InputError(f"no sequence browser named {name!r}; the scene has {[c[0] for c in candidates]}")
        return matches[0][1], matches[0][2]
    if len(candidates) > 1:
        raise InputError(
            f"the scene has {len(candidates)} segmented clips {[c[0] for c in candidates]}: choose one by name"
        )
    return candidates[0][1], candidates[0][2]


def open_scene_bundle(
    path: Path, clip: Optional[str] = None, class_table: Optional[ClassTable] = None
) -> SceneInput:
    """Load a ``.mrb`` written by the scene writer (or saved by Slicer) into a new headless scene.

    ``clip`` names the sequence browser when the bundle has several; see :func:`find_sequences`.
    """
    from ..scene import SceneContext, load_scene_mrb

    context = SceneContext.headless()
    load_scene_mrb(context, Path(path))
    segmentation_sequence, frame_sequence = find_sequences(context, clip)
    scene_input = SceneInput(segmentation_sequence, frame_sequence, class_table)
    # The input refers to nodes of this scene, so the scene must live as long as the input.
    scene_input.context = context
    return scene_input
