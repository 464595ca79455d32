"""Frame geometry in MRML: pixel spacing, IJK-to-RAS directions and the node attributes that record them.

A video frame is an image in LPS-like pixel axes: column i to the right, row j down,
pixel (0, 0) at the top-left. Its IJK-to-RAS matrix is ``diag(-sx, -sy, 1)`` with the
origin at (0, 0, 0), which is identity directions in LPS (as ITK gives a 2-D image). With
identity directions in RAS instead, Slicer's Red view would show the frame rotated by
180 degrees.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from ..errors import InputError

IJK_TO_RAS_DIRECTIONS = (-1.0, -1.0, 1.0)
"""Signs of the IJK-to-RAS diagonal: frames, label maps and segmentation geometry all use them."""

SPACING_ATTRIBUTE = "LMSFA.PixelSpacingMm"
"""Node attribute with the pixel spacing: "uncalibrated", or "<column mm> <row mm>"."""

UNCALIBRATED = "uncalibrated"


def check_spacing(spacing_mm: Optional[Sequence[float]]) -> Optional[tuple[float, float]]:
    """Return ``(column spacing, row spacing)`` in millimetres, or ``None`` for uncalibrated video.

    Raises:
        InputError: the spacing is not two positive finite numbers.
    """
    if spacing_mm is None:
        return None
    try:
        values = tuple(float(v) for v in spacing_mm)
    except TypeError as error:
        raise InputError(f"spacing_mm must be two numbers (column, row) in mm, got {spacing_mm!r}") from error
    if len(values) != 2 or not all(v > 0 and v < float("inf") for v in values):
        raise InputError(f"spacing_mm must be two positive numbers (column, row) in mm, got {spacing_mm!r}")
    return values


def spacing_attribute_value(spacing_mm: Optional[tuple[float, float]]) -> str:
    """Return the value of :data:`SPACING_ATTRIBUTE` for a spacing from :func:`check_spacing`."""
    if spacing_mm is None:
        return UNCALIBRATED
    return f"{spacing_mm[0]:g} {spacing_mm[1]:g}"


def ijk_to_ras_matrix(spacing_mm: Optional[tuple[float, float]]) -> Any:
    """Return the ``vtkMatrix4x4`` that maps frame pixels (i, j, 0) to RAS millimetres.

    Uncalibrated frames get 1 mm per pixel, because MRML needs some spacing. The
    :data:`SPACING_ATTRIBUTE` attribute records that the value is not a measurement.
    """
    import vtk

    sx, sy = spacing_mm if spacing_mm is not None else (1.0, 1.0)
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 0, IJK_TO_RAS_DIRECTIONS[0] * sx)
    matrix.SetElement(1, 1, IJK_TO_RAS_DIRECTIONS[1] * sy)
    matrix.SetElement(2, 2, IJK_TO_RAS_DIRECTIONS[2])
    return matrix
