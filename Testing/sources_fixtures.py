"""Builders for the frame-source test inputs, made from the real vocalfolds frames.

Each builder writes into a folder the test owns (``tmp_path``) and returns what it wrote,
so tests compare decoded frames with known pixels, timestamps and rotations.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Optional, Sequence

import av
import cv2
import numpy as np

SEQ4 = Path("images") / "patient1" / "seq4"


def vocalfolds_frames(vocalfolds: Path, count: int, size: tuple[int, int] = (96, 128)) -> list[np.ndarray]:
    """Return ``count`` consecutive seq4 frames as (H, W, 3) uint8 RGB resized to ``size`` (H, W)."""
    files = sorted((vocalfolds / SEQ4).glob("*.jpg"))[:count]
    frames = []
    for file in files:
        bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
        bgr = cv2.resize(bgr, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        frames.append(np.ascontiguousarray(bgr[:, :, ::-1]))
    return frames


def write_video(
    path: Path,
    frames: Sequence[np.ndarray],
    codec: str,
    *,
    pix_fmt: str = "yuv420p",
    pts: Optional[Sequence[int]] = None,
    time_base: Fraction = Fraction(1, 25),
    rate: int = 25,
    rotation_ccw: int = 0,
    options: Optional[dict] = None,
) -> None:
    """Encode RGB frames with PyAV.

    ``pts`` are in ``time_base`` units (default 0, 1, 2, ...); ``rate`` is the nominal
    frame rate written to the header. ``rotation_ccw`` sets the display matrix.
    """
    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        if rotation_ccw:
            stream.set_display_rotation(rotation_ccw)
        for position, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = position if pts is None else pts[position]
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def encode_raw_stream(frames: Sequence[np.ndarray], codec: str, raw_format: str,
                      options: Optional[dict] = None) -> bytes:
    """Encode RGB frames to a raw elementary stream (for example H.264 Annex B) in memory."""
    import io

    buffer = io.BytesIO()
    height, width = frames[0].shape[:2]
    with av.open(buffer, mode="w", format=raw_format) as container:
        stream = container.add_stream(codec, rate=25, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for position, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = position
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def psnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 images of one shape."""
    error = np.mean((reference.astype(np.float64) - decoded.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else 10 * np.log10(255.0 ** 2 / error)


def dicom_dataset(transfer_syntax: str, sop_class_uid: str):
    """Return a pydicom FileDataset with patient, study and series identifiers filled in."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    dataset = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID = sop_class_uid
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.PatientID = "LMSFA-TEST-01"
    dataset.PatientName = "Test^Patient"
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.StudyDate = "20240102"
    dataset.Modality = "ES"
    return dataset


def set_encapsulated_video(dataset, stream: bytes, frame_count: int, size: tuple[int, int],
                           fragments: int = 1) -> None:
    """Store a video elementary stream as encapsulated pixel data of ``dataset``."""
    from pydicom.encaps import encapsulate

    dataset.Rows, dataset.Columns = size
    dataset.SamplesPerPixel = 3
    dataset.PhotometricInterpretation = "YBR_PARTIAL_420"
    dataset.PlanarConfiguration = 0
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 8, 8, 7
    dataset.PixelRepresentation = 0
    dataset.NumberOfFrames = frame_count
    dataset.PixelData = encapsulate([stream], fragments_per_frame=fragments, has_bot=False)
    dataset["PixelData"].VR = "OB"
