"""Class label maps per frame: PNG files and a NIfTI label series.

Both formats store one class per pixel. The label value of class ``k`` is ``k + 1``
(0 is background), from the position in the model's class table, so values never
change when a class has no instance. The sidecar ``classes.json`` lists every class with
its value and colour. Where instances overlap, the smaller instance keeps its pixels;
the pixels that changed owner are counted in the report, never dropped without notice.

PNG output folder::

    labels/<stem>.png    uint8 label maps (uint16 above 254 classes)
    images/<stem>.png    the frames (only when the input has frames)
    classes.json         the class table with label values

NIfTI output folder::

    labels/<stem>.nii.gz one 2-D label image per frame
    classes.json         the class table with label values and the frame of each file

The NIfTI images have the frame's pixel spacing (1 mm for uncalibrated frames) and ITK's
2-D image directions: column index along x and row index along y, in LPS.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from ..progress import Progress
from .atomic import atomic_folder
from .common import (
    CLASS_TABLE_FILE,
    ExportReport,
    class_label_map,
    frame_stem,
    non_empty,
    write_class_table,
    write_png,
)
from .inputs import ExportInput

logger = logging.getLogger(__name__)


def _overlap_notice(report: ExportReport) -> None:
    if report.reassigned_pixels:
        report.notice(
            f"{report.reassigned_pixels} pixels where instances of different classes overlap carry the smaller "
            "instance's class; use the COCO, .seg.nrrd or DICOM SEG export to keep every instance whole"
        )


def export_png(
    export_input: ExportInput,
    output: Path,
    first: Optional[int] = None,
    last: Optional[int] = None,
    overwrite: bool = False,
    progress: Optional[Progress] = None,
) -> ExportReport:
    """Write PNG class label maps of the frames ``first..last`` into the folder ``output``."""
    progress = progress or Progress()
    report = ExportReport("png", Path(output))
    total = export_input.count(first, last)
    class_count = len(export_input.class_table)
    with atomic_folder(output, overwrite) as folder:
        (folder / "labels").mkdir()
        for position, frame in enumerate(export_input.frames(first, last)):
            progress.check_cancelled()
            stem = frame_stem(export_input.name, frame.index)
            instances = non_empty(frame.instances, report, frame.index)
            labels, reassigned = class_label_map(instances, frame.shape, class_count)
            write_png(folder / "labels" / f"{stem}.png", labels)
            if frame.image is not None:
                write_png(folder / "images" / f"{stem}.png", frame.image, rgb=True)
            report.reassigned_pixels += reassigned
            report.mask_pixels += sum(int(np.count_nonzero(instance.mask)) for instance in instances)
            report.instances += len(instances)
            report.frame_indices.append(frame.index)
            progress.update(position + 1, total, f"PNG label maps: frame {frame.index}")
        write_class_table(folder / CLASS_TABLE_FILE, export_input.class_table, {"frame_indices": report.frame_indices})
    _overlap_notice(report)
    return report


def export_nifti(
    export_input: ExportInput,
    output: Path,
    first: Optional[int] = None,
    last: Optional[int] = None,
    overwrite: bool = False,
    progress: Optional[Progress] = None,
) -> ExportReport:
    """Write one 2-D NIfTI class label image per frame of ``first..last`` into the folder ``output``."""
    import SimpleITK as sitk

    progress = progress or Progress()
    report = ExportReport("nifti", Path(output))
    total = export_input.count(first, last)
    class_count = len(export_input.class_table)
    spacing = export_input.spacing_mm or (1.0, 1.0)
    files = {}
    with atomic_folder(output, overwrite) as folder:
        (folder / "labels").mkdir()
        for position, frame in enumerate(export_input.frames(first, last)):
            progress.check_cancelled()
            stem = frame_stem(export_input.name, frame.index)
            instances = non_empty(frame.instances, report, frame.index)
            labels, reassigned = class_label_map(instances, frame.shape, class_count)
            # SimpleITK takes a (rows, columns) array as an image with x along the columns.
            image = sitk.GetImageFromArray(labels)
            image.SetSpacing((float(spacing[0]), float(spacing[1])))
            sitk.WriteImage(image, str(folder / "labels" / f"{stem}.nii.gz"), useCompression=True)
            files[f"labels/{stem}.nii.gz"] = frame.index
            report.reassigned_pixels += reassigned
            report.mask_pixels += sum(int(np.count_nonzero(instance.mask)) for instance in instances)
            report.instances += len(instances)
            report.frame_indices.append(frame.index)
            progress.update(position + 1, total, f"NIfTI: frame {frame.index}")
        write_class_table(
            folder / CLASS_TABLE_FILE,
            export_input.class_table,
            {"files": files, "pixel_spacing_mm": list(export_input.spacing_mm) if export_input.spacing_mm else None},
        )
    _overlap_notice(report)
    return report
