"""Video file sources: real clips, every container, timestamps, rotation, seeking, damage."""

from __future__ import annotations

import hashlib
import logging
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from lmsfa.errors import InputError
from lmsfa.sources import COLOR_ORDER, open_source
from sources_fixtures import psnr, vocalfolds_frames, write_video

# Rows: container suffix, codec, pixel format, encoder options, lossless. The lossy codecs
# get a high bit rate, and short groups of pictures so that 20 frames exercise seeking.
CONTAINERS = [
    ("mp4", "libx264", "yuv420p", {"g": "6", "crf": "18"}, False),
    ("avi", "mjpeg", "yuvj420p", {"b": "8M"}, False),
    ("mov", "png", "rgb24", None, True),
    ("mkv", "ffv1", "bgr0", None, True),
    ("webm", "libvpx-vp9", "yuv420p", {"g": "6", "b": "4M"}, False),
]


def file_digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def frames20(vocalfolds):
    return vocalfolds_frames(vocalfolds, 20)


def test_color_order_is_rgb():
    assert COLOR_ORDER == "RGB"


def test_seq4_clip_counts_and_times(vocalfolds):
    path = vocalfolds / "seq4_5fps.mp4"
    with open_source(path) as source:
        info = source.info
        frames = list(source)

    assert info.kind == "video"
    assert info.frame_count == 66
    assert info.size == (512, 512)
    assert info.fps == pytest.approx(5.0)
    assert info.rotation_deg == 0
    assert info.spacing_mm is None
    assert info.dicom is None
    assert [frame.index for frame in frames] == list(range(66))
    assert [frame.timestamp_s for frame in frames] == pytest.approx([k * 0.2 for k in range(66)])
    assert not any(frame.missing for frame in frames)
    for frame in frames:
        assert frame.image.shape == (512, 512, 3)
        assert frame.image.dtype == np.uint8
        assert frame.image.flags.c_contiguous


def test_seq4_clip_matches_opencv_in_rgb(vocalfolds):
    path = vocalfolds / "seq4_5fps.mp4"
    capture = cv2.VideoCapture(str(path))
    with open_source(path) as source:
        for frame in source:
            ok, bgr = capture.read()
            assert ok, f"OpenCV ended before frame {frame.index}"
            difference = np.abs(frame.image.astype(int) - bgr[:, :, ::-1].astype(int))
            assert difference.mean() < 1.0, f"frame {frame.index} differs from OpenCV's RGB"
    ok, _ = capture.read()
    assert not ok, "OpenCV decoded more frames than the source"
    capture.release()


def test_seq4_clip_aligns_with_jpeg_frames(vocalfolds):
    """Frame k of the clip is closest to the k-th JPEG of the folder it was made from."""
    with open_source(vocalfolds / "seq4_5fps.mp4", stride=13) as clip, \
            open_source(vocalfolds / "images" / "patient1" / "seq4") as folder:
        for frame in clip:
            errors = {
                k: np.abs(folder.read(k).image.astype(int) - frame.image.astype(int)).mean()
                for k in range(max(0, frame.index - 2), min(66, frame.index + 3))
            }
            assert min(errors, key=errors.get) == frame.index


@pytest.mark.parametrize("name, count, size", [
    ("out720x576.mp4", 9, (576, 720)),
    ("out512x448-selected-05-frames.mp4", 5, (448, 512)),
])
def test_kvasir_h264_clips(shared_data, name, count, size):
    path = shared_data / "kvasir_clips" / name
    with open_source(path) as source:
        frames = list(source)
        assert source.info.frame_count == count
        assert source.info.size == size
        assert [frame.index for frame in frames] == list(range(count))
        times = [frame.timestamp_s for frame in frames]
        assert times == sorted(times)
        for frame in frames:
            assert np.array_equal(source.read(frame.index).image, frame.image), \
                f"read({frame.index}) differs from sequential decoding"


@pytest.mark.parametrize("suffix, codec, pix_fmt, options, lossless", CONTAINERS)
def test_containers_decode_every_frame(tmp_path, frames20, suffix, codec, pix_fmt, options,
                                       lossless):
    path = tmp_path / f"clip.{suffix}"
    write_video(path, frames20, codec, pix_fmt=pix_fmt, options=options)

    with open_source(path) as source:
        frames = list(source)
        assert source.info.frame_count == 20
        assert source.info.size == (96, 128)
        assert [frame.index for frame in frames] == list(range(20))
        assert [frame.timestamp_s for frame in frames] == pytest.approx([k / 25 for k in range(20)])
        for original, frame in zip(frames20, frames):
            if lossless:
                assert np.array_equal(frame.image, original), f"frame {frame.index} changed"
            else:
                assert psnr(original, frame.image) > 28, f"frame {frame.index} is not its original"
        for index in (19, 0, 13, 7):
            assert np.array_equal(source.read(index).image, frames[index].image), \
                f"read({index}) differs from sequential decoding"


def test_header_frame_count_not_used(tmp_path, frames20):
    """Matroska headers carry no frame count; the source counts the packets."""
    path = tmp_path / "clip.mkv"
    write_video(path, frames20[:7], "ffv1", pix_fmt="bgr0")
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0
    with open_source(path) as source:
        assert source.info.frame_count == 7
        assert len(list(source)) == 7


@pytest.mark.parametrize("suffix", ["mkv", "mp4"])
def test_variable_frame_rate_times(tmp_path, frames20, suffix):
    pts_ms = [0, 40, 80, 200, 210, 500, 1500, 1540]
    path = tmp_path / f"vfr.{suffix}"
    codec, pix_fmt = ("ffv1", "bgr0") if suffix == "mkv" else ("libx264", "yuv420p")
    write_video(path, frames20[:8], codec, pix_fmt=pix_fmt, pts=pts_ms,
                time_base=Fraction(1, 1000))
    with open_source(path) as source:
        times = [frame.timestamp_s for frame in source]
        assert times == pytest.approx([value / 1000 for value in pts_ms], abs=1e-3)
        assert source.read(6).timestamp_s == pytest.approx(1.5, abs=1e-3)


def test_h264_bframes_random_access(tmp_path, frames20):
    path = tmp_path / "bframes.mp4"
    write_video(path, frames20, "libx264", options={"g": "5", "bf": "3"})
    with open_source(path) as source:
        sequential = [frame.image for frame in source]
        for index in reversed(range(20)):
            assert np.array_equal(source.read(index).image, sequential[index]), \
                f"read({index}) differs from sequential decoding"


@pytest.mark.parametrize("first, last, stride", [(0, None, 7), (3, 17, 4), (19, 19, 1), (5, None, 1)])
def test_range_and_stride_keep_source_indices(tmp_path, frames20, first, last, stride):
    path = tmp_path / "gop.mp4"
    write_video(path, frames20, "libx264", options={"g": "4", "bf": "2"})
    with open_source(path) as full:
        reference = {frame.index: frame for frame in full}
    expected = list(range(first, (19 if last is None else last) + 1, stride))

    with open_source(path, first=first, last=last, stride=stride) as source:
        frames = list(source)
        assert source.indices == expected
        assert len(source) == len(expected)
        assert source.info.frame_count == 20

    assert [frame.index for frame in frames] == expected
    for frame in frames:
        assert np.array_equal(frame.image, reference[frame.index].image), \
            f"frame {frame.index} differs from the full sequential pass"
        assert frame.timestamp_s == reference[frame.index].timestamp_s


@pytest.mark.parametrize("rotation_ccw, expected_cw", [(90, 270), (180, 180), (-90, 90)])
def test_rotated_video_comes_out_upright(tmp_path, frames20, rotation_ccw, expected_cw):
    path = tmp_path / "rotated.mov"
    write_video(path, frames20[:3], "png", pix_fmt="rgb24", rotation_ccw=rotation_ccw)
    with open_source(path) as source:
        frames = list(source)
        assert source.info.rotation_deg == expected_cw
        expected_size = (96, 128) if expected_cw == 180 else (128, 96)
        assert source.info.size == expected_size
    for original, frame in zip(frames20, frames):
        # np.rot90 with k=1 turns counterclockwise, the direction of the display matrix.
        assert np.array_equal(frame.image, np.rot90(original, k=rotation_ccw // 90))


def test_read_during_iteration(tmp_path, frames20):
    path = tmp_path / "clip.mp4"
    write_video(path, frames20, "libx264", options={"g": "5", "crf": "18"})
    with open_source(path) as source:
        first_pass = [frame.image for frame in source]
        second_pass = []
        for frame in source:
            second_pass.append(frame.image)
            if frame.index == 10:
                assert np.array_equal(source.read(3).image, first_pass[3])
                assert np.array_equal(source.read(17).image, first_pass[17])
    assert len(second_pass) == 20
    for index, (first, second) in enumerate(zip(first_pass, second_pass)):
        assert np.array_equal(first, second), f"frame {index} differs between passes"


def test_closed_source_still_reads(tmp_path, frames20):
    path = tmp_path / "clip.mp4"
    write_video(path, frames20[:4], "libx264")
    source = open_source(path)
    expected = source.read(2).image
    source.close()
    assert np.array_equal(source.read(2).image, expected)


def test_damaged_packet_keeps_timeline(tmp_path, frames20, caplog):
    path = tmp_path / "damaged.avi"
    write_video(path, frames20[:10], "mjpeg", pix_fmt="yuvj420p", options={"b": "8M"})
    with av.open(str(path)) as container:
        packets = [(packet.pos, packet.size) for packet in container.demux(video=0) if packet.size]
    position, size = packets[4]
    data = bytearray(path.read_bytes())
    data[position:position + size] = bytes(size)
    path.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger="lmsfa.sources"):
        with open_source(path) as source:
            frames = list(source)
            read_back = source.read(4)
    assert [frame.index for frame in frames] == list(range(10))
    assert [frame.missing for frame in frames] == [False] * 4 + [True] + [False] * 5
    assert not frames[4].image.any()
    assert frames[4].image.shape == (96, 128, 3)
    assert frames[4].timestamp_s == pytest.approx(4 / 25)
    assert read_back.missing
    assert psnr(frames20[5], frames[5].image) > 28
    assert "frame 4 of" in caplog.text


def test_truncated_matroska_keeps_its_frames(tmp_path, frames20):
    path = tmp_path / "cut.mkv"
    write_video(path, frames20, "ffv1", pix_fmt="bgr0")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with open_source(path) as source:
        frames = list(source)
        count = source.info.frame_count
    assert 0 < count < 20
    assert [frame.index for frame in frames] == list(range(count))
    for original, frame in zip(frames20, frames):
        if not frame.missing:
            assert np.array_equal(frame.image, original)
    assert sum(frame.missing for frame in frames) <= 1


def test_unsupported_codec_is_named(tmp_path, frames20):
    path = tmp_path / "unknown.avi"
    write_video(path, frames20[:3], "mjpeg", pix_fmt="yuvj420p")
    data = path.read_bytes()
    assert data.count(b"MJPG") >= 1
    path.write_bytes(data.replace(b"MJPG", b"QQQQ"))
    with pytest.raises(InputError, match="unsupported video codec") as raised:
        open_source(path)
    assert "QQQQ" in str(raised.value)
    assert str(path) in str(raised.value)


def test_not_a_video_is_rejected(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("not a video\n")
    with pytest.raises(InputError, match="cannot read .*notes.mp4 as a video"):
        open_source(path)


def test_reading_never_modifies_the_file(tmp_path, frames20):
    path = tmp_path / "clip.mp4"
    write_video(path, frames20[:6], "libx264")
    digest, mtime = file_digest(path), path.stat().st_mtime_ns
    with open_source(path, stride=2) as source:
        list(source)
        source.read(5)
    assert file_digest(path) == digest
    assert path.stat().st_mtime_ns == mtime
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["clip.mp4"]
