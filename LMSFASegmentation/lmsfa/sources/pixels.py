"""Pixel conversions shared by the sources: channel layout, bit depth and rotation."""

from __future__ import annotations

import logging
from typing import Optional

import cv2
import numpy as np

from ..errors import InputError

logger = logging.getLogger(__name__)

Window = tuple[float, float]

_ROTATE_CODES = {
    90: cv2.ROTATE_90_CLOCKWISE,
    180: cv2.ROTATE_180,
    270: cv2.ROTATE_90_COUNTERCLOCKWISE,
}


def validate_window(window) -> Optional[Window]:
    """Return ``window`` as a (low, high) float pair, or raise :class:`InputError`."""
    if window is None:
        return None
    try:
        low, high = (float(value) for value in window)
    except (TypeError, ValueError):
        raise InputError(
            f"invalid window {window!r}: give two numbers (low, high), the input values "
            "that map to black and white"
        ) from None
    if not (np.isfinite(low) and np.isfinite(high)) or low >= high:
        raise InputError(f"invalid window {window!r}: low must be a finite number below high")
    return low, high


def scale_to_uint8(image: np.ndarray, window: Optional[Window]) -> np.ndarray:
    """Map an image of more than 8 bits to uint8.

    With ``window=(low, high)`` values from low to high map linearly to 0..255 and values
    outside are clipped. Without a window the frame's own value range (min to max) maps to
    0..255, so 12-bit data stored in 16 bits keeps its contrast. A constant frame becomes 0.
    """
    if window is None:
        low, high = float(image.min()), float(image.max())
    else:
        low, high = window
    if high <= low:
        return np.zeros(image.shape, dtype=np.uint8)
    scaled = (image.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_rgb8(image: np.ndarray, channel_order: str, window: Optional[Window] = None) -> np.ndarray:
    """Convert a decoded image to (H, W, 3) uint8 RGB, C-contiguous.

    ``image`` is (H, W) or (H, W, 1) grey, (H, W, 3) colour or (H, W, 4) colour with
    alpha, in ``channel_order`` ``"BGR"`` (OpenCV) or ``"RGB"``. Grey is repeated to
    3 channels and alpha is dropped. uint8 passes through unchanged; other integer and
    float types go through :func:`scale_to_uint8` with ``window``.
    """
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise InputError(f"unsupported image shape {image.shape}: expected grey, RGB or RGBA")

    if image.dtype != np.uint8:
        image = scale_to_uint8(image, window)

    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if channel_order == "BGR":
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image)


def normalize_rotation(degrees: float) -> int:
    """Round a rotation in degrees to the nearest of 0, 90, 180 and 270 (clockwise)."""
    rounded = int(round(degrees / 90.0)) * 90 % 360
    if abs(((degrees - rounded) + 180) % 360 - 180) > 1:
        logger.warning("rotation of %.1f degrees is not a multiple of 90; rotating by %d instead",
                       degrees, rounded)
    return rounded


def rotate_clockwise(image: np.ndarray, degrees: int) -> np.ndarray:
    """Rotate an (H, W, C) image clockwise by 0, 90, 180 or 270 degrees."""
    if degrees == 0:
        return image
    return cv2.rotate(image, _ROTATE_CODES[degrees])
