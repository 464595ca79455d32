"""Tests of the exports, each read back by the project's own readers and by an independent reader.

The input is a real scene bundle: three vocalfolds frames (patient1/seq4, scaled to
128x128 to keep the tests fast) written by the scene writer, with instances from the
connected components of their label maps. Frame 0 gets an extra "pathology" instance of
two parts, one with a hole. Frame 1 gets a "surgical tool" square that overlaps a
larger instance of another class.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import av
import cv2
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import slicerio
import yaml
from pycocotools.coco import COCO

from lmsfa.classes import ClassTable
from lmsfa.cli import main as cli_main
from lmsfa.errors import Cancelled, InputError
from lmsfa.exports import FORMATS, ResultsInput, export, open_scene_bundle
from lmsfa.progress import Progress
from lmsfa.results import FrameResult, Instance
from lmsfa.scene import SceneContext, SequenceWriter, save_scene_mrb
from lmsfa.training.readers.coco import CocoDataset
from lmsfa.training.readers.labelmap import LabelMapDataset
from lmsfa.training.readers.segnrrd import SegNrrdDataset
from lmsfa.training.readers.yolo import YoloSegDataset

CLASSES = ClassTable.from_names(
    ["vocal folds", "other tissue", "glottal space", "pathology", "surgical tool", "intubation"]
)
SIZE = 128
MIN_REGION_PX = 16
PATHOLOGY, TOOL = 3, 4
STEMS = ["0001_l", "0002_l", "0003_l"]
# SNOMED CT type code per class, as the module's terminology file gives them.
TYPE_CODES = {0: "46105003", 1: "85756007", 2: "1307006", 3: "52988006", 4: "LMSFA-0002", 5: "26412008"}


def components(labels: np.ndarray) -> list[Instance]:
    """Split a label map (0 void, 1..6 classes) into 8-connected instances of at least MIN_REGION_PX pixels."""
    instances = []
    for value in range(1, 7):
        count, regions, stats, _ = cv2.connectedComponentsWithStats((labels == value).astype(np.uint8), connectivity=8)
        for region in range(1, count):
            if stats[region, cv2.CC_STAT_AREA] >= MIN_REGION_PX:
                instances.append(Instance(value - 1, CLASSES[value - 1].name, 0.9, np.zeros(4, np.float32), regions == region))
    return instances


def two_part_pathology() -> np.ndarray:
    """A 10x10 square with a 4x4 hole, and a separate 5x5 square."""
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[2:12, 2:12] = True
    mask[5:9, 5:9] = False
    mask[2:7, 20:25] = True
    return mask


def tool_over_largest(instances: list[Instance]) -> np.ndarray:
    largest = max((i for i in instances if i.class_id != TOOL), key=lambda instance: instance.mask.sum())
    rows, columns = np.nonzero(largest.mask)
    row, column = int(np.median(rows)), int(np.median(columns))
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[max(row - 8, 0) : row + 8, max(column - 8, 0) : column + 8] = True
    return mask


@pytest.fixture(scope="module")
def clip(vocalfolds: Path) -> list[tuple[int, np.ndarray, list[Instance]]]:
    """(frame index, RGB frame, instances) of three frames, with the extra instances added."""
    frames = []
    for index, stem in enumerate(STEMS):
        bgr = cv2.imread(str(vocalfolds / "images" / "patient1" / "seq4" / f"{stem}.jpg"), cv2.IMREAD_COLOR)
        labels = cv2.imread(str(vocalfolds / "labels" / "patient1" / "seq4" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        rgb = cv2.cvtColor(cv2.resize(bgr, (SIZE, SIZE), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        labels = cv2.resize(labels, (SIZE, SIZE), interpolation=cv2.INTER_NEAREST)
        instances = components(labels)
        if index == 0:
            instances.append(Instance(PATHOLOGY, "pathology", 0.7, np.zeros(4, np.float32), two_part_pathology()))
        if index == 1:
            instances.append(Instance(TOOL, "surgical tool", 0.8, np.zeros(4, np.float32), tool_over_largest(instances)))
        frames.append((index, rgb, instances))
    return frames


@pytest.fixture(scope="module")
def bundle(clip, tmp_path_factory) -> Path:
    context = SceneContext.headless()
    writer = SequenceWriter(context, "seq4", CLASSES, "test-model")
    for index, image, instances in clip:
        writer.add_frame(index, index / 5.0, image, instances)
    return save_scene_mrb(context, tmp_path_factory.mktemp("scene") / "seq4.mrb")


@pytest.fixture(scope="module")
def scene_input(bundle):
    return open_scene_bundle(bundle, class_table=CLASSES)


def mask_set(pairs) -> list[tuple[int, bytes]]:
    """Sort (class id, mask) pairs into comparable (class id, packed mask bytes) tuples."""
    return sorted((int(class_id), np.packbits(np.asarray(mask, dtype=bool)).tobytes()) for class_id, mask in pairs)


def expected_pairs(instances: list[Instance]) -> list[tuple[int, np.ndarray]]:
    return [(instance.class_id, instance.mask) for instance in instances]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def overlap_pixels_between_classes(instances: list[Instance]) -> int:
    """Pixels shared by two instances of different classes (the fixtures have no triple overlaps)."""
    total = 0
    for i, a in enumerate(instances):
        for b in instances[i + 1 :]:
            if a.class_id != b.class_id:
                total += int((a.mask & b.mask).sum())
    return total


def test_fixture_has_overlap_hole_and_parts(clip):
    assert overlap_pixels_between_classes(clip[1][2]) > 0
    pathology = clip[0][2][-1].mask.astype(np.uint8)
    _, hierarchy = cv2.findContours(pathology, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    outer = [entry for entry in hierarchy[0] if entry[3] < 0]
    assert len(outer) == 2
    assert len(hierarchy[0]) == 3


def test_coco_round_trip(scene_input, clip, tmp_path):
    output = tmp_path / "coco"
    report = export("coco", scene_input, output)
    assert report.frame_indices == [0, 1, 2]

    dataset = CocoDataset(output / "annotations.json")
    assert dataset.class_table.names == CLASSES.names
    for position, (_, image, instances) in enumerate(clip):
        sample = dataset[position]
        assert np.array_equal(sample.image, image)
        assert mask_set(zip(sample.classes, sample.masks)) == mask_set(expected_pairs(instances))

    coco = COCO(str(output / "annotations.json"))
    images = coco.loadImgs(coco.getImgIds())
    assert [image["frame_index"] for image in images] == [0, 1, 2]
    assert [image["timestamp_s"] for image in images] == pytest.approx([0.0, 0.2, 0.4])
    for image, (_, _, instances) in zip(images, clip):
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        read = [(a["category_id"] - 1, coco.annToMask(a)) for a in annotations]
        assert mask_set(read) == mask_set(expected_pairs(instances))
    assert [c["id"] for c in coco.loadCats(coco.getCatIds())] == [1, 2, 3, 4, 5, 6]


def test_yolo_round_trip_and_area_report(scene_input, clip, tmp_path):
    output = tmp_path / "yolo"
    report = export("yolo", scene_input, output)

    yaml_path = output / "data.yaml"
    data = yaml.safe_load(yaml_path.read_text())
    assert data["names"] == dict(enumerate(CLASSES.names))
    dataset = YoloSegDataset(yaml_path, data, "train")
    assert [Path(p).stem for p in dataset.image_paths] == ["seq4_000000", "seq4_000001", "seq4_000002"]
    added = lost = 0
    for position, (_, image, instances) in enumerate(clip):
        sample = dataset[position]
        assert np.array_equal(sample.image, image)
        assert sorted(sample.classes.tolist()) == sorted(instance.class_id for instance in instances)
        for instance in instances:
            same_class = [m for c, m in zip(sample.classes, sample.masks) if c == instance.class_id]
            best = max(same_class, key=lambda m: iou(m, instance.mask))
            added += int((best & ~instance.mask).sum())
            lost += int((instance.mask & ~best).sum())
            if instance.class_id == PATHOLOGY:
                # The hole is filled and the parts are joined: nothing lost, the hole added.
                assert not (instance.mask & ~best).any()
                assert best[5:9, 5:9].all()
            else:
                assert iou(best, instance.mask) >= 0.98
    assert report.polygon_pixels_added == added
    assert report.polygon_pixels_lost == lost
    assert any("holes" in notice for notice in report.notices)
    assert any("several parts" in notice for notice in report.notices)


def test_png_label_maps_and_overlap_count(scene_input, clip, tmp_path):
    output = tmp_path / "png"
    report = export("png", scene_input, output)

    table = json.loads((output / "classes.json").read_text())
    assert [entry["label_value"] for entry in table["classes"]] == [1, 2, 3, 4, 5, 6]
    assert table["frame_indices"] == [0, 1, 2]
    expected_reassigned = sum(overlap_pixels_between_classes(instances) for _, _, instances in clip)
    assert report.reassigned_pixels == expected_reassigned > 0
    assert any("overlap" in notice for notice in report.notices)

    for index, _, instances in clip:
        labels = cv2.imread(str(output / "labels" / f"seq4_{index:06d}.png"), cv2.IMREAD_UNCHANGED)
        assert labels.dtype == np.uint8
        for instance in instances:
            others = [o for o in instances if o is not instance and o.class_id != instance.class_id]
            covered = np.zeros_like(instance.mask)
            for other in others:
                if other.mask.sum() < instance.mask.sum():
                    covered |= other.mask
            assert (labels[instance.mask & ~covered] == instance.class_id + 1).all()

    dataset = LabelMapDataset(
        output / "images", output / "labels", {k + 1: name for k, name in enumerate(CLASSES.names)}, min_area=1
    )
    assert len(dataset) == 3
    first = dataset[0]
    pathology = first.masks[first.classes == PATHOLOGY]
    assert pathology.any(axis=0).sum() == two_part_pathology().sum()


def test_label_values_stable_without_a_class(clip, tmp_path):
    # Frames without any "glottal space" instance: the tool keeps label value 5.
    results = [
        FrameResult(index, None, (SIZE, SIZE), [i for i in instances if i.class_id != 2])
        for index, _, instances in clip
    ]
    output = tmp_path / "png"
    export("png", ResultsInput(results, CLASSES, name="seq4"), output)
    labels = cv2.imread(str(output / "labels" / "seq4_000001.png"), cv2.IMREAD_UNCHANGED)
    tool = clip[1][2][-1].mask
    assert (labels[tool] == TOOL + 1).all()
    assert not (labels == 3).any()
    assert not (output / "images").exists()


def test_label_values_stable_after_deleting_segments(clip, tmp_path, caplog):
    from lmsfa.exports import SceneInput

    context = SceneContext.headless()
    writer = SequenceWriter(context, "seq4", CLASSES, "test-model")
    for index, image, instances in clip:
        writer.add_frame(index, index / 5.0, image, instances)
    sequence = writer.segmentation_sequence_node
    for item in range(sequence.GetNumberOfDataNodes()):
        segmentation = sequence.GetNthDataNode(item).GetSegmentation()
        for segment_id in list(segmentation.GetSegmentIDs()):
            if segment_id.startswith("vocal_folds_"):
                segmentation.RemoveSegment(segment_id)

    # The writer stores the model's class table on the sequence, so every class keeps its
    # label value although no "vocal folds" segment is left.
    export("png", SceneInput(sequence, writer.frame_sequence_node), tmp_path / "stored")
    table = json.loads((tmp_path / "stored" / "classes.json").read_text())
    assert [entry["name"] for entry in table["classes"]] == CLASSES.names
    assert [entry["label_value"] for entry in table["classes"]] == [1, 2, 3, 4, 5, 6]
    labels = cv2.imread(str(tmp_path / "stored" / "labels" / "seq4_000001.png"), cv2.IMREAD_UNCHANGED)
    assert (labels[clip[1][2][-1].mask] == TOOL + 1).all()
    assert not (labels == 1).any()

    # Without the stored table the classes come from the segments' tags, which name the
    # classes up to the highest class id present ("intubation" never occurs).
    sequence.RemoveAttribute("LMSFA.ClassTable")
    export("png", SceneInput(sequence, writer.frame_sequence_node), tmp_path / "png")
    table = json.loads((tmp_path / "png" / "classes.json").read_text())
    assert [entry["name"] for entry in table["classes"]] == ["class 0"] + CLASSES.names[1:5]
    assert [entry["label_value"] for entry in table["classes"]] == [1, 2, 3, 4, 5]
    assert "classes [0] have no segment" in caplog.text
    labels = cv2.imread(str(tmp_path / "png" / "labels" / "seq4_000001.png"), cv2.IMREAD_UNCHANGED)
    assert (labels[clip[1][2][-1].mask] == TOOL + 1).all()


def test_seg_nrrd_round_trip(scene_input, clip, tmp_path):
    output = tmp_path / "nrrd"
    export("nrrd", scene_input, output)
    paths = sorted((output / "segmentations").glob("*.seg.nrrd"))
    assert [p.name for p in paths] == [f"seq4_{k:06d}.seg.nrrd" for k in range(3)]

    dataset = SegNrrdDataset(paths, class_names=CLASSES.names)
    for position, (_, image, instances) in enumerate(clip):
        sample = dataset[position]
        assert np.array_equal(sample.image, image)
        assert mask_set(zip(sample.classes, sample.masks)) == mask_set(expected_pairs(instances))

    segmentation = slicerio.read_segmentation(str(paths[1]))
    assert max(segment["layer"] for segment in segmentation["segments"]) >= 1
    assert {segment["tags"]["LMSFA.ClassName"] for segment in segmentation["segments"]} >= {"surgical tool"}


def test_seg_nrrd_from_results(clip, tmp_path):
    untracked = [[dataclasses.replace(i, track_id=None) for i in instances] for _, _, instances in clip]
    results = [FrameResult(index, None, (SIZE, SIZE), instances) for index, instances in enumerate(untracked)]
    frames = [image for _, image, _ in clip]
    output = tmp_path / "nrrd"
    export("nrrd", ResultsInput(results, CLASSES, frames=frames, name="seq4"), output, first=1, last=1)
    (path,) = sorted((output / "segmentations").glob("*.seg.nrrd"))
    sample = SegNrrdDataset([path], class_names=CLASSES.names)[0]
    assert mask_set(zip(sample.classes, sample.masks)) == mask_set(expected_pairs(clip[1][2]))
    # The export numbers untracked instances on its own copies and leaves the caller's alone.
    assert all(instance.track_id is None for instance in untracked[1])


def test_nifti_series(scene_input, clip, tmp_path):
    output = tmp_path / "nifti"
    export("nifti", scene_input, output, first=1, last=2)
    table = json.loads((output / "classes.json").read_text())
    assert table["files"] == {"labels/seq4_000001.nii.gz": 1, "labels/seq4_000002.nii.gz": 2}
    png_output = tmp_path / "png"
    export("png", scene_input, png_output, first=1, last=2)
    for index in (1, 2):
        image = sitk.ReadImage(str(output / "labels" / f"seq4_{index:06d}.nii.gz"))
        assert image.GetSize() == (SIZE, SIZE)
        assert image.GetSpacing() == (1.0, 1.0)
        labels = sitk.GetArrayFromImage(image)
        png = cv2.imread(str(png_output / "labels" / f"seq4_{index:06d}.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(labels, png)
        for instance in clip[index][2]:
            if instance.class_id != TOOL:
                continue
            assert (labels[instance.mask] == TOOL + 1).all()


def read_seg_masks_with_pydicom(path: Path) -> tuple[pydicom.Dataset, dict[int, np.ndarray]]:
    """Decode a single-frame-source BINARY SEG with pydicom alone: segment number -> (H, W) mask."""
    dataset = pydicom.dcmread(path)
    pixels = dataset.pixel_array
    if pixels.ndim == 2:
        pixels = pixels[None]
    masks = {}
    for frame, group in zip(pixels, dataset.PerFrameFunctionalGroupsSequence):
        number = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        masks[number] = frame.astype(bool)
    return dataset, masks


def test_dicom_seg_with_created_references(scene_input, clip, tmp_path):
    import highdicom as hd

    with pytest.raises(InputError, match="source"):
        export("dicom-seg", scene_input, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()

    output = tmp_path / "seg"
    report = export("dicom-seg", scene_input, output, create_references=True)
    assert report.frame_indices == [0, 1, 2]
    tracking_uids = {}
    for index, _, instances in clip:
        stem = f"seq4_{index:06d}"
        reference = pydicom.dcmread(output / "references" / f"{stem}.dcm")
        assert reference.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
        assert np.array_equal(reference.pixel_array, clip[index][1])

        dataset, masks = read_seg_masks_with_pydicom(output / "segmentation" / f"{stem}.dcm")
        assert dataset.SegmentationType == "BINARY"
        assert dataset.StudyInstanceUID == reference.StudyInstanceUID
        referenced = dataset.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
        assert referenced == reference.SOPInstanceUID
        read = []
        for segment in dataset.SegmentSequence:
            class_id = CLASSES.names.index(segment.SegmentLabel.rsplit(" ", 1)[0])
            assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == TYPE_CODES[class_id]
            assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue
            assert segment.TrackingID == segment.SegmentLabel
            tracking_uids.setdefault(segment.TrackingID, set()).add(segment.TrackingUID)
            read.append((class_id, masks[int(segment.SegmentNumber)]))
        assert mask_set(read) == mask_set(expected_pairs(instances))

        seg = hd.seg.segread(output / "segmentation" / f"{stem}.dcm")
        numbers = [int(s.SegmentNumber) for s in dataset.SegmentSequence]
        pixels = seg.get_pixels_by_source_instance([reference.SOPInstanceUID], segment_numbers=numbers)
        for number in numbers:
            assert np.array_equal(pixels[0, :, :, number - 1].astype(bool), masks[number])
    # A track that appears in several frames keeps one Tracking UID.
    assert all(len(uids) == 1 for uids in tracking_uids.values())
    assert any("new study" in notice for notice in report.notices)


def test_dicom_seg_references_source_video(clip, tmp_path):
    from pydicom.uid import ExplicitVRLittleEndian, VideoEndoscopicImageStorage

    from lmsfa.sources import open_source
    from sources_fixtures import dicom_dataset

    source_path = tmp_path / "video.dcm"
    dataset = dicom_dataset(ExplicitVRLittleEndian, VideoEndoscopicImageStorage)
    dataset.set_pixel_data(np.stack([image for _, image, _ in clip]), "RGB", 8)
    dataset.save_as(source_path, enforce_file_format=True)

    empty = Instance(0, "vocal folds", 0.5, np.zeros(4, np.float32), np.zeros((SIZE, SIZE), bool), track_id=99)
    results = [FrameResult(index, None, (SIZE, SIZE), instances + [empty]) for index, _, instances in clip]
    with open_source(source_path, first=1) as source:
        frames = list(source)
        export_input = ResultsInput(results[1:], CLASSES, frames=frames, name="video", dicom=source.info.dicom)
        report = export("dicom-seg", export_input, tmp_path / "seg", source_dicom=source_path)
        kept = export("dicom-seg", export_input, tmp_path / "kept", source_dicom=source_path, empty_segments="keep")
        # Without the file, the identifiers that the frame source read are enough.
        export("dicom-seg", export_input, tmp_path / "identifiers")
    assert report.skipped_empty == 2
    assert kept.skipped_empty == 0
    assert any("empty" in notice for notice in report.notices)
    for index in (1, 2):
        seg = pydicom.dcmread(tmp_path / "seg" / "segmentation" / f"video_{index:06d}.dcm")
        reference = pydicom.dcmread(tmp_path / "seg" / "references" / f"video_{index:06d}.dcm")
        for item in (seg, reference):
            assert item.PatientID == dataset.PatientID
            assert item.StudyInstanceUID == dataset.StudyInstanceUID
        video_items = [i for i in seg.SourceImageSequence if i.ReferencedSOPInstanceUID == dataset.SOPInstanceUID]
        assert [int(i.ReferencedFrameNumber) for i in video_items] == [index + 1]
        assert int(reference.SourceImageSequence[0].ReferencedFrameNumber) == index + 1
        assert len(seg.SegmentSequence) == len(clip[index][2])
        with_empty = pydicom.dcmread(tmp_path / "kept" / "segmentation" / f"video_{index:06d}.dcm")
        assert len(with_empty.SegmentSequence) == len(clip[index][2]) + 1
        from_identifiers = pydicom.dcmread(tmp_path / "identifiers" / "segmentation" / f"video_{index:06d}.dcm")
        assert from_identifiers.StudyInstanceUID == dataset.StudyInstanceUID
        video_items = [
            i for i in from_identifiers.SourceImageSequence if i.ReferencedSOPInstanceUID == dataset.SOPInstanceUID
        ]
        assert [int(i.ReferencedFrameNumber) for i in video_items] == [index + 1]


def test_overlay_video(scene_input, clip, tmp_path):
    output = tmp_path / "overlay.mp4"
    report = export("overlay", scene_input, output, first=1)
    assert report.frame_indices == [1, 2]
    with av.open(str(output)) as container:
        stream = container.streams.video[0]
        assert float(stream.average_rate) == pytest.approx(5.0)
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    assert len(decoded) == 2
    assert decoded[0].shape == (SIZE, SIZE, 3)
    # Inside the tool mask the colour moves toward the tool's class colour.
    tool = clip[1][2][-1].mask
    inner = cv2.erode(tool.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    color = np.array(CLASSES[TOOL].color, dtype=np.float64)
    before = np.abs(clip[1][1][inner].astype(np.float64) - color).mean()
    after = np.abs(decoded[0][inner].astype(np.float64) - color).mean()
    assert after < before * 0.75


def test_contact_sheet_has_legend(scene_input, tmp_path):
    output = tmp_path / "sheet.png"
    report = export("contact-sheet", scene_input, output, max_tiles=2, columns=2)
    assert report.frames == 3
    assert report.drawn_frames == 2
    assert "on 2 of 3 frames" in report.summary()
    sheet = cv2.cvtColor(cv2.imread(str(output), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert sheet.shape[1] >= 2 * 256
    strip = sheet[4 + 256 + 4 :]
    for class_id in (0, PATHOLOGY, TOOL):
        assert (strip == CLASSES[class_id].color).all(axis=2).sum() > 20


def test_existing_output_kept_without_overwrite(scene_input, tmp_path):
    output = tmp_path / "coco"
    output.mkdir()
    (output / "notes.txt").write_text("user data")
    with pytest.raises(InputError, match="already exists"):
        export("coco", scene_input, output)
    assert (output / "notes.txt").read_text() == "user data"
    video = tmp_path / "overlay.mp4"
    video.write_bytes(b"user video")
    with pytest.raises(InputError, match="already exists"):
        export("overlay", scene_input, video)
    assert video.read_bytes() == b"user video"

    fresh = tmp_path / "coco-export"
    export("coco", scene_input, fresh)
    export("coco", scene_input, fresh, overwrite=True)
    assert sorted(p.name for p in fresh.iterdir()) == [".lmsfa-export", "annotations.json", "images"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco", "coco-export", "overlay.mp4"]


def test_cancel_leaves_no_output(scene_input, tmp_path):
    progress = Progress(lambda done, total, message: progress.cancel())
    with pytest.raises(Cancelled):
        export("png", scene_input, tmp_path / "png", progress=progress)
    assert list(tmp_path.iterdir()) == []


def test_frame_range_checks(scene_input, tmp_path):
    report = export("coco", scene_input, tmp_path / "one", first=2, last=2)
    data = json.loads((tmp_path / "one" / "annotations.json").read_text())
    assert [image["frame_index"] for image in data["images"]] == [2]
    assert report.frame_indices == [2]
    with pytest.raises(InputError, match="before first"):
        export("coco", scene_input, tmp_path / "swapped", first=2, last=1)
    with pytest.raises(InputError, match="frames are 0..2"):
        export("coco", scene_input, tmp_path / "outside", first=5)
    with pytest.raises(InputError, match="unknown export format"):
        export("tiff", scene_input, tmp_path / "tiff")
    with pytest.raises(InputError, match="does not take"):
        export("coco", scene_input, tmp_path / "option", fps=3)
    results = [FrameResult(0, None, (SIZE, SIZE), [])]
    with pytest.raises(InputError, match="nothing to export"):
        export("png", ResultsInput(results, CLASSES), tmp_path / "empty", first=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one"]


def test_formats_match_cli_choices():
    from lmsfa.commands.export import FORMAT_NAMES

    assert sorted(FORMAT_NAMES) == sorted(FORMATS)


def test_cli_export(bundle, tmp_path, capsys):
    output = tmp_path / "labels"
    assert cli_main(["export", str(bundle), "--format", "png", "-o", str(output), "--first", "1"]) == 0
    assert "2 frames" in capsys.readouterr().out
    assert sorted(p.name for p in (output / "labels").iterdir()) == ["seq4_000001.png", "seq4_000002.png"]
    assert cli_main(["export", str(bundle), "--format", "png", "-o", str(output)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert cli_main(["export", str(bundle), "--format", "dicom-seg", "-o", str(tmp_path / "seg")]) == 1
    assert "--create-references" in capsys.readouterr().err


def test_overwrite_keeps_user_folder(scene_input, tmp_path):
    user_folder = tmp_path / "mydocs"
    user_folder.mkdir()
    (user_folder / "thesis.txt").write_text("three years of work")
    with pytest.raises(InputError, match="no lmsfa export wrote"):
        export("png", scene_input, user_folder, overwrite=True)
    assert (user_folder / "thesis.txt").read_text() == "three years of work"

    user_file = tmp_path / "notes"
    user_file.write_text("keep me")
    with pytest.raises(InputError, match="is a file"):
        export("coco", scene_input, user_file, overwrite=True)
    assert user_file.read_text() == "keep me"


def test_overwrite_replaces_earlier_export(scene_input, tmp_path):
    output = tmp_path / "png"
    export("png", scene_input, output)
    (output / "stale.txt").write_text("from the earlier run")
    export("png", scene_input, output, overwrite=True)
    assert not (output / "stale.txt").exists()
    assert (output / "classes.json").is_file()
