"""Tests of COCO evaluation, the torch predictor and the train and evaluate commands."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from lmsfa.classes import ClassTable
from lmsfa.cli import main
from lmsfa.errors import InputError
from lmsfa.model import LMSFA
from lmsfa.model.checkpoint import save_checkpoint
from lmsfa.results import Instance
from lmsfa.training.datasets import open_dataset
from lmsfa.training.evaluate import (
    TorchPredictor,
    coco_metrics,
    evaluate_model,
    format_table,
    ground_truth_coco,
    instances_to_coco,
    write_json,
)

NAMES = ["tool", "tissue", "unused"]


def _square(size, x1, y1, x2, y2):
    mask = np.zeros((size, size), dtype=bool)
    mask[y1:y2, x1:x2] = True
    return mask


def _ground_truth():
    annotations = [
        (0, np.array([4, 4, 20, 20]), _square(32, 4, 4, 20, 20)),
        (1, np.array([10, 22, 30, 30]), _square(32, 10, 22, 30, 30)),
    ]
    meta = [{"id": 1, "height": 32, "width": 32, "file_name": "a.png", "annotations": annotations}]
    return ground_truth_coco(meta, NAMES), annotations


def _instances(annotations, shift=0):
    return [
        Instance(class_id=c, class_name=NAMES[c], score=0.9, box=box + shift, mask=np.roll(mask, shift, axis=1))
        for c, box, mask in annotations
    ]


def test_perfect_detections_score_one():
    ground_truth, annotations = _ground_truth()
    metrics = coco_metrics(ground_truth, instances_to_coco(1, _instances(annotations)), NAMES)
    for kind in ("bbox", "segm"):
        assert metrics[kind]["AP"] == pytest.approx(1.0)
        assert metrics[kind]["AP50"] == pytest.approx(1.0)
        assert metrics[kind]["AP75"] == pytest.approx(1.0)
        assert metrics[kind]["per_class"]["tool"]["AP"] == pytest.approx(1.0)
        assert metrics[kind]["per_class"]["tool"]["instances"] == 1
        assert metrics[kind]["per_class"]["unused"]["AP"] is None
        assert metrics[kind]["per_class"]["unused"]["instances"] == 0


def test_shifted_detections_score_lower():
    ground_truth, annotations = _ground_truth()
    metrics = coco_metrics(ground_truth, instances_to_coco(1, _instances(annotations, shift=3)), NAMES)
    # A 3-pixel shift keeps IoU above 0.5 for both squares but below 0.95.
    assert metrics["segm"]["AP50"] == pytest.approx(1.0)
    assert metrics["segm"]["AP"] < 0.9
    assert metrics["bbox"]["AP"] < 0.9


def test_wrong_class_scores_zero():
    ground_truth, annotations = _ground_truth()
    swapped = [(1 - c, box, mask) for c, box, mask in annotations]
    metrics = coco_metrics(ground_truth, instances_to_coco(1, _instances(swapped)), NAMES)
    assert metrics["segm"]["AP"] == 0.0


def test_no_detections_score_zero():
    ground_truth, _ = _ground_truth()
    metrics = coco_metrics(ground_truth, [], NAMES)
    assert metrics["bbox"]["AP"] == 0.0
    assert metrics["segm"]["per_class"]["tool"]["AP"] == 0.0
    assert metrics["segm"]["per_class"]["unused"]["AP"] is None


def test_table_and_json(tmp_path):
    ground_truth, annotations = _ground_truth()
    metrics = coco_metrics(ground_truth, instances_to_coco(1, _instances(annotations)), NAMES)
    metrics["instances"] = 2
    table = format_table(metrics)
    lines = table.splitlines()
    assert "mask AP50" in lines[0]
    assert lines[2].split()[:3] == ["all", "2", "100.0"]
    assert any(line.startswith("unused") and line.rstrip().endswith("-") for line in lines)

    write_json(metrics, tmp_path / "metrics.json")
    assert json.loads((tmp_path / "metrics.json").read_text())["segm"]["AP"] == pytest.approx(1.0)


def test_evaluate_model_with_ground_truth_predictor(vocalfolds: Path):
    dataset = open_dataset(vocalfolds / "instances_val.json")

    class Subset:
        class_table = dataset.class_table

        def __len__(self):
            return 3

        def __getitem__(self, index):
            return dataset[index * 10]

    def ground_truth_predictor(images):
        found = []
        for image in images:
            sample = next(dataset[i * 10] for i in range(3) if np.array_equal(dataset[i * 10].image, image))
            found.append([
                Instance(int(c), dataset.class_table[int(c)].name, 1.0, box, mask)
                for c, box, mask in zip(sample.classes, sample.boxes, sample.masks)
            ])
        return found

    metrics = evaluate_model(None, Subset(), (64, 64), batch_size=2, predictor=ground_truth_predictor)
    assert metrics["images"] == 3
    assert metrics["instances"] == sum(len(dataset[i * 10].classes) for i in range(3))
    assert metrics["segm"]["AP"] == pytest.approx(1.0)
    assert metrics["bbox"]["AP"] == pytest.approx(1.0)


def test_evaluate_model_rejects_empty_data():
    class Empty:
        class_table = ClassTable.from_names(["a"])

        def __len__(self):
            return 0

    with pytest.raises(InputError, match="no images"):
        evaluate_model(None, Empty(), (64, 64))


def test_torch_predictor_returns_frame_masks():
    torch.manual_seed(0)
    model = LMSFA(2)
    model.train()
    table = ClassTable.from_names(["a", "b"])
    frames = [np.full((48, 80, 3), 90, dtype=np.uint8), np.zeros((64, 64, 3), dtype=np.uint8)]
    results = TorchPredictor(model, (64, 64), table, conf=0.0001, max_det=5)(frames)
    assert model.training  # the predictor restores the mode it found
    assert len(results) == 2
    for frame, instances in zip(frames, results):
        assert len(instances) <= 5
        for instance in instances:
            assert instance.mask.shape == frame.shape[:2]
            assert 0 <= instance.box[0] <= instance.box[2] <= frame.shape[1]


def test_train_and_evaluate_commands(vocalfolds: Path, tmp_path, capsys):
    # Three training images (a COCO file written here) and a checkpoint trained on them.
    source = json.loads((vocalfolds / "instances_train.json").read_text())
    keep = {image["id"] for image in source["images"][:3]}
    subset = {
        "images": [image for image in source["images"] if image["id"] in keep],
        "annotations": [a for a in source["annotations"] if a["image_id"] in keep],
        "categories": source["categories"],
    }
    train_json = tmp_path / "train.json"
    train_json.write_text(json.dumps(subset))
    # The COCO reader resolves file names against an images/ folder beside the JSON file.
    (tmp_path / "images").symlink_to(vocalfolds / "images")

    run_dir = tmp_path / "run"
    code = main([
        "train", str(train_json), "--output", str(run_dir), "--epochs", "1", "--batch", "2",
        "--imgsz", "64", "--accumulate", "1", "--warmup-epochs", "0", "--device", "cpu", "--augment", "endoscopy",
    ])
    assert code == 0
    assert (run_dir / "best.pt").is_file()
    captured = capsys.readouterr()
    assert "best checkpoint" in captured.out
    # The progress bar starts with the first batch, so no empty "0batch" bar comes before it.
    assert re.search(r"(?<![\d.])0batch \[", captured.err) is None
    assert "1/1" in captured.err

    metrics_path = tmp_path / "metrics.json"
    code = main([
        "evaluate", str(run_dir / "best.pt"), str(train_json), "--device", "cpu", "--max-det", "20",
        "--output", str(metrics_path),
    ])
    assert code == 0
    out = capsys.readouterr().out
    assert "vocal folds" in out
    metrics = json.loads(metrics_path.read_text())
    assert metrics["images"] == 3
    assert metrics["input_size"] == [64, 64]
    assert set(metrics["segm"]["per_class"]) == {c["name"] for c in source["categories"]}


def test_evaluate_command_rejects_other_classes(vocalfolds: Path, tmp_path):
    model = LMSFA(2)
    save_checkpoint(tmp_path / "two.pt", model, ClassTable.from_names(["a", "b"]), (64, 64))
    code = main(["evaluate", str(tmp_path / "two.pt"), str(vocalfolds / "instances_val.json"), "--device", "cpu"])
    assert code == 1


def test_train_help_gives_units(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for option in ("--epochs", "--batch", "--imgsz", "--lr0", "--warmup-epochs", "--mosaic", "--ema-decay"):
        assert option in text
    assert "pixels" in text
    assert "epochs" in text
