"""The LMSF-A network: backbone, SSFF + TFE neck and LMSH head, at scale n.

LMSF-A (Lai et al., arXiv 2512.21984, 2025) is a YOLOv8n-seg derivative: C2f-Pro blocks in
the backbone and neck, an ASF-YOLO style neck (TFE, SSFF and an element-wise add), and a
shared GroupNorm head. At 640x640 with 4 classes it has 1,829,623 parameters in its
training form (16 of them the frozen DFL weights).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .blocks import C2fPro, SPPF, SSFF, TFE, cbs
from .head import LMSH

# Width and depth multiples per scale, applied to the YOLOv8 base widths (64 ... 1024).
SCALES = {"n": (0.25, 0.33)}
STRIDES = (8, 16, 32)
MAX_CHANNELS = 1024


def _width(channels: int, multiple: float) -> int:
    return 8 * math.ceil(min(channels, MAX_CHANNELS) * multiple / 8)


def _depth(repeats: int, multiple: float) -> int:
    return max(round(repeats * multiple), 1) if repeats > 1 else repeats


class LMSFA(nn.Module):
    """LMSF-A instance segmentation network.

    Input: (B, 3, H, W) RGB in [0, 1], H and W multiples of 32. Outputs: see :class:`LMSH`.
    ``nc`` is the number of classes. Call :meth:`reparameterize` (in eval mode) before
    inference or export.
    """

    def __init__(self, nc: int, scale: str = "n"):
        super().__init__()
        if nc < 1:
            raise ValueError(f"the number of classes must be at least 1, got {nc}")
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; available: {sorted(SCALES)}")
        self.nc = nc
        self.scale = scale
        width, depth = SCALES[scale]
        c = {base: _width(base, width) for base in (64, 128, 256, 512, 1024)}
        d3, d6 = _depth(3, depth), _depth(6, depth)

        # Backbone (layers 0-9).
        self.b0 = cbs(3, c[64], 3, 2)
        self.b1 = cbs(c[64], c[128], 3, 2)
        self.b2 = C2fPro(c[128], c[128], d3)
        self.b3 = cbs(c[128], c[256], 3, 2)
        self.b4 = C2fPro(c[256], c[256], d6)
        self.b5 = cbs(c[256], c[512], 3, 2)
        self.b6 = C2fPro(c[512], c[512], d6)
        self.b7 = cbs(c[512], c[1024], 3, 2)
        self.b8 = C2fPro(c[1024], c[1024], d3)
        self.b9 = SPPF(c[1024], c[1024], 5)

        # Neck (layers 10-25).
        self.n10 = cbs(c[1024], c[512], 1)
        self.n11 = cbs(c[256], c[512], 1)
        self.n12 = TFE()
        self.n13 = C2fPro(3 * c[512], c[512], d3)
        self.n14 = cbs(c[512], c[256], 1)
        self.n15 = cbs(c[128], c[256], 1)
        self.n16 = TFE()
        self.n17 = C2fPro(3 * c[256], c[256], d3)
        self.n18 = cbs(c[256], c[256], 3, 2)
        self.n20 = C2fPro(2 * c[256], c[512], d3)
        self.n21 = cbs(c[512], c[512], 3, 2)
        self.n23 = C2fPro(c[512] + c[512], c[1024], d3)
        self.n24 = SSFF((c[256], c[512], c[1024]), c[256])

        # Head (layer 26); prototype width is the YOLOv8 256 scaled by the width multiple.
        self.head = LMSH(nc, (c[256], c[512], c[1024]), STRIDES, masks=32,
                         proto_channels=c[256], hidden=64)
        self.register_buffer("stride", torch.tensor(STRIDES, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor):
        b2 = self.b2(self.b1(self.b0(x)))
        b4 = self.b4(self.b3(b2))
        b6 = self.b6(self.b5(b4))
        b8 = self.b8(self.b7(b6))
        n10 = self.n10(self.b9(b8))
        n14 = self.n14(self.n13(self.n12(self.n11(b4), b6, n10)))
        n17 = self.n17(self.n16(self.n15(b2), b4, n14))
        n20 = self.n20(torch.cat([self.n18(n17), n14], dim=1))
        n23 = self.n23(torch.cat([self.n21(n20), n10], dim=1))
        n25 = n17 + self.n24(b4, b6, b8)
        return self.head([n25, n20, n23])

    @property
    def reparameterized(self) -> bool:
        return bool(getattr(self, "_reparameterized", False))

    @torch.no_grad()
    def reparameterize(self) -> "LMSFA":
        """Fuse every re-parameterisable block in place for inference; returns ``self``.

        Switches to eval mode (folding uses the BatchNorm running statistics). Idempotent.
        Outputs equal the training form's eval-mode outputs to float rounding.
        """
        self.eval()
        for module in list(self.modules()):
            fuse = getattr(module, "fuse", None)
            if callable(fuse) and module is not self:
                fuse()
        self._reparameterized = True
        return self

    def fuse(self) -> "LMSFA":
        """Alias of :meth:`reparameterize`, the name other YOLO code bases use."""
        return self.reparameterize()
