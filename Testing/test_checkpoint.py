"""Checkpoint files: round trip, SHA-256 checks, safe loading and clear mismatch errors."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import pytest
import torch

from lmsfa.classes import ClassInfo, ClassTable, SnomedCode
from lmsfa.errors import CheckpointError
from lmsfa.model import LMSFA, load_checkpoint, save_checkpoint, sha256_file
from lmsfa.model.checkpoint import FORMAT_VERSION

NERVE = ClassInfo("nerve", (255, 220, 0), SnomedCode("85972008", "Tissue"), SnomedCode("3057000", "Nerve"))


def four_classes() -> ClassTable:
    base = ClassTable.from_names(["adipose tissue", "bone", "ligamentum flavum"])
    return ClassTable(base.classes + [NERVE])


@pytest.fixture()
def saved(tmp_path):
    torch.manual_seed(0)
    model = LMSFA(4).eval()
    path = tmp_path / "model.pt"
    digest = save_checkpoint(path, model, four_classes(), (512, 640), {"data": "unit test", "epochs": 0})
    return model, path, digest


def test_round_trip(saved):
    model, path, digest = saved
    loaded, meta = load_checkpoint(path, expected_sha256=digest)
    assert meta.class_table.names == ["adipose tissue", "bone", "ligamentum flavum", "nerve"]
    assert meta.class_table[3].type == SnomedCode("3057000", "Nerve")
    assert meta.class_table[3].color == (255, 220, 0)
    assert meta.input_size == (512, 640)
    assert meta.provenance == {"data": "unit test", "epochs": 0}
    assert meta.format_version == FORMAT_VERSION
    assert meta.config["nc"] == 4
    assert not loaded.training
    x = torch.rand(1, 3, 128, 96)
    with torch.no_grad():
        assert torch.equal(model(x)[0], loaded(x)[0])


def test_sha256_matches_hashlib(saved):
    _, path, digest = saved
    assert digest == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert sha256_file(path) == digest


def test_wrong_sha256_rejected(saved):
    _, path, _ = saved
    with pytest.raises(CheckpointError, match="SHA-256 of .* expected 0{64}"):
        load_checkpoint(path, expected_sha256="0" * 64)


def test_reparameterized_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    model = LMSFA(2).eval()
    fused = copy.deepcopy(model).reparameterize()
    path = tmp_path / "fused.pt"
    save_checkpoint(path, fused, ClassTable.from_names(["tool", "tissue"]), (640, 640))
    loaded, meta = load_checkpoint(path)
    assert meta.config["reparameterized"] is True
    assert loaded.reparameterized
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(fused(x)[0], loaded(x)[0])


class _Marker:
    """An object whose unpickling would create a file: loading must never run it."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_pickled_objects_rejected_never_executed(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "untrusted.pt"
    torch.save({"format": "lmsfa-checkpoint", "payload": _Marker(str(marker))}, path)
    with pytest.raises(CheckpointError, match="rejected: it contains Python objects"):
        load_checkpoint(path)
    assert not marker.exists()


def test_class_count_mismatch_names_layer_and_shapes(saved, tmp_path):
    _, path, _ = saved
    payload = torch.load(path, weights_only=True)
    payload["config"]["nc"] = 6
    payload["class_table"] = ClassTable.from_names(list("abcdef")).to_dict()
    bad = tmp_path / "six.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(bad)
    message = str(info.value)
    assert "head.cls_conv.weight" in message
    assert "(4, 64, 1, 1)" in message
    assert "(6, 64, 1, 1)" in message


def test_inconsistent_class_table_rejected(saved, tmp_path):
    _, path, _ = saved
    payload = torch.load(path, weights_only=True)
    payload["class_table"] = ClassTable.from_names(["a", "b"]).to_dict()
    bad = tmp_path / "inconsistent.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match="config says 4 classes, its class table lists 2"):
        load_checkpoint(bad)


def test_missing_layer_named(saved, tmp_path):
    _, path, _ = saved
    payload = torch.load(path, weights_only=True)
    del payload["state_dict"]["head.box_conv.bias"]
    bad = tmp_path / "missing.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match=r"missing layer head.box_conv.bias \(the model expects shape \(64,\)\)"):
        load_checkpoint(bad)


@pytest.mark.parametrize(
    "content,match",
    [
        (None, "not found"),
        (b"", "empty"),
        (b"not a zip file at all", "not a readable PyTorch checkpoint"),
    ],
)
def test_bad_files(tmp_path, content, match):
    path = tmp_path / "model.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_folder_rejected(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)


def test_foreign_checkpoint_rejected(tmp_path):
    path = tmp_path / "yolov8n-seg.pt"
    torch.save({"model": {"weight": torch.zeros(2)}, "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="not an LMSF-A checkpoint"):
        load_checkpoint(path)


def test_newer_format_rejected(saved, tmp_path):
    _, path, _ = saved
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    newer = tmp_path / "newer.pt"
    torch.save(payload, newer)
    with pytest.raises(CheckpointError, match="update lmsfa"):
        load_checkpoint(newer)


def test_save_rejects_wrong_class_table(tmp_path):
    with pytest.raises(CheckpointError, match="class table has 2 classes but the model has 4"):
        save_checkpoint(tmp_path / "m.pt", LMSFA(4), ClassTable.from_names(["a", "b"]), (640, 640))
    assert not (tmp_path / "m.pt").exists()


def test_save_keeps_existing_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    path.write_bytes(b"previous model")

    def failing_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, LMSFA(1), ClassTable.from_names(["a"]), (640, 640))
    assert path.read_bytes() == b"previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_saved_file_mode_follows_umask(saved):
    import os
    import stat

    _, path, _ = saved
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
