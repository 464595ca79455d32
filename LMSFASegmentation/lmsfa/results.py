"""Per-frame inference results in original frame pixels.

Coordinates: x to the right, y down, pixel (0, 0) is the top-left pixel of the frame as
the frame source yields it (upright, after any container rotation). Boxes are
``(x1, y1, x2, y2)`` float pixels with pixel centres at integer + 0.5, i.e. a box that
covers exactly pixel (0, 0) is ``(0, 0, 1, 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class Instance:
    """One detected (or annotated) object instance.

    ``mask`` is a boolean (H, W) array at frame resolution. ``track_id`` is set by the
    tracker that keeps identities over frames (``None`` before tracking).
    """

    class_id: int
    class_name: str
    score: float
    box: np.ndarray
    mask: np.ndarray
    track_id: Optional[int] = None


@dataclass
class FrameResult:
    """The instances of one frame. ``index`` is the frame's index in its source."""

    index: int
    timestamp_s: Optional[float]
    frame_shape: tuple[int, int]
    instances: list[Instance] = field(default_factory=list)
