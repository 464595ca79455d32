"""3D Slicer module: LMSF-A instance segmentation of endoscopic video.

The module is a thin layer over the ``lmsfa`` core package, which lives next to this file
and also runs headless (the ``lmsfa`` command line). The widget collects the inputs, the
logic adapts Slicer's scene and module logics to the core, and the core does the work:
``lmsfa.sources`` decodes frames, ``lmsfa.inference.Predictor`` runs the network and
``lmsfa.scene.SequenceWriter`` writes the frame and segmentation sequences.

Only Slicer, Qt, CTK, VTK and the standard library are imported at the top of this file, so
the module loads even before torch, OpenCV or ONNX Runtime are installed. They are
installed once, after the user confirms, when a run first needs them.
"""

import dataclasses
import hashlib
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import ctk
import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

logger = logging.getLogger(__name__)

MODULE_DIR = Path(__file__).resolve().parent

# Extension-level resource folders. In the source tree they are <repository>/Resources/<folder>;
# LMSFASegmentation/CMakeLists.txt copies them next to the module's own resources in the
# build and install trees.
BUNDLED_MODEL_FOLDER = "Models"
SAMPLE_FOLDER = "Sample"
SAMPLE_CLIP_NAME = "vocalfolds_seq4.mp4"

MODEL_SUFFIXES = (".pt", ".onnx")
VIDEO_NAME_FILTERS = ["Videos (*.mp4 *.avi *.mov *.mkv *.webm *.dcm)", "All files (*)"]
MODEL_NAME_FILTERS = ["LMSF-A models (*.pt *.onnx)"]
DEVICE_CHOICES = {"auto": "auto", "CPU": "cpu", "CUDA": "cuda"}

# Installing one of these next to another distribution of the same import name (cv2) breaks
# both, so a requirement is dropped when an alternative is already installed (for example
# opencv-contrib-python from the SlicerOpenCV extension).
ALTERNATIVE_DISTRIBUTIONS = {
    "opencv-python-headless": ("opencv-python", "opencv-contrib-python", "opencv-contrib-python-headless"),
}

POLL_INTERVAL_MS = 30
POLL_BUDGET_S = 0.04
RESULT_QUEUE_SIZE = 8
"""Frames waiting for the scene writer; the worker blocks when the queue is full, which keeps memory constant."""

TRAINING_DATA_FOLDER = "corrected_frames_coco"
"""Sub-folder of the training output folder that receives the COCO export; kept so that the run can be resumed."""
TRAINING_STOP_TIMEOUT_S = 120
"""Seconds that a cancelled training process gets to finish its batch before it is killed."""
STDERR_LINES_KEPT = 40


def moduleResourcePath(relativePath: str) -> Path:
    """Return the path of a file in the module's own Resources folder."""
    return MODULE_DIR / "Resources" / relativePath


def showJobProgress(progressBar, statusLabel, done: int, total: Optional[int], message: str) -> None:
    """Show a background job's progress. An unknown total keeps the bar in its busy state."""
    if total:
        progressBar.setRange(0, total)
        progressBar.setValue(done)
    statusLabel.text = message


#
# LMSFASegmentation
#


class LMSFASegmentation(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel and Help & Acknowledgement section."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "LMSF-A Segmentation"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Sequences", "Segmentations", "Terminologies"]
        self.parent.contributors = ["LMSF-A Segmentation contributors"]
        self.parent.helpText = """
Instance segmentation of endoscopic video with LMSF-A, a 1.8 M-parameter YOLOv8n-seg derivative.
Choose a video file, a frame folder, or a sequence or volume in the scene, pick the bundled model
or a local checkpoint (.pt) or ONNX model (.onnx), and press Apply. The frames go into a sequence
of RGB volumes and each frame's instances into a segmentation sequence, both synchronised by a
sequence browser, with one segment per instance named after its class ("nerve 1") and the same
name kept while the structure stays visible. Correct the masks in Segment Editor on any frame.
Inference runs in the background, so you can scrub through the finished frames while it runs.
Cancel stops the run and keeps the frames finished so far in the scene.
"Train on corrected frames" fine-tunes the selected .pt model on every frame of a sequence
browser with its corrected segmentations, in a background process, and offers the new
best.pt as the model for the next run.
"""
        self.parent.acknowledgementText = """
LMSF-A Segmentation is an open-source project. The bundled sample clip and the default model's
training data come from the vocalfolds data set: M.-H. Laves, J. Bicker, L. A. Kahrs and
T. Ortmaier, "A dataset of laryngeal endoscopic images with comparative study on convolution
neural network based semantic segmentation", International Journal of Computer Assisted
Radiology and Surgery, 2019 (https://github.com/imesluh/vocalfolds), licensed under
CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/).
"""


#
# Parameters of one run
#


@dataclasses.dataclass
class SegmentationRequest:
    """The inputs of one run, as the widget or a script sets them.

    Exactly one of ``inputPath`` (a video file or a frame folder) and ``inputNode`` (a
    ``vtkMRMLSequenceNode`` of 2-D frames, or a volume whose slices are frames) is set.
    Frame indices count from 0 in the input; ``lastFrame`` is included, ``None`` means the
    last frame of the input. ``confidence`` and ``iou`` are in 0..1.
    """

    modelPath: str
    inputPath: Optional[str] = None
    inputNode: object = None
    device: str = "auto"
    confidence: float = 0.25
    iou: float = 0.7
    firstFrame: int = 0
    lastFrame: Optional[int] = None
    frameStride: int = 1
    outputName: Optional[str] = None

    def inputName(self) -> str:
        """Return the base name for the output nodes: the output name, else the input's name."""
        if self.outputName:
            return self.outputName
        if self.inputNode is not None:
            return self.inputNode.GetName()
        path = Path(self.inputPath)
        return path.stem if path.is_file() else path.name


@dataclasses.dataclass
class TrainingRequest:
    """The inputs of one fine-tuning run on corrected frames.

    ``browserNode`` is the ``vtkMRMLSequenceBrowserNode`` that synchronises the frame and
    segmentation sequences. ``modelPath`` is the PyTorch checkpoint (.pt) to fine-tune.
    ``imageSize`` is the square network input size in pixels, a multiple of 32.
    """

    browserNode: object
    modelPath: str
    outputFolder: str
    epochs: int = 20
    imageSize: int = 640
    batchSize: int = 4
    device: str = "auto"


#
# LMSFASegmentationWidget
#


class LMSFASegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: loads the .ui, reads the user's choices and starts or cancels a run."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.job = None
        self.trainingJob = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LMSFASegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = LMSFASegmentationLogic()

        self.ui.videoFilePathLineEdit.filters = ctk.ctkPathLineEdit.Files | ctk.ctkPathLineEdit.Readable
        self.ui.videoFilePathLineEdit.nameFilters = VIDEO_NAME_FILTERS
        self.ui.videoFilePathLineEdit.settingKey = "LMSFASegmentation/VideoFile"
        self.ui.frameFolderPathLineEdit.filters = ctk.ctkPathLineEdit.Dirs | ctk.ctkPathLineEdit.Readable
        self.ui.frameFolderPathLineEdit.settingKey = "LMSFASegmentation/FrameFolder"
        self.ui.modelPathLineEdit.filters = ctk.ctkPathLineEdit.Files | ctk.ctkPathLineEdit.Readable
        self.ui.modelPathLineEdit.nameFilters = MODEL_NAME_FILTERS
        self.ui.modelPathLineEdit.settingKey = "LMSFASegmentation/ModelFile"
        self.ui.progressBar.hide()

        bundledModel = self.logic.bundledModelPath()
        if bundledModel is None:
            self.ui.bundledModelLabel.text = "not installed: choose a model file"
            self.ui.bundledModelRadioButton.enabled = False
            self.ui.localModelRadioButton.checked = True
        else:
            self.ui.bundledModelLabel.text = bundledModel.name

        for button in (
            self.ui.videoFileRadioButton,
            self.ui.frameFolderRadioButton,
            self.ui.sceneNodeRadioButton,
            self.ui.bundledModelRadioButton,
            self.ui.localModelRadioButton,
        ):
            button.toggled.connect(self.updateGUI)
        self.ui.videoFilePathLineEdit.currentPathChanged.connect(self.updateGUI)
        self.ui.frameFolderPathLineEdit.currentPathChanged.connect(self.updateGUI)
        self.ui.inputNodeSelector.currentNodeChanged.connect(self.updateGUI)
        self.ui.modelPathLineEdit.currentPathChanged.connect(self.updateGUI)
        self.ui.applyButton.clicked.connect(self.onApplyButton)
        self.setupTraining()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)

        self.updateGUI()

    def cleanup(self) -> None:
        """Stop a running job and remove observers when the module is closed or reloaded."""
        if self.job is not None:
            self.job.abandon()
            self.job = None
        if self.trainingJob is not None:
            self.trainingJob.cancel()
            self.trainingJob = None
        self.removeObservers()

    def onSceneStartClose(self, caller, event) -> None:
        # The job's nodes are about to disappear: stop writing into them.
        if self.job is not None:
            self.job.abandon()
            self.job = None
            self.updateGUI()

    def selectedModelPath(self) -> Optional[Path]:
        if self.ui.bundledModelRadioButton.checked:
            return self.logic.bundledModelPath()
        text = self.ui.modelPathLineEdit.currentPath
        return Path(text) if text else None

    def selectedInputDescription(self) -> Optional[str]:
        """Return a short description of the selected input, or None when it is not set."""
        if self.ui.videoFileRadioButton.checked:
            return self.ui.videoFilePathLineEdit.currentPath or None
        if self.ui.frameFolderRadioButton.checked:
            return self.ui.frameFolderPathLineEdit.currentPath or None
        node = self.ui.inputNodeSelector.currentNode()
        return node.GetName() if node is not None else None

    def updateGUI(self, *unused) -> None:
        """Enable the widgets that fit the current choices, and show the model's SHA-256."""
        running = self.job is not None
        self.updateTrainingGUI()
        self.ui.videoFilePathLineEdit.enabled = self.ui.videoFileRadioButton.checked and not running
        self.ui.frameFolderPathLineEdit.enabled = self.ui.frameFolderRadioButton.checked and not running
        self.ui.inputNodeSelector.enabled = self.ui.sceneNodeRadioButton.checked and not running
        self.ui.modelPathLineEdit.enabled = self.ui.localModelRadioButton.checked and not running
        for collapsible in (self.ui.inputsCollapsibleButton, self.ui.modelCollapsibleButton, self.ui.parametersCollapsibleButton):
            collapsible.enabled = not running

        modelPath = self.selectedModelPath()
        if modelPath is not None and modelPath.is_file():
            self.ui.modelSha256LineEdit.text = self.logic.fileSha256(modelPath)
        else:
            self.ui.modelSha256LineEdit.text = ""

        if running:
            self.ui.applyButton.text = "Cancel"
            self.ui.applyButton.toolTip = "Stop the run; frames already segmented stay in the scene."
            self.ui.applyButton.enabled = True
            return
        self.ui.applyButton.text = "Apply"
        ready = self.selectedInputDescription() is not None and modelPath is not None and modelPath.is_file()
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = (
            "Segment the selected frames." if ready else "Select an input and a model file first."
        )

    def buildRequest(self) -> SegmentationRequest:
        lastFrame = self.ui.lastFrameSpinBox.value
        request = SegmentationRequest(
            modelPath=str(self.selectedModelPath()),
            device=DEVICE_CHOICES[self.ui.deviceComboBox.currentText],
            confidence=float(self.ui.confidenceThresholdSliderWidget.value),
            iou=float(self.ui.iouThresholdSliderWidget.value),
            firstFrame=int(self.ui.firstFrameSpinBox.value),
            lastFrame=None if lastFrame < 0 else int(lastFrame),
            frameStride=int(self.ui.frameStrideSpinBox.value),
        )
        if self.ui.sceneNodeRadioButton.checked:
            request.inputNode = self.ui.inputNodeSelector.currentNode()
        elif self.ui.videoFileRadioButton.checked:
            request.inputPath = self.ui.videoFilePathLineEdit.currentPath
        else:
            request.inputPath = self.ui.frameFolderPathLineEdit.currentPath
        return request

    def onApplyButton(self) -> None:
        if self.job is not None:
            self.ui.statusLabel.text = "Cancelling after the current frame..."
            self.job.cancel()
            return

        with slicer.util.tryWithErrorDisplay("Failed to start the segmentation.", waitCursor=True):
            request = self.buildRequest()
            if not self.logic.ensureDependencies(askConfirmation=True):
                self.ui.statusLabel.text = "Python packages are missing: the run needs them installed."
                return
            if self.ui.videoFileRadioButton.checked:
                self.ui.videoFilePathLineEdit.addCurrentPathToHistory()
            elif self.ui.frameFolderRadioButton.checked:
                self.ui.frameFolderPathLineEdit.addCurrentPathToHistory()
            if self.ui.localModelRadioButton.checked:
                self.ui.modelPathLineEdit.addCurrentPathToHistory()
            self.job = self.logic.startSegmentation(request, onProgress=self.onJobProgress, onFinished=self.onJobFinished)
            self.ui.progressBar.setRange(0, 0)
            self.ui.progressBar.show()
            self.ui.statusLabel.text = "Loading the model..."
            self.updateGUI()

    def onJobProgress(self, done: int, total: Optional[int], message: str) -> None:
        showJobProgress(self.ui.progressBar, self.ui.statusLabel, done, total, message)

    def onJobFinished(self, job: "SegmentationJob") -> None:
        self.job = None
        self.ui.progressBar.hide()
        self.ui.statusLabel.text = job.summary()
        self.updateGUI()
        if job.status == SegmentationJob.FAILED:
            slicer.util.errorDisplay(f"Segmentation failed: {job.error}", detailedText=job.errorDetails)
        if job.writer is not None:
            self.ui.trainingBrowserSelector.setCurrentNode(job.writer.browser_node)

    # Training on corrected frames

    def setupTraining(self) -> None:
        self.ui.trainingOutputPathLineEdit.filters = ctk.ctkPathLineEdit.Dirs | ctk.ctkPathLineEdit.Writable
        self.ui.trainingOutputPathLineEdit.settingKey = "LMSFASegmentation/TrainingOutputFolder"
        self.ui.trainingProgressBar.hide()
        self.ui.trainingBrowserSelector.currentNodeChanged.connect(self.updateTrainingGUI)
        self.ui.trainingOutputPathLineEdit.currentPathChanged.connect(self.updateTrainingGUI)
        self.ui.trainButton.clicked.connect(self.onTrainButton)
        self.updateTrainingGUI()

    def updateTrainingGUI(self, *unused) -> None:
        """Enable the Train button when a browser, a .pt model and an output folder are chosen."""
        training = self.trainingJob is not None
        # The segmentation sequence grows during a segmentation run, so training waits for its end.
        self.ui.trainingCollapsibleButton.enabled = training or self.job is None

        for widget in (
            self.ui.trainingBrowserSelector,
            self.ui.trainingEpochsSpinBox,
            self.ui.trainingImageSizeSpinBox,
            self.ui.trainingBatchSizeSpinBox,
            self.ui.trainingOutputPathLineEdit,
        ):
            widget.enabled = not training
        if training:
            self.ui.trainButton.text = "Cancel"
            self.ui.trainButton.enabled = True
            return

        self.ui.trainButton.text = "Train"
        modelPath = self.selectedModelPath()
        problems = []
        if self.ui.trainingBrowserSelector.currentNode() is None:
            problems.append("select the sequence browser of the corrected frames")
        if modelPath is None or modelPath.suffix.lower() != ".pt" or not modelPath.is_file():
            problems.append("select a PyTorch checkpoint (.pt) as the model to fine-tune")
        if not self.ui.trainingOutputPathLineEdit.currentPath:
            problems.append("choose an output folder")
        self.ui.trainButton.enabled = not problems
        self.ui.trainButton.toolTip = (
            "Fine-tune the selected model on the corrected frames in a background process."
            if not problems else "To train: " + "; ".join(problems) + "."
        )

    def buildTrainingRequest(self) -> "TrainingRequest":
        return TrainingRequest(
            browserNode=self.ui.trainingBrowserSelector.currentNode(),
            modelPath=str(self.selectedModelPath()),
            outputFolder=self.ui.trainingOutputPathLineEdit.currentPath,
            epochs=int(self.ui.trainingEpochsSpinBox.value),
            imageSize=int(self.ui.trainingImageSizeSpinBox.value),
            batchSize=int(self.ui.trainingBatchSizeSpinBox.value),
            device=DEVICE_CHOICES[self.ui.deviceComboBox.currentText],
        )

    def onTrainButton(self) -> None:
        if self.trainingJob is not None:
            self.ui.trainingStatusLabel.text = "Cancelling after the current batch..."
            self.trainingJob.cancel()
            return

        with slicer.util.tryWithErrorDisplay("Failed to start training.", waitCursor=True):
            request = self.buildTrainingRequest()
            if not self.logic.ensureDependencies(askConfirmation=True):
                self.ui.trainingStatusLabel.text = "Python packages are missing: training needs them installed."
                return
            self.ui.trainingOutputPathLineEdit.addCurrentPathToHistory()
            self.ui.trainingStatusLabel.text = "Exporting the corrected frames..."
            slicer.app.processEvents()
            self.trainingJob = self.logic.startTraining(
                request, onProgress=self.onTrainingProgress, onFinished=self.onTrainingFinished
            )
            self.ui.trainingProgressBar.setRange(0, 0)
            self.ui.trainingProgressBar.show()
            self.ui.trainingStatusLabel.text = "Starting the training process..."
            self.updateTrainingGUI()

    def onTrainingProgress(self, done: int, total: Optional[int], message: str) -> None:
        showJobProgress(self.ui.trainingProgressBar, self.ui.trainingStatusLabel, done, total, message)

    def onTrainingFinished(self, job: "TrainingJob") -> None:
        self.trainingJob = None
        self.ui.trainingProgressBar.hide()
        self.ui.trainingStatusLabel.text = job.summary()
        self.updateTrainingGUI()
        if job.status == TrainingJob.FAILED:
            slicer.util.errorDisplay(f"Training failed: {job.error}", detailedText=job.errorDetails)
            return
        if job.status == TrainingJob.FINISHED and job.bestCheckpoint is not None:
            if slicer.util.confirmYesNoDisplay(
                f"Training finished. Use the new model {job.bestCheckpoint} for the next segmentation run?",
                windowTitle="Use the trained model",
            ):
                self.ui.localModelRadioButton.checked = True
                self.ui.modelPathLineEdit.currentPath = str(job.bestCheckpoint)
                self.updateGUI()


#
# LMSFASegmentationLogic
#


class LMSFASegmentationLogic(ScriptedLoadableModuleLogic):
    """Adapter between Slicer and the ``lmsfa`` core package.

    It finds the bundled resources, installs missing Python packages after the user
    confirms, builds the core's scene context from ``slicer.mrmlScene`` and the module
    logics, and starts runs. Scripts can use it without the widget::

        logic = slicer.util.getModuleLogic("LMSFASegmentation")
        logic.ensureDependencies(askConfirmation=False)
        job = logic.startSegmentation(SegmentationRequest(modelPath=..., inputPath=...))
        job.wait()
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._sha256Cache = {}

    # Resources

    @staticmethod
    def extensionResourceFolder(folderName: str) -> Optional[Path]:
        """Return an extension-level resource folder: the installed copy, else the source tree's."""
        for candidate in (MODULE_DIR / "Resources" / folderName, MODULE_DIR.parent / "Resources" / folderName):
            if candidate.is_dir():
                return candidate
        return None

    def bundledModelPath(self) -> Optional[Path]:
        """Return the default model that ships with the extension, or None when it is absent.

        A PyTorch checkpoint (.pt) is preferred over an ONNX export of the same model.
        """
        folder = self.extensionResourceFolder(BUNDLED_MODEL_FOLDER)
        if folder is None:
            return None
        for suffix in MODEL_SUFFIXES:
            models = sorted(folder.glob(f"*{suffix}"))
            if models:
                return models[0]
        return None

    def sampleClipPath(self) -> Optional[Path]:
        """Return the bundled sample clip, or None when it is absent."""
        folder = self.extensionResourceFolder(SAMPLE_FOLDER)
        if folder is None or not (folder / SAMPLE_CLIP_NAME).is_file():
            return None
        return folder / SAMPLE_CLIP_NAME

    def fileSha256(self, path: Path) -> str:
        """Return the SHA-256 of a file as hex, cached by path, size and modification time."""
        stat = os.stat(path)
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._sha256Cache:
            digest = hashlib.sha256()
            with open(path, "rb") as stream:
                for block in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(block)
            self._sha256Cache[key] = digest.hexdigest()
        return self._sha256Cache[key]

    # Python dependencies

    def requirementsPath(self) -> Path:
        return moduleResourcePath("requirements.txt")

    def requirements(self) -> list:
        """Return the requirement lines of requirements.txt that this Slicer needs.

        A requirement is left out when an alternative distribution of the same import name
        is already installed (see ALTERNATIVE_DISTRIBUTIONS).
        """
        requirements = []
        for line in self.requirementsPath().read_text(encoding="utf-8").splitlines():
            requirement = line.split("#", 1)[0].strip()
            if not requirement or requirement.startswith("-"):
                continue
            alternatives = ALTERNATIVE_DISTRIBUTIONS.get(_distributionName(requirement), ())
            if any(self._distributionInstalled(alternative) for alternative in alternatives):
                continue
            requirements.append(requirement)
        return requirements

    def missingRequirements(self) -> list:
        """Return the requirements whose distribution is not installed at all.

        Only presence is checked. Version ranges are checked by ``slicer.packaging.pip_ensure``
        in :meth:`ensureDependencies`, where this Slicer has it.
        """
        return [r for r in self.requirements() if not self._distributionInstalled(_distributionName(r))]

    @staticmethod
    def _distributionInstalled(name: str) -> bool:
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return False
        return True

    def ensureDependencies(self, askConfirmation: bool = True) -> bool:
        """Install the missing Python packages once, after the user confirms.

        torch comes from the PyTorch extension, whose PyTorchUtils module picks the CPU or the
        CUDA build that fits the driver. requirements.txt does not list torch, and no package
        in it depends on torch, so an install here never replaces it. The other packages come
        from requirements.txt through ``slicer.packaging.pip_ensure`` where this Slicer has it,
        else through ``slicer.util.pip_install``. In Slicer's testing mode ``pip_ensure``
        installs nothing, so a self-test needs the packages installed beforehand.

        Returns:
            True when everything is installed; False when the user declined.
        """
        if not self._ensureTorch(askConfirmation):
            return False

        packaging = self._slicerPackaging()
        missing = self.missingRequirements()
        if packaging is not None:
            # pip_ensure also upgrades installed packages whose version is out of range.
            try:
                packaging.pip_ensure(self.requirements(), prompt_install=askConfirmation, requester="LMSF-A Segmentation")
            except RuntimeError:
                logger.info("installation of Python packages declined by the user")
                return False
        elif missing:
            if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                "LMSF-A Segmentation needs these Python packages, which are not installed yet:\n\n"
                + "\n".join(missing)
                + "\n\nInstall them now? This downloads them from the Python Package Index and can take a few minutes.",
                windowTitle="Install Python packages",
            ):
                logger.info("installation of %s declined by the user", ", ".join(missing))
                return False
            slicer.util.pip_install(missing)

        importlib.invalidate_caches()
        stillMissing = self.missingRequirements()
        if stillMissing:
            raise RuntimeError(
                f"these Python packages are missing: {', '.join(stillMissing)}. "
                "Install them with the Python console (slicer.util.pip_install) and press Apply again."
            )
        if missing:
            logger.info("installed Python packages: %s", ", ".join(missing))
        return True

    @staticmethod
    def _slicerPackaging():
        """Return ``slicer.packaging`` when this Slicer has ``pip_ensure``, else None."""
        try:
            packaging = importlib.import_module("slicer.packaging")
        except ImportError:
            return None
        return packaging if hasattr(packaging, "pip_ensure") else None

    def _ensureTorch(self, askConfirmation: bool) -> bool:
        if importlib.util.find_spec("torch") is not None:
            return True
        try:
            import PyTorchUtils
        except ImportError:
            raise RuntimeError(
                "PyTorch is not installed. Install the PyTorch extension from the Extensions Manager, "
                "restart Slicer and press Apply again."
            ) from None
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=askConfirmation)
        return torch is not None

    # Runs

    def sceneContext(self):
        """Return the core's scene context for the application's scene and module logics."""
        from lmsfa.scene import SceneContext

        return SceneContext.from_slicer(slicer)

    def startSegmentation(
        self,
        request: SegmentationRequest,
        onProgress: Optional[Callable[[int, Optional[int], str], None]] = None,
        onFinished: Optional[Callable[["SegmentationJob"], None]] = None,
    ) -> "SegmentationJob":
        """Start a run in the background and return its job at once.

        The network runs on a worker thread. Each finished frame is written into the scene
        on the main thread, so the user can scrub through the sequence while it grows.
        ``onProgress(done, total, message)`` and ``onFinished(job)`` are called on the main
        thread. Call :meth:`ensureDependencies` first.
        """
        job = SegmentationJob(self.sceneContext(), request, onProgress, onFinished)
        job.start()
        return job

    def exportTrainingData(self, browserNode, folder: Path) -> Path:
        """Write the browser's frames and segmentations as a COCO data set into ``folder``.

        Edits of the proxy segmentation are copied into the sequence first, so the frame
        that is shown in Segment Editor is exported as corrected. Returns the path of the
        COCO annotation file; the frames are PNG files in ``images/`` beside it.
        """
        from lmsfa.exports import SceneInput, export, find_sequences
        from lmsfa.exports.coco import ANNOTATIONS_FILE
        from lmsfa.scene import commit_edits

        context = self.sceneContext()
        commit_edits(context, browserNode)
        segmentationSequence, frameSequence = find_sequences(context, browserNode.GetName())
        if frameSequence is None:
            raise ValueError(
                f"sequence browser {browserNode.GetName()} has no frame sequence: training needs the frames "
                "with their segmentations"
            )
        # overwrite=True replaces only a folder that an earlier export wrote, never user files.
        report = export("coco", SceneInput(segmentationSequence, frameSequence), folder, overwrite=True)
        logger.info("exported %d frames with %d instances for training to %s",
                    len(report.frame_indices), report.instances, folder)
        if report.instances == 0:
            raise ValueError(
                f"the segmentations of {browserNode.GetName()} contain no instance: correct at least one frame "
                "before training"
            )
        return Path(folder) / ANNOTATIONS_FILE

    def startTraining(
        self,
        request: TrainingRequest,
        onProgress: Optional[Callable[[int, Optional[int], str], None]] = None,
        onFinished: Optional[Callable[["TrainingJob"], None]] = None,
    ) -> "TrainingJob":
        """Export the corrected frames, then start ``lmsfa train`` in a background process.

        The COCO export goes to ``<outputFolder>/corrected_frames_coco`` and stays there, so
        that ``lmsfa train --resume --output <outputFolder>`` can continue a cancelled run.
        ``onProgress(done, total, message)`` and ``onFinished(job)`` are called on the main
        thread. Raises ValueError for invalid inputs before anything is written.
        """
        from lmsfa.commands.train import training_command

        modelPath = Path(request.modelPath)
        if modelPath.suffix.lower() != ".pt":
            raise ValueError(
                f"cannot fine-tune {modelPath.name}: training needs a PyTorch checkpoint (.pt), not an ONNX export. "
                "Choose a .pt model."
            )
        if not modelPath.is_file():
            raise ValueError(f"model file not found: {modelPath}. Choose an existing .pt checkpoint.")
        if request.browserNode is None:
            raise ValueError("no sequence browser selected: choose the browser of the corrected frames.")
        if not request.outputFolder:
            raise ValueError("no output folder chosen: choose a new folder for the checkpoints.")
        outputFolder = Path(request.outputFolder)
        existing = [name for name in ("best.pt", "last.pt", "last.state.pt") if (outputFolder / name).exists()]
        if existing:
            raise ValueError(
                f"{outputFolder} already contains a training run ({', '.join(existing)}): choose a new output folder "
                "so that its checkpoints are kept."
            )
        outputFolder.mkdir(parents=True, exist_ok=True)
        annotations = self.exportTrainingData(request.browserNode, outputFolder / TRAINING_DATA_FOLDER)

        command = training_command(
            pythonExecutable(), annotations, outputFolder, modelPath, request.epochs, request.imageSize,
            request.batchSize, request.device,
        )
        job = TrainingJob(command, outputFolder, onProgress, onFinished)
        job.start()
        return job


class _FrameMemo:
    """Wraps a frame iterable and keeps each frame's image until its result arrives.

    ``Predictor.predict_stream`` returns results without their images, but the scene needs
    both. Only the frames between decoding and their result are kept, a few at a time.
    """

    def __init__(self, frames) -> None:
        self._frames = frames
        self._images = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._frames)

    def __iter__(self):
        for frame in self._frames:
            with self._lock:
                self._images[frame.index] = frame.image
            yield frame

    def pop(self, index: int):
        with self._lock:
            return self._images.pop(index)


class SegmentationJob:
    """One run: a worker thread runs the core, a QTimer on the main thread writes the scene.

    The worker decodes frames and runs the network, then passes each frame's image and result
    through a bounded queue. The timer takes them from the queue and writes them with the
    core's ``SequenceWriter`` because MRML nodes may only be changed on the main thread.
    ``status`` is one of RUNNING, FINISHED, CANCELLED and FAILED.
    """

    RUNNING = "running"
    FINISHED = "finished"
    CANCELLED = "cancelled"
    FAILED = "failed"

    def __init__(self, context, request: SegmentationRequest, onProgress=None, onFinished=None) -> None:
        from lmsfa.progress import Progress

        self.context = context
        self.request = request
        self.onProgress = onProgress
        self.onFinished = onFinished
        self.status = self.RUNNING
        self.error = None
        self.errorDetails = ""
        self.writer = None
        self.framesWritten = 0
        self.stageTimes = {}
        self.startTime = None
        self.elapsedSeconds = 0.0

        self._progress = Progress(callback=self._onWorkerProgress)
        self._progressState = (0, None, "")
        self._progressShown = None
        self._queue = queue.Queue(maxsize=RESULT_QUEUE_SIZE)
        self._abandoned = threading.Event()
        self._frames = None
        self._modelName = ""
        self._thread = None
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.timeout.connect(self._poll)

    # Main thread

    def start(self) -> None:
        """Check the inputs, then start the worker thread and the polling timer.

        Frames of a scene node are copied here, on the main thread, because MRML nodes must
        not be read from the worker.
        """
        self.startTime = time.perf_counter()
        request = self.request
        if request.lastFrame is not None and request.lastFrame < request.firstFrame:
            raise ValueError(
                f"the last frame ({request.lastFrame}) is before the first frame ({request.firstFrame}): "
                "choose a last frame at or after the first frame."
            )
        if request.frameStride < 1:
            raise ValueError(f"invalid frame stride {request.frameStride}: use 1 to segment every frame, or more.")
        if self.request.inputNode is not None:
            self._frames = self._framesFromNode(self.request.inputNode)
        else:
            self._checkInputPath(self.request.inputPath)
        modelPath = Path(self.request.modelPath)
        if not modelPath.is_file():
            raise ValueError(f"model file not found: {modelPath}. Choose an existing .pt or .onnx file.")
        sha256 = LMSFASegmentationLogic().fileSha256(modelPath)
        self._modelName = f"{modelPath.name} (SHA-256 {sha256})"
        logger.info(
            "segmentation started: input %s, model %s, device %s",
            self.request.inputPath or self.request.inputNode.GetName(),
            self._modelName,
            self.request.device,
        )
        self._thread = threading.Thread(target=self._runWorker, name="LMSFASegmentation", daemon=True)
        self._thread.start()
        self._timer.start()

    def cancel(self) -> None:
        """Ask the worker to stop before its next frame. Frames it has finished are still written."""
        self._progress.cancel()

    def abandon(self) -> None:
        """Stop at once without writing anything more (the scene is closing or the module is reloading)."""
        self._abandoned.set()
        self._progress.cancel()
        self._timer.stop()
        if self.status == self.RUNNING:
            self.status = self.CANCELLED

    def wait(self, timeoutSeconds: Optional[float] = None) -> str:
        """Process Qt events until the job ends, and return its status (for scripts and tests)."""
        deadline = None if timeoutSeconds is None else time.perf_counter() + timeoutSeconds
        while self.status == self.RUNNING:
            if deadline is not None and time.perf_counter() > deadline:
                self.cancel()
                deadline = None
            slicer.app.processEvents(qt.QEventLoop.AllEvents, POLL_INTERVAL_MS)
            time.sleep(0.005)
        return self.status

    def summary(self) -> str:
        """Return a one-line description of the outcome for the status label."""
        frames = f"{self.framesWritten} frame{'s' if self.framesWritten != 1 else ''}"
        if self.status == self.FINISHED:
            return f"Segmented {frames} in {self.elapsedSeconds:.1f} s."
        if self.status == self.CANCELLED:
            return f"Cancelled: {frames} segmented are in the scene, marked as a partial result."
        if self.status == self.FAILED:
            return f"Failed after {frames}: {self.error}"
        return f"Running: {frames} segmented."

    def _checkInputPath(self, inputPath: Optional[str]) -> None:
        if not inputPath:
            raise ValueError("no input selected: choose a video file, a frame folder, or a sequence in the scene.")
        if not Path(inputPath).exists():
            raise ValueError(f"input not found: {inputPath}. Choose an existing video file or frame folder.")

    def _framesFromNode(self, node) -> list:
        """Copy the selected frames of a sequence or volume node as ``lmsfa.sources.Frame`` objects.

        Each frame becomes an (H, W, 3) uint8 RGB array: grey frames are repeated to three
        channels, RGBA drops alpha, and other pixel types are scaled from their range to 0..255.
        NOTE: rows are taken in the node's array order (row 0 first), which is upright for
        frames that Slicer loaded from 2-D images or that this module wrote.
        """
        from lmsfa.sources import Frame

        request = self.request
        if node.IsA("vtkMRMLSequenceNode"):
            count = node.GetNumberOfDataNodes()
        else:
            count = node.GetImageData().GetDimensions()[2] if node.GetImageData() else 0
        last = count - 1 if request.lastFrame is None else min(request.lastFrame, count - 1)
        indices = range(request.firstFrame, last + 1, request.frameStride)
        if count == 0 or len(indices) == 0:
            lastText = "the last frame" if request.lastFrame is None else request.lastFrame
            raise ValueError(
                f"no frames to segment: {node.GetName()} has {count} frames, and the range starts at frame "
                f"{request.firstFrame} and ends at {lastText}. Choose a first frame between 0 and {max(count - 1, 0)}."
            )

        if not node.IsA("vtkMRMLSequenceNode"):
            volumeFrames = _rgbFromVolumeArray(slicer.util.arrayFromVolume(node))
            return [Frame(index=index, timestamp_s=None, image=volumeFrames[index]) for index in indices]

        frames = []
        for index in indices:
            dataNode = node.GetNthDataNode(index)
            if dataNode is None or not dataNode.IsA("vtkMRMLScalarVolumeNode"):
                raise ValueError(f"item {index} of sequence {node.GetName()} is not a volume: choose a sequence of frames")
            image = _rgbFromVolumeArray(slicer.util.arrayFromVolume(dataNode))[0]
            frames.append(Frame(index=index, timestamp_s=_timestampFromSequence(node, index), image=image))
        return frames

    def _poll(self) -> None:
        """Write the frames that the worker has finished, for at most POLL_BUDGET_S per call."""
        deadline = time.perf_counter() + POLL_BUDGET_S
        while time.perf_counter() < deadline:
            try:
                kind, payload = self._queue.get_nowait()
            except queue.Empty:
                break
            try:
                if kind == "started":
                    self._createWriter(*payload)
                elif kind == "frame":
                    self._writeFrame(*payload)
                else:
                    self._finish(kind, payload)
                    return
            except Exception as error:
                logger.exception("writing the segmentation into the scene failed")
                self._progress.cancel()
                self._finish(self.FAILED, error)
                return

        state = self._progressState
        if self.onProgress is not None and state != self._progressShown:
            self._progressShown = state
            self.onProgress(*state)

    def _createWriter(self, classTable, spacingMm) -> None:
        from lmsfa.scene import SequenceWriter

        self.writer = SequenceWriter(self.context, self.request.inputName(), classTable, self._modelName, spacing_mm=spacingMm)

    def _writeFrame(self, result, image) -> None:
        # Follow the newest frame only while the user watches the newest frame, so that
        # scrubbing back to an earlier frame during the run is not undone by the next frame.
        browser = self.writer.browser_node
        watchingNewest = browser.GetSelectedItemNumber() == self.writer.number_of_frames - 1
        self.writer.add_frame(result.index, result.timestamp_s, image, result.instances)
        self.framesWritten += 1
        if self.framesWritten == 1:
            self._showInViews()
        elif watchingNewest:
            browser.SetSelectedItemNumber(self.writer.number_of_frames - 1)

    def _showInViews(self) -> None:
        """Show the frame sequence with its segmentation in the Red view, and the browser toolbar."""
        browser = self.writer.browser_node
        slicer.modules.sequences.setToolBarActiveBrowserNode(browser)
        slicer.modules.sequences.showSequenceBrowser(browser)
        layoutManager = slicer.app.layoutManager()
        if layoutManager is not None:
            layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutOneUpRedSliceView)
        slicer.util.setSliceViewerLayers(background=self.writer.frame_proxy_node, fit=True)

    def _finish(self, status: str, payload) -> None:
        self._timer.stop()
        self.elapsedSeconds = time.perf_counter() - self.startTime
        self.status = status
        if status == self.FINISHED:
            self.stageTimes = payload or {}
        elif status == self.FAILED:
            self.error = payload
            self.errorDetails = getattr(payload, "details", "") or repr(payload)
        if self.writer is not None and status == self.FINISHED:
            # Without finish() the browser and sequences keep LMSFA.Complete = false, which
            # marks the frames written so far as a partial result.
            self.writer.finish()
        logger.info("segmentation %s: %s; time per stage %s", status, self.summary(), self.stageTimes)
        if self.onFinished is not None:
            self.onFinished(self)

    # Worker thread: no MRML and no Qt calls here.

    def _onWorkerProgress(self, done: int, total: Optional[int], message: str) -> None:
        self._progressState = (done, total, message or f"Segmenting frame {done} of {total or '?'}")

    def _put(self, message) -> bool:
        """Queue a message for the main thread, and return False when the job was abandoned."""
        while not self._abandoned.is_set():
            try:
                self._queue.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _runWorker(self) -> None:
        from lmsfa.errors import Cancelled, LmsfaError

        try:
            self._segment()
        except Cancelled:
            self._put((self.CANCELLED, None))
        except LmsfaError as error:
            logger.error("segmentation failed: %s", error)
            self._put((self.FAILED, error))
        except Exception as error:
            logger.exception("segmentation failed")
            self._put((self.FAILED, error))

    def _segment(self) -> None:
        from lmsfa.inference import Predictor
        from lmsfa.sources import open_source

        request = self.request
        self._progressState = (0, None, "Loading the model...")
        predictor = Predictor(request.modelPath, device=request.device, conf=request.confidence, iou=request.iou)

        if self._frames is not None:
            # NOTE: frames from a scene node are treated as uncalibrated, although the node
            # has a spacing, because Slicer gives 1 mm to images that carry none.
            if not self._put(("started", (predictor.class_table, None))):
                return
            self._predictFrames(predictor, self._frames, len(self._frames))
            return

        with open_source(
            request.inputPath, first=request.firstFrame, last=request.lastFrame, stride=request.frameStride
        ) as source:
            # Frame sources give (row, column) spacing; the scene writer takes (column, row).
            rowColumn = source.info.spacing_mm
            columnRow = None if rowColumn is None else (rowColumn[1], rowColumn[0])
            if not self._put(("started", (predictor.class_table, columnRow))):
                return
            self._predictFrames(predictor, source, len(source))

    def _predictFrames(self, predictor, frames, total: int) -> None:
        memo = _FrameMemo(frames)
        self._progressState = (0, total, f"Segmenting {total} frames...")
        # predict_stream checks for a cancel before each batch. Results already queued are
        # still written, so up to RESULT_QUEUE_SIZE + 1 frames are added after a cancel.
        for result in predictor.predict_stream(memo, progress=self._progress):
            image = memo.pop(result.index)
            if not self._put(("frame", (result, image))):
                return
        self._put((self.FINISHED, dict(predictor.stage_times)))


def pythonExecutable() -> str:
    """Return the Python interpreter for background processes: Slicer's PythonSlicer, else this one.

    PythonSlicer, in Slicer's ``bin`` folder, runs Python with the packages installed in
    Slicer. Outside Slicer (scripts, tests) it is not on the PATH, and ``sys.executable``
    is used.
    NOTE: the module has not been run in a real Slicer yet, so the PATH lookup in Slicer
    is unverified.
    """
    return shutil.which("PythonSlicer") or sys.executable


class TrainingJob:
    """One ``lmsfa train`` process, its progress and its outcome.

    The process prints one JSON object per progress update on stdout
    (``lmsfa train --progress-json``). A reader thread parses those lines into a queue,
    and a QTimer on the main thread passes them to ``onProgress``. ``cancel`` sends
    SIGTERM, which ``lmsfa train`` turns into a stop after the current batch, and kills
    the process after TRAINING_STOP_TIMEOUT_S. On Windows, ``terminate`` ends the process
    at once. The checkpoints of the last finished epoch stay in the output folder either
    way, because the trainer writes each file under a temporary name and renames it.
    ``status`` is one of RUNNING, FINISHED, CANCELLED and FAILED.
    """

    RUNNING = "running"
    FINISHED = "finished"
    CANCELLED = "cancelled"
    FAILED = "failed"

    def __init__(self, command: list, outputFolder: Path, onProgress=None, onFinished=None) -> None:
        self.command = command
        self.outputFolder = Path(outputFolder)
        self.onProgress = onProgress
        self.onFinished = onFinished
        self.status = self.RUNNING
        self.error = ""
        self.errorDetails = ""
        self.bestCheckpoint = None
        self.startTime = None
        self.elapsedSeconds = 0.0
        self._process = None
        self._events = queue.Queue()
        self._stderrLines = []
        self._readers = []
        self._cancelRequestedAt = None
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self._poll)

    def start(self) -> None:
        self.startTime = time.perf_counter()
        environment = dict(os.environ)
        # The lmsfa package lives next to this file, which is not on the child's path by default.
        paths = [str(MODULE_DIR)] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p]
        environment["PYTHONPATH"] = os.pathsep.join(paths)
        logger.info("training started: %s", subprocess.list2cmdline(self.command))
        self._process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, encoding="utf-8", errors="replace", env=environment,
        )
        self._readers = [
            threading.Thread(target=self._readStdout, name="LMSFATrainingStdout", daemon=True),
            threading.Thread(target=self._readStderr, name="LMSFATrainingStderr", daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self._timer.start()

    def cancel(self) -> None:
        """Ask the process to stop after its current batch; it is killed if it does not stop in time."""
        if self._process is None or self._process.poll() is not None or self._cancelRequestedAt is not None:
            return
        self._cancelRequestedAt = time.perf_counter()
        self._process.terminate()

    def wait(self, timeoutSeconds: Optional[float] = None) -> str:
        """Process Qt events until the process ends, and return the status (for scripts and tests).

        After ``timeoutSeconds`` the run is cancelled, and the wait continues until it stops.
        """
        deadline = None if timeoutSeconds is None else time.perf_counter() + timeoutSeconds
        while self.status == self.RUNNING:
            if deadline is not None and time.perf_counter() > deadline:
                self.cancel()
                deadline = None
            slicer.app.processEvents(qt.QEventLoop.AllEvents, POLL_INTERVAL_MS)
            time.sleep(0.02)
        return self.status

    def summary(self) -> str:
        """Return a one-line description of the outcome for the status label."""
        if self.status == self.FINISHED:
            return f"Training finished in {self.elapsedSeconds / 60:.1f} min; best model: {self.bestCheckpoint}"
        if self.status == self.CANCELLED:
            return f"Training cancelled; the checkpoints of the last finished epoch are in {self.outputFolder}."
        if self.status == self.FAILED:
            return f"Training failed: {self.error}"
        return "Training..."

    # Reader threads: no Qt calls here.

    def _readStdout(self) -> None:
        from lmsfa.commands.train import parse_progress_line

        for line in self._process.stdout:
            event = parse_progress_line(line)
            if event is not None:
                self._events.put(event)

    def _readStderr(self) -> None:
        for line in self._process.stderr:
            self._stderrLines.append(line.rstrip())
            del self._stderrLines[:-STDERR_LINES_KEPT]

    # Main thread

    def _poll(self) -> None:
        latest = None
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            if event["event"] == "finished":
                self.bestCheckpoint = Path(event["best_checkpoint"])
            else:
                latest = event
        if latest is not None and self.onProgress is not None:
            self.onProgress(int(latest["done"]), latest.get("total"), str(latest.get("message", "")))

        if self._cancelRequestedAt is not None and self._process.poll() is None:
            if time.perf_counter() - self._cancelRequestedAt > TRAINING_STOP_TIMEOUT_S:
                logger.warning("training process %d did not stop within %d s; killing it",
                               self._process.pid, TRAINING_STOP_TIMEOUT_S)
                self._process.kill()
        returnCode = self._process.poll()
        if returnCode is None:
            return
        for reader in self._readers:
            reader.join(timeout=5)
        if not self._events.empty():
            return  # deliver the last events on the next tick
        self._finish(returnCode)

    def _finish(self, returnCode: int) -> None:
        self._timer.stop()
        self.elapsedSeconds = time.perf_counter() - self.startTime
        if returnCode == 0 and self.bestCheckpoint is not None:
            self.status = self.FINISHED
        elif self._cancelRequestedAt is not None:
            self.status = self.CANCELLED
        else:
            self.status = self.FAILED
            errorLines = [line for line in self._stderrLines if "error" in line.lower()]
            self.error = (errorLines or self._stderrLines or [f"the process exited with status {returnCode}"])[-1]
            self.errorDetails = "\n".join(self._stderrLines)
        logger.info("training %s (exit status %d): %s", self.status, returnCode, self.summary())
        if self.onFinished is not None:
            self.onFinished(self)


def _distributionName(requirement: str) -> str:
    """Return the distribution name of a requirement line, for example "av" for "av>=12"."""
    name = requirement
    for separator in "<>=!~;[ ":
        name = name.split(separator, 1)[0]
    return name


def _rgbFromVolumeArray(array):
    """Return an array of frames as (K, H, W, 3) uint8 RGB from a volume's (K, J, I[, C]) array."""
    import numpy as np

    if array.ndim == 3:
        array = array[..., np.newaxis]
    channels = array.shape[-1]
    if channels == 1:
        array = np.repeat(array, 3, axis=-1)
    elif channels >= 3:
        array = array[..., :3]
    else:
        raise ValueError(f"frames with {channels} components are not supported: use grey, RGB or RGBA volumes")
    if array.dtype != np.uint8:
        low, high = float(array.min()), float(array.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        logger.warning("frames of type %s scaled from %g..%g to 0..255", array.dtype, low, high)
        array = ((array.astype(np.float32) - low) * scale).round().astype(np.uint8)
    return np.ascontiguousarray(array)


def _timestampFromSequence(sequenceNode, itemIndex: int) -> Optional[float]:
    """Return an item's time in seconds when the sequence is indexed by time, else None."""
    if sequenceNode.GetIndexName().lower() != "time":
        return None
    factor = {"s": 1.0, "sec": 1.0, "ms": 1e-3}.get(sequenceNode.GetIndexUnit().strip().lower())
    if factor is None:
        return None
    try:
        return float(sequenceNode.GetNthIndexValue(itemIndex)) * factor
    except ValueError:
        return None


#
# LMSFASegmentationTest
#


class LMSFASegmentationTest(ScriptedLoadableModuleTest):
    """Self-test: the bundled model on the bundled sample clip, in the running Slicer."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_SegmentSampleClip()
        self.setUp()
        self.test_TrainOnCorrectedFrames()

    def test_SegmentSampleClip(self) -> None:
        from lmsfa.scene.writer import CLASS_ID_TAG

        logic = LMSFASegmentationLogic()
        modelPath = logic.bundledModelPath()
        clipPath = logic.sampleClipPath()
        self.assertIsNotNone(modelPath, "the bundled model is missing from Resources/Models")
        self.assertIsNotNone(clipPath, f"the sample clip {SAMPLE_CLIP_NAME} is missing from Resources/Sample")
        self.assertTrue(logic.ensureDependencies(askConfirmation=False))

        self.delayDisplay("Segmenting frames 0 to 9 of the sample clip")
        request = SegmentationRequest(modelPath=str(modelPath), inputPath=str(clipPath), device="cpu", lastFrame=9)
        job = logic.startSegmentation(request)
        status = job.wait(timeoutSeconds=600)
        self.assertEqual(status, SegmentationJob.FINISHED, job.summary())
        self.assertEqual(job.framesWritten, 10)

        frameSequence = job.writer.frame_sequence_node
        segmentationSequence = job.writer.segmentation_sequence_node
        self.assertEqual(frameSequence.GetNumberOfDataNodes(), 10)
        self.assertEqual(segmentationSequence.GetNumberOfDataNodes(), 10)
        self.assertEqual(job.writer.browser_node.GetNumberOfItems(), 10)

        # The first frame of the clip is a 512x512 RGB laryngoscopy image. Every segment that
        # the model produced is named after a class of the model and carries its class id tag.
        frame = slicer.util.arrayFromVolume(frameSequence.GetNthDataNode(0))
        self.assertEqual(frame.shape, (1, 512, 512, 3))
        classNames = set(job.writer.class_table.names)
        segmentCount = 0
        for item in range(segmentationSequence.GetNumberOfDataNodes()):
            segmentation = segmentationSequence.GetNthDataNode(item).GetSegmentation()
            for segmentIndex in range(segmentation.GetNumberOfSegments()):
                segment = segmentation.GetNthSegment(segmentIndex)
                self.assertIn(segment.GetName().rsplit(" ", 1)[0], classNames)
                classId = vtk.reference("")
                self.assertTrue(segment.GetTag(CLASS_ID_TAG, classId))
                segmentCount += 1
        self.assertGreater(segmentCount, 0, "the bundled model found no instance in 10 frames of the sample clip")
        self.delayDisplay(f"Test passed: {segmentCount} segments in 10 frames")

    def test_TrainOnCorrectedFrames(self) -> None:
        import tempfile

        from lmsfa.model import load_checkpoint

        logic = LMSFASegmentationLogic()
        modelPath = logic.bundledModelPath()
        self.assertIsNotNone(modelPath, "the bundled model is missing from Resources/Models")
        self.assertEqual(modelPath.suffix, ".pt", "fine-tuning needs the bundled PyTorch checkpoint")
        self.assertTrue(logic.ensureDependencies(askConfirmation=False))

        self.delayDisplay("Segmenting frames 0 to 9 of the sample clip as training data")
        request = SegmentationRequest(modelPath=str(modelPath), inputPath=str(logic.sampleClipPath()), device="cpu", lastFrame=9)
        segmentationJob = logic.startSegmentation(request)
        self.assertEqual(segmentationJob.wait(timeoutSeconds=600), SegmentationJob.FINISHED, segmentationJob.summary())

        self.delayDisplay("Training for one epoch at 64x64 pixels in a background process")
        outputFolder = Path(tempfile.mkdtemp(prefix="LMSFATrainingTest-")) / "run"
        trainingRequest = TrainingRequest(
            browserNode=segmentationJob.writer.browser_node, modelPath=str(modelPath), outputFolder=str(outputFolder),
            epochs=1, imageSize=64, batchSize=2, device="cpu",
        )
        trainingJob = logic.startTraining(trainingRequest)
        status = trainingJob.wait(timeoutSeconds=600)
        self.assertEqual(status, TrainingJob.FINISHED, f"{trainingJob.summary()}\n{trainingJob.errorDetails}")
        self.assertEqual(trainingJob.bestCheckpoint, outputFolder / "best.pt")
        _, checkpoint = load_checkpoint(trainingJob.bestCheckpoint)
        self.assertEqual(checkpoint.class_table.names, segmentationJob.writer.class_table.names)
        self.assertEqual(tuple(checkpoint.input_size), (64, 64))
        self.delayDisplay(f"Test passed: {trainingJob.bestCheckpoint}")
