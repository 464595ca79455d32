"""Video files decoded with PyAV (FFmpeg), with exact frame indices and presentation times.

PyAV decodes every container (mp4, avi, mov, mkv, webm and anything else that FFmpeg
demuxes). It is used in place of OpenCV's VideoCapture because it exposes the
presentation timestamp (PTS) and keyframe flag of each packet, and the display matrix of
each frame, so this module controls counting, timing, seeking and rotation itself.

On open, the video stream is demuxed once without decoding. The sorted packet PTS values
are the timeline: frame ``k`` is the packet with the ``k``-th smallest PTS. So the frame
count comes from the stream and not from the header, variable frame rate video keeps its
real times, and a frame that fails to decode keeps its index. The timeline costs one
integer per frame, and decoded frames are never accumulated.
"""

from __future__ import annotations

import bisect
import contextlib
import io
import itertools
import logging
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional, Union

import av
import av.error
import av.logging
from av.video.reformatter import VideoReformatter
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
    ``None`` when packets lack a PTS or repeat one (a raw H.264 elementary stream has
    none). Frames are then numbered in decoder output order. ``key_indices`` are the
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
    """Return the first video stream, set up for frame and slice threading."""
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
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:
                continue
            if packet.is_keyframe:
                key_pts.append(packet.pts)
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

    logger.info("%s has packets without unique timestamps; numbering frames in decoder "
                "output order", path)
    # The decoder outputs frames in presentation order, one per packet, so counting its
    # output numbers the frames. Seeking is impossible, and reads decode from the start.
    return _Timeline(len(packet_pts), None, [0], None)


class _Decoder:
    """An open container with its video stream and decoder, reused across passes.

    ``pending`` contains frames already decoded from the start of the stream (the frame
    decoded on open, then the rest of that pass), so the first pass does not open and
    probe the file again. ``at_start`` is true while nothing has been read from it.
    """

    def __init__(self, container, stream, pending: Optional[Iterator[av.VideoFrame]] = None):
        self.container = container
        self.stream = stream
        self.pending = pending
        self.at_start = pending is None

    def close(self) -> None:
        self.pending = None
        self.container.close()


class VideoSource(FrameSource):
    """Frames of a video stream decoded with PyAV, upright, in RGB.

    ``data`` is the video file path, or the bytes of a video stream (encapsulated DICOM
    video) with ``path`` naming its file. ``fps`` replaces the nominal frame rate of
    the stream. Subclasses may override :meth:`timestamp_s` to take times from elsewhere.
    One open container is kept between passes; :meth:`close` releases it.
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
        self._idle_decoder: Optional[_Decoder] = None
        self._closed = False

        decoder = self._open_decoder()
        try:
            self._timeline = _scan_timeline(decoder.container, decoder.stream, path)
            self._index_of_pts = self._timeline.index_of_pts()
            nominal_fps = fps if fps is not None else self._nominal_fps(decoder.stream)
            decoder.at_start = False
            first_frame = self._prime(decoder)
        except BaseException:
            decoder.close()
            raise
        self._idle_decoder = decoder

        self._rotation = normalize_rotation(-first_frame.rotation) if first_frame.rotation else 0
        height, width = first_frame.height, first_frame.width
        if self._rotation in (90, 270):
            height, width = width, height
        info = SourceInfo(
            path=path,
            kind=kind,
            frame_count=self._timeline.count,
            size=(height, width),
            fps=nominal_fps,
            rotation_deg=self._rotation,
            spacing_mm=spacing_mm,
            dicom=dicom,
        )
        try:
            super().__init__(info, first, last, stride)
        except InputError:
            self.close()
            raise
        if self._rotation:
            logger.info("%s is stored rotated; rotating frames %d degrees clockwise", path,
                        self._rotation)

    @staticmethod
    def _nominal_fps(stream) -> Optional[float]:
        rate = stream.average_rate or stream.guessed_rate
        return float(rate) if rate else None

    def _open_decoder(self) -> _Decoder:
        container = _open_container(self._data, self._path)
        try:
            return _Decoder(container, _video_stream(container, self._data, self._path))
        except BaseException:
            container.close()
            raise

    def _rewind(self, decoder: _Decoder) -> None:
        """Put ``decoder`` back at the first packet, unless nothing has been read yet."""
        decoder.pending = None
        if decoder.at_start:
            return
        if self._timeline.pts is not None:
            decoder.container.seek(0)
        else:
            # Raw elementary streams cannot seek back reliably: open them again.
            decoder.container.close()
            reopened = self._open_decoder()
            decoder.container, decoder.stream = reopened.container, reopened.stream

    def _prime(self, decoder: _Decoder) -> av.VideoFrame:
        """Decode the first frame and keep the rest of that pass in ``decoder.pending``."""
        self._rewind(decoder)
        decoded = self._decode(decoder.container, decoder.stream)
        decoder.at_start = False
        first_frame = next(decoded, None)
        if first_frame is None:
            raise InputError(
                f"no frame of {self._path} could be decoded with the "
                f"{decoder.stream.codec_context.name} decoder: the file is damaged or the "
                "codec is unsupported; re-encode it, for example to H.264 in mp4"
            )
        decoder.pending = itertools.chain([first_frame], decoded)
        return first_frame

    def _take_decoder(self) -> _Decoder:
        decoder, self._idle_decoder = self._idle_decoder, None
        return decoder if decoder is not None else self._open_decoder()

    def _release_decoder(self, decoder: _Decoder) -> None:
        if self._idle_decoder is None and not self._closed:
            self._idle_decoder = decoder
        else:
            decoder.close()

    def close(self) -> None:
        """Close the container kept open between passes."""
        self._closed = True
        decoder, self._idle_decoder = self._idle_decoder, None
        if decoder is not None:
            decoder.close()

    def _decode(self, container, stream) -> Iterator[av.VideoFrame]:
        """Yield decoded frames in presentation order, skipping packets that fail to decode.

        A demuxing error (damaged container data) ends the stream after the decoder has
        returned the frames it buffered.
        """
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError as error:
                logger.warning("demuxing %s failed, so the stream ends here: %s", self._path, error)
                yield from self._flush(stream)
                return
            try:
                frames = packet.decode()
            except av.error.FFmpegError as error:
                logger.warning("a packet of %s at PTS %s failed to decode: %s", self._path,
                               packet.pts, error)
                continue
            yield from frames

    def _flush(self, stream) -> list[av.VideoFrame]:
        try:
            return stream.codec_context.decode(None)
        except av.error.FFmpegError as error:
            logger.warning("flushing the decoder of %s failed: %s", self._path, error)
            return []

    def timestamp_s(self, index: int) -> Optional[float]:
        """Presentation time of frame ``index`` in seconds since the first frame."""
        timeline = self._timeline
        if timeline.pts is None or timeline.time_base is None:
            return None
        return float((timeline.pts[index] - timeline.pts[0]) * timeline.time_base)

    def _to_frame(self, index: int, decoded: av.VideoFrame, reformatter: VideoReformatter) -> Frame:
        # One reformatter per pass reuses its swscale context; VideoFrame.to_ndarray
        # builds a new one per frame, which costs about 1 ms at 512x512 (PyAV 18). One
        # conversion thread is fastest while the decoder threads use the other cores.
        image = reformatter.reformat(decoded, format="rgb24", threads=1).to_ndarray()
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

    def _frames_from_start(self, decoder: _Decoder) -> Iterator[av.VideoFrame]:
        if decoder.pending is not None:
            pending, decoder.pending = decoder.pending, None
            return pending
        self._rewind(decoder)
        decoder.at_start = False
        return self._decode(decoder.container, decoder.stream)

    def _indexed_frames(self, decoder: _Decoder, start: int) -> Iterator[tuple[int, av.VideoFrame]]:
        """Yield (index, frame) pairs in presentation order, starting at or before ``start``.

        Seeks to the keyframe before ``start`` when the timeline allows it. A seek that
        lands after ``start`` (an inexact container index) falls back to decoding from
        the beginning, so the pixels always match sequential decoding.
        """
        timeline = self._timeline
        seeked = timeline.pts is not None and self._key_index_at_or_before(start) > 0
        if seeked:
            decoder.pending = None
            decoder.at_start = False
            decoder.container.seek(timeline.pts[start], stream=decoder.stream, backward=True,
                                   any_frame=False)
            frames = self._decode(decoder.container, decoder.stream)
        else:
            frames = self._frames_from_start(decoder)

        previous = -1
        for decoded in frames:
            index = self._index_of(decoded, previous)
            if seeked and previous < 0 and index > start:
                logger.debug("seek in %s landed after frame %d; decoding from the start",
                             self._path, start)
                previous = -1
                for decoded_again in self._frames_from_start(decoder):
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
        requested = iter(indices)
        next_index = next(requested, None)
        decoder = self._take_decoder()
        try:
            while next_index is not None:
                next_index = yield from self._iter_until_seek(decoder, next_index, requested)
        finally:
            self._release_decoder(decoder)

    def _iter_until_seek(self, decoder: _Decoder, next_index: int, requested: Iterator[int]):
        """Decode from ``next_index`` and yield requested frames until a seek pays off.

        Returns the next requested index to seek to, or ``None`` when all are done.
        """
        current = -1
        reformatter = VideoReformatter()
        for index, decoded in self._indexed_frames(decoder, next_index):
            current = index
            while next_index is not None and next_index < index:
                yield self._missing_frame(next_index, self.timestamp_s(next_index),
                                          "the decoder returned no frame for it")
                next_index = next(requested, None)
            if next_index is None:
                return None
            if index == next_index:
                yield self._to_frame(index, decoded, reformatter)
                next_index = next(requested, None)
                if next_index is None:
                    return None
                # Jump over whole groups of pictures that the stride skips.
                if self._timeline.pts is not None and \
                        self._key_index_at_or_before(next_index) > current + 1:
                    return next_index

        while next_index is not None:
            yield self._missing_frame(next_index, self.timestamp_s(next_index),
                                      "the stream ended before it")
            next_index = next(requested, None)
        return None

    def _read(self, index: int) -> Frame:
        with contextlib.closing(self._iter_frames(range(index, index + 1))) as frames:
            return next(frames)
