"""DICOM sources: multi-frame images and encapsulated video, spacing, timing, identifiers."""

from __future__ import annotations

import hashlib
import io
import logging

import numpy as np
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import (
    MPEG2MPML,
    MPEG4HP41,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    VideoEndoscopicImageStorage,
)

from lmsfa.errors import InputError
from lmsfa.sources import open_source
from sources_fixtures import (
    dicom_dataset,
    encode_raw_stream,
    psnr,
    set_encapsulated_video,
    vocalfolds_frames,
)

MULTIFRAME_TRUE_COLOR = "1.2.840.10008.5.1.4.1.1.7.4"
MULTIFRAME_GREY_WORD = "1.2.840.10008.5.1.4.1.1.7.3"


@pytest.fixture(scope="module")
def frames6(vocalfolds):
    return vocalfolds_frames(vocalfolds, 6)


def write_native_rgb(path, frames, **attributes):
    dataset = dicom_dataset(ExplicitVRLittleEndian, VideoEndoscopicImageStorage)
    dataset.set_pixel_data(np.stack(frames), "RGB", 8)
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    dataset.save_as(path, enforce_file_format=True)
    return dataset


def test_native_rgb_frames_spacing_and_identifiers(tmp_path, frames6):
    path = tmp_path / "endoscopy.dcm"
    dataset = write_native_rgb(path, frames6, PixelSpacing=[0.1, 0.2], FrameTime=40)
    with open_source(path) as source:
        frames = list(source)
        info = source.info
    assert info.kind == "dicom"
    assert info.frame_count == 6
    assert info.size == (96, 128)
    assert info.spacing_mm == (0.1, 0.2)
    assert info.fps == pytest.approx(25.0)
    assert info.dicom["PatientID"] == "LMSFA-TEST-01"
    assert info.dicom["PatientName"] == "Test^Patient"
    assert info.dicom["StudyInstanceUID"] == dataset.StudyInstanceUID
    assert info.dicom["SeriesInstanceUID"] == dataset.SeriesInstanceUID
    assert info.dicom["SOPInstanceUID"] == dataset.SOPInstanceUID
    assert info.dicom["SOPClassUID"] == VideoEndoscopicImageStorage
    assert info.dicom["AccessionNumber"] is None
    assert [frame.timestamp_s for frame in frames] == pytest.approx([0.0, 0.04, 0.08, 0.12, 0.16, 0.2])
    for original, frame in zip(frames6, frames):
        assert np.array_equal(frame.image, original)


def test_without_spacing_is_uncalibrated(tmp_path, frames6):
    path = tmp_path / "nospacing"  # no suffix: found by the DICM prefix
    write_native_rgb(path, frames6[:2])
    with open_source(path) as source:
        assert source.info.kind == "dicom"
        assert source.info.spacing_mm is None
        assert source.info.fps is None
        assert source.read(1).timestamp_s is None


def test_frame_time_vector_gives_variable_times(tmp_path, frames6):
    path = tmp_path / "vfr.dcm"
    write_native_rgb(path, frames6[:4], FrameTimeVector=[0, 40, 100, 60])
    with open_source(path, first=1) as source:
        assert [frame.timestamp_s for frame in source] == pytest.approx([0.04, 0.14, 0.2])


def test_jpeg_baseline_multiframe(tmp_path, frames6):
    encoded = []
    for image in frames6[:3]:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=95)
        encoded.append(buffer.getvalue())
    dataset = dicom_dataset(JPEGBaseline8Bit, MULTIFRAME_TRUE_COLOR)
    dataset.Rows, dataset.Columns = 96, 128
    dataset.SamplesPerPixel = 3
    dataset.PhotometricInterpretation = "YBR_FULL_422"
    dataset.PlanarConfiguration = 0
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 8, 8, 7
    dataset.PixelRepresentation = 0
    dataset.NumberOfFrames = 3
    dataset.PixelData = encapsulate(encoded)
    dataset["PixelData"].VR = "OB"
    path = tmp_path / "jpeg.dcm"
    dataset.save_as(path, enforce_file_format=True)

    with open_source(path) as source:
        frames = list(source)
        assert np.array_equal(source.read(2).image, frames[2].image)
    assert len(frames) == 3
    for data, original, frame in zip(encoded, frames6, frames):
        reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert np.abs(frame.image.astype(int) - reference.astype(int)).max() <= 2
        assert psnr(original, frame.image) > 30


def write_grey16(path, values, **attributes):
    dataset = dicom_dataset(ExplicitVRLittleEndian, MULTIFRAME_GREY_WORD)
    dataset.set_pixel_data(values, attributes.pop("photometric", "MONOCHROME2"), 12)
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    dataset.save_as(path, enforce_file_format=True)


@pytest.fixture()
def grey16():
    ramp = np.linspace(0, 4095, 32 * 32).reshape(32, 32)
    return np.stack([ramp, ramp / 2]).astype(np.uint16)


def test_grey16_uses_file_window(tmp_path, grey16):
    path = tmp_path / "grey.dcm"
    write_grey16(path, grey16, WindowCenter=1024, WindowWidth=1024)
    with open_source(path) as source:
        image = source.read(0).image
    assert image.shape == (32, 32, 3)
    assert image[grey16[0] <= 512].max() == 0
    assert image[grey16[0] >= 1536].min() == 255


def test_grey16_user_window_overrides_file(tmp_path, grey16):
    path = tmp_path / "grey.dcm"
    write_grey16(path, grey16, WindowCenter=1024, WindowWidth=1024)
    with open_source(path, window=(0, 4095)) as source:
        image = source.read(0).image[..., 0]
    expected = np.rint(grey16[0].astype(np.float64) * 255 / 4095)
    assert np.abs(image.astype(int) - expected.astype(int)).max() <= 1


def test_grey16_without_window_uses_frame_range(tmp_path, grey16):
    path = tmp_path / "grey.dcm"
    write_grey16(path, grey16)
    with open_source(path) as source:
        frames = list(source)
    for frame in frames:
        assert frame.image.min() == 0
        assert frame.image.max() == 255


def test_monochrome1_is_inverted(tmp_path, grey16):
    path = tmp_path / "grey.dcm"
    write_grey16(path, grey16, photometric="MONOCHROME1")
    with open_source(path) as source:
        image = source.read(0).image[..., 0]
    assert image[0, 0] == 255
    assert image[-1, -1] == 0


@pytest.mark.parametrize("codec, raw_format, transfer_syntax, fragments", [
    ("libx264", "h264", MPEG4HP41, 1),
    ("libx264", "h264", MPEG4HP41, 3),
    ("mpeg2video", "mpeg2video", MPEG2MPML, 2),
])
def test_encapsulated_video(tmp_path, frames6, codec, raw_format, transfer_syntax, fragments):
    stream = encode_raw_stream(frames6, codec, raw_format, {"b": "4M"})
    dataset = dicom_dataset(transfer_syntax, VideoEndoscopicImageStorage)
    set_encapsulated_video(dataset, stream, 6, (96, 128), fragments=fragments)
    dataset.FrameTime = 40
    dataset.PixelSpacing = [0.05, 0.05]
    path = tmp_path / "video.dcm"
    dataset.save_as(path, enforce_file_format=True)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()

    with open_source(path, stride=2) as source:
        frames = list(source)
        info = source.info
        assert np.array_equal(source.read(4).image, frames[2].image)
    assert info.kind == "dicom"
    assert info.frame_count == 6
    assert info.size == (96, 128)
    assert info.spacing_mm == (0.05, 0.05)
    assert info.dicom["SOPInstanceUID"] == dataset.SOPInstanceUID
    assert [frame.index for frame in frames] == [0, 2, 4]
    assert [frame.timestamp_s for frame in frames] == pytest.approx([0.0, 0.08, 0.16])
    for frame in frames:
        assert not frame.missing
        assert psnr(frames6[frame.index], frame.image) > 28
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_encapsulated_video_without_timing(tmp_path, frames6):
    stream = encode_raw_stream(frames6, "libx264", "h264", {"b": "4M"})
    dataset = dicom_dataset(MPEG4HP41, VideoEndoscopicImageStorage)
    set_encapsulated_video(dataset, stream, 6, (96, 128))
    path = tmp_path / "video.dcm"
    dataset.save_as(path, enforce_file_format=True)
    with open_source(path) as source:
        frames = list(source)
        assert source.info.fps is None
        assert source.info.spacing_mm is None
    assert [frame.index for frame in frames] == list(range(6))
    assert all(frame.timestamp_s is None for frame in frames)


def test_truncated_pixel_data_gives_missing_frames(tmp_path, frames6, caplog):
    path = tmp_path / "truncated.dcm"
    write_native_rgb(path, frames6)
    frame_bytes = 96 * 128 * 3
    path.write_bytes(path.read_bytes()[:-(2 * frame_bytes + 100)])

    with caplog.at_level(logging.WARNING, logger="lmsfa.sources"):
        with open_source(path) as source:
            frames = list(source)
            read_back = source.read(5)
    assert [frame.index for frame in frames] == list(range(6))
    assert [frame.missing for frame in frames] == [False, False, False, True, True, True]
    assert read_back.missing
    assert np.array_equal(frames[2].image, frames6[2])
    assert "frame 3 of" in caplog.text


def test_dicom_without_image(tmp_path):
    dataset = dicom_dataset(ExplicitVRLittleEndian, "1.2.840.10008.5.1.4.1.1.88.11")
    path = tmp_path / "report.dcm"
    dataset.save_as(path, enforce_file_format=True)
    with pytest.raises(InputError, match="contains no image"):
        open_source(path)
