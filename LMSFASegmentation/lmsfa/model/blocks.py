"""Building blocks of LMSF-A: convolution units, C2f-Pro, EMA attention, SPPF, TFE and SSFF.

LMSF-A: Lai, Li, Cai, Wang, Yan, Liang, "A Lightweight Multi-Scale Attention Framework for
Real-Time Spinal Endoscopic Instance Segmentation", arXiv 2512.21984 (2025). The blocks follow
RepViT (Wang et al., CVPR 2024), EMA attention (Ouyang et al., ICASSP 2023) and the TFE/SSFF
modules of ASF-YOLO (Kang et al., 2024).

Every block that can be re-parameterised owns a ``fuse()`` method that rewrites it in place
into its inference form. ``fuse()`` is idempotent and only valid in eval mode, because it
folds BatchNorm running statistics.

Tensors are (B, C, H, W) unless stated otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Every BatchNorm2d of the network uses these (the reference training recipe sets them).
BN_EPS = 1e-3
BN_MOMENTUM = 0.03
GN_GROUPS = 16


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def fold_batch_norm(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.modules.batchnorm._BatchNorm
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm that follows a convolution into the convolution.

    ``weight`` is (C_out, ...) and ``bias`` is (C_out,) or None. Returns the new weight and
    bias such that ``conv'(x) == bn(conv(x))`` with the norm's running statistics.
    """
    std = torch.sqrt(bn.running_var + bn.eps)
    gamma = bn.weight if bn.affine else torch.ones_like(std)
    beta = bn.bias if bn.affine else torch.zeros_like(std)
    scale = gamma / std
    if bias is None:
        bias = torch.zeros_like(bn.running_mean)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    fused_weight = weight * scale.reshape(shape)
    fused_bias = beta + (bias - bn.running_mean) * scale
    return fused_weight, fused_bias


def _conv_like(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    """Return a conv with the geometry of ``conv`` and the given weight and bias."""
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
    ).to(weight.device, weight.dtype)
    fused.weight.data.copy_(weight)
    fused.bias.data.copy_(bias)
    return fused


class ConvNorm(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> optional activation.

    With SiLU this is the CBS unit of YOLOv8; padding is ``k // 2``. ``fuse()`` folds the
    norm into the convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: nn.Module | None = None,
    ):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False
        )
        self.bn: nn.Module = batch_norm(out_channels)
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def fuse(self) -> None:
        if isinstance(self.bn, nn.Identity):
            return
        weight, bias = fold_batch_norm(self.conv.weight, self.conv.bias, self.bn)
        self.conv = _conv_like(self.conv, weight, bias)
        self.bn = nn.Identity()


def cbs(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1) -> ConvNorm:
    """CBS: convolution, BatchNorm2d and SiLU."""
    return ConvNorm(in_channels, out_channels, kernel_size, stride, act=nn.SiLU())


class ConvGN(nn.Module):
    """CGS: Conv2d (no bias) -> GroupNorm(16 groups) -> SiLU.

    GroupNorm statistics come from each sample, so this unit trains the same at batch size 1
    and cannot be folded into the convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, 1, kernel_size // 2, bias=False)
        self.gn = nn.GroupNorm(GN_GROUPS, out_channels)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.gn(self.conv(x)))


class RepDW(nn.Module):
    """RepViT's re-parameterisable depth-wise unit (training form: three branches).

    ``bn(bn_3x3(dw_3x3(x)) + dw_1x1(x) + x)``: a depth-wise 3x3 conv with BatchNorm, a
    depth-wise 1x1 conv with bias, and the identity, summed, then an outer BatchNorm. No
    activation. ``fuse()`` turns all of it into one depth-wise 3x3 conv with bias.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.dw_3x3 = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False)
        self.bn_3x3 = batch_norm(channels)
        self.dw_1x1 = nn.Conv2d(channels, channels, 1, 1, 0, groups=channels, bias=True)
        self.bn = batch_norm(channels)
        self.fused: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.fused(x)
        return self.bn(self.bn_3x3(self.dw_3x3(x)) + self.dw_1x1(x) + x)

    @torch.no_grad()
    def fuse(self) -> None:
        if self.fused is not None:
            return
        weight, bias = fold_batch_norm(self.dw_3x3.weight, None, self.bn_3x3)
        # The 1x1 kernel and the identity sit at the centre of the 3x3 kernel.
        weight = weight.clone()
        weight[:, :, 1, 1] += self.dw_1x1.weight[:, :, 0, 0] + 1.0
        bias = bias + self.dw_1x1.bias
        weight, bias = fold_batch_norm(weight, bias, self.bn)
        self.fused = _conv_like(self.dw_3x3, weight, bias)
        del self.dw_3x3, self.bn_3x3, self.dw_1x1, self.bn


class EMA(nn.Module):
    """Efficient Multi-scale Attention over ``groups`` contiguous channel groups.

    Each group of ``C / groups`` channels gets a directional-pooling branch (1x1 conv shared
    by the height and width profiles, then GroupNorm), a local 3x3 branch, and a
    cross-spatial weighting of the two. The output is the input times a sigmoid weight map.
    """

    def __init__(self, channels: int, groups: int = 8):
        super().__init__()
        if channels % groups:
            raise ValueError(f"EMA needs channels divisible by groups, got {channels} and {groups}")
        self.groups = groups
        group_channels = channels // groups
        self.conv1x1 = nn.Conv2d(group_channels, group_channels, 1)
        self.conv3x3 = nn.Conv2d(group_channels, group_channels, 3, padding=1)
        self.gn = nn.GroupNorm(group_channels, group_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = x.reshape(b * self.groups, c // self.groups, h, w)

        # Directional pooling: height profile (BG, Cg, H, 1) and width profile as (BG, Cg, W, 1).
        x_h = g.mean(dim=3, keepdim=True)
        x_w = g.mean(dim=2, keepdim=True).transpose(2, 3)
        hw = self.conv1x1(torch.cat([x_h, x_w], dim=2))
        x_h, x_w = torch.split(hw, [h, w], dim=2)
        x1 = self.gn(g * x_h.sigmoid() * x_w.transpose(2, 3).sigmoid())
        x2 = self.conv3x3(g)

        # Cross-spatial learning: channel descriptors of one branch weight the other's pixels.
        a1 = torch.softmax(x1.mean(dim=(2, 3)), dim=1).unsqueeze(1)  # (BG, 1, Cg)
        a2 = torch.softmax(x2.mean(dim=(2, 3)), dim=1).unsqueeze(1)
        weights = a1 @ x2.flatten(2) + a2 @ x1.flatten(2)  # (BG, 1, H*W)
        weights = weights.reshape(b * self.groups, 1, h, w)
        return (g * weights.sigmoid()).reshape(b, c, h, w)


class RepViTEMABlock(nn.Module):
    """RepViT block with EMA in place of squeeze-excitation, at constant width.

    ``t = EMA(RepDW(x))``; ``y = t + BN(PW(GELU(BN(PW(t)))))``. The last norm starts at
    gamma = 0, so a new block returns its token-mixer output unchanged.
    """

    def __init__(self, channels: int, ema_groups: int = 8):
        super().__init__()
        self.token_mixer = nn.Sequential(RepDW(channels), EMA(channels, ema_groups))
        self.channel_mixer = nn.Sequential(
            ConvNorm(channels, 2 * channels, 1),
            nn.GELU(),
            ConvNorm(2 * channels, channels, 1),
        )
        nn.init.zeros_(self.channel_mixer[2].bn.weight)
        nn.init.zeros_(self.channel_mixer[2].bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.token_mixer(x)
        return t + self.channel_mixer(t)


class C2fPro(nn.Module):
    """C2f shell with RepViT-EMA inner blocks.

    A 1x1 CBS to ``2h`` channels (``h = out_channels / 2``) is split into halves A and B; B
    runs through ``n`` blocks in sequence, and [A, B, M1, ..., Mn] are concatenated and
    projected by a 1x1 CBS to ``out_channels``.
    """

    def __init__(self, in_channels: int, out_channels: int, n: int = 1):
        super().__init__()
        self.hidden = out_channels // 2
        self.cv1 = cbs(in_channels, 2 * self.hidden, 1)
        self.cv2 = cbs((2 + n) * self.hidden, out_channels, 1)
        self.m = nn.ModuleList(RepViTEMABlock(self.hidden) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = list(self.cv1(x).chunk(2, dim=1))
        for block in self.m:
            parts.append(block(parts[-1]))
        return self.cv2(torch.cat(parts, dim=1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained 5x5 max-pools, concatenated, projected."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5):
        super().__init__()
        hidden = in_channels // 2
        self.cv1 = cbs(in_channels, hidden, 1)
        self.cv2 = cbs(hidden * 4, out_channels, 1)
        self.pool = nn.MaxPool2d(kernel_size, stride=1, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.pool(y[-1]))
        return self.cv2(torch.cat(y, dim=1))


def _resize_nearest(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour resize of ``x`` to the spatial size of ``like``.

    Integer scale factors (the only case for inputs whose sides are multiples of 32) are
    exported to ONNX as a fixed-scale Resize, so dynamic input sizes keep working.
    """
    in_h, in_w = int(x.shape[-2]), int(x.shape[-1])
    out_h, out_w = int(like.shape[-2]), int(like.shape[-1])
    factor = out_h // in_h
    if factor * in_h == out_h and factor * in_w == out_w:
        return x if factor == 1 else F.interpolate(x, scale_factor=float(factor), mode="nearest")
    return F.interpolate(x, size=like.shape[-2:], mode="nearest")


class TFE(nn.Module):
    """Triple Feature Encoding (parameter-free).

    ``large`` (twice the target resolution) is reduced by max-pool plus average-pool,
    ``small`` is enlarged by nearest-neighbour interpolation, and both are concatenated
    with ``mid`` as [large', mid, small'].
    """

    def forward(self, large: torch.Tensor, mid: torch.Tensor, small: torch.Tensor) -> torch.Tensor:
        size = mid.shape[-2:]
        if large.shape[-2] == 2 * size[0] and large.shape[-1] == 2 * size[1]:
            # Equal to adaptive pooling for an exact 2x ratio, and exportable with dynamic sizes.
            reduced = F.max_pool2d(large, 2, 2) + F.avg_pool2d(large, 2, 2)
        else:
            reduced = F.adaptive_max_pool2d(large, size) + F.adaptive_avg_pool2d(large, size)
        return torch.cat([reduced, mid, _resize_nearest(small, mid)], dim=1)


class SSFF(nn.Module):
    """Scale-Sequence Feature Fusion over three backbone levels.

    P4 and P5 are projected to ``channels`` by 1x1 CBS units (P3 too, unless it already has
    that width) and enlarged to P3's size. The three maps form a scale sequence that is
    mixed by a 1x1x1 3-D convolution with bias, a 3-D BatchNorm (PyTorch defaults: eps 1e-5,
    momentum 0.1) and LeakyReLU(0.1), then max-pooled over the scale axis.

    The 3-D convolution with a 1x1x1 kernel is the same 1x1 convolution on each scale, and the
    3-D norm takes its statistics over batch, scale and pixels. So the three maps are laid side
    by side along the width and a 2-D conv and norm are used. That computes the same function
    while keeping every weight rank 4 (needed for ``channels_last``). ``fuse()`` folds the norm.
    """

    def __init__(self, in_channels: tuple[int, int, int], channels: int):
        super().__init__()
        c3, c4, c5 = in_channels
        self.cv_p3 = cbs(c3, channels, 1) if c3 != channels else nn.Identity()
        self.cv_p4 = cbs(c4, channels, 1)
        self.cv_p5 = cbs(c5, channels, 1)
        self.conv = nn.Conv2d(channels, channels, 1, bias=True)
        self.bn: nn.Module = nn.BatchNorm2d(channels)
        self.act = nn.LeakyReLU(0.1)

    def forward(self, p3: torch.Tensor, p4: torch.Tensor, p5: torch.Tensor) -> torch.Tensor:
        p3 = self.cv_p3(p3)
        p4 = _resize_nearest(self.cv_p4(p4), p3)
        p5 = _resize_nearest(self.cv_p5(p5), p3)
        if isinstance(self.bn, nn.Identity):
            y3, y4, y5 = (self.act(self.conv(p)) for p in (p3, p4, p5))
        else:
            # One norm over all three scales, as the 3-D norm computes it.
            y = self.act(self.bn(self.conv(torch.cat([p3, p4, p5], dim=3))))
            y3, y4, y5 = y.chunk(3, dim=3)
        return torch.maximum(torch.maximum(y3, y4), y5)

    @torch.no_grad()
    def fuse(self) -> None:
        if isinstance(self.bn, nn.Identity):
            return
        weight, bias = fold_batch_norm(self.conv.weight, self.conv.bias, self.bn)
        self.conv = _conv_like(self.conv, weight, bias)
        self.bn = nn.Identity()
