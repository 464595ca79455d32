"""Tests of the trainer on a few real vocalfolds images at a small input size."""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lmsfa.classes import ClassTable
from lmsfa.errors import Cancelled, CheckpointError, InputError
from lmsfa.model import LMSFA
from lmsfa.model.checkpoint import load_checkpoint, save_checkpoint
from lmsfa.progress import Progress
from lmsfa.training.datasets import open_dataset
from lmsfa.training.readers.base import Sample
from lmsfa.training.trainer import (
    STATE_FILE,
    ModelEMA,
    TrainConfig,
    Trainer,
    build_optimizer,
    lr_factor,
)

SIZE = 64


class Subset:
    """A few images of a data set, optionally with classes merged or removed."""

    def __init__(self, dataset, indices, class_map=None, class_table=None):
        self.dataset = dataset
        self.indices = list(indices)
        self.class_map = class_map
        self.class_table = class_table or dataset.class_table

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        sample = self.dataset[self.indices[index]]
        if self.class_map is None:
            return sample
        keep = np.array([c in self.class_map for c in sample.classes.tolist()], dtype=bool)
        return Sample(
            image=sample.image,
            masks=sample.masks[keep],
            classes=np.array([self.class_map[c] for c in sample.classes[keep].tolist()], dtype=np.int64),
            boxes=sample.boxes[keep],
            image_id=sample.image_id,
            path=sample.path,
        )


@pytest.fixture(scope="module")
def vocalfolds_train(vocalfolds: Path):
    return open_dataset(vocalfolds / "instances_train.json")


def _config(**changes) -> TrainConfig:
    base = TrainConfig(
        epochs=1, batch_size=2, input_size=(SIZE, SIZE), accumulate=1, warmup_epochs=0.5,
        optimizer="sgd", val_batch_size=2, val_max_det=50,
    )
    return replace(base, **changes)


def _history_finite(history) -> bool:
    keys = ("train_box", "train_seg", "train_cls", "train_dfl")
    return all(math.isfinite(row[key]) for row in history for key in keys)


def test_batch_one_and_last_batch_of_one(vocalfolds_train, tmp_path):
    images = Subset(vocalfolds_train, [0, 40, 80])
    for batch_size in (1, 2):  # batch 2 over 3 images ends with a batch of 1
        out = tmp_path / f"batch{batch_size}"
        result = Trainer(_config(batch_size=batch_size), images, out).fit()

        assert len(result.history) == 1
        assert _history_finite(result.history)
        assert result.last_checkpoint.is_file()
        assert result.best_checkpoint.is_file()
        model, meta = load_checkpoint(result.last_checkpoint)
        assert meta.class_table.names == vocalfolds_train.class_table.names
        assert meta.input_size == (SIZE, SIZE)
        assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
        with open(out / "log.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 1
        assert float(rows[0]["train_seg"]) > 0


def test_resume_continues_like_straight_run(vocalfolds_train, tmp_path):
    images = Subset(vocalfolds_train, [0, 40, 80])
    config = _config(epochs=2, warmup_epochs=1.0)
    Trainer(config, images, tmp_path / "straight").fit()

    progress = Progress()
    batches_per_epoch = 2

    def cancel_after_first_epoch(done, total, message):
        if done == batches_per_epoch:
            progress.cancel()

    progress = Progress(cancel_after_first_epoch)
    with pytest.raises(Cancelled):
        Trainer(config, images, tmp_path / "resumed", progress=progress).fit()
    interrupted = torch.load(tmp_path / "resumed" / STATE_FILE, weights_only=True)
    assert interrupted["epoch"] == 1

    resumed = Trainer(_config(epochs=99), images, tmp_path / "resumed", resume=True)
    assert resumed.config.epochs == 2  # the saved configuration wins
    result = resumed.fit()
    assert [row["epoch"] for row in result.history] == [1, 2]

    straight = torch.load(tmp_path / "straight" / STATE_FILE, weights_only=True)
    again = torch.load(tmp_path / "resumed" / STATE_FILE, weights_only=True)
    for name, tensor in straight["model"].items():
        assert torch.allclose(tensor.float(), again["model"][name].float(), atol=1e-6), name
    for name, tensor in straight["ema"].items():
        assert torch.allclose(tensor.float(), again["ema"][name].float(), atol=1e-6), name


def test_existing_run_is_not_overwritten(vocalfolds_train, tmp_path):
    images = Subset(vocalfolds_train, [0])
    Trainer(_config(batch_size=1), images, tmp_path).fit()
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(InputError, match="already contains a training run"):
        Trainer(_config(batch_size=1), images, tmp_path)
    assert (tmp_path / "last.pt").read_bytes() == before


def test_resume_without_state_fails(vocalfolds_train, tmp_path):
    with pytest.raises(InputError, match="not found"):
        Trainer(_config(), Subset(vocalfolds_train, [0]), tmp_path, resume=True)


def _perturbed_checkpoint(path: Path, class_table: ClassTable) -> dict:
    torch.manual_seed(1)
    model = LMSFA(len(class_table))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    save_checkpoint(path, model, class_table, (SIZE, SIZE), provenance={"note": "test"})
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_finetune_with_new_class_table(vocalfolds_train, tmp_path):
    source_table = vocalfolds_train.class_table
    weights = _perturbed_checkpoint(tmp_path / "source.pt", source_table)

    # Keep two of the six vocalfolds classes, renumbered 0 and 1.
    names = source_table.names
    class_map = {names.index("vocal folds"): 0, names.index("glottal space"): 1}
    two_classes = ClassTable.from_names(["vocal folds", "glottal space"])
    images = Subset(vocalfolds_train, [0, 40], class_map=class_map, class_table=two_classes)

    trainer = Trainer(_config(), images, tmp_path / "run", initial_weights=tmp_path / "source.pt")
    state = trainer.model.state_dict()
    assert torch.equal(state["b0.conv.weight"], weights["b0.conv.weight"])
    assert torch.equal(state["head.box_conv.weight"], weights["head.box_conv.weight"])
    assert state["head.cls_conv.weight"].shape[0] == 2
    prior = math.log(5 / 2 / (640 / 16) ** 2)
    assert torch.allclose(state["head.cls_conv.bias"], torch.full((2,), prior))

    result = trainer.fit()
    assert _history_finite(result.history)
    _, meta = load_checkpoint(result.last_checkpoint)
    assert meta.class_table.names == ["vocal folds", "glottal space"]
    assert meta.provenance["initial_weights"] == str(tmp_path / "source.pt")


def test_finetune_same_classes_keeps_class_conv(vocalfolds_train, tmp_path):
    weights = _perturbed_checkpoint(tmp_path / "source.pt", vocalfolds_train.class_table)
    trainer = Trainer(_config(), Subset(vocalfolds_train, [0]), tmp_path / "run",
                      initial_weights=tmp_path / "source.pt")
    assert torch.equal(trainer.model.state_dict()["head.cls_conv.weight"], weights["head.cls_conv.weight"])


def test_finetune_renamed_classes_resets_class_conv(vocalfolds_train, tmp_path):
    _perturbed_checkpoint(tmp_path / "source.pt", vocalfolds_train.class_table)
    renamed = ClassTable.from_names([f"class {i}" for i in range(len(vocalfolds_train.class_table))])
    images = Subset(vocalfolds_train, [0], class_table=renamed)
    trainer = Trainer(_config(), images, tmp_path / "run", initial_weights=tmp_path / "source.pt")
    prior = math.log(5 / len(renamed) / (640 / 16) ** 2)
    assert torch.allclose(trainer.model.state_dict()["head.cls_conv.bias"], torch.full((len(renamed),), prior))


def test_finetune_rejects_fused_checkpoint(vocalfolds_train, tmp_path):
    model = LMSFA(len(vocalfolds_train.class_table)).reparameterize()
    save_checkpoint(tmp_path / "fused.pt", model, vocalfolds_train.class_table, (SIZE, SIZE))
    with pytest.raises(CheckpointError, match="re-parameterised"):
        Trainer(_config(), Subset(vocalfolds_train, [0]), tmp_path / "run", initial_weights=tmp_path / "fused.pt")


def test_validation_picks_best_checkpoint(vocalfolds_train, tmp_path):
    images = Subset(vocalfolds_train, [0, 40])
    config = _config(optimizer="adamw", schedule="cosine", lr0=0.002)
    result = Trainer(config, images, tmp_path, val_set=Subset(vocalfolds_train, [0])).fit()

    row = result.history[0]
    for key in ("val_box_AP", "val_box_AP50", "val_mask_AP", "val_mask_AP50", "val_mask_AP75"):
        assert 0.0 <= row[key] <= 1.0
    assert result.best_fitness == row["val_mask_AP"]
    _, meta = load_checkpoint(result.best_checkpoint)
    assert meta.provenance["metrics"]["val_mask_AP"] == row["val_mask_AP"]


def test_config_rejects_bad_values():
    for changes, message in (
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch size"),
        ({"input_size": (100, 100)}, "multiples of 32"),
        ({"optimizer": "lion"}, "optimizer"),
        ({"schedule": "step"}, "schedule"),
    ):
        with pytest.raises(InputError, match=message):
            replace(TrainConfig(), **changes).validate()


def test_learning_rate_schedules():
    assert lr_factor("linear", 0, 10, 0.01) == pytest.approx(1.0)
    assert lr_factor("linear", 10, 10, 0.01) == pytest.approx(0.01)
    assert lr_factor("linear", 5, 10, 0.01) == pytest.approx(0.505)
    assert lr_factor("cosine", 0, 10, 0.01) == pytest.approx(1.0)
    assert lr_factor("cosine", 5, 10, 0.01) == pytest.approx(0.505)
    assert lr_factor("cosine", 10, 10, 0.01) == pytest.approx(0.01)
    assert lr_factor("cosine", 2, 10, 0.01) > lr_factor("linear", 2, 10, 0.01)


def test_optimizer_parameter_groups():
    model = LMSFA(3)
    optimizer = build_optimizer(model, "sgd", 0.01, 0.937, 5e-4)
    decay, no_decay, biases = optimizer.param_groups
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(decay["params"]) + len(no_decay["params"]) + len(biases["params"]) == len(trainable)
    assert decay["weight_decay"] == 5e-4
    assert no_decay["weight_decay"] == 0
    assert biases["weight_decay"] == 0
    assert optimizer.defaults["nesterov"] is True
    assert all(p.ndim > 1 for p in decay["params"])
    assert any(p is model.head.scales[0].scale for p in no_decay["params"])
    assert any(p is model.head.cls_conv.bias for p in biases["params"])

    adamw = build_optimizer(model, "adamw", 0.001, 0.9, 5e-4)
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.param_groups[0]["betas"] == (0.9, 0.999)


def test_model_ema_update():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = ModelEMA(model, decay=0.5, ramp_updates=1e-9)  # the ramp is over at once
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    assert ema.ema.weight.item() == pytest.approx(0.5)
    ema.update(model)
    assert ema.ema.weight.item() == pytest.approx(0.75)
