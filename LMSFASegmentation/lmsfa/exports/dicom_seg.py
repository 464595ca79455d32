"""DICOM Segmentation (SEG) objects written with highdicom, one per exported frame.

Output folder::

    segmentation/<stem>.dcm   one BINARY SEG per frame, all in one new series
    references/<stem>.dcm     one Secondary Capture image per frame: the frame's pixels

Every SEG references the Secondary Capture image of its frame, whose pixels match the
mask grid. highdicom 0.28 builds a SEG over several frames only when the source
images have a Frame of Reference, which video and secondary capture images lack, so
each frame gets its own SEG and its own Secondary Capture reference.

When the frames came from a DICOM file (``source_dicom``, or the source identifiers
of a :class:`~lmsfa.exports.ResultsInput`), the references and the SEGs
join that file's patient and study. Each Secondary Capture image and each SEG then also
reference the source instance and frame number. Without a DICOM source the references
are created only on request (``create_references=True``), in a new study without
patient identity.

Each instance is one segment, labelled "<class> <track id>", with the class's SNOMED CT
category and type from the module's terminology file and the track in Tracking ID and
Tracking UID (one UID per track across all frames). Instances with empty masks (for
example erased in Segment Editor) are skipped with a notice, or kept as empty segments.
A frame without any instance gets no SEG, with a notice.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from ..classes import ClassInfo
from ..errors import InputError
from ..progress import Progress
from .atomic import atomic_folder
from .common import ExportReport, frame_stem
from .inputs import ExportInput

logger = logging.getLogger(__name__)

MANUFACTURER = "LMSF-A Segmentation"
EMPTY_SEGMENT_CHOICES = ("skip", "keep")
# SNOMED CT "Physical object": the category and type of a class that the terminology lacks.
FALLBACK_CODE = ("260787004", "SCT", "Physical object")


def _coded_concepts(class_table, report: ExportReport) -> list[tuple]:
    """Return ``(category, type)`` highdicom concepts per class, from the class codes or the terminology file."""
    import highdicom as hd

    from ..scene.context import TERMINOLOGY_FILE
    from ..scene.terminology import TerminologyTable

    table = TerminologyTable.from_file(TERMINOLOGY_FILE)
    concepts = []
    for info in class_table.classes:
        term = table.find(info)
        if term is None:
            report.notice(
                f"class {info.name!r} has no SNOMED CT code in the terminology file, so its segments are coded "
                f"as {FALLBACK_CODE[2]!r}; add the class to the module's .term.json"
            )
            fallback = hd.sr.CodedConcept(*FALLBACK_CODE)
            concepts.append((fallback, fallback))
            continue
        concepts.append((
            hd.sr.CodedConcept(term.category.code_value, term.category.coding_scheme, term.category.code_meaning),
            hd.sr.CodedConcept(term.type.code_value, term.type.coding_scheme, term.type.code_meaning),
        ))
    return concepts


def _read_source(path: Path):
    import pydicom
    import pydicom.errors

    path = Path(path)
    if not path.is_file():
        raise InputError(f"source DICOM file not found: {path}")
    try:
        # Pixel data is not needed: the SEG only references the source.
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (pydicom.errors.InvalidDicomError, OSError, ValueError) as error:
        raise InputError(f"cannot read the source DICOM file {path}: {error}") from error


def _source_from_identifiers(identifiers: Optional[dict]):
    """Build a header-only dataset from ``SourceInfo.dicom``, or return ``None`` when it names no instance."""
    import pydicom

    if not identifiers or not identifiers.get("SOPInstanceUID") or not identifiers.get("SOPClassUID"):
        return None
    dataset = pydicom.Dataset()
    for keyword, value in identifiers.items():
        if value is not None:
            setattr(dataset, keyword, value)
    return dataset


def _reference_image(frame, source, study_uid: str, series_uid: str, number: int):
    """Build the Secondary Capture image of one frame, derived from ``source`` frame ``frame.index`` when given."""
    import highdicom as hd
    import pydicom
    from pydicom.uid import generate_uid

    identity = {}
    if source is not None:
        identity = {
            "patient_id": source.get("PatientID"),
            "patient_name": source.get("PatientName"),
            "patient_birth_date": source.get("PatientBirthDate") or None,
            "patient_sex": source.get("PatientSex") or None,
            "study_id": source.get("StudyID"),
            "accession_number": source.get("AccessionNumber"),
            "study_date": source.get("StudyDate") or None,
            "study_time": source.get("StudyTime") or None,
            "referring_physician_name": source.get("ReferringPhysicianName"),
        }
    image = hd.sc.SCImage(
        pixel_array=frame.image,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        # NOTE: endoscopic frames have no patient orientation. "L" and "F" (rows to the
        # patient's left, columns to the feet) are placeholders, because highdicom
        # requires an orientation for the PATIENT coordinate system.
        patient_orientation=("L", "F"),
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        sop_instance_uid=generate_uid(),
        series_number=901,
        instance_number=number,
        manufacturer=MANUFACTURER,
        **identity,
    )
    image.ImageComments = f"frame {frame.index}"
    if source is not None:
        item = pydicom.Dataset()
        item.ReferencedSOPClassUID = source.SOPClassUID
        item.ReferencedSOPInstanceUID = source.SOPInstanceUID
        item.ReferencedFrameNumber = frame.index + 1
        image.SourceImageSequence = [item]
    return image


def export_dicom_seg(
    export_input: ExportInput,
    output: Path,
    first: Optional[int] = None,
    last: Optional[int] = None,
    overwrite: bool = False,
    progress: Optional[Progress] = None,
    source_dicom: Optional[Path] = None,
    create_references: bool = False,
    empty_segments: str = "skip",
    content_creator: Optional[str] = None,
) -> ExportReport:
    """Write DICOM SEG objects of the frames ``first..last`` into the folder ``output``.

    Args:
        source_dicom: the DICOM file (video or multi-frame image) the frames came from.
            Frame ``k`` of the export is frame number ``k + 1`` of that file. Without it,
            the identifiers of ``export_input.dicom`` (``SourceInfo.dicom``) are used.
        create_references: create Secondary Capture references in a new study when there
            is no ``source_dicom``.
        empty_segments: ``"skip"`` leaves out instances with empty masks, ``"keep"``
            writes them as segments without pixels.
        content_creator: the person who corrected the masks, as a DICOM person name.

    Raises:
        InputError: no source and no request to create references, an unreadable source,
            a source of another frame size, or an input without frames.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    from .. import __version__

    if empty_segments not in EMPTY_SEGMENT_CHOICES:
        raise InputError(f"invalid empty_segments {empty_segments!r}: use one of {EMPTY_SEGMENT_CHOICES}")
    if source_dicom is not None:
        source = _read_source(source_dicom)
    else:
        source = _source_from_identifiers(export_input.dicom)
    if source is None and not create_references:
        raise InputError(
            "a DICOM SEG must reference source images: give the DICOM file the frames came from "
            "(--source-dicom), or create Secondary Capture references (--create-references)"
        )
    if not export_input.has_images:
        raise InputError("the DICOM SEG export stores each frame as a Secondary Capture reference, so it needs the frames")

    progress = progress or Progress()
    report = ExportReport("dicom-seg", Path(output))
    total = export_input.count(first, last)
    concepts = _coded_concepts(export_input.class_table, report)
    study_uid = source.get("StudyInstanceUID") if source is not None else None
    study_uid = study_uid or generate_uid()
    reference_series_uid, seg_series_uid = generate_uid(), generate_uid()
    algorithm = hd.AlgorithmIdentificationSequence(
        name="LMSF-A", version=__version__, family=codes.cid7162.ArtificialIntelligence
    )
    tracking_uids: dict[tuple[int, object], str] = {}
    frames_without_segments = []

    with atomic_folder(output, overwrite) as folder:
        (folder / "segmentation").mkdir()
        (folder / "references").mkdir()
        for position, frame in enumerate(export_input.frames(first, last)):
            progress.check_cancelled()
            if source is not None and "Rows" in source and (int(source.Rows), int(source.Columns)) != tuple(frame.shape):
                raise InputError(
                    f"source DICOM {source.SOPInstanceUID} is {source.Columns}x{source.Rows}, but frame {frame.index} is "
                    f"{frame.shape[1]}x{frame.shape[0]}: give the DICOM file the frames came from"
                )
            instances = frame.instances
            empty = [instance for instance in instances if not np.any(instance.mask)]
            if empty and empty_segments == "skip":
                report.skipped_empty += len(empty)
                instances = [instance for instance in instances if np.any(instance.mask)]
            report.frame_indices.append(frame.index)
            if not instances:
                frames_without_segments.append(frame.index)
                continue
            stem = frame_stem(export_input.name, frame.index)
            reference = _reference_image(frame, source, study_uid, reference_series_uid, position + 1)
            reference.save_as(folder / "references" / f"{stem}.dcm", enforce_file_format=True)

            descriptions, masks = [], []
            for number, instance in enumerate(instances, start=1):
                info: ClassInfo = export_input.class_table[instance.class_id]
                key = (instance.class_id, instance.track_id if instance.track_id is not None else f"{frame.index}-{number}")
                tracking_uid = tracking_uids.setdefault(key, generate_uid())
                label = f"{info.name} {instance.track_id}" if instance.track_id is not None else info.name
                category, type_ = concepts[instance.class_id]
                descriptions.append(hd.seg.SegmentDescription(
                    segment_number=number,
                    segment_label=label,
                    segmented_property_category=category,
                    segmented_property_type=type_,
                    algorithm_type="SEMIAUTOMATIC" if frame.segmentation_node is not None else "AUTOMATIC",
                    algorithm_identification=algorithm,
                    tracking_id=label,
                    tracking_uid=tracking_uid,
                ))
                masks.append(np.asarray(instance.mask, dtype=bool))
            pixel_array = np.stack(masks, axis=-1)[None]
            segmentation = hd.seg.Segmentation(
                source_images=[reference],
                pixel_array=pixel_array,
                segmentation_type="BINARY",
                segment_descriptions=descriptions,
                series_instance_uid=seg_series_uid,
                series_number=902,
                sop_instance_uid=generate_uid(),
                instance_number=position + 1,
                manufacturer=MANUFACTURER,
                manufacturer_model_name="LMSF-A",
                software_versions=__version__,
                device_serial_number="none",
                content_description=f"frame {frame.index} of {export_input.name}"[:64],
                content_label="LMSFA",
                content_creator_name=content_creator,
                further_source_images=[source] if source is not None else None,
                omit_empty_frames=empty_segments == "skip",
            )
            if source is not None:
                for item in segmentation.SourceImageSequence:
                    if item.ReferencedSOPInstanceUID == source.SOPInstanceUID:
                        item.ReferencedFrameNumber = frame.index + 1
            segmentation.save_as(folder / "segmentation" / f"{stem}.dcm")
            report.instances += len(instances)
            report.mask_pixels += int(sum(mask.sum() for mask in masks))
            progress.update(position + 1, total, f"DICOM SEG: frame {frame.index}")
    if report.skipped_empty:
        report.notice(f"left out {report.skipped_empty} segments with empty masks (keep them with empty_segments='keep')")
    if frames_without_segments:
        report.notice(f"frames {frames_without_segments} have no segment, so they have no DICOM SEG")
    if source is None:
        report.notice("the Secondary Capture references are in a new study without patient identity")
    return report
