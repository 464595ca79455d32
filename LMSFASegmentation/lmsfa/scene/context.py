"""The MRML scene and the module logics that the scene writer needs, headless or in Slicer.

Headless, :meth:`SceneContext.headless` builds what Slicer's application would. That is a
``vtkMRMLScene`` and a ``vtkSlicerApplicationLogic`` with the colour logic (and its
default colour nodes). The volumes, terminologies, segmentations, subject hierarchy and
sequences logics are registered on it. ``vtkMRMLRemoteIOLogic`` with
``vtkDataIOManagerLogic`` is wired up too, because reading a ``.mrb`` fails without them. In Slicer, :meth:`SceneContext.from_slicer` takes
the application's own scene and logics.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from ..errors import InputError

logger = logging.getLogger(__name__)

_TERMINOLOGY_NAME = "LMSFASegmentation.term.json"
_TERMINOLOGY_CANDIDATES = [
    # The Slicer module folder and the source checkout (editable installs).
    Path(__file__).resolve().parents[2] / "Resources" / "Terminology" / _TERMINOLOGY_NAME,
    # A wheel install carries package data only, under lmsfa/data.
    Path(__file__).resolve().parents[1] / "data" / _TERMINOLOGY_NAME,
]
TERMINOLOGY_FILE = next((path for path in _TERMINOLOGY_CANDIDATES if path.is_file()), _TERMINOLOGY_CANDIDATES[0])
"""The module's own terminology context: the slicer-core wheel ships no default terminology files."""


@contextlib.contextmanager
def vtk_errors_silenced() -> Iterator[None]:
    """Turn off VTK's global warning and error display for the duration of the block.

    Headless, the colour and terminologies logics print errors about default files that
    only a full Slicer installation has (colour files, DICOM terminologies). Those files
    are not needed here, so the messages would only alarm users.
    """
    import vtk

    previous = vtk.vtkObject.GetGlobalWarningDisplay()
    vtk.vtkObject.GlobalWarningDisplayOff()
    try:
        yield
    finally:
        vtk.vtkObject.SetGlobalWarningDisplay(previous)


@dataclass
class SceneContext:
    """A scene and the logics that act on it.

    Attributes:
        scene: the ``vtkMRMLScene`` that receives the nodes.
        app_logic: the ``vtkSlicerApplicationLogic`` (saving and loading ``.mrb`` bundles).
        segmentations_logic: ``vtkSlicerSegmentationsModuleLogic``.
        sequences_logic: ``vtkSlicerSequencesLogic``; it updates the browser's proxy nodes.
        terminologies_logic: ``vtkSlicerTerminologiesModuleLogic`` with the module's
            terminology context loaded.
        volumes_logic: ``vtkSlicerVolumesLogic``, or ``None`` where not needed.
        subject_hierarchy_logic: ``vtkSlicerSubjectHierarchyModuleLogic``, or ``None``.
        terminology_context_name: the context name of the loaded ``.term.json``.
    """

    scene: Any
    app_logic: Any
    segmentations_logic: Any
    sequences_logic: Any
    terminologies_logic: Any
    volumes_logic: Any = None
    subject_hierarchy_logic: Any = None
    terminology_context_name: str = ""
    _keep_alive: list = field(default_factory=list, repr=False)

    @classmethod
    def headless(cls, terminology_file: Optional[Path] = None) -> "SceneContext":
        """Build a new scene with the logics registered as Slicer's application does.

        Args:
            terminology_file: a Slicer ``.term.json`` to load; the module's own by default.

        Raises:
            InputError: the terminology file is missing or Slicer cannot read it.
        """
        import slicer

        scene = slicer.vtkMRMLScene()
        app_logic = slicer.vtkSlicerApplicationLogic()
        app_logic.SetMRMLScene(scene)

        def register(name: str, logic: Any) -> Any:
            # The application logic must be set before the scene: logics look up their
            # neighbours (for example the colour logic) when the scene arrives.
            logic.SetMRMLApplicationLogic(app_logic)
            logic.SetMRMLScene(scene)
            app_logic.SetModuleLogic(name, logic)
            return logic

        with vtk_errors_silenced():
            color_logic = register("Colors", slicer.vtkSlicerColorLogic())
            app_logic.SetColorLogic(color_logic)
            terminologies_logic = register("Terminologies", slicer.vtkSlicerTerminologiesModuleLogic())
        subject_hierarchy_logic = register("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic())
        volumes_logic = register("Volumes", slicer.vtkSlicerVolumesLogic())
        segmentations_logic = register("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic())
        sequences_logic = register("Sequences", slicer.vtkSlicerSequencesLogic())

        remote_io_logic = slicer.vtkMRMLRemoteIOLogic()
        remote_io_logic.SetMRMLScene(scene)
        data_io_manager_logic = slicer.vtkDataIOManagerLogic()
        data_io_manager_logic.SetMRMLApplicationLogic(app_logic)
        data_io_manager_logic.SetAndObserveDataIOManager(remote_io_logic.GetDataIOManager())
        remote_io_logic.AddDataIOToScene()
        # Bundles are packed and unpacked in a folder under the cache manager's remote
        # cache directory; Slicer sets it from its settings, and without it .mrb paths
        # start at the file system root.
        cache_directory = tempfile.mkdtemp(prefix="lmsfa-mrml-cache-")
        atexit.register(shutil.rmtree, cache_directory, True)
        scene.GetCacheManager().SetRemoteCacheDirectory(cache_directory)

        context = cls(
            scene=scene,
            app_logic=app_logic,
            segmentations_logic=segmentations_logic,
            sequences_logic=sequences_logic,
            terminologies_logic=terminologies_logic,
            volumes_logic=volumes_logic,
            subject_hierarchy_logic=subject_hierarchy_logic,
            _keep_alive=[color_logic, remote_io_logic, data_io_manager_logic],
        )
        context.terminology_context_name = context.load_terminology(terminology_file or TERMINOLOGY_FILE)
        logger.debug("built a headless MRML scene with %d default nodes", scene.GetNumberOfNodes())
        return context

    @classmethod
    def from_slicer(cls, slicer_module: Any, terminology_file: Optional[Path] = None) -> "SceneContext":
        """Take the running Slicer application's scene and module logics.

        Args:
            slicer_module: the ``slicer`` module of a running Slicer application (it has
                ``mrmlScene``, ``app`` and ``modules``).
            terminology_file: a Slicer ``.term.json`` to load; the module's own by default.
        """
        modules = slicer_module.modules
        context = cls(
            scene=slicer_module.mrmlScene,
            app_logic=slicer_module.app.applicationLogic(),
            segmentations_logic=modules.segmentations.logic(),
            sequences_logic=modules.sequences.logic(),
            terminologies_logic=modules.terminologies.logic(),
            volumes_logic=modules.volumes.logic(),
            subject_hierarchy_logic=modules.subjecthierarchy.logic(),
        )
        context.terminology_context_name = context.load_terminology(terminology_file or TERMINOLOGY_FILE)
        return context

    def load_terminology(self, path: Path) -> str:
        """Load a Slicer ``.term.json`` into the terminologies logic and return its context name.

        Loading the same file again replaces the context of the same name.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"terminology file not found: {path}; reinstall the module or pass an existing .term.json")
        name = self.terminologies_logic.LoadTerminologyFromFile(str(path))
        if not name:
            raise InputError(f"Slicer could not read the terminology file {path}: check that it is a valid .term.json")
        return name
