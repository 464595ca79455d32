"""LMSH: the lightweight multi-task shared head of LMSF-A (detection + instance masks).

The detection branch shares one GroupNorm trunk and one box and one class predictor across
the three pyramid levels, with a learnable scale per level on the box logits. Boxes use
distribution focal loss (DFL) bins; masks are linear combinations of 32 prototypes
(YOLACT-style), with the coefficients predicted per anchor by a per-level branch.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .blocks import ConvGN, cbs

REG_MAX = 16  # DFL bins per box side


class Scale(nn.Module):
    """A learnable scalar multiplier."""

    def __init__(self, value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class DFL(nn.Module):
    """Expected value of a softmax over ``bins`` logits per box side (a frozen 1x1 conv).

    Input (B, 4 * bins, A); output (B, 4, A) side distances in grid units.
    """

    def __init__(self, bins: int = REG_MAX):
        super().__init__()
        self.bins = bins
        self.conv = nn.Conv2d(bins, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(bins, dtype=torch.float32).view(1, bins, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        probs = x.view(b, 4, self.bins, a).transpose(2, 1).softmax(1)  # (B, bins, 4, A)
        return self.conv(probs).view(b, 4, a)


class Proto(nn.Module):
    """YOLOv8 prototype network: (B, C, H, W) -> (B, masks, 2H, 2W)."""

    def __init__(self, in_channels: int, hidden: int, masks: int = 32):
        super().__init__()
        self.cv1 = cbs(in_channels, hidden, 3)
        self.upsample = nn.ConvTranspose2d(hidden, hidden, 2, 2, 0, bias=True)
        self.cv2 = cbs(hidden, hidden, 3)
        self.cv3 = cbs(hidden, masks, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(self.cv2(self.upsample(self.cv1(x))))


def make_anchors(
    feats: list[torch.Tensor], strides: torch.Tensor, offset: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return anchor centres (A, 2) in grid units of their level and strides (A, 1).

    Anchors run level by level, row-major within a level; x is the first coordinate.
    """
    points, stride_list = [], []
    for feat, stride in zip(feats, strides):
        h, w = feat.shape[-2:]
        sx = torch.arange(w, device=feat.device, dtype=feat.dtype) + offset
        sy = torch.arange(h, device=feat.device, dtype=feat.dtype) + offset
        grid_y, grid_x = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((grid_x, grid_y), -1).view(-1, 2))
        stride_list.append(torch.full((h * w, 1), float(stride), device=feat.device, dtype=feat.dtype))
    return torch.cat(points), torch.cat(stride_list)


def distances_to_boxes(distances: torch.Tensor, anchors: torch.Tensor, xywh: bool = True) -> torch.Tensor:
    """Turn (left, top, right, bottom) distances (B, 4, A) around anchors (2, A) into boxes.

    Returns (B, 4, A) as (cx, cy, w, h) when ``xywh``, else (x1, y1, x2, y2), in the units of
    the inputs.
    """
    lt, rb = distances.chunk(2, dim=1)
    x1y1 = anchors - lt
    x2y2 = anchors + rb
    if xywh:
        return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim=1)
    return torch.cat((x1y1, x2y2), dim=1)


class LMSH(nn.Module):
    """Segmentation head shared across levels, with GroupNorm so that it trains at batch 1.

    Inputs: three feature maps (B, C_i, H/s_i, W/s_i) for strides 8, 16, 32.
    Training mode returns ``(raw_maps, coefficients, prototypes)``: raw maps
    (B, 4 * 16 + nc, H_i, W_i) (DFL logits then class logits), coefficients (B, 32, A) and
    prototypes (B, 32, H/4, W/4). Eval mode returns ``(pred, (raw_maps, coefficients,
    prototypes))`` with ``pred`` (B, 4 + nc + 32, A): boxes (cx, cy, w, h) in input pixels,
    class probabilities and raw mask coefficients.
    """

    def __init__(
        self,
        nc: int,
        in_channels: tuple[int, int, int],
        strides: tuple[int, int, int] = (8, 16, 32),
        masks: int = 32,
        proto_channels: int = 64,
        hidden: int = 64,
    ):
        super().__init__()
        self.nc = nc
        self.masks = masks
        self.outputs_per_anchor = 4 * REG_MAX + nc
        self.register_buffer("strides", torch.tensor(strides, dtype=torch.float32), persistent=False)

        self.stems = nn.ModuleList(ConvGN(c, hidden, 1) for c in in_channels)
        self.trunk = nn.Sequential(ConvGN(hidden, hidden, 3), ConvGN(hidden, hidden, 3))
        self.box_conv = nn.Conv2d(hidden, 4 * REG_MAX, 1)
        self.cls_conv = nn.Conv2d(hidden, nc, 1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in in_channels)
        self.dfl = DFL(REG_MAX)

        self.proto = Proto(in_channels[0], proto_channels, masks)
        coeff_hidden = max(in_channels[0] // 4, masks)
        self.coefficients = nn.ModuleList(
            nn.Sequential(ConvGN(c, coeff_hidden, 1), ConvGN(coeff_hidden, coeff_hidden, 3),
                          nn.Conv2d(coeff_hidden, masks, 1))
            for c in in_channels
        )
        self.initialize_biases()

    @torch.no_grad()
    def initialize_biases(self, image_size: int = 640) -> None:
        """Set the priors: box logits 1.0, class logits for about 5 objects per image.

        The class prior uses stride 16 for all levels because the class conv is shared.
        """
        self.box_conv.bias.fill_(1.0)
        self.cls_conv.bias.fill_(math.log(5 / self.nc / (image_size / 16) ** 2))

    def forward(self, feats: list[torch.Tensor]):
        b = feats[0].shape[0]
        prototypes = self.proto(feats[0])
        coefficients = torch.cat(
            [branch(f).reshape(b, self.masks, -1) for branch, f in zip(self.coefficients, feats)], dim=2
        )
        raw_maps = []
        for stem, scale, f in zip(self.stems, self.scales, feats):
            t = self.trunk(stem(f))
            raw_maps.append(torch.cat([scale(self.box_conv(t)), self.cls_conv(t)], dim=1))
        if self.training:
            return raw_maps, coefficients, prototypes
        return torch.cat([self.decode(raw_maps), coefficients], dim=1), (raw_maps, coefficients, prototypes)

    def decode(self, raw_maps: list[torch.Tensor]) -> torch.Tensor:
        """Raw maps -> (B, 4 + nc, A): boxes (cx, cy, w, h) in input pixels and class probabilities."""
        b = raw_maps[0].shape[0]
        flat = torch.cat([m.reshape(b, self.outputs_per_anchor, -1) for m in raw_maps], dim=2)
        box_logits, cls_logits = flat.split((4 * REG_MAX, self.nc), dim=1)
        anchors, strides = make_anchors(raw_maps, self.strides)
        boxes = distances_to_boxes(self.dfl(box_logits), anchors.transpose(0, 1).unsqueeze(0))
        return torch.cat([boxes * strides.transpose(0, 1), cls_logits.sigmoid()], dim=1)
