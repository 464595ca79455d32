"""Exports of a segmentation sequence: training data, clinical formats and teaching material.

One function per format lives in its own module; :func:`export` dispatches by name, so
the Slicer module and ``lmsfa export`` call the same code::

    scene_input = SceneInput(segmentation_sequence, frame_sequence)   # or open_scene_bundle(path)
    report = export("coco", scene_input, Path("out/coco"), first=10, last=40, progress=progress)
    print(report.summary())

Every export writes atomically (see :mod:`lmsfa.exports.atomic`) and never replaces an
existing output unless ``overwrite`` is true.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Optional

from ..errors import InputError
from ..progress import Progress
from .common import ExportReport
from .inputs import ExportFrame, ExportInput, ResultsInput, SceneInput, find_sequences, open_scene_bundle

# Format name -> (module, function, whether the output is a folder, its required suffix).
FORMATS = {
    "coco": ("coco", "export_coco", True, None),
    "yolo": ("yolo", "export_yolo", True, None),
    "png": ("labelmaps", "export_png", True, None),
    "nifti": ("labelmaps", "export_nifti", True, None),
    "nrrd": ("segnrrd", "export_seg_nrrd", True, None),
    "dicom-seg": ("dicom_seg", "export_dicom_seg", True, None),
    "overlay": ("overlay", "export_overlay_video", False, ".mp4"),
    "contact-sheet": ("overlay", "export_contact_sheet", False, ".png"),
}

__all__ = [
    "FORMATS",
    "ExportFrame",
    "ExportInput",
    "ExportReport",
    "ResultsInput",
    "SceneInput",
    "export",
    "find_sequences",
    "open_scene_bundle",
]


def export(
    kind: str,
    export_input: ExportInput,
    output: Path,
    first: Optional[int] = None,
    last: Optional[int] = None,
    overwrite: bool = False,
    progress: Optional[Progress] = None,
    **options,
) -> ExportReport:
    """Export the frames ``first..last`` (source frame indices, inclusive) of ``export_input``.

    Args:
        kind: one of :data:`FORMATS`.
        output: the output folder, or the ``.mp4`` / ``.png`` file of ``overlay`` and
            ``contact-sheet``.
        overwrite: replace an existing output once the new one is complete.
        progress: receives ``update(done, total, message)`` per frame; its cancel flag
            stops the export and leaves no partial output.
        options: options of the format's function, for example ``source_dicom`` and
            ``create_references`` for ``dicom-seg``, ``fps`` for ``overlay``.

    Raises:
        InputError: an unknown format, an option the format does not take, or invalid input.
        Cancelled: the progress object was cancelled.
    """
    if kind not in FORMATS:
        raise InputError(f"unknown export format {kind!r}: use one of {', '.join(FORMATS)}")
    module_name, function_name, _, _ = FORMATS[kind]
    function = getattr(importlib.import_module(f".{module_name}", __name__), function_name)
    accepted = set(inspect.signature(function).parameters)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise InputError(f"the {kind} export does not take the options {unknown}")
    return function(export_input, Path(output), first=first, last=last, overwrite=overwrite,
                    progress=progress, **options)
