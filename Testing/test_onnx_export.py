"""ONNX export: checker, metadata, and ONNX Runtime outputs equal to PyTorch on real frames."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from lmsfa.classes import ClassTable
from lmsfa.model import LMSFA, export_onnx, read_onnx_metadata

from test_model_network import calibrated_model, load_frames

TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def frames(vocalfolds):
    return load_frames(vocalfolds / "images" / "patient2" / "seq6", 2)


@pytest.fixture(scope="module")
def model(frames):
    return calibrated_model(frames, nc=6, seed=3)


def run_onnx(path, images: torch.Tensor):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images.numpy()})


def assert_matches_torch(model, path, images):
    fused = copy.deepcopy(model).reparameterize()
    with torch.no_grad():
        pred, (_, _, prototypes) = fused(images)
    onnx_pred, onnx_prototypes = run_onnx(path, images)
    assert onnx_pred.shape == tuple(pred.shape)
    assert onnx_prototypes.shape == tuple(prototypes.shape)
    nc = model.nc
    boxes_scores = pred[:, : 4 + nc].numpy()
    assert np.abs(onnx_pred[:, : 4 + nc] - boxes_scores).max() < TOLERANCE
    assert np.abs(onnx_prototypes - prototypes.numpy()).max() < TOLERANCE
    assert np.abs(onnx_pred[:, 4 + nc :] - pred[:, 4 + nc :].numpy()).max() < TOLERANCE


def test_fixed_size_export(model, frames, tmp_path):
    path = export_onnx(model, tmp_path / "fixed.onnx", (512, 512), class_table=ClassTable.from_names(list("abcdef")))
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    assert graph.opset_import[0].version >= 17
    dims = [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 512, 512]
    assert not any(n.op_type == "BatchNormalization" for n in graph.graph.node)
    assert_matches_torch(model, path, frames[:1])


def test_dynamic_export_other_sizes(model, frames, tmp_path):
    path = export_onnx(model, tmp_path / "dynamic.onnx", (640, 640), dynamic=True)
    onnx.checker.check_model(onnx.load(str(path)))
    # Batch of two, rectangular letterbox size, and a size other than the export size.
    assert_matches_torch(model, path, frames[:, :, :, 64:448])
    assert_matches_torch(model, path, torch.nn.functional.interpolate(frames[:1], size=(320, 256)))


def test_metadata_carries_class_table(model, tmp_path):
    table = ClassTable.from_names(["vocal folds", "other tissue", "glottal space", "pathology", "surgical tool", "intubation"])
    path = export_onnx(model, tmp_path / "m.onnx", (256, 256), class_table=table, metadata={"sha256_checkpoint": "ab"})
    meta = read_onnx_metadata(path)
    assert ClassTable.from_dict(meta["class_table"]).names == table.names
    assert meta["input_size"] == [256, 256]
    assert meta["stride"] == [8, 16, 32]
    assert meta["nc"] == 6
    assert meta["sha256_checkpoint"] == "ab"


def test_export_does_not_change_model(model, tmp_path):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, tmp_path / "m.onnx", (128, 128))
    assert not model.reparameterized
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("kwargs,match", [({"opset": 13}, "opset must be 17"), ({"input_size": (500, 640)}, "multiples of 32")])
def test_export_rejects_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        export_onnx(LMSFA(1), tmp_path / "m.onnx", **kwargs)
    assert not list(tmp_path.iterdir())
