"""Letterbox preprocessing: fit a frame into the network input and map results back.

Coordinate convention (the same as :mod:`lmsfa.results` and OpenCV's ``resize``): continuous
pixel coordinates, x to the right and y down, with the centre of pixel ``(i, j)`` at
``(j + 0.5, i + 0.5)``. A frame point ``x`` maps to the network input at
``x * scale_x + pad_left``. ``scale_x`` is the exact ratio ``resized_width / frame_width``
(the resized image has a whole number of pixels, so ``scale_x`` and ``scale_y`` can differ
slightly). When the total padding is odd, the extra pixel goes to the right or bottom side.
The inverse mappings use the recorded ``pad_left`` and ``pad_top``, so they stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from ..errors import InputError

PAD_VALUE = 114
"""Grey level (0..255) of the padding, the value YOLOv8-family models are trained with."""


@dataclass(frozen=True)
class Letterbox:
    """Geometry of one frame-to-input letterbox transform (no image data).

    ``frame_hw`` is the frame size, ``input_hw`` the network input size (after the
    rectangular mode has shrunk it), ``resized_hw`` the size of the scaled frame inside the
    input, and ``pad_top`` / ``pad_left`` the whole-pixel offsets of the scaled frame.
    All sizes are (height, width) in pixels.
    """

    frame_hw: tuple[int, int]
    input_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    pad_top: int
    pad_left: int

    @classmethod
    def fit(
        cls,
        frame_hw: Sequence[int],
        input_hw: Sequence[int] = (640, 640),
        rectangular: bool = False,
        stride: int = 32,
    ) -> "Letterbox":
        """Fit a frame of ``frame_hw`` into ``input_hw`` keeping its aspect ratio.

        The frame is scaled by ``min(H / h, W / w)`` (up or down) and centred. With
        ``rectangular=True`` each side of the input shrinks to the smallest multiple of
        ``stride`` that contains the scaled frame, for example 1920x1080 into 640x640 gives a
        640x384 input instead of 640x640, so less time goes into padding.
        """
        frame_h, frame_w = _check_size(frame_hw, "frame size")
        input_h, input_w = _check_size(input_hw, "input size")
        if rectangular and (input_h % stride or input_w % stride):
            raise InputError(
                f"input size {input_h}x{input_w} (HxW) is not a multiple of the stride {stride}; "
                "use a multiple of the stride or rectangular=False"
            )

        scale = min(input_h / frame_h, input_w / frame_w)
        resized_h = min(input_h, max(1, round(frame_h * scale)))
        resized_w = min(input_w, max(1, round(frame_w * scale)))

        pad_h = input_h - resized_h
        pad_w = input_w - resized_w
        if rectangular:
            pad_h %= stride
            pad_w %= stride
        pad_top = pad_h // 2
        pad_left = pad_w // 2
        return cls(
            frame_hw=(frame_h, frame_w),
            input_hw=(resized_h + pad_h, resized_w + pad_w),
            resized_hw=(resized_h, resized_w),
            pad_top=pad_top,
            pad_left=pad_left,
        )

    @property
    def scale_x(self) -> float:
        """Input pixels per frame pixel along x."""
        return self.resized_hw[1] / self.frame_hw[1]

    @property
    def scale_y(self) -> float:
        """Input pixels per frame pixel along y."""
        return self.resized_hw[0] / self.frame_hw[0]

    def apply(self, image: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Letterbox an RGB frame into a network input.

        ``image`` is a (H, W, 3) uint8 RGB frame of size ``frame_hw``. Returns a float32
        (3, H_in, W_in) array with values in 0..1, channels RGB, written into ``out`` when
        given (for example one slice of a preallocated batch). Shrinking averages pixel
        areas (``cv2.INTER_AREA``, no aliasing) and enlarging is bilinear; both follow
        OpenCV's pixel-centre convention, which the inverse mappings of this class assume.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(
                f"expected an (H, W, 3) uint8 RGB frame, got shape {image.shape} dtype {image.dtype}"
            )
        if tuple(image.shape[:2]) != self.frame_hw:
            raise InputError(
                f"frame size {image.shape[0]}x{image.shape[1]} does not match the letterbox "
                f"fitted for {self.frame_hw[0]}x{self.frame_hw[1]}; fit a new Letterbox for this frame"
            )

        input_h, input_w = self.input_hw
        resized_h, resized_w = self.resized_hw
        if (resized_h, resized_w) == self.frame_hw:
            resized = image
        else:
            shrinking = resized_h < self.frame_hw[0] or resized_w < self.frame_hw[1]
            interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
            resized = cv2.resize(image, (resized_w, resized_h), interpolation=interpolation)

        if out is None:
            out = np.empty((3, input_h, input_w), dtype=np.float32)
        elif out.shape != (3, input_h, input_w) or out.dtype != np.float32:
            raise InputError(f"out must be a float32 array of shape (3, {input_h}, {input_w}), got {out.shape} {out.dtype}")

        out[...] = PAD_VALUE / 255.0
        top, left = self.pad_top, self.pad_left
        region = out[:, top : top + resized_h, left : left + resized_w]
        np.multiply(resized.transpose(2, 0, 1), 1.0 / 255.0, out=region, casting="unsafe")
        return out

    def frame_to_input(self, points: np.ndarray) -> np.ndarray:
        """Map (..., 2) frame ``(x, y)`` points to network input pixels."""
        points = np.asarray(points, dtype=np.float64)
        scale = np.array([self.scale_x, self.scale_y])
        offset = np.array([self.pad_left, self.pad_top], dtype=np.float64)
        return points * scale + offset

    def input_to_frame(self, points: np.ndarray) -> np.ndarray:
        """Map (..., 2) network input ``(x, y)`` points to frame pixels (not clipped)."""
        points = np.asarray(points, dtype=np.float64)
        scale = np.array([self.scale_x, self.scale_y])
        offset = np.array([self.pad_left, self.pad_top], dtype=np.float64)
        return (points - offset) / scale

    def boxes_to_frame(self, boxes: np.ndarray) -> np.ndarray:
        """Map (N, 4) ``(x1, y1, x2, y2)`` input-pixel boxes to frame pixels, clipped to the frame."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        corners = self.input_to_frame(boxes.reshape(-1, 2, 2)).reshape(-1, 4)
        frame_h, frame_w = self.frame_hw
        np.clip(corners[:, 0::2], 0.0, frame_w, out=corners[:, 0::2])
        np.clip(corners[:, 1::2], 0.0, frame_h, out=corners[:, 1::2])
        return corners

    def frame_to_grid_matrix(self, grid_stride: float) -> np.ndarray:
        """Return the 2x3 affine map from frame pixel indices to grid pixel indices.

        A grid is an array that covers the network input at ``grid_stride`` input pixels
        per cell (4 for the prototype masks). Both sides use OpenCV's index convention
        (integer index = pixel centre), so the matrix can go straight to
        ``cv2.warpAffine(grid, M, size, flags=... | cv2.WARP_INVERSE_MAP)``.
        """
        sx = self.scale_x / grid_stride
        sy = self.scale_y / grid_stride
        tx = (0.5 * self.scale_x + self.pad_left) / grid_stride - 0.5
        ty = (0.5 * self.scale_y + self.pad_top) / grid_stride - 0.5
        return np.array([[sx, 0.0, tx], [0.0, sy, ty]], dtype=np.float64)


def letterbox(
    image: np.ndarray,
    input_hw: Sequence[int] = (640, 640),
    rectangular: bool = False,
    stride: int = 32,
) -> tuple[np.ndarray, Letterbox]:
    """Letterbox one (H, W, 3) uint8 RGB frame.

    Returns the float32 (3, H_in, W_in) input in 0..1 and its :class:`Letterbox` geometry.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3:
        raise InputError(f"expected an (H, W, 3) uint8 RGB frame, got {type(image).__name__} {getattr(image, 'shape', '')}")
    geometry = Letterbox.fit(image.shape[:2], input_hw, rectangular=rectangular, stride=stride)
    return geometry.apply(image), geometry


def _check_size(size: Sequence[int], what: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError) as error:
        raise InputError(f"{what} must be (height, width), got {size!r}") from error
    if height < 1 or width < 1:
        raise InputError(f"{what} must be positive (height, width), got {size!r}")
    return height, width
