"""Folders of exported frames (PNG, JPEG, TIFF, BMP) in natural file name order."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputError
from .base import Frame, FrameSource, SourceInfo
from .pixels import Window, to_rgb8

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

# EXIF orientations 5 to 8 turn the image by 90 degrees, so width and height swap.
_EXIF_ORIENTATION_TAG = 0x0112
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}

# ANYDEPTH keeps 16-bit data, ANYCOLOR keeps grey as grey and drops alpha; unlike
# IMREAD_UNCHANGED, these flags apply the EXIF orientation, as image viewers do.
_IMREAD_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR


def natural_sort_key(name: str) -> tuple:
    """Sort key that orders digit runs by value, so ``frame2`` comes before ``frame10``."""
    parts = re.split(r"(\d+)", name)
    key = tuple(int(part) if position % 2 else part.casefold()
                for position, part in enumerate(parts))
    return key, name


def list_frame_files(folder: Path) -> list[Path]:
    """Return the image files directly inside ``folder`` in natural order.

    Hidden files (names starting with a dot, such as macOS ``._`` metadata files) and
    files of other types are left out. Raises :class:`InputError` when no image remains.
    """
    files = [
        entry for entry in folder.iterdir()
        if entry.is_file() and not entry.name.startswith(".")
        and entry.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        subfolders = sorted(entry.name for entry in folder.iterdir() if entry.is_dir())
        hint = f"; it has subfolders ({', '.join(subfolders[:5])}): give one of them" \
            if subfolders else ""
        raise InputError(
            f"no images found in folder {folder}: expected frame files ending in "
            f"{', '.join(IMAGE_SUFFIXES)}{hint}"
        )
    return sorted(files, key=lambda entry: natural_sort_key(entry.name))


def read_header_size(path: Path) -> Optional[tuple[int, int]]:
    """Return the upright (H, W) of an image from its header, or ``None`` if unreadable."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION_TAG)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return None
    if orientation in _TRANSPOSING_ORIENTATIONS:
        return width, height
    return height, width


class FolderSource(FrameSource):
    """Frames from image files in one folder; frame ``k`` is the ``k``-th file in natural order.

    All frames must have one size: the headers are checked on open, so a folder of mixed
    sizes is rejected before any frame is processed. 8-bit frames pass through; frames of
    more bits are mapped to 8 bits by ``window`` or their own value range (see
    :func:`lmsfa.sources.pixels.scale_to_uint8`), and a change of bit depth between frames
    is logged as a warning. Frames have no timestamps.
    """

    def __init__(self, folder: Path, *, first: int = 0, last: Optional[int] = None,
                 stride: int = 1, window: Optional[Window] = None):
        self._files = list_frame_files(folder)
        self._window = window
        self._depth: Optional[np.dtype] = None
        size = self._check_sizes(folder)
        info = SourceInfo(path=folder, kind="folder", frame_count=len(self._files), size=size,
                          fps=None, rotation_deg=0, spacing_mm=None, dicom=None)
        super().__init__(info, first, last, stride)

    @property
    def files(self) -> list[Path]:
        """Frame files in index order."""
        return list(self._files)

    def _check_sizes(self, folder: Path) -> tuple[int, int]:
        expected: Optional[tuple[int, int]] = None
        expected_file: Optional[Path] = None
        for file in self._files:
            size = read_header_size(file)
            if size is None:
                # Decoding this frame will fail too; it becomes a missing frame then.
                continue
            if expected is None:
                expected, expected_file = size, file
            elif size != expected:
                raise InputError(
                    f"frames in {folder} differ in size: {file.name} is {size[1]}x{size[0]} but "
                    f"{expected_file.name} is {expected[1]}x{expected[0]} (width x height); "
                    "resize the frames to one size or move the odd ones to another folder"
                )
        if expected is None:
            raise InputError(f"none of the {len(self._files)} images in {folder} can be read: "
                             "the files are damaged or not images")
        return expected

    def _iter_frames(self, indices: range) -> Iterator[Frame]:
        for index in indices:
            yield self._read(index)

    def _read(self, index: int) -> Frame:
        file = self._files[index]
        try:
            encoded = np.fromfile(file, dtype=np.uint8)
        except OSError as error:
            return self._missing_frame(index, None, f"{file.name}: {error}")
        decoded = cv2.imdecode(encoded, _IMREAD_FLAGS) if encoded.size else None
        if decoded is None:
            return self._missing_frame(index, None, f"{file.name} is damaged or truncated")
        if decoded.shape[:2] != self._info.size:
            return self._missing_frame(
                index, None,
                f"{file.name} decodes to {decoded.shape[1]}x{decoded.shape[0]} but its header "
                f"and the other frames say {self._info.size[1]}x{self._info.size[0]}",
            )
        self._note_depth(index, file, decoded.dtype)
        return Frame(index, None, to_rgb8(decoded, "BGR", self._window))

    def _note_depth(self, index: int, file: Path, dtype: np.dtype) -> None:
        if self._depth is not None and dtype != self._depth:
            logger.warning(
                "frame %d (%s) is %d-bit but the frame before it is %d-bit; each frame is "
                "scaled to 8 bits by its own depth, so brightness may jump between them",
                index, file.name, dtype.itemsize * 8, self._depth.itemsize * 8,
            )
        self._depth = dtype
