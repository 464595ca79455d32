"""Tests of the training data set readers on the shared data and on small files built here."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from pycocotools import mask as mask_utils

from lmsfa.errors import InputError
from lmsfa.training.datasets import (
    CocoDataset,
    LabelMapDataset,
    SegNrrdDataset,
    YoloSegDataset,
    open_dataset,
    resolve_flip_map,
)

VOCALFOLDS_CLASSES = {1: "vocal folds", 2: "other tissue", 3: "glottal space", 4: "pathology", 5: "surgical tool", 6: "intubation"}


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def coco_file(tmp_path: Path, annotations: list[dict], images: list[dict] | None = None) -> Path:
    """A COCO file with one 8x10 (height x width) black image and two categories."""
    write_png(tmp_path / "images" / "a.png", np.zeros((8, 10, 3), np.uint8))
    write_png(tmp_path / "images" / "b.png", np.zeros((8, 10, 3), np.uint8))
    data = {
        "images": images or [{"id": 1, "file_name": "a.png", "height": 8, "width": 10}],
        "annotations": annotations,
        "categories": [{"id": 7, "name": "tool"}, {"id": 3, "name": "polyp"}],
    }
    return write_json(tmp_path / "instances.json", data)


def rle_of(mask: np.ndarray, compressed: bool = True) -> dict:
    if compressed:
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    # Uncompressed RLE: run lengths of 0s and 1s in column-major order, starting with 0s.
    flat = mask.astype(np.uint8).ravel(order="F")
    counts, value, run = [], 0, 0
    for pixel in flat:
        if pixel == value:
            run += 1
        else:
            counts.append(run)
            value, run = pixel, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


# --- COCO on the shared data ---------------------------------------------------------


def test_coco_vocalfolds_matches_annotations(vocalfolds):
    dataset = open_dataset(vocalfolds / "instances_val.json")
    assert isinstance(dataset, CocoDataset)
    assert len(dataset) == 52
    assert dataset.class_table.names == list(VOCALFOLDS_CLASSES.values())
    data = json.loads((vocalfolds / "instances_val.json").read_text())
    first_image = data["images"][0]
    annotations = [a for a in data["annotations"] if a["image_id"] == first_image["id"]]

    sample = dataset[0]
    assert sample.image.shape == (512, 512, 3)
    assert sample.image.dtype == np.uint8
    assert sample.masks.shape == (len(annotations), 512, 512)
    assert sample.masks.dtype == bool
    assert sample.classes.dtype == np.int64
    assert sample.boxes.dtype == np.float32
    assert sample.classes.tolist() == [a["category_id"] - 1 for a in annotations]
    assert [int(m.sum()) for m in sample.masks] == [a["area"] for a in annotations]
    expected_boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in annotations)]
    assert np.allclose(sample.boxes, expected_boxes)


def test_coco_teeth_overlap_kept(shared_data):
    dataset = open_dataset(shared_data / "ufba425_teeth" / "val.json", image_root=shared_data / "ufba425_teeth" / "images")
    assert len(dataset.class_table) == 32
    data = json.loads((shared_data / "ufba425_teeth" / "val.json").read_text())
    sample = dataset[0]
    annotations = [a for a in data["annotations"] if a["image_id"] == data["images"][0]["id"]]
    areas = [int(m.sum()) for m in sample.masks]
    assert areas == [a["area"] for a in annotations]
    union = np.logical_or.reduce(sample.masks).sum()
    assert sum(areas) > union, "neighbouring teeth overlap, so their pixels must be counted in both masks"


def test_coco_default_image_root(vocalfolds):
    dataset = CocoDataset(vocalfolds / "instances_test.json")
    assert dataset.image_root == vocalfolds / "images"
    assert dataset[0].path.is_file()


# --- COCO built here: encodings and bad input -----------------------------------------


def test_coco_encodings_and_negatives(tmp_path):
    ring = np.zeros((8, 10), bool)
    ring[1:7, 1:7] = True
    ring[3:5, 3:5] = False
    block = np.zeros((8, 10), bool)
    block[4:8, 5:10] = True
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 7, "segmentation": rle_of(ring), "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 3, "segmentation": rle_of(block, compressed=False), "iscrowd": 0},
        # Two polygon parts of one instance: two separate squares.
        {"id": 3, "image_id": 1, "category_id": 3, "iscrowd": 0,
         "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2], [8, 0, 10, 0, 10, 2, 8, 2]]},
        {"id": 4, "image_id": 1, "category_id": 7, "segmentation": rle_of(block, compressed=False), "iscrowd": 1},
    ]
    images = [
        {"id": 1, "file_name": "a.png", "height": 8, "width": 10},
        {"id": 2, "file_name": "b.png", "height": 8, "width": 10},
    ]
    dataset = open_dataset(coco_file(tmp_path, annotations, images))
    assert dataset.class_table.names == ["tool", "polyp"]

    sample = dataset[0]
    assert sample.classes.tolist() == [0, 1, 1]
    assert np.array_equal(sample.masks[0], ring), "the hole of the ring must stay"
    assert np.array_equal(sample.masks[1], block)
    parts, _ = cv2.connectedComponents(sample.masks[2].astype(np.uint8), connectivity=8)
    assert parts - 1 == 2, "a two-part polygon annotation is one instance with two parts"
    assert sample.boxes[0].tolist() == [1, 1, 7, 7]
    assert sample.boxes[1].tolist() == [5, 4, 10, 8]
    assert np.array_equal(sample.ignore_mask, block), "iscrowd regions go to the ignore mask"

    negative = dataset[1]
    assert negative.masks.shape == (0, 8, 10)
    assert negative.classes.shape == (0,)
    assert negative.boxes.shape == (0, 4)


@pytest.mark.parametrize(
    "counts, message",
    [
        ([5, 10, 20], "cover 35 pixels"),
        ([5, 10, 200], "cover 215 pixels"),
    ],
)
def test_coco_uncompressed_rle_wrong_length(tmp_path, counts, message):
    annotations = [{"id": 41, "image_id": 1, "category_id": 7, "segmentation": {"size": [8, 10], "counts": counts}}]
    with pytest.raises(InputError, match="annotation 41") as error:
        open_dataset(coco_file(tmp_path, annotations))
    assert message in str(error.value)


def test_coco_compressed_rle_wrong_length(tmp_path):
    small = np.ones((4, 10), np.uint8)
    counts = mask_utils.encode(np.asfortranarray(small))["counts"].decode("ascii")
    annotations = [{"id": 42, "image_id": 1, "category_id": 7, "segmentation": {"size": [8, 10], "counts": counts}}]
    with pytest.raises(InputError, match="annotation 42 has RLE counts that cover 40 pixels"):
        open_dataset(coco_file(tmp_path, annotations))


def test_coco_rle_size_mismatch(tmp_path):
    annotations = [{"id": 43, "image_id": 1, "category_id": 7, "segmentation": rle_of(np.ones((10, 8), bool))}]
    with pytest.raises(InputError, match=r"annotation 43 has an RLE of size \[10, 8\]"):
        open_dataset(coco_file(tmp_path, annotations))


@pytest.mark.parametrize(
    "annotation, message",
    [
        ({"id": 5, "image_id": 1, "category_id": 99, "segmentation": [[0, 0, 2, 0, 2, 2]]}, "category_id 99"),
        ({"id": 6, "image_id": 12, "category_id": 7, "segmentation": [[0, 0, 2, 0, 2, 2]]}, "image id 12"),
        ({"id": 8, "image_id": 1, "category_id": 7, "segmentation": [[0, 0, 2, 0]]}, "annotation 8 has a polygon"),
        ({"id": 9, "image_id": 1, "category_id": 7, "segmentation": []}, "annotation 9 has no 'segmentation'"),
    ],
)
def test_coco_bad_annotation(tmp_path, annotation, message):
    with pytest.raises(InputError, match=message):
        open_dataset(coco_file(tmp_path, [annotation]))


def test_coco_only_crowd_fails(tmp_path):
    annotations = [{"id": 1, "image_id": 1, "category_id": 7, "segmentation": [[0, 0, 4, 0, 4, 4]], "iscrowd": 1}]
    with pytest.raises(InputError, match="all 1 annotations are iscrowd"):
        open_dataset(coco_file(tmp_path, annotations))


def test_coco_image_size_mismatch(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "height": 9, "width": 10}]
    dataset = open_dataset(coco_file(tmp_path, [], images))
    with pytest.raises(InputError, match="is 8x10"):
        dataset[0]


# --- Label maps -------------------------------------------------------------------------


def test_label_maps_match_coco_reference(vocalfolds, tmp_path):
    description = {
        "format": "label_maps",
        "images": str(vocalfolds / "images"),
        "labels": str(vocalfolds / "labels"),
        "classes": VOCALFOLDS_CLASSES,
        "min_area": 64,
        "val": ["*/seq3", "*/seq5"],
    }
    path = tmp_path / "vocalfolds.yaml"
    path.write_text(yaml.safe_dump(description), encoding="utf-8")
    label_maps = open_dataset(path, split="val")
    coco = open_dataset(vocalfolds / "instances_val.json")
    assert isinstance(label_maps, LabelMapDataset)
    assert len(label_maps) == len(coco) == 52
    assert label_maps.class_table.names == coco.class_table.names

    for index in (0, 25, 51):
        reference = coco[index]
        sample = label_maps[label_maps.image_paths.index(reference.path)]
        order = np.lexsort((sample.masks.sum(axis=(1, 2)), sample.classes))
        reference_order = np.lexsort((reference.masks.sum(axis=(1, 2)), reference.classes))
        assert sample.classes[order].tolist() == reference.classes[reference_order].tolist()
        assert np.array_equal(sample.masks[order], reference.masks[reference_order])


def label_map_folder(tmp_path: Path, labels: np.ndarray, suffix: str = ".png", classes: dict | None = None) -> Path:
    root = tmp_path / "maps"
    write_png(root / "images" / "case1" / "f0.png", np.full(labels.shape + (3,), 80, np.uint8))
    write_png(root / "labels" / "case1" / f"f0{suffix}", labels)
    (root / "classes.yaml").write_text(yaml.safe_dump(classes or {1: "nerve", 5: "tool"}), encoding="utf-8")
    return root


def test_label_map_components_and_min_area(tmp_path):
    labels = np.zeros((40, 60), np.uint8)
    labels[2:12, 2:12] = 5  # tool, 100 px with a 2x2 hole
    labels[6:8, 6:8] = 0
    labels[2:12, 40:50] = 5  # a second, separate tool
    labels[30:32, 30:32] = 1  # a 4 px speck of nerve, under min_area
    labels[20:30, 2:20] = 1  # nerve, 180 px
    labels[20:30, 20:24] = 5  # a tool touching the nerve
    dataset = open_dataset(label_map_folder(tmp_path, labels), min_area=20)
    assert dataset.class_table.names == ["nerve", "tool"]
    sample = dataset[0]
    assert sample.image_id == "case1/f0"
    areas = sorted(zip(sample.classes.tolist(), sample.masks.sum(axis=(1, 2)).tolist()))
    assert areas == [(0, 180), (1, 40), (1, 96), (1, 100)]
    tool = sample.masks[(sample.classes == 1) & (sample.masks.sum(axis=(1, 2)) == 96)][0]
    assert not tool[6, 6], "the hole in the first tool must stay"


def test_label_map_jpeg_snapped_with_warning(tmp_path, caplog):
    labels = np.zeros((64, 64), np.uint8)
    labels[8:40, 8:40] = 120
    labels[30:60, 36:60] = 240
    labels[44:56, 4:16] = 240
    root = label_map_folder(tmp_path, labels, suffix=".jpg", classes={120: "nerve", 240: "tool"})
    raw = cv2.imread(str(root / "labels" / "case1" / "f0.jpg"), cv2.IMREAD_UNCHANGED)
    assert len(np.unique(raw)) > 10, "JPEG compression should have added values for this test to mean anything"

    with caplog.at_level(logging.WARNING):
        dataset = open_dataset(root, min_area=30)
    assert any("lossy JPEG" in record.message for record in caplog.records)
    sample = dataset[0]
    assert sorted(sample.classes.tolist()) == [0, 1, 1]
    for class_index, value in ((0, 120), (1, 240)):
        union = sample.masks[sample.classes == class_index].any(axis=0)
        expected = labels == value
        assert np.array_equal(union, expected)


def test_label_map_binary_jpeg_thresholded(tmp_path):
    mask = np.zeros((48, 48), np.uint8)
    mask[10:30, 12:40] = 255
    root = label_map_folder(tmp_path, mask, suffix=".jpeg", classes={255: "polyp"})
    sample = open_dataset(root)[0]
    assert sample.classes.tolist() == [0]
    assert np.array_equal(sample.masks[0], mask > 0)


def test_label_map_undeclared_value(tmp_path):
    labels = np.zeros((20, 20), np.uint8)
    labels[2:10, 2:10] = 3
    with pytest.raises(InputError, match=r"values \[3\]"):
        open_dataset(label_map_folder(tmp_path, labels))


def test_label_map_without_instances_fails(tmp_path):
    labels = np.zeros((20, 20), np.uint8)
    labels[2:4, 2:4] = 1
    with pytest.raises(InputError, match="min_area=64"):
        open_dataset(label_map_folder(tmp_path, labels))


def test_label_map_missing_image(tmp_path):
    root = label_map_folder(tmp_path, np.ones((10, 10), np.uint8) * 5)
    (root / "images" / "case1" / "f0.png").unlink()
    with pytest.raises(InputError, match="no image for label map"):
        open_dataset(root, min_area=1)


def test_label_map_folder_without_class_table(tmp_path):
    root = label_map_folder(tmp_path, np.ones((10, 10), np.uint8) * 5)
    (root / "classes.yaml").unlink()
    with pytest.raises(InputError, match="no class table"):
        open_dataset(root)


def test_class_table_text_file(tmp_path):
    root = label_map_folder(tmp_path, np.ones((10, 10), np.uint8) * 5)
    (root / "classes.yaml").unlink()
    (root / "classes.txt").write_text("# value name\n1 recurrent laryngeal nerve\n5 tool\n", encoding="utf-8")
    dataset = open_dataset(root, min_area=1)
    assert dataset.class_table.names == ["recurrent laryngeal nerve", "tool"]
    assert dataset[0].classes.tolist() == [1]


# --- YOLO-seg ---------------------------------------------------------------------------


def yolo_dataset(tmp_path: Path, lines: dict[str, str], names=None) -> Path:
    root = tmp_path / "yolo"
    for stem in ("a", "b"):
        write_png(root / "images" / "train" / f"{stem}.png", np.zeros((20, 40, 3), np.uint8))
    for stem, text in lines.items():
        path = root / "labels" / "train" / f"{stem}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    data = {"path": str(root), "train": "images/train", "val": "images/train", "names": names or {0: "tool", 1: "polyp"}}
    (root / "data.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    return root


def test_yolo_polygons_and_negatives(tmp_path):
    # A rectangle from pixel (4, 2) to pixel (19, 9), and a two-part polygon joined by a
    # zero-width bridge the way Ultralytics writes multi-part objects.
    rectangle = "1 0.1 0.1 0.475 0.1 0.475 0.45 0.1 0.45"
    bridged = "0 0.75 0.5 0.875 0.5 0.875 0.75 0.75 0.75 0.75 0.8 0.9 0.8 0.9 0.95 0.75 0.95 0.75 0.8 0.75 0.75"
    root = yolo_dataset(tmp_path, {"a": f"{rectangle}\n{bridged}\n"})
    dataset = open_dataset(root)
    assert isinstance(dataset, YoloSegDataset)
    assert dataset.class_table.names == ["tool", "polyp"]
    assert len(dataset) == 2

    sample = dataset[0]
    assert sample.classes.tolist() == [1, 0]
    assert sample.boxes[0].tolist() == [4, 2, 20, 10]
    expected = np.zeros((20, 40), bool)
    expected[2:10, 4:20] = True
    assert np.array_equal(sample.masks[0], expected)
    assert sample.boxes[1].tolist() == [30, 10, 37, 20]

    negative = dataset[1]
    assert len(negative) == 0, "an image without a label file is a negative"


@pytest.mark.parametrize(
    "line, message",
    [
        ("0 0.5 0.5 0.2 0.2", "detection box"),
        ("2 0.1 0.1 0.5 0.1 0.5 0.5", "class 2 is outside 0..1"),
        ("0 0.1 0.1 0.5 0.1 0.5", "even number"),
        ("0 10 10 50 10 50 50", "normalised"),
        ("tool 0.1 0.1 0.5 0.1 0.5 0.5", "numbers"),
    ],
)
def test_yolo_bad_line(tmp_path, line, message):
    dataset = open_dataset(yolo_dataset(tmp_path, {"a": line + "\n"}))
    with pytest.raises(InputError, match=message) as error:
        dataset[0]
    assert "a.txt:1" in str(error.value)


def test_yolo_without_labels_fails(tmp_path):
    with pytest.raises(InputError, match="none of the 2 'train' images has a label file"):
        open_dataset(yolo_dataset(tmp_path, {}))


def test_yolo_names_must_be_contiguous(tmp_path):
    with pytest.raises(InputError, match="without gaps"):
        open_dataset(yolo_dataset(tmp_path, {"a": ""}, names={0: "tool", 2: "polyp"}))


def test_yolo_missing_split(tmp_path):
    with pytest.raises(InputError, match="no 'test' split"):
        open_dataset(yolo_dataset(tmp_path, {"a": ""}), split="test")


# --- .seg.nrrd --------------------------------------------------------------------------


def test_seg_nrrd_from_scene_writer(vocalfolds, tmp_path):
    import vtk  # noqa: F401  (slicer-core needs vtk loaded first)

    from lmsfa.classes import ClassTable
    from lmsfa.results import Instance
    from lmsfa.scene.context import SceneContext
    from lmsfa.scene.storage import save_segmentation_nrrd
    from lmsfa.scene.writer import SequenceWriter

    image_path = vocalfolds / "images" / "patient1" / "seq4" / "0001_l.jpg"
    image = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
    table = ClassTable.from_names(["vocal folds", "surgical tool"])
    first = np.zeros((512, 512), bool)
    first[10:60, 300:420] = True  # top right: rows and columns must not swap
    second = np.zeros((512, 512), bool)
    second[40:90, 350:500] = True  # overlaps the first
    instances = [
        Instance(1, "surgical tool", 0.9, np.zeros(4, np.float32), first),
        Instance(1, "surgical tool", 0.8, np.zeros(4, np.float32), second),
        Instance(0, "vocal folds", 0.7, np.zeros(4, np.float32), ~(first | second)),
    ]
    writer = SequenceWriter(SceneContext.headless(), "clip", table, "test-model")
    writer.add_frame(0, 0.0, image, instances)
    frames = tmp_path / "frames"
    frames.mkdir()
    save_segmentation_nrrd(writer.segmentation_sequence_node.GetNthDataNode(0), frames / "0000.seg.nrrd")
    cv2.imwrite(str(frames / "0000.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))

    dataset = open_dataset(frames, class_names=["vocal folds", "surgical tool"])
    assert isinstance(dataset, SegNrrdDataset)
    sample = dataset[0]
    assert np.array_equal(sample.image, image)
    by_area = {int(m.sum()): (int(c), m) for c, m in zip(sample.classes, sample.masks)}
    assert sorted(by_area) == sorted(int(i.mask.sum()) for i in instances)
    for instance in instances:
        class_index, mask = by_area[int(instance.mask.sum())]
        assert class_index == instance.class_id
        assert np.array_equal(mask, instance.mask)


def test_seg_nrrd_classes_from_names(tmp_path):
    import slicerio

    segmentation = slicerio.create_segmentation((30, 20, 1), np.eye(4))
    tool = np.zeros((30, 20, 1), bool)
    tool[2:8, 3:9] = True
    slicerio.add_segment(segmentation, tool, {"name": "tool 2", "color": [1, 0, 0]})
    slicerio.add_segment(segmentation, np.zeros((30, 20, 1), bool), {"name": "nerve 1"})
    slicerio.write_segmentation(str(tmp_path / "f.seg.nrrd"), segmentation)
    write_png(tmp_path / "f.png", np.zeros((20, 30, 3), np.uint8))

    dataset = open_dataset(tmp_path / "f.seg.nrrd")
    assert dataset.class_table.names == ["tool"]
    sample = dataset[0]
    assert sample.classes.tolist() == [0]
    assert sample.boxes[0].tolist() == [2, 3, 8, 9], "voxel axis i runs along image columns"


def test_seg_nrrd_without_image(tmp_path):
    import slicerio

    segmentation = slicerio.create_segmentation((10, 10, 1), np.eye(4))
    mask = np.zeros((10, 10, 1), bool)
    mask[1:3, 1:3] = True
    slicerio.add_segment(segmentation, mask, {"name": "tool"})
    slicerio.write_segmentation(str(tmp_path / "g.seg.nrrd"), segmentation)
    with pytest.raises(InputError, match="no frame image"):
        open_dataset(tmp_path / "g.seg.nrrd")


def test_seg_nrrd_unknown_class(tmp_path):
    import slicerio

    segmentation = slicerio.create_segmentation((10, 10, 1), np.eye(4))
    mask = np.zeros((10, 10, 1), bool)
    mask[1:3, 1:3] = True
    slicerio.add_segment(segmentation, mask, {"name": "gauze"})
    slicerio.write_segmentation(str(tmp_path / "g.seg.nrrd"), segmentation)
    write_png(tmp_path / "g.png", np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(InputError, match=r"\['gauze'\] are not in the class table"):
        open_dataset(tmp_path / "g.seg.nrrd", class_names=["tool"])


# --- flip maps and format detection ------------------------------------------------------


def test_fdi_flip_map_on_teeth(shared_data):
    dataset = open_dataset(shared_data / "ufba425_teeth" / "test.json", flip_map="fdi")
    names = dataset.class_table.names
    mirror = {names[a]: names[b] for a, b in dataset.flip_map.items()}
    assert len(mirror) == 32
    assert mirror["tooth 11"] == "tooth 21"
    assert mirror["tooth 21"] == "tooth 11"
    assert mirror["tooth 48"] == "tooth 38"
    assert mirror["tooth 41"] == "tooth 31"
    assert dataset.side_specific


def test_flip_map_pairs_completed():
    from lmsfa.classes import ClassTable

    table = ClassTable.from_names(["left lung", "right lung", "heart"])
    assert resolve_flip_map([["left lung", "right lung"]], table) == {0: 1, 1: 0}
    assert resolve_flip_map({0: 1, 1: 0}, table) == {0: 1, 1: 0}
    with pytest.raises(InputError, match="sends class 'left lung' to both"):
        resolve_flip_map([["left lung", "right lung"], ["left lung", "heart"]], table)
    with pytest.raises(InputError, match="'liver'"):
        resolve_flip_map([["left lung", "liver"]], table)


def test_side_specific_without_map(vocalfolds):
    dataset = open_dataset(vocalfolds / "instances_val.json", side_specific=True)
    assert dataset.side_specific
    assert dataset.flip_map is None


def test_open_dataset_unknown_sources(tmp_path):
    with pytest.raises(InputError, match="data set not found"):
        open_dataset(tmp_path / "missing.json")
    (tmp_path / "notes.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="not a recognised data set file"):
        open_dataset(tmp_path / "notes.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a recognised data set folder"):
        open_dataset(tmp_path / "empty")


def test_index_out_of_range(vocalfolds):
    dataset = open_dataset(vocalfolds / "instances_val.json")
    with pytest.raises(IndexError):
        dataset[52]
    assert dataset[-1].image_id == dataset[51].image_id
