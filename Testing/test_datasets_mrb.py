"""Corrected frames in a Slicer scene bundle (.mrb) as training data."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lmsfa.classes import ClassTable
from lmsfa.cli import main
from lmsfa.results import Instance
from lmsfa.scene import SceneContext, SequenceWriter, save_scene_mrb
from lmsfa.training.datasets import open_dataset

CLASSES = ["vocal folds", "other tissue", "glottal space", "pathology", "surgical tool", "intubation"]
SIZE = 96


def frame_and_instances(vocalfolds, stem: str):
    """A real frame and the connected regions of its label map, at SIZE x SIZE."""
    image = cv2.imread(str(vocalfolds / "images" / "patient1" / "seq4" / f"{stem}.jpg"))
    image = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    labels = cv2.imread(str(vocalfolds / "labels" / "patient1" / "seq4" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
    labels = cv2.resize(labels, (SIZE, SIZE), interpolation=cv2.INTER_NEAREST)
    instances = []
    for value in range(1, 7):
        count, components = cv2.connectedComponents((labels == value).astype(np.uint8), connectivity=8)
        for component in range(1, count):
            mask = components == component
            if mask.sum() >= 20:
                ys, xs = np.nonzero(mask)
                box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
                instances.append(Instance(value - 1, CLASSES[value - 1], 1.0, box, mask))
    return image, instances


@pytest.fixture(scope="module")
def corrected_scene(vocalfolds, tmp_path_factory):
    stems = sorted(p.stem for p in (vocalfolds / "images" / "patient1" / "seq4").glob("*.jpg"))[:3]
    context = SceneContext.headless()
    writer = SequenceWriter(context, "clip", ClassTable.from_names(CLASSES), "test")
    expected = []
    for index, stem in enumerate(stems):
        image, instances = frame_and_instances(vocalfolds, stem)
        writer.add_frame(index, index / 5.0, image, instances)
        expected.append((image, instances))
    writer.finish()
    path = tmp_path_factory.mktemp("scene") / "clip.mrb"
    save_scene_mrb(context, path)
    return path, expected


def test_mrb_samples_match_scene(corrected_scene):
    path, expected = corrected_scene
    dataset = open_dataset(path)
    assert dataset.class_table.names == CLASSES
    assert len(dataset) == len(expected)
    for position, (image, instances) in enumerate(expected):
        sample = dataset[position]
        assert sample.image_id == position
        assert np.array_equal(sample.image, image)
        assert sorted(sample.classes.tolist()) == sorted(inst.class_id for inst in instances)
        got = sorted((int(c), m.tobytes()) for c, m in zip(sample.classes, sample.masks))
        want = sorted((inst.class_id, inst.mask.tobytes()) for inst in instances)
        assert got == want


def test_train_on_mrb(corrected_scene, tmp_path):
    path, _ = corrected_scene
    run = tmp_path / "run"
    code = main(["train", str(path), "--no-val", "--epochs", "1", "--batch", "2", "--imgsz", "64",
                 "--warmup-epochs", "0", "--device", "cpu", "--output", str(run)])
    assert code == 0
    assert (run / "best.pt").is_file()
