"""The whole LMSF-A network: layer sizes, output shapes, re-parameterisation and training steps."""

from __future__ import annotations

import copy
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lmsfa.model import LMSFA

# Training-form parameters per layer at nc = 4 (layer table of the LMSF-A reconstruction).
LAYER_PARAMS = {
    "b0": 464, "b1": 4672, "b2": 4096, "b3": 18560, "b4": 22432, "b5": 73984, "b6": 86464,
    "b7": 295424, "b8": 235712, "b9": 164608, "n10": 33024, "n11": 8448, "n12": 0, "n13": 92640,
    "n14": 8320, "n15": 2176, "n16": 0, "n17": 23632, "n18": 36992, "n20": 59872, "n21": 147712,
    "n23": 235712, "n24": 29120, "head": 245559,
}
TOTAL_PARAMS_NC4 = 1_829_623
DEPLOY_PARAMS_NC4 = 1_820_647


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def load_frames(folder: Path, count: int, size: int | None = None) -> torch.Tensor:
    """Real RGB frames as (count, 3, H, W) float in [0, 1]."""
    files = sorted(folder.glob("*.jpg"))[:count]
    images = []
    for f in files:
        image = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
        if size is not None:
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        images.append(torch.from_numpy(image).permute(2, 0, 1).float() / 255.0)
    return torch.stack(images)


def calibrated_model(frames: torch.Tensor, nc: int = 6, seed: int = 0) -> LMSFA:
    """A model whose BatchNorm statistics come from real frames, in eval mode."""
    torch.manual_seed(seed)
    model = LMSFA(nc).train()
    with torch.no_grad():
        for _ in range(2):
            model(frames[:2])
    return model.eval()


@pytest.fixture(scope="module")
def model4() -> LMSFA:
    torch.manual_seed(0)
    return LMSFA(4).eval()


def test_total_parameters(model4):
    assert n_params(model4) == TOTAL_PARAMS_NC4
    trainable = sum(p.numel() for p in model4.parameters() if p.requires_grad)
    assert trainable == TOTAL_PARAMS_NC4 - 16


@pytest.mark.parametrize("layer", sorted(LAYER_PARAMS))
def test_layer_parameters(model4, layer):
    assert n_params(getattr(model4, layer)) == LAYER_PARAMS[layer]


def test_class_count_changes_only_class_conv():
    for nc in (1, 6, 32):
        model = LMSFA(nc)
        assert n_params(model) == TOTAL_PARAMS_NC4 + 65 * (nc - 4)
        assert model.head.cls_conv.out_channels == nc


def test_invalid_class_count():
    with pytest.raises(ValueError, match="at least 1"):
        LMSFA(0)


def test_class_bias_prior():
    model = LMSFA(4)
    assert torch.allclose(model.head.cls_conv.bias, torch.full((4,), -7.155), atol=1e-3)
    assert torch.equal(model.head.box_conv.bias, torch.ones(64))


def test_output_shapes_640(model4):
    with torch.no_grad():
        pred, (raw_maps, coefficients, prototypes) = model4(torch.rand(1, 3, 640, 640))
    assert pred.shape == (1, 40, 8400)
    assert prototypes.shape == (1, 32, 160, 160)
    assert [tuple(m.shape) for m in raw_maps] == [(1, 68, 80, 80), (1, 68, 40, 40), (1, 68, 20, 20)]
    assert coefficients.shape == (1, 32, 8400)


@pytest.mark.parametrize("height,width", [(384, 640), (640, 384), (512, 288)])
def test_output_shapes_rectangular(model4, height, width):
    anchors = sum((height // s) * (width // s) for s in (8, 16, 32))
    with torch.no_grad():
        pred, (raw_maps, _, prototypes) = model4(torch.rand(1, 3, height, width))
    assert pred.shape == (1, 40, anchors)
    assert prototypes.shape == (1, 32, height // 4, width // 4)
    assert raw_maps[2].shape == (1, 68, height // 32, width // 32)


def test_decoded_boxes_are_in_input_pixels(model4):
    model = copy.deepcopy(model4)
    with torch.no_grad():
        model.head.box_conv.weight.zero_()
        pred, _ = model(torch.rand(1, 3, 320, 320))
    cx, cy, w, h = pred[0, :4]
    # With zero weights every box logit is the bias 1.0, so each side is the mean bin (7.5 cells).
    strides = torch.cat([torch.full(((320 // s) ** 2,), float(s)) for s in (8, 16, 32)])
    assert torch.allclose(w, 15.0 * strides, rtol=1e-4)
    assert torch.allclose(h, 15.0 * strides, rtol=1e-4)
    assert cx[0].item() == pytest.approx(4.0)  # centre of the first 8-pixel cell
    scores = pred[0, 4:8]
    assert torch.all((scores > 0) & (scores < 1))


def test_reparameterize_equal_outputs_on_real_frames(vocalfolds):
    frames = load_frames(vocalfolds / "images" / "patient1" / "seq4", 3)
    model = calibrated_model(frames)
    fused = copy.deepcopy(model).reparameterize()
    with torch.no_grad():
        pred0, (raw0, coeff0, proto0) = model(frames)
        pred1, (raw1, coeff1, proto1) = fused(frames)
    assert max((a - b).abs().max().item() for a, b in zip(raw0, raw1)) < 1e-4
    assert (coeff0 - coeff1).abs().max().item() < 1e-4
    assert (proto0 - proto1).abs().max().item() < 1e-4
    assert (pred0[:, 4:] - pred1[:, 4:]).abs().max().item() < 1e-4
    # Box centres and sizes reach 512 px, where float32 spacing is 6e-5 px.
    assert (pred0[:, :4] - pred1[:, :4]).abs().max().item() < 1e-3


def test_reparameterize_exact_in_float64():
    torch.manual_seed(5)
    model = LMSFA(3).train()
    with torch.no_grad():
        model(torch.rand(2, 3, 128, 128))
    model = model.double().eval()
    fused = copy.deepcopy(model).reparameterize()
    x = torch.rand(1, 3, 128, 160, dtype=torch.float64)
    with torch.no_grad():
        assert (model(x)[0] - fused(x)[0]).abs().max().item() < 1e-9


def test_reparameterize_fewer_parameters_and_idempotent(model4):
    fused = copy.deepcopy(model4).reparameterize()
    assert fused.reparameterized
    assert n_params(fused) == DEPLOY_PARAMS_NC4
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        once = fused(x)[0]
        fused.reparameterize()
        twice = fused(x)[0]
    assert n_params(fused) == DEPLOY_PARAMS_NC4
    assert torch.equal(once, twice)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())


@pytest.mark.parametrize("batch", [1, 2])
def test_train_forward_backward(batch):
    torch.manual_seed(batch)
    model = LMSFA(4).train()
    raw_maps, coefficients, prototypes = model(torch.rand(batch, 3, 256, 192))
    assert raw_maps[0].shape == (batch, 68, 32, 24)
    loss = sum(m.float().pow(2).mean() for m in raw_maps) + coefficients.pow(2).mean() + prototypes.mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert all(torch.isfinite(g).all() for g in grads)
    assert model.head.dfl.conv.weight.grad is None


def test_channels_last_same_outputs(model4):
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        ref = model4(x)[0]
        cl = copy.deepcopy(model4).to(memory_format=torch.channels_last)
        out = cl(x.to(memory_format=torch.channels_last))[0]
    assert np.allclose(ref.numpy(), out.numpy(), atol=1e-3)
