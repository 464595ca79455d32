"""Save and load what the scene writer made: ``.mrb`` bundles, ``.seg.nrrd`` and ``.seq.nrrd`` files.

Every writer here is atomic. It writes into a hidden temporary folder in the target
folder and moves the file onto the target with ``os.replace`` only after a successful
write. So a failed or interrupted save leaves no half-written file under the target name.
An existing target is replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ..errors import InputError, LmsfaError
from ..exports.atomic import atomic_file
from .context import SceneContext
from .writer import restore_model_flags

logger = logging.getLogger(__name__)


def _check_suffix(path: Path, suffix: str) -> Path:
    path = Path(path)
    if not path.name.lower().endswith(suffix):
        raise InputError(f"{path}: the file name must end with {suffix}")
    return path


def restore_model_flags_in_scene(context: SceneContext) -> int:
    """Apply :func:`~lmsfa.scene.writer.restore_model_flags` to every segmentation of the scene.

    That is every segmentation node, including proxy nodes, and every item of every
    sequence of segmentations. Returns the number of segments changed.
    """
    scene = context.scene
    changed = 0
    for n in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")):
        changed += restore_model_flags(scene.GetNthNodeByClass(n, "vtkMRMLSegmentationNode"))
    for n in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceNode")):
        sequence = scene.GetNthNodeByClass(n, "vtkMRMLSequenceNode")
        if sequence.GetDataNodeClassName() != "vtkMRMLSegmentationNode":
            continue
        for item in range(sequence.GetNumberOfDataNodes()):
            changed += restore_model_flags(sequence.GetNthDataNode(item))
    return changed


def commit_edits(context: SceneContext, browser_node: Any = None) -> int:
    """Copy edited proxy nodes back into their sequences at the browser's current item.

    Slicer does this on its own when a proxy node changes and the browser's
    ``SaveChanges`` flag is on for that sequence, and a second copy changes nothing.
    Headless code that edits a proxy node (for example through
    ``vtkSlicerSegmentEditorLogic``) calls this before reading or saving.

    Args:
        browser_node: the browser to commit, or ``None`` for every browser in the scene.

    Returns:
        The number of proxy nodes copied back.
    """
    import vtk

    if browser_node is None:
        browsers = [
            context.scene.GetNthNodeByClass(n, "vtkMRMLSequenceBrowserNode")
            for n in range(context.scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode"))
        ]
    else:
        browsers = [browser_node]
    count = 0
    for browser in browsers:
        collection = vtk.vtkCollection()
        browser.GetSynchronizedSequenceNodes(collection, True)
        for n in range(collection.GetNumberOfItems()):
            sequence = collection.GetItemAsObject(n)
            proxy = browser.GetProxyNode(sequence)
            if proxy is not None and browser.GetSaveChanges(sequence):
                context.sequences_logic.UpdateSequencesFromProxyNodes(browser, proxy)
                count += 1
    restore_model_flags_in_scene(context)
    return count


def save_scene_mrb(context: SceneContext, path: Path, overwrite: bool = False) -> Path:
    """Save the whole scene as a Slicer bundle (``.mrb``), after committing proxy edits.

    Raises:
        InputError: a wrong suffix, a missing folder, or an existing file without ``overwrite``.
        LmsfaError: Slicer failed to write the bundle (its messages are in the error).
    """
    import slicer

    path = _check_suffix(Path(path).absolute(), ".mrb")
    commit_edits(context)
    start = time.perf_counter()
    with atomic_file(path, overwrite) as temp_path:
        messages = slicer.vtkMRMLMessageCollection()
        if not context.scene.WriteToMRB(str(temp_path), None, messages):
            raise LmsfaError(f"saving the scene to {path} failed: {messages.GetAllMessagesAsString().strip()}")
    logger.info("saved the scene to %s in %.1f s", path, time.perf_counter() - start)
    return path


def load_scene_mrb(context: SceneContext, path: Path) -> list[Any]:
    """Add the nodes of a Slicer bundle (``.mrb``) to the scene and return its sequence browsers.

    Raises:
        InputError: the file is missing or Slicer cannot read it.
    """
    import slicer

    # Slicer resolves the bundle's files against the scene URL, which must be absolute.
    path = Path(path).absolute()
    if not path.is_file():
        raise InputError(f"scene bundle not found: {path}")
    before = {
        context.scene.GetNthNodeByClass(n, "vtkMRMLSequenceBrowserNode").GetID()
        for n in range(context.scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode"))
    }
    messages = slicer.vtkMRMLMessageCollection()
    if not context.scene.ReadFromMRB(str(path), False, messages):
        raise InputError(f"Slicer could not read the scene bundle {path}: {messages.GetAllMessagesAsString().strip()}")
    browsers = []
    for n in range(context.scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode")):
        browser = context.scene.GetNthNodeByClass(n, "vtkMRMLSequenceBrowserNode")
        if browser.GetID() not in before:
            browsers.append(browser)
    for browser in browsers:
        context.sequences_logic.UpdateProxyNodesFromSequences(browser)
    restore_model_flags_in_scene(context)
    return browsers


def save_segmentation_nrrd(segmentation_node: Any, path: Path, overwrite: bool = False) -> Path:
    """Save one segmentation (for example one frame's item) as ``.seg.nrrd``, layers included.

    Raises:
        InputError: a wrong suffix, a missing folder, or an existing file without ``overwrite``.
        LmsfaError: Slicer failed to write the file.
    """
    import slicer

    path = _check_suffix(path, ".seg.nrrd")
    restore_model_flags(segmentation_node)
    with atomic_file(path, overwrite) as temp_path:
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(str(temp_path))
        if not storage.WriteData(segmentation_node):
            raise LmsfaError(f"writing the segmentation {segmentation_node.GetName()!r} to {path} failed")
    return path


def save_frames_seq_nrrd(frame_sequence_node: Any, path: Path, overwrite: bool = False) -> Path:
    """Save a sequence of frames (vector volumes of one size) as one ``.seq.nrrd`` file.

    Raises:
        InputError: a wrong suffix, a missing folder, or an existing file without ``overwrite``.
        LmsfaError: Slicer failed to write the file.
    """
    import slicer

    path = _check_suffix(path, ".seq.nrrd")
    with atomic_file(path, overwrite) as temp_path:
        storage = slicer.vtkMRMLVolumeSequenceStorageNode()
        storage.SetFileName(str(temp_path))
        if not storage.WriteData(frame_sequence_node):
            raise LmsfaError(f"writing the frame sequence {frame_sequence_node.GetName()!r} to {path} failed")
    return path


def load_segmentation_nrrd(context: SceneContext, path: Path) -> Any:
    """Load a ``.seg.nrrd`` into the scene and return its segmentation node.

    Raises:
        InputError: the file is missing or Slicer cannot read it.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"segmentation file not found: {path}")
    node = context.segmentations_logic.LoadSegmentationFromFile(str(path), False)
    if node is None:
        raise InputError(f"Slicer could not read the segmentation file {path}")
    return node
