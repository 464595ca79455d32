"""Frame folder sources: order, formats, bit depths, channel layouts and bad folders."""

from __future__ import annotations

import hashlib
import logging
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image

from lmsfa.errors import InputError
from lmsfa.sources import open_source
from sources_fixtures import SEQ4, psnr, vocalfolds_frames


@pytest.fixture(scope="module")
def frames4(vocalfolds):
    return vocalfolds_frames(vocalfolds, 4, size=(48, 64))


def folder_digests(folder) -> dict:
    return {entry.name: hashlib.sha256(entry.read_bytes()).hexdigest()
            for entry in sorted(folder.iterdir())}


def test_vocalfolds_folder_reads_all_frames(vocalfolds):
    folder = vocalfolds / SEQ4
    names = sorted(entry.name for entry in folder.glob("*.jpg"))
    with open_source(folder) as source:
        frames = list(source)
        info = source.info
    assert info.kind == "folder"
    assert info.frame_count == len(names) == 66
    assert info.size == (512, 512)
    assert info.fps is None
    assert info.spacing_mm is None
    assert [frame.index for frame in frames] == list(range(66))
    assert all(frame.timestamp_s is None for frame in frames)

    reference = np.asarray(Image.open(folder / names[30]).convert("RGB"))
    assert np.abs(frames[30].image.astype(int) - reference.astype(int)).mean() < 1.0


def test_natural_order(tmp_path):
    values = {"frame10.png": 100, "frame2.png": 20, "frame1.png": 10, "Frame3.png": 30}
    for name, value in values.items():
        Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(tmp_path / name)
    with open_source(tmp_path) as source:
        assert [int(frame.image[0, 0, 0]) for frame in source] == [10, 20, 30, 100]


def test_rgb_channel_order(tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    image[..., 0] = 200  # red only
    Image.fromarray(image, mode="RGB").save(tmp_path / "red.png")
    with open_source(tmp_path) as source:
        frame = source.read(0)
    assert frame.image[0, 0].tolist() == [200, 0, 0]


@pytest.mark.parametrize("suffix, lossless", [
    ("png", True), ("tif", True), ("bmp", True), ("jpg", False), ("jpeg", False),
])
def test_formats_8bit_rgb(tmp_path, frames4, suffix, lossless):
    for position, image in enumerate(frames4):
        Image.fromarray(image).save(tmp_path / f"{position:03d}.{suffix}", quality=95)
    with open_source(tmp_path) as source:
        frames = list(source)
    assert len(frames) == 4
    for original, frame in zip(frames4, frames):
        assert frame.image.shape == (48, 64, 3)
        assert frame.image.flags.c_contiguous
        if lossless:
            assert np.array_equal(frame.image, original)
        else:
            assert psnr(original, frame.image) > 30


def test_grey_becomes_three_channels(tmp_path):
    grey = np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) % 256
    Image.fromarray(grey.astype(np.uint8), mode="L").save(tmp_path / "grey.png")
    with open_source(tmp_path) as source:
        image = source.read(0).image
    assert image.shape == (48, 64, 3)
    for channel in range(3):
        assert np.array_equal(image[..., channel], grey.astype(np.uint8))


def test_rgba_drops_alpha(tmp_path, frames4):
    rgba = np.dstack([frames4[0], np.full((48, 64), 7, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    with open_source(tmp_path) as source:
        image = source.read(0).image
    assert np.array_equal(image, frames4[0])


def test_16bit_grey_scaled_by_its_range(tmp_path):
    values = np.linspace(1000, 3000, 48 * 64).reshape(48, 64).astype(np.uint16)
    assert cv2.imwrite(str(tmp_path / "deep.png"), values)
    with open_source(tmp_path) as source:
        image = source.read(0).image
    expected = np.rint((values.astype(np.float64) - 1000) * 255 / 2000).astype(np.uint8)
    assert image[..., 0].min() == 0
    assert image[..., 0].max() == 255
    assert np.abs(image[..., 0].astype(int) - expected.astype(int)).max() <= 1


def test_16bit_window(tmp_path):
    values = np.linspace(0, 4095, 48 * 64).reshape(48, 64).astype(np.uint16)
    assert cv2.imwrite(str(tmp_path / "deep.tif"), values)
    with open_source(tmp_path, window=(1024, 2048)) as source:
        image = source.read(0).image[..., 0]
    expected = np.clip(np.rint((values.astype(np.float64) - 1024) * 255 / 1024), 0, 255)
    assert np.abs(image.astype(int) - expected.astype(int)).max() <= 1
    assert image[values <= 1024].max() == 0
    assert image[values >= 2048].min() == 255


def test_16bit_rgb_keeps_channel_order(tmp_path):
    values = np.zeros((8, 8, 3), np.uint16)
    values[..., 0] = 60000  # red, written as RGB -> BGR for OpenCV
    values[0, 0] = (0, 0, 0)
    assert cv2.imwrite(str(tmp_path / "deep.png"), values[..., ::-1])
    with open_source(tmp_path) as source:
        image = source.read(0).image
    assert image[1, 1].tolist() == [255, 0, 0]
    assert image[0, 0].tolist() == [0, 0, 0]


def test_mixed_bit_depths_warn(tmp_path, caplog):
    Image.fromarray(np.full((8, 8), 128, np.uint8), mode="L").save(tmp_path / "f1.png")
    deep = np.zeros((8, 8), np.uint16)
    deep[4:] = 4000
    assert cv2.imwrite(str(tmp_path / "f2.png"), deep)
    with caplog.at_level(logging.WARNING, logger="lmsfa.sources"):
        with open_source(tmp_path) as source:
            frames = list(source)
    assert frames[0].image[0, 0, 0] == 128
    assert frames[1].image[0, 0, 0] == 0
    assert frames[1].image[7, 7, 0] == 255
    assert "frame 1 (f2.png) is 16-bit" in caplog.text


def test_different_sizes_rejected_on_open(tmp_path, frames4):
    Image.fromarray(frames4[0]).save(tmp_path / "a1.png")
    Image.fromarray(frames4[1]).save(tmp_path / "a2.png")
    Image.fromarray(frames4[2][:40]).save(tmp_path / "a3.png")
    with pytest.raises(InputError, match="differ in size") as raised:
        open_source(tmp_path)
    message = str(raised.value)
    assert "a3.png is 64x40" in message
    assert "a1.png is 64x48" in message


def test_truncated_jpeg_becomes_missing_frame(tmp_path, vocalfolds, caplog):
    files = sorted((vocalfolds / SEQ4).glob("*.jpg"))[:3]
    for file in files:
        shutil.copy(file, tmp_path / file.name)
    damaged = tmp_path / files[1].name
    damaged.write_bytes(damaged.read_bytes()[:20000])
    before = folder_digests(tmp_path)

    with caplog.at_level(logging.WARNING, logger="lmsfa.sources"):
        with open_source(tmp_path) as source:
            frames = list(source)
            read_back = source.read(1)
    assert [frame.index for frame in frames] == [0, 1, 2]
    assert [frame.missing for frame in frames] == [False, True, False]
    assert frames[1].image.shape == (512, 512, 3)
    assert not frames[1].image.any()
    assert read_back.missing
    assert files[1].name in caplog.text
    assert "frame 1 of" in caplog.text
    assert folder_digests(tmp_path) == before


def test_hidden_and_other_files_ignored(tmp_path, frames4):
    Image.fromarray(frames4[0]).save(tmp_path / "0001.png")
    (tmp_path / "._0001.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / "notes.txt").write_text("exported by the endoscope\n")
    (tmp_path / "sub").mkdir()
    with open_source(tmp_path) as source:
        assert source.info.frame_count == 1
        assert np.array_equal(source.read(0).image, frames4[0])


def test_folder_without_images(tmp_path):
    (tmp_path / "notes.txt").write_text("no frames here\n")
    (tmp_path / "seq1").mkdir()
    with pytest.raises(InputError, match="no images found in folder") as raised:
        open_source(tmp_path)
    assert "seq1" in str(raised.value)


def test_range_outside_folder(tmp_path, frames4):
    for position, image in enumerate(frames4):
        Image.fromarray(image).save(tmp_path / f"{position}.png")
    with pytest.raises(InputError, match="first frame 4 is past the end"):
        open_source(tmp_path, first=4)
    with pytest.raises(InputError, match="last frame 9 is past the end"):
        open_source(tmp_path, last=9)
    with pytest.raises(InputError, match="invalid stride 0"):
        open_source(tmp_path, stride=0)
    with pytest.raises(InputError, match="frame index 4 is outside"):
        open_source(tmp_path).read(4)
    with open_source(tmp_path, first=1, last=3, stride=2) as source:
        assert source.indices == [1, 3]
        assert [frame.index for frame in source] == [1, 3]
        assert np.array_equal(source.read(0).image, frames4[0])
