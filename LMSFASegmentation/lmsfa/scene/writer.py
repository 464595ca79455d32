"""Write frames and their instances into a frame sequence, a segmentation sequence and a browser.

Each frame becomes an RGB ``vtkMRMLVectorVolumeNode`` item of the frame sequence. Its
instances become one ``vtkMRMLSegmentationNode`` item of the segmentation sequence, with
one segment per instance named "<class name> <track id>". A ``vtkMRMLSequenceBrowserNode``
keeps both sequences on the same item, so scrubbing the browser shows each frame with its
masks. Sequence index values are the frames' indices in their source.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..classes import ClassTable
from ..errors import InputError
from ..results import Instance
from .context import TERMINOLOGY_FILE, SceneContext
from .geometry import SPACING_ATTRIBUTE, check_spacing, ijk_to_ras_matrix, spacing_attribute_value
from .terminology import TerminologyTable
from .tracking import IouTracker

logger = logging.getLogger(__name__)

BINARY_LABELMAP = "Binary labelmap"

# Segment tags written for every instance; read back by read_segmentation_sequence.
CLASS_ID_TAG = "LMSFA.ClassId"
CLASS_NAME_TAG = "LMSFA.ClassName"
CONFIDENCE_TAG = "LMSFA.Confidence"
MODEL_TAG = "LMSFA.Model"
TRACK_ID_TAG = "LMSFA.TrackId"

# Node attributes on every frame and segmentation item.
TIMESTAMP_ATTRIBUTE = "LMSFA.TimestampSeconds"
FRAME_INDEX_ATTRIBUTE = "LMSFA.FrameIndex"
MODEL_ATTRIBUTE = "LMSFA.Model"
ROLE_ATTRIBUTE = "LMSFA.Role"
FRAMES_ROLE = "frames"
SEGMENTATION_ROLE = "segmentation"

INDEX_NAME = "frame"


def segment_id_for(class_name: str, track_id: int) -> str:
    """Return the segment ID of a track: the class name in lower case with ``_`` for other characters."""
    safe = re.sub(r"[^0-9a-z]+", "_", class_name.lower()).strip("_") or "class"
    return f"{safe}_{track_id}"


def assign_layers(masks: Sequence[np.ndarray], boxes: Sequence[tuple[int, int, int, int]], shape: tuple[int, int]):
    """Pack masks into as few label layers as possible without losing overlapping pixels.

    Args:
        masks: boolean (H, W) masks.
        boxes: the tight ``(x1, y1, x2, y2)`` box of each mask, end exclusive.
        shape: ``(H, W)``.

    Returns:
        ``(layers, placement)``: ``layers`` is a list of uint8 (H, W) label images and
        ``placement[k] = (layer index, label value)`` says where mask ``k`` went. A mask
        goes to the first layer where it overlaps no other mask, so overlapping instances
        keep all their pixels.
    """
    layers: list[np.ndarray] = []
    next_label: list[int] = []
    placement = []
    for mask, (x1, y1, x2, y2) in zip(masks, boxes):
        crop = mask[y1:y2, x1:x2]
        for layer_index, layer in enumerate(layers):
            if next_label[layer_index] < 255 and not np.any(layer[y1:y2, x1:x2][crop]):
                break
        else:
            layers.append(np.zeros(shape, dtype=np.uint8))
            next_label.append(1)
            layer_index = len(layers) - 1
        label = next_label[layer_index]
        next_label[layer_index] += 1
        layers[layer_index][y1:y2, x1:x2][crop] = label
        placement.append((layer_index, label))
    return layers, placement


class SequenceWriter:
    """Append frames and their instances to a new frame sequence and segmentation sequence.

    Args:
        context: the scene and logics (:class:`SceneContext`).
        name: base name of the new nodes: "<name> frames", "<name> segmentation" and the
            browser "<name>".
        class_table: the model's classes: names, colours and optional SNOMED CT codes.
        model_name: stored in each segment's ``LMSFA.Model`` tag (for example the model
            file name and its SHA-256).
        spacing_mm: ``(column, row)`` pixel spacing in mm, or ``None`` for uncalibrated
            video. Uncalibrated frames get 1 mm pixels and the attribute
            ``LMSFA.PixelSpacingMm = uncalibrated`` on every node.
        tracker: the identity tracker; a new :class:`IouTracker` by default. Pass ``None``
            to keep the ``track_id`` values the instances already have.
        follow_latest_frame: select each new item in the browser, so a user watching in
            Slicer sees every frame as it arrives. It costs one proxy update per frame.
        terminology_file: the ``.term.json`` that supplies SNOMED CT codes for class names.
    """

    _DEFAULT_TRACKER = object()

    def __init__(
        self,
        context: SceneContext,
        name: str,
        class_table: ClassTable,
        model_name: str,
        spacing_mm: Optional[Sequence[float]] = None,
        tracker: Any = _DEFAULT_TRACKER,
        follow_latest_frame: bool = False,
        terminology_file: Optional[Path] = None,
    ):
        import slicer

        if not name or not name.strip():
            raise InputError("the sequence name must not be empty")
        if len(class_table) == 0:
            raise InputError("the class table has no classes: the model must name at least one class")
        self.context = context
        self.name = name
        self.class_table = class_table
        self.model_name = model_name
        self.spacing_mm = check_spacing(spacing_mm)
        self.tracker = IouTracker() if tracker is self._DEFAULT_TRACKER else tracker
        self.follow_latest_frame = follow_latest_frame
        self._frame_shape: Optional[tuple[int, int]] = None
        self._last_index: Optional[int] = None
        self._reference_geometry_string: Optional[str] = None
        self._spacing_value = spacing_attribute_value(self.spacing_mm)
        self._ijk_to_ras = ijk_to_ras_matrix(self.spacing_mm)

        terminology = TerminologyTable.from_file(terminology_file or TERMINOLOGY_FILE)
        self._class_terms = [terminology.find(info) for info in class_table.classes]
        for info, term in zip(class_table.classes, self._class_terms):
            if term is None:
                logger.warning("class %r has no terminology entry: its segments get no SNOMED CT code", info.name)
        self._terminology_strings = [term.serialize() if term else None for term in self._class_terms]

        scene = context.scene
        self.frame_sequence_node = self._add_sequence(slicer, f"{name} frames", FRAMES_ROLE)
        self.segmentation_sequence_node = self._add_sequence(slicer, f"{name} segmentation", SEGMENTATION_ROLE)

        self.browser_node = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", name)
        self.browser_node.SetAttribute(MODEL_ATTRIBUTE, model_name)
        self.browser_node.SetAndObserveMasterSequenceNodeID(self.frame_sequence_node.GetID())
        self.browser_node.AddSynchronizedSequenceNodeID(self.segmentation_sequence_node.GetID())
        # Edits made on the segmentation proxy node (Segment Editor) go back into the
        # sequence; the frames are read-only input.
        self.browser_node.SetSaveChanges(self.segmentation_sequence_node, True)
        self.browser_node.SetSaveChanges(self.frame_sequence_node, False)

        # Scratch nodes outside the scene: SetDataNodeAtValue deep-copies them into the
        # sequence, so one pair serves every frame.
        self._frame_node = slicer.vtkMRMLVectorVolumeNode()
        self._segmentation_node = slicer.vtkMRMLSegmentationNode()
        for node in (self._frame_node, self._segmentation_node):
            node.SetAttribute(SPACING_ATTRIBUTE, self._spacing_value)
            node.SetAttribute(MODEL_ATTRIBUTE, model_name)

    def _add_sequence(self, slicer: Any, node_name: str, role: str) -> Any:
        node = self.context.scene.AddNewNodeByClass("vtkMRMLSequenceNode", node_name)
        node.SetIndexName(INDEX_NAME)
        node.SetIndexUnit("")
        node.SetIndexType(slicer.vtkMRMLSequenceNode.NumericIndex)
        node.SetAttribute(ROLE_ATTRIBUTE, role)
        node.SetAttribute(SPACING_ATTRIBUTE, self._spacing_value)
        node.SetAttribute(MODEL_ATTRIBUTE, self.model_name)
        return node

    @property
    def number_of_frames(self) -> int:
        return self.frame_sequence_node.GetNumberOfDataNodes()

    @property
    def frame_proxy_node(self) -> Any:
        """The vector volume that shows the browser's current frame (``None`` before the first frame)."""
        return self.browser_node.GetProxyNode(self.frame_sequence_node)

    @property
    def segmentation_proxy_node(self) -> Any:
        """The segmentation that shows the current frame's instances; edit this one to correct masks."""
        return self.browser_node.GetProxyNode(self.segmentation_sequence_node)

    def add_frame(
        self,
        index: int,
        timestamp_s: Optional[float],
        image_rgb_uint8: np.ndarray,
        instances: Sequence[Instance],
    ) -> list[str]:
        """Append one frame and its instances as the next item of both sequences.

        Args:
            index: the frame's index in its source; indices must increase from call to call.
            timestamp_s: presentation time in seconds, or ``None`` when unknown.
            image_rgb_uint8: the upright frame, uint8 (H, W, 3) RGB, row 0 at the top.
            instances: the frame's instances with boolean (H, W) masks in frame pixels.
                Unless the writer was built with ``tracker=None``, their ``track_id`` is
                set here. Instances with empty masks get no segment.

        Returns:
            The segment IDs of the frame, one per instance with a non-empty mask.

        Raises:
            InputError: a wrong image or mask shape or dtype, an unknown class id, or a
                frame index that does not increase.
        """
        image = self._check_frame(index, image_rgb_uint8)
        masks = self._check_instances(instances, image.shape[:2])
        if self.tracker is not None:
            self.tracker.update(instances)

        index_value = str(int(index))
        self._fill_frame_node(image, index, timestamp_s)
        self.frame_sequence_node.SetDataNodeAtValue(self._frame_node, index_value)
        segment_ids = self._fill_segmentation_node(instances, masks, index, timestamp_s)
        self.segmentation_sequence_node.SetDataNodeAtValue(self._segmentation_node, index_value)
        self._last_index = int(index)

        if self.number_of_frames == 1:
            self._create_proxy_nodes()
        elif self.follow_latest_frame:
            self.browser_node.SetSelectedItemNumber(self.number_of_frames - 1)
        return segment_ids

    def _check_frame(self, index: int, image: np.ndarray) -> np.ndarray:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise InputError(f"frame index must be an integer of 0 or more, got {index!r}")
        if self._last_index is not None and index <= self._last_index:
            raise InputError(
                f"frame index {index} does not follow the previous frame {self._last_index}: "
                "add frames in increasing index order, each index once"
            )
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(
                f"frame {index} must be a uint8 (H, W, 3) RGB array, got {image.dtype} {image.shape}; "
                "convert grey or RGBA frames to RGB first"
            )
        shape = (int(image.shape[0]), int(image.shape[1]))
        if self._frame_shape is None:
            self._frame_shape = shape
        elif shape != self._frame_shape:
            raise InputError(
                f"frame {index} is {shape[1]}x{shape[0]} pixels but earlier frames are "
                f"{self._frame_shape[1]}x{self._frame_shape[0]}: write each frame size to its own sequence"
            )
        return image

    def _check_instances(self, instances: Sequence[Instance], shape: tuple[int, int]) -> list[np.ndarray]:
        masks = []
        for inst in instances:
            if not 0 <= inst.class_id < len(self.class_table):
                raise InputError(
                    f"instance class id {inst.class_id} is outside the class table "
                    f"(0..{len(self.class_table) - 1}, {self.class_table.names}): use the model's own class table"
                )
            mask = np.asarray(inst.mask)
            if mask.shape != shape:
                raise InputError(f"instance mask shape {mask.shape} differs from the frame shape {shape}")
            masks.append(mask.astype(bool, copy=False))
        if self.tracker is None and any(inst.track_id is None for inst in instances):
            raise InputError("instances need a track_id when the writer has no tracker (tracker=None)")
        return masks

    def _fill_frame_node(self, image: np.ndarray, index: int, timestamp_s: Optional[float]) -> None:
        import vtk
        from vtk.util import numpy_support

        height, width = image.shape[:2]
        image_data = vtk.vtkImageData()
        image_data.SetDimensions(width, height, 1)
        # VTK's first axis is the column, so the C-ordered (H, W, 3) array is already in
        # VTK point order: a flat (H*W, 3) view needs no copy here, and the sequence
        # deep-copies it.
        scalars = numpy_support.numpy_to_vtk(image.reshape(-1, 3), deep=True)
        scalars.SetName("frame")
        image_data.GetPointData().SetScalars(scalars)
        self._frame_node.SetAndObserveImageData(image_data)
        self._frame_node.SetIJKToRASMatrix(self._ijk_to_ras)
        self._frame_node.SetName(f"{self.name} frame {index}")
        self._set_item_attributes(self._frame_node, index, timestamp_s)

    def _set_item_attributes(self, node: Any, index: int, timestamp_s: Optional[float]) -> None:
        node.SetAttribute(FRAME_INDEX_ATTRIBUTE, str(int(index)))
        node.SetAttribute(TIMESTAMP_ATTRIBUTE, "" if timestamp_s is None else repr(float(timestamp_s)))

    def _fill_segmentation_node(
        self, instances: Sequence[Instance], masks: list[np.ndarray], index: int, timestamp_s: Optional[float]
    ) -> list[str]:
        import slicer
        from vtk.util import numpy_support

        from .tracking import mask_box

        node = self._segmentation_node
        node.SetName(f"{self.name} segmentation {index}")
        self._set_item_attributes(node, index, timestamp_s)
        # A new vtkSegmentation per frame. Emptying or deleting the previous one costs
        # about 3 to 6 ms for 10 segments in shared layers, because each removed segment
        # is erased from its layer, unless its source representation name is cleared
        # first. The sequence already holds a deep copy, so the scratch copy may lose it.
        previous = node.GetSegmentation()
        if previous is not None:
            previous.SetSourceRepresentationName("")
        segmentation = slicer.vtkSegmentation()
        segmentation.SetSourceRepresentationName(BINARY_LABELMAP)
        segmentation.SetConversionParameter(
            slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(), self._reference_geometry()
        )
        node.SetAndObserveSegmentation(segmentation)

        kept = [(inst, mask, mask_box(mask)) for inst, mask in zip(instances, masks)]
        kept = [(inst, mask, box) for inst, mask, box in kept if box is not None]
        if len(kept) < len(instances):
            logger.debug("frame %d: %d instances with empty masks get no segment", index, len(instances) - len(kept))
        layers, placement = assign_layers([m for _, m, _ in kept], [b for _, _, b in kept], self._frame_shape)

        layer_images = []
        for layer_index, layer in enumerate(layers):
            boxes = [b for (_, _, b), (li, _) in zip(kept, placement) if li == layer_index]
            x1 = min(b[0] for b in boxes)
            y1 = min(b[1] for b in boxes)
            x2 = max(b[2] for b in boxes)
            y2 = max(b[3] for b in boxes)
            oriented = slicer.vtkOrientedImageData()
            oriented.SetExtent(x1, x2 - 1, y1, y2 - 1, 0, 0)
            oriented.AllocateScalars(3, 1)  # VTK_UNSIGNED_CHAR, one component
            numpy_support.vtk_to_numpy(oriented.GetPointData().GetScalars())[:] = layer[y1:y2, x1:x2].ravel()
            oriented.SetImageToWorldMatrix(self._ijk_to_ras)
            layer_images.append(oriented)

        segment_ids = []
        for (inst, _, _), (layer_index, label) in zip(kept, placement):
            segment_id = segment_id_for(self.class_table[inst.class_id].name, inst.track_id)
            segment = self._make_segment(inst, label)
            segment.AddRepresentation(BINARY_LABELMAP, layer_images[layer_index])
            segmentation.AddSegment(segment, segment_id)
            segment_ids.append(segment_id)
        return segment_ids

    def _reference_geometry(self) -> str:
        """Return the serialized frame geometry: the segmentation's reference image geometry."""
        import slicer

        if self._reference_geometry_string is None:
            height, width = self._frame_shape
            geometry = slicer.vtkOrientedImageData()
            geometry.SetExtent(0, width - 1, 0, height - 1, 0, 0)
            geometry.SetImageToWorldMatrix(self._ijk_to_ras)
            self._reference_geometry_string = slicer.vtkSegmentationConverter.SerializeImageGeometry(geometry)
        return self._reference_geometry_string

    def _make_segment(self, inst: Instance, label: int) -> Any:
        import slicer

        info = self.class_table[inst.class_id]
        segment = slicer.vtkSegment()
        segment.SetName(f"{info.name} {inst.track_id}")
        segment.SetColor(*(channel / 255.0 for channel in info.color))
        # Without these two flags Slicer re-derives the name and colour from the terminology.
        segment.SetNameAutoGenerated(False)
        segment.SetColorAutoGenerated(False)
        segment.SetLabelValue(label)
        terminology = self._terminology_strings[inst.class_id]
        if terminology:
            segment.SetTerminology(terminology)
        segment.SetTag(CLASS_ID_TAG, str(inst.class_id))
        segment.SetTag(CLASS_NAME_TAG, info.name)
        segment.SetTag(CONFIDENCE_TAG, f"{float(inst.score):.4f}")
        segment.SetTag(MODEL_TAG, self.model_name)
        segment.SetTag(TRACK_ID_TAG, str(inst.track_id))
        return segment

    def _create_proxy_nodes(self) -> None:
        self.browser_node.SetSelectedItemNumber(0)
        self.context.sequences_logic.UpdateProxyNodesFromSequences(self.browser_node)
        for proxy in (self.frame_proxy_node, self.segmentation_proxy_node):
            if proxy is not None and proxy.GetDisplayNode() is None:
                # Display nodes are needed to show the proxies, and some segmentation
                # logic calls (ExportSegmentsToColorTableNode) crash without one.
                proxy.CreateDefaultDisplayNodes()
