"""Each LMSF-A block on small tensors: known values, parameter counts and its own fusion."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lmsfa.model.blocks import (
    BN_EPS,
    EMA,
    SSFF,
    TFE,
    C2fPro,
    ConvNorm,
    RepDW,
    RepViTEMABlock,
    cbs,
    fold_batch_norm,
)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomize_norms(module: nn.Module, seed: int = 0) -> None:
    """Give every norm non-trivial affine weights and running statistics, as after training."""
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=gen) * 2 + 0.2)
            m.weight.data.copy_(torch.randn(c, generator=gen))
            m.bias.data.copy_(torch.randn(c, generator=gen) * 0.3)


def test_fold_batch_norm_known_values():
    weight = torch.full((1, 1, 1, 1), 3.0)
    bn = nn.BatchNorm2d(1, eps=0.0).eval()
    bn.running_mean.fill_(1.0)
    bn.running_var.fill_(4.0)
    bn.weight.data.fill_(2.0)
    bn.bias.data.fill_(0.5)
    w, b = fold_batch_norm(weight, torch.tensor([1.0]), bn)
    # bn(3x + 1) = (3x + 1 - 1) / 2 * 2 + 0.5 = 3x + 0.5
    assert w.item() == pytest.approx(3.0)
    assert b.item() == pytest.approx(0.5)


def test_conv_norm_fuse_equal_outputs():
    torch.manual_seed(0)
    unit = cbs(4, 6, 3, 2)
    randomize_norms(unit)
    unit.eval()
    x = torch.randn(2, 4, 9, 7)
    before = unit(x)
    unit.fuse()
    assert isinstance(unit.bn, nn.Identity)
    assert unit.conv.bias is not None
    assert torch.allclose(unit(x), before, atol=1e-6)


def test_conv_norm_fuse_idempotent():
    unit = ConvNorm(3, 3, 1).eval()
    unit.fuse()
    weight = unit.conv.weight.clone()
    unit.fuse()
    assert torch.equal(unit.conv.weight, weight)


def test_repdw_known_values_before_and_after_fuse():
    unit = RepDW(2).eval()
    with torch.no_grad():
        unit.dw_3x3.weight.zero_()
        unit.dw_3x3.weight[:, :, 0, 0] = 1.0  # picks the top-left neighbour
        unit.dw_1x1.weight.fill_(2.0)
        unit.dw_1x1.bias.fill_(1.0)
    x = torch.arange(2 * 3 * 3, dtype=torch.float32).reshape(1, 2, 3, 3)
    # Default norms: mean 0, variance 1, gamma 1, beta 0, so each divides by sqrt(1 + eps).
    s = 1.0 / math.sqrt(1.0 + BN_EPS)
    neighbour = torch.nn.functional.pad(x, (1, 0, 1, 0))[:, :, :3, :3]
    expected = (neighbour * s + 2.0 * x + 1.0 + x) * s
    assert torch.allclose(unit(x), expected, atol=1e-5)
    unit.fuse()
    assert torch.allclose(unit(x), expected, atol=1e-5)


def test_repdw_fuse_single_depthwise_conv():
    torch.manual_seed(1)
    unit = RepDW(16)
    assert n_params(unit) == 15 * 16
    randomize_norms(unit)
    unit.eval()
    x = torch.randn(2, 16, 10, 12)
    before = unit(x)
    unit.fuse()
    assert isinstance(unit.fused, nn.Conv2d)
    assert unit.fused.groups == 16
    assert unit.fused.kernel_size == (3, 3)
    assert n_params(unit) == 10 * 16
    assert (unit(x) - before).abs().max().item() < 1e-5


def test_ema_parameter_count():
    for channels in (16, 32, 64, 128):
        cg = channels // 8
        assert n_params(EMA(channels)) == 10 * cg * cg + 4 * cg


def test_ema_rejects_indivisible_channels():
    with pytest.raises(ValueError, match="divisible"):
        EMA(12)


def test_ema_groups_are_independent():
    torch.manual_seed(2)
    ema = EMA(32).eval()
    x = torch.randn(1, 32, 6, 5)
    y = ema(x)
    x2 = x.clone()
    x2[:, :4] = torch.randn(1, 4, 6, 5)  # channels of group 0 only
    y2 = ema(x2)
    assert torch.equal(y[:, 4:], y2[:, 4:])
    assert not torch.allclose(y[:, :4], y2[:, :4])


def test_ema_zero_input_gives_zero():
    ema = EMA(16)
    assert torch.equal(ema(torch.zeros(1, 16, 4, 4)), torch.zeros(1, 16, 4, 4))


def test_repvit_block_starts_as_token_mixer():
    torch.manual_seed(3)
    block = RepViTEMABlock(16).train()
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(block(x), block.token_mixer(x))
    assert torch.count_nonzero(block.channel_mixer[2].bn.weight) == 0


def test_repvit_block_parameter_count():
    for c, expected in ((16, 1408), (128, 70848)):
        assert n_params(RepViTEMABlock(c)) == expected


def test_c2f_pro_parameter_formula():
    for cin, cout, n in ((32, 32, 1), (64, 64, 2), (384, 128, 1)):
        h = cout // 2
        rvb = 15 * h + 10 * (h // 8) ** 2 + 4 * (h // 8) + 4 * h * h + 6 * h
        expected = cin * 2 * h + 4 * h + (2 + n) * h * cout + 2 * cout + n * rvb
        assert n_params(C2fPro(cin, cout, n)) == expected


def test_tfe_known_values():
    large = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    mid = torch.zeros(1, 1, 2, 2)
    small = torch.tensor([[[[7.0]]]])
    out = TFE()(large, mid, small)
    assert out.shape == (1, 3, 2, 2)
    # Max plus mean of each 2x2 block of 0..15.
    expected = torch.tensor([[5.0 + 2.5, 7.0 + 4.5], [13.0 + 10.5, 15.0 + 12.5]])
    assert torch.equal(out[0, 0], expected)
    assert torch.equal(out[0, 1], mid[0, 0])
    assert torch.equal(out[0, 2], torch.full((2, 2), 7.0))
    assert n_params(TFE()) == 0


def test_ssff_parameters_and_shape():
    ssff = SSFF((64, 128, 256), 64)
    assert n_params(ssff) == 29120
    assert isinstance(ssff.cv_p3, nn.Identity)
    y = ssff(torch.randn(1, 64, 16, 12), torch.randn(1, 128, 8, 6), torch.randn(1, 256, 4, 3))
    assert y.shape == (1, 64, 16, 12)


def test_ssff_fuse_equal_outputs():
    torch.manual_seed(4)
    ssff = SSFF((8, 16, 32), 8)
    randomize_norms(ssff)
    ssff.eval()
    inputs = (torch.randn(2, 8, 8, 8), torch.randn(2, 16, 4, 4), torch.randn(2, 32, 2, 2))
    before = ssff(*inputs)
    ssff.fuse()
    assert (ssff(*inputs) - before).abs().max().item() < 1e-5


def test_ssff_matches_3d_formulation():
    """The side-by-side 2-D form equals Conv3d(1x1x1) -> BatchNorm3d -> LeakyReLU -> MaxPool3d."""
    torch.manual_seed(6)
    ssff = SSFF((8, 16, 32), 8)
    conv3d = nn.Conv3d(8, 8, 1)
    conv3d.weight.data.copy_(ssff.conv.weight.data[:, :, None])
    conv3d.bias.data.copy_(ssff.conv.bias.data)
    bn3d = nn.BatchNorm3d(8)
    inputs = (torch.randn(2, 8, 8, 8), torch.randn(2, 16, 4, 4), torch.randn(2, 32, 2, 2))

    def reference(p3, p4, p5):
        p4 = nn.functional.interpolate(ssff.cv_p4(p4), scale_factor=2.0, mode="nearest")
        p5 = nn.functional.interpolate(ssff.cv_p5(p5), scale_factor=4.0, mode="nearest")
        stack = torch.stack([p3, p4, p5], dim=2)
        return nn.MaxPool3d((3, 1, 1))(nn.LeakyReLU(0.1)(bn3d(conv3d(stack)))).squeeze(2)

    for train in (True, False):
        ssff.train(train)
        bn3d.train(train)
        assert (ssff(*inputs) - reference(*inputs)).abs().max().item() < 1e-6
    assert torch.allclose(ssff.bn.running_var, bn3d.running_var)
