"""Video files decoded with PyAV (FFmpeg), with exact frame indices and presentation times.

PyAV is the decoder for every container (mp4, avi, mov, mkv, webm and anything else that
FFmpeg demuxes) because it exposes what the OpenCV capture API hides: the presentation
timestamp (PTS) of each packet and frame, the keyframe flags, and the display matrix.
On open, the video stream is demuxed once without decoding. The sorted packet PTS values
are the timeline: frame ``k`` is the packet with the ``k``-th smallest PTS, so the frame
count comes from the stream and not from the header, variable frame rate video keeps its
real times, and a frame that fails to decode keeps its index. The timeline costs one
integer per frame; decoded frames are never accumulated.
"""

from __future__ import annotations

import bisect
import io
import logging
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional, Union

import av
import av.error
import av.logging
import numpy as np

from ..errors import InputError
from .base import Frame, FrameSource, SourceInfo
from .pixels import normalize_rotation, rotate_clockwise

logger = logging.getLogger(__name__)

VideoInput = Union[Path, bytes]


@dataclass
class _Timeline:
    """Frame order of a video stream, built by demuxing without decoding.

    ``pts`` contains the packet PTS values in ascending order (stream time base), or is
    ``None`` when packets lack a PTS or repeat one (raw H.264 or MPEG-2 elementary
    streams). Frames are then numbered in decoder output order. ``key_indices`` are the
    frame indices of keyframes, ascending.
    """

    count: int
    pts: Optional[list[int]]
    key_indices: list[int]
    time_base: Optional[Fraction]

    def index_of_pts(self) -> dict[int, int]:
        return {pts: index for index, pts in enumerate(self.pts or [])}


def _open_container(data: VideoInput, path: Path):
    """Open ``data`` (a file path or the bytes of a video stream) with PyAV."""
    try:
        if isinstance(data, bytes):
            return av.open(io.BytesIO(data), mode="r")
        return av.open(str(data), mode="r")
    except av.error.FFmpegError as error:
        raise InputError(
            f"cannot read {path} as a video ({error}): check that the file is complete and is "
            "a video container such as mp4, avi, mov, mkv or webm"
        ) from error


def _unknown_codec_tag(data: VideoInput, path: Path) -> str:
    """Return the codec tag FFmpeg reports for a stream it has no decoder for.

    PyAV exposes no codec tag without a decoder, but FFmpeg logs it on open
    ("Video: none (QQQQ / 0x51515151)"), so the file is opened again with logging on.
    """
    previous_level = av.logging.get_level()
    av.logging.set_level(av.logging.WARNING)
    try:
        with av.logging.Capture(True) as messages:
            _open_container(data, path).close()
    finally:
        av.logging.set_level(previous_level)
    for _level, _name, message in messages:
        match = re.search(r"Video: none \(([^)]*)\)", message)
        if match:
            return match.group(1)
    return "unknown tag"


def _video_stream(container, data: VideoInput, path: Path):
    if not container.streams.video:
        raise InputError(f"{path} contains no video stream: give a video file or a frame folder")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise InputError(
            f"unsupported video codec in {path} (codec tag {_unknown_codec_tag(data, path)}): "
            "FFmpeg has no decoder for it; re-encode the video, for example to H.264 in mp4"
        )
    stream.thread_type = "AUTO"
    return stream


def _scan_timeline(container, stream, path: Path) -> _Timeline:
    """Demux every packet of ``stream`` once, without decoding, to build the timeline."""
    packet_pts: list[Optional[int]] = []
    key_pts: list[Optional[int]] = []
    key_ordinals: list[int] = []
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:
                continue
            if packet.is_keyframe:
                key_pts.append(packet.pts)
                key_ordinals.append(len(packet_pts))
            packet_pts.append(packet.pts)
    except av.error.FFmpegError as error:
        # A damaged tail ends the scan; the frames before it stay readable.
        logger.warning("demuxing %s stopped after %d frames: %s", path, len(packet_pts), error)

    if not packet_pts:
        raise InputError(f"{path} contains no video frames: the file is empty or damaged")

    has_all_pts = all(value is not None for value in packet_pts)
    if has_all_pts and len(set(packet_pts)) == len(packet_pts):
        pts = sorted(packet_pts)
        index_of = {value: index for index, value in enumerate(pts)}
        key_indices = sorted(index_of[value] for value in key_pts)
        return _Timeline(len(pts), pts, key_indices, stream.time_base)

    logger.info("%s has packets without unique timestamps; numbering frames in decoding order",
                path)
    # Without PTS the packet order is the presentation order only for streams without
    # B-frames; seeking is then disabled and reads decode from the start.
    return _Timeline(len(packet_pts), None, [0], None)


class VideoSource(FrameSource):
    """Frames of a video stream decoded with PyAV, upright, in RGB.

    ``data`` is the video file path, or the bytes of a video stream (encapsulated DICOM
    video) with ``path`` naming its file. ``fps`` replaces the nominal frame rate of
    the stream. Subclasses may override :meth:`timestamp_s` to take times from elsewhere.
    """

    def __init__(
        self,
        path: Path,
        *,
        first: int = 0,
        last: Optional[int] = None,
        stride: int = 1,
        data: Optional[VideoInput] = None,
        kind: str = "video",
        fps: Optional[float] = None,
        spacing_mm: Optional[tuple[float, float]] = None,
        dicom: Optional[dict] = None,
    ):
        self._path = path
        self._data = path if data is None else data

        container = _open_container(self._data, path)
        try:
            stream = _video_stream(container, self._data, path)
            timeline = _scan_timeline(container, stream, path)
            nominal_fps = fps if fps is not None else self._nominal_fps(stream)
        finally:
            container.close()
        container = _open_container(self._data, path)
        try:
            first_frame = self._first_decoded_frame(container, _video_stream(container, self._data, path))
        finally:
            container.close()

        self._timeline = timeline
        self._index_of_pts = timeline.index_of_pts()
        self._rotation = normalize_rotation(-first_frame.rotation) if first_frame.rotation else 0
        height, width = first_frame.height, first_frame.width
        if self._rotation in (90, 270):
            height, width = width, height
        info = SourceInfo(
            path=path,
            kind=kind,
            frame_count=timeline.count,
            size=(height, width),
            fps=nominal_fps,
            rotation_deg=self._rotation,
            spacing_mm=spacing_mm,
            dicom=dicom,
        )
        super().__init__(info, first, last, stride)
        if self._rotation:
            logger.info("%s is stored rotated; rotating frames %d degrees clockwise", path,
                        self._rotation)

    @staticmethod
    def _nominal_fps(stream) -> Optional[float]:
        rate = stream.average_rate or stream.guessed_rate
        return float(rate) if rate else None

    def _first_decoded_frame(self, container, stream):
        for frame in self._decode(container, stream):
            return frame
        raise InputError(
            f"no frame of {self._path} could be decoded with the {stream.codec_context.name} "
            "decoder: the file is damaged or the codec is unsupported; re-encode it, for "
            "example to H.264 in mp4"
        )

    def _decode(self, container, stream) -> Iterator[av.VideoFrame]:
        """Yield decoded frames in presentation order, skipping packets that fail to decode."""
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError as error:
                logger.warning("a packet of %s at PTS %s failed to decode: %s", self._path,
                               packet.pts, error)
                continue
            yield from frames

    def timestamp_s(self, index: int) -> Optional[float]:
        """Presentation time of frame ``index`` in seconds since the first frame."""
        timeline = self._timeline
        if timeline.pts is None or timeline.time_base is None:
            return None
        return float((timeline.pts[index] - timeline.pts[0]) * timeline.time_base)

    def _to_frame(self, index: int, decoded: av.VideoFrame) -> Frame:
        image = decoded.to_ndarray(format="rgb24")
        image = np.ascontiguousarray(rotate_clockwise(image, self._rotation))
        if image.shape[:2] != self._info.size:
            return self._missing_frame(
                index, self.timestamp_s(index),
                f"decoded size {image.shape[:2]} differs from the stream size {self._info.size}",
            )
        return Frame(index, self.timestamp_s(index), image)

    def _key_index_at_or_before(self, index: int) -> int:
        keys = self._timeline.key_indices
        position = bisect.bisect_right(keys, index) - 1
        return keys[position] if position >= 0 else 0

    def _indexed_frames(self, container, stream, start: int) -> Iterator[tuple[int, av.VideoFrame]]:
        """Yield (index, frame) pairs in presentation order, starting at or before ``start``.

        Seeks to the keyframe before ``start`` when the timeline allows it. A seek that
        lands after ``start`` (an inexact container index) falls back to decoding from
        the beginning, so the pixels always match sequential decoding.
        """
        timeline = self._timeline
        seeked = False
        if timeline.pts is not None and self._key_index_at_or_before(start) > 0:
            container.seek(timeline.pts[start], stream=stream, backward=True, any_frame=False)
            seeked = True

        previous = -1
        for decoded in self._decode(container, stream):
            index = self._index_of(decoded, previous)
            if seeked and previous < 0 and index > start:
                logger.debug("seek in %s landed after frame %d; decoding from the start",
                             self._path, start)
                container.seek(0)
                previous = -1
                seeked = False
                for decoded_again in self._decode(container, stream):
                    previous = self._index_of(decoded_again, previous)
                    yield previous, decoded_again
                return
            previous = index
            yield index, decoded

    def _index_of(self, decoded: av.VideoFrame, previous: int) -> int:
        """Frame index of a decoded frame: by PTS, else the one after ``previous``."""
        if self._timeline.pts is None or decoded.pts is None:
            return previous + 1
        return self._index_of_pts.get(decoded.pts, previous + 1)

    def _iter_frames(self, indices: range) -> Iterator[Frame]:
        wanted = iter(indices)
        next_index = next(wanted, None)
        container = _open_container(self._data, self._path)
        try:
            stream = _video_stream(container, self._data, self._path)
            while next_index is not None:
                next_index = yield from self._iter_until_seek(container, stream, next_index, wanted)
        finally:
            container.close()

    def _iter_until_seek(self, container, stream, next_index: int, wanted: Iterator[int]):
        """Decode from ``next_index`` and yield wanted frames until a seek pays off.

        Returns the next wanted index to seek to, or ``None`` when all are done.
        """
        current = -1
        for index, decoded in self._indexed_frames(container, stream, next_index):
            current = index
            while next_index is not None and next_index < index:
                yield self._missing_frame(next_index, self.timestamp_s(next_index),
                                          "the decoder returned no frame for it")
                next_index = next(wanted, None)
            if next_index is None:
                return None
            if index == next_index:
                yield self._to_frame(index, decoded)
                next_index = next(wanted, None)
                if next_index is None:
                    return None
                # Jump over whole groups of pictures that the stride skips.
                if self._timeline.pts is not None and \
                        self._key_index_at_or_before(next_index) > current + 1:
                    return next_index

        while next_index is not None:
            yield self._missing_frame(next_index, self.timestamp_s(next_index),
                                      "the stream ended before it")
            next_index = next(wanted, None)
        return None

    def _read(self, index: int) -> Frame:
        for frame in self._iter_frames(range(index, index + 1)):
            return frame
        raise AssertionError("unreachable: _iter_frames yields one frame per index")
