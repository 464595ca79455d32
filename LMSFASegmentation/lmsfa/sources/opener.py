"""Choose the frame source for a path: a video file, a frame folder or a DICOM file."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

from ..errors import InputError
from .base import FrameSource
from .folder import IMAGE_SUFFIXES, FolderSource
from .pixels import validate_window

logger = logging.getLogger(__name__)

# Suffixes that name a single file; a folder with one of them was probably given by mistake.
_FILE_SUFFIXES = (".mp4", ".m4v", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".ts",
                  ".wmv", ".dcm", ".dicom")


def open_source(
    path: "str | os.PathLike[str]",
    first: int = 0,
    last: Optional[int] = None,
    stride: int = 1,
    window: Optional[tuple[float, float]] = None,
) -> FrameSource:
    """Open a video file, a folder of frame images or a DICOM file as a frame stream.

    ``first`` and ``last`` are source frame indices (0-based, ``last`` inclusive, ``None``
    for the final frame) and ``stride`` keeps every Nth frame from ``first``. ``window``
    is the (low, high) input range mapped to 0..255 for frames of more than 8 bits.
    Without it, DICOM files use their VOI window, and other frames of more than 8 bits
    are scaled by their own value range. The source is a context manager; frames are decoded on demand.
    Raises :class:`~lmsfa.errors.InputError` for a missing, empty or unreadable input.
    Source files are only read, never written.
    """
    path = Path(path)
    window = validate_window(window)
    if not path.exists():
        raise InputError(f"input not found: {path}; check the path")
    if path.is_dir():
        if path.suffix.lower() in _FILE_SUFFIXES:
            raise InputError(f"{path} is a folder, but its name suggests a "
                             f"{path.suffix} file: give the file itself")
        return FolderSource(path, first=first, last=last, stride=stride, window=window)
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes): the copy or export is incomplete; "
                         "copy the file again")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise InputError(f"{path} is a single image: give the folder that contains the frames "
                         f"({path.parent})")

    from .dicom import is_dicom_file, open_dicom

    if is_dicom_file(path):
        return open_dicom(path, first=first, last=last, stride=stride, window=window)

    from .video import VideoSource

    return VideoSource(path, first=first, last=last, stride=stride)
