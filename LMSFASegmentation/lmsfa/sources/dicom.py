"""DICOM video and multi-frame images read with pydicom.

Encapsulated MPEG-2, H.264 and HEVC video (the MPEG transfer syntaxes) is decoded with
PyAV through :class:`~lmsfa.sources.video.VideoSource`. Uncompressed and compressed still
multi-frame pixel data (JPEG through Pillow, RLE and others that pydicom can decode) is
read one frame at a time with :func:`pydicom.pixels.iter_pixels`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import pydicom
import pydicom.encaps
import pydicom.errors
from pydicom.pixels import apply_rescale, iter_pixels, pixel_array
from pydicom.uid import MPEGTransferSyntaxes

from ..errors import InputError
from .base import Frame, FrameSource, SourceInfo
from .pixels import Window, to_rgb8
from .video import VideoSource

logger = logging.getLogger(__name__)

# Errors pydicom raises for a frame it cannot decode (truncated data, corrupt JPEG).
_DECODE_ERRORS = (ValueError, OSError, RuntimeError, NotImplementedError, EOFError)

#: Attributes copied to ``SourceInfo.dicom`` so that derived objects (DICOM SEG) can
#: reference the source instance and sit in its patient, study and series.
IDENTIFYING_ATTRIBUTES = (
    "PatientID", "PatientName", "PatientBirthDate", "PatientSex",
    "StudyInstanceUID", "StudyID", "StudyDate", "StudyTime", "StudyDescription",
    "AccessionNumber", "ReferringPhysicianName",
    "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Modality",
    "SOPClassUID", "SOPInstanceUID", "FrameOfReferenceUID", "Manufacturer",
)


def is_dicom_file(path: Path) -> bool:
    """Return whether ``path`` starts with the DICOM preamble and ``DICM`` prefix."""
    with open(path, "rb") as file:
        header = file.read(132)
    return len(header) == 132 and header[128:132] == b"DICM"


def _identifiers(dataset: pydicom.Dataset) -> dict:
    values = {}
    for keyword in IDENTIFYING_ATTRIBUTES:
        value = dataset.get(keyword)
        values[keyword] = None if value is None or value == "" else str(value)
    return values


def _pixel_spacing_mm(dataset: pydicom.Dataset) -> Optional[tuple[float, float]]:
    """Return (row, column) spacing from Pixel Spacing, also inside shared functional groups."""
    spacing = dataset.get("PixelSpacing")
    if spacing is None:
        for group in dataset.get("SharedFunctionalGroupsSequence", []):
            for measures in group.get("PixelMeasuresSequence", []):
                spacing = measures.get("PixelSpacing", spacing)
    if spacing is None or len(spacing) != 2:
        return None
    row, column = float(spacing[0]), float(spacing[1])
    if row <= 0 or column <= 0:
        logger.warning("ignoring invalid Pixel Spacing %s; frames are uncalibrated", spacing)
        return None
    return row, column


def _timing(dataset: pydicom.Dataset) -> tuple[Callable[[int], Optional[float]], Optional[float]]:
    """Return a frame index to time (seconds) function and the nominal frame rate.

    Frame Time Vector (ms between consecutive frames, first value 0) gives variable
    timing. Without it, Frame Time (ms per frame) or Cine Rate (frames per second) gives
    a constant rate, and without any of them times are ``None``.
    """
    vector = dataset.get("FrameTimeVector")
    if vector is not None and len(vector) > 0:
        times_s = np.cumsum([float(value) for value in vector]) / 1000.0
        mean_interval_s = times_s[-1] / (len(times_s) - 1) if len(times_s) > 1 else 0.0
        fps = 1.0 / mean_interval_s if mean_interval_s > 0 else None
        return (lambda index: float(times_s[index]) if index < len(times_s) else None), fps

    interval_s = None
    if dataset.get("FrameTime"):
        interval_s = float(dataset.FrameTime) / 1000.0
    elif dataset.get("CineRate"):
        interval_s = 1.0 / float(dataset.CineRate)
    if interval_s is None or interval_s <= 0:
        return (lambda index: None), None
    return (lambda index: index * interval_s), 1.0 / interval_s


def open_dicom(path: Path, *, first: int, last: Optional[int], stride: int,
               window: Optional[Window]) -> FrameSource:
    """Open a DICOM file as a video source or a multi-frame source."""
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except (pydicom.errors.InvalidDicomError, OSError, ValueError) as error:
        raise InputError(f"cannot read DICOM file {path}: {error}") from error
    if "TransferSyntaxUID" not in header.file_meta:
        raise InputError(f"DICOM file {path} has no transfer syntax in its file meta information")
    if header.get("Rows") is None or header.get("Columns") is None:
        raise InputError(f"DICOM file {path} contains no image (no Rows and Columns): "
                         "give a video or multi-frame image instance")

    syntax = header.file_meta.TransferSyntaxUID
    timing, fps = _timing(header)
    spacing = _pixel_spacing_mm(header)
    identifiers = _identifiers(header)
    if syntax in MPEGTransferSyntaxes:
        # NOTE: the compressed stream is held in memory (its file size); decoded frames
        # are still streamed one at a time.
        dataset = pydicom.dcmread(path)
        stream = b"".join(pydicom.encaps.generate_fragments(dataset.PixelData))
        del dataset
        logger.info("%s contains %s video (%s)", path, syntax.name, syntax)
        return _DicomVideoSource(
            path, first=first, last=last, stride=stride, data=stream, kind="dicom",
            timing=timing, fps=fps, spacing_mm=spacing, dicom=identifiers,
        )
    return DicomFramesSource(path, header, first=first, last=last, stride=stride,
                             window=window, timing=timing, fps=fps, spacing_mm=spacing,
                             identifiers=identifiers)


class _DicomVideoSource(VideoSource):
    """Encapsulated DICOM video: frames from the stream, times from the DICOM attributes."""

    def __init__(self, path: Path, *, timing: Callable[[int], Optional[float]], **kwargs):
        self._dicom_timing = timing
        super().__init__(path, **kwargs)

    @staticmethod
    def _nominal_fps(stream) -> Optional[float]:
        # Raw elementary streams carry no reliable rate (FFmpeg's raw H.264 demuxer
        # assumes 25 fps), so only the DICOM attributes give the frame rate.
        return None

    def timestamp_s(self, index: int) -> Optional[float]:
        dicom_time = self._dicom_timing(index)
        return dicom_time if dicom_time is not None else super().timestamp_s(index)


class DicomFramesSource(FrameSource):
    """Frames of a single- or multi-frame DICOM image, decoded one at a time by pydicom.

    Colour data (RGB, YBR) comes out as RGB, and monochrome becomes 3 grey channels.
    MONOCHROME1 is inverted, because its lowest value is meant to be displayed white.
    Data of more than 8 bits is mapped to 8 bits by ``window``, else by the file's first
    VOI window (Window Center and Width), else by each frame's value range.
    """

    def __init__(self, path: Path, header: pydicom.Dataset, *, first: int, last: Optional[int],
                 stride: int, window: Optional[Window], timing, fps: Optional[float],
                 spacing_mm: Optional[tuple[float, float]], identifiers: dict):
        self._path = path
        self._timing = timing
        self._header = header
        self._invert = header.get("PhotometricInterpretation") == "MONOCHROME1"
        self._window = window if window is not None else self._file_window(header)
        frame_count = int(header.get("NumberOfFrames") or 1)
        info = SourceInfo(path=path, kind="dicom", frame_count=frame_count,
                          size=(int(header.Rows), int(header.Columns)), fps=fps,
                          rotation_deg=0, spacing_mm=spacing_mm, dicom=identifiers)
        super().__init__(info, first, last, stride)

    @staticmethod
    def _file_window(header: pydicom.Dataset) -> Optional[Window]:
        center, width = header.get("WindowCenter"), header.get("WindowWidth")
        if center is None or width is None:
            return None
        if isinstance(center, pydicom.multival.MultiValue):
            center = center[0]
        if isinstance(width, pydicom.multival.MultiValue):
            width = width[0]
        center, width = float(center), float(width)
        if width <= 0:
            return None
        return center - width / 2.0, center + width / 2.0

    def _to_frame(self, index: int, pixels: np.ndarray) -> Frame:
        if pixels.dtype != np.uint8 and "RescaleSlope" in self._header:
            # The VOI window is defined on rescaled (modality) values.
            pixels = apply_rescale(pixels, self._header)
        image = to_rgb8(pixels, "RGB", self._window)
        if self._invert:
            image = 255 - image
        return Frame(index, self._timing(index), image)

    def _iter_frames(self, indices: range) -> Iterator[Frame]:
        requested = list(indices)
        position = 0
        while position < len(requested):
            try:
                for pixels in iter_pixels(self._path, indices=requested[position:]):
                    yield self._to_frame(requested[position], pixels)
                    position += 1
            except _DECODE_ERRORS as error:
                # One bad frame ends pydicom's generator, so restart after that frame.
                index = requested[position]
                yield self._missing_frame(index, self._timing(index), str(error))
                position += 1

    def _read(self, index: int) -> Frame:
        try:
            pixels = pixel_array(self._path, index=index)
        except _DECODE_ERRORS as error:
            return self._missing_frame(index, self._timing(index), str(error))
        return self._to_frame(index, pixels)
