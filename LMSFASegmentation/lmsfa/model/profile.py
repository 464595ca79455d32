"""Parameter and FLOP counts of LMSF-A, in the convention the YOLOv8 literature uses.

GFLOPs are multiply-accumulates counted by thop 0.1.1 (the counter the LMSF-A reference
code base requires), times 2. That counter charges BatchNorm layers and counts only
``nn.Module`` calls, so functional pooling in TFE counts zero and GroupNorm is not charged.
"""

from __future__ import annotations

import copy
from importlib import metadata

import torch

from ..errors import LmsfaError
from .network import LMSFA


def count_parameters(model: torch.nn.Module) -> int:
    """Count all parameters, frozen ones included (the 16 DFL weights), as Ultralytics reports them."""
    return sum(p.numel() for p in model.parameters())


def thop_version() -> str:
    try:
        return metadata.version("thop")
    except metadata.PackageNotFoundError:
        return "not installed"


def count_gflops(model: LMSFA, input_size: tuple[int, int] = (640, 640)) -> float:
    """GFLOPs (2 x thop multiply-accumulates) for one image of ``input_size`` (H, W)."""
    try:
        import thop
    except ImportError as error:
        raise LmsfaError("counting FLOPs needs the thop package: pip install thop==0.1.1.post2209072238") from error
    probe = copy.deepcopy(model).cpu().float().eval()
    image = torch.zeros(1, 3, *input_size)
    with torch.no_grad():
        macs, _ = thop.profile(probe, inputs=(image,), verbose=False)
    return 2.0 * macs / 1e9


def model_summary(model: LMSFA, input_size: tuple[int, int] = (640, 640)) -> dict:
    """Parameters and GFLOPs of the training form and of the re-parameterised form."""
    deployed = copy.deepcopy(model).reparameterize()
    return {
        "classes": model.nc,
        "scale": model.scale,
        "input_size": list(input_size),
        "params_training": count_parameters(model),
        "params_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "params_reparameterized": count_parameters(deployed),
        "gflops_training": count_gflops(model, input_size),
        "gflops_reparameterized": count_gflops(deployed, input_size),
        "flop_counter": f"thop {thop_version()} (multiply-accumulates x 2)",
    }
