"""Frame and source description types, and the range and stride logic every source shares."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ..errors import InputError

logger = logging.getLogger(__name__)

#: Channel order of every ``Frame.image``. The model is trained on RGB input, and every
#: source converts to this order (OpenCV decodes to BGR, so its frames are converted).
COLOR_ORDER = "RGB"


@dataclass
class Frame:
    """One frame of a source.

    ``index`` is the 0-based frame index in the source, not the position after the
    range and stride. ``timestamp_s`` is the presentation time in seconds since the first
    frame of the source, or ``None`` when the source has no timing (frame folders).
    ``image`` is (H, W, 3) uint8 in :data:`COLOR_ORDER`, C-contiguous and upright.
    ``missing`` marks a frame that could not be decoded: ``image`` is then a black
    placeholder of the source size, so results stay aligned with the timeline.
    """

    index: int
    timestamp_s: Optional[float]
    image: np.ndarray
    missing: bool = False


@dataclass(frozen=True)
class SourceInfo:
    """Description of a whole source, independent of the selected range and stride.

    ``kind`` is ``"video"``, ``"folder"`` or ``"dicom"``. ``frame_count`` is counted
    from the data: demuxed video packets or image files, not a container's frame count.
    For DICOM multi-frame images it is Number of Frames, which defines the layout of the
    pixel data (frames missing from truncated data are yielded as missing). ``size`` is (H, W) in pixels after rotation. ``fps`` is the
    nominal frame rate, ``None`` when unknown. ``rotation_deg`` is the clockwise rotation
    in degrees (0, 90, 180 or 270) applied to the decoded pixels to make them upright.
    ``spacing_mm`` is the (row, column) pixel spacing in millimetres, ``None`` for
    uncalibrated sources whose coordinates are pixel units. ``dicom`` contains the
    patient, study, series and instance identifiers of a DICOM source (values are
    strings, ``None`` when the file lacks the attribute), ``None`` for other kinds.
    """

    path: Path
    kind: str
    frame_count: int
    size: tuple[int, int]
    fps: Optional[float]
    rotation_deg: int
    spacing_mm: Optional[tuple[float, float]]
    dicom: Optional[dict] = None


def select_indices(
    frame_count: int, first: int, last: Optional[int], stride: int, path: Path
) -> range:
    """Return the source indices ``first, first + stride, ...`` up to ``last`` (inclusive).

    ``last=None`` selects up to the final frame. Raises :class:`InputError` for a range
    outside ``0 .. frame_count - 1`` or a stride below 1.
    """
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise InputError(f"invalid stride {stride!r}: use a whole number of 1 or more")
    if isinstance(first, bool) or not isinstance(first, int) or first < 0:
        raise InputError(f"invalid first frame {first!r}: use a whole number of 0 or more")
    if first >= frame_count:
        raise InputError(
            f"first frame {first} is past the end of {path}, which has {frame_count} frames "
            f"(indices 0 to {frame_count - 1})"
        )
    if last is None:
        last = frame_count - 1
    elif isinstance(last, bool) or not isinstance(last, int):
        raise InputError(f"invalid last frame {last!r}: use a whole number or None for the end")
    elif last < first:
        raise InputError(f"last frame {last} is before first frame {first}: swap them")
    elif last >= frame_count:
        raise InputError(
            f"last frame {last} is past the end of {path}, which has {frame_count} frames "
            f"(indices 0 to {frame_count - 1}); leave the last frame unset to read to the end"
        )
    return range(first, last + 1, stride)


def placeholder_image(size: tuple[int, int]) -> np.ndarray:
    """Return a black (H, W, 3) uint8 image, the placeholder for an undecodable frame."""
    return np.zeros((size[0], size[1], 3), dtype=np.uint8)


class FrameSource(ABC):
    """A stream of frames with exact source indices, used as a context manager.

    Subclasses decode on demand and keep at most a few frames, so memory does not grow
    with the length of the source. ``iter(source)`` yields the selected frames in index
    order. ``read(k)`` returns source frame ``k``, inside or outside the selection, with
    the same pixels that sequential decoding gives.
    """

    def __init__(self, info: SourceInfo, first: int, last: Optional[int], stride: int):
        self._info = info
        self._selection = select_indices(info.frame_count, first, last, stride, info.path)

    @property
    def info(self) -> SourceInfo:
        return self._info

    @property
    def indices(self) -> list[int]:
        """Source indices of the selected frames, in order."""
        return list(self._selection)

    def __len__(self) -> int:
        return len(self._selection)

    def __iter__(self) -> Iterator[Frame]:
        return self._iter_frames(self._selection)

    def read(self, index: int) -> Frame:
        """Decode source frame ``index`` (0-based, not a position in the selection)."""
        count = self._info.frame_count
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
            raise InputError(
                f"frame index {index!r} is outside {self._info.path}, which has {count} frames "
                f"(indices 0 to {count - 1})"
            )
        return self._read(index)

    def close(self) -> None:
        """Release open files and decoders (the base class has none)."""

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _missing_frame(self, index: int, timestamp_s: Optional[float], reason: str) -> Frame:
        logger.warning("frame %d of %s could not be decoded (%s); using a black placeholder",
                       index, self._info.path, reason)
        return Frame(index, timestamp_s, placeholder_image(self._info.size), missing=True)

    @abstractmethod
    def _iter_frames(self, indices: range) -> Iterator[Frame]:
        """Yield the frames of ``indices`` (ascending source indices) in order."""

    @abstractmethod
    def _read(self, index: int) -> Frame:
        """Decode one frame; ``index`` is already validated."""
