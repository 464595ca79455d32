"""ONNX export of a re-parameterised LMSF-A model.

The graph has one input and two outputs:

- ``images``: (B, 3, H, W) float32 RGB in [0, 1], letterboxed, H and W multiples of 32;
- ``output0``: (B, 4 + nc + 32, A): boxes (cx, cy, w, h) in input pixels, class
  probabilities, raw mask coefficients;
- ``output1``: (B, 32, H / 4, W / 4) mask prototypes.

The model's class table, input size and strides go into the file's ``metadata_props`` so an
ONNX file alone is enough to name its classes.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import onnx
import torch
from torch import nn

from ..classes import ClassTable
from ..fileio import make_shareable
from .network import LMSFA

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17


class _ExportWrapper(nn.Module):
    """Keeps only the two tensors an inference runtime needs."""

    def __init__(self, model: LMSFA):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        pred, (_, _, prototypes) = self.model(images)
        return pred, prototypes


def export_onnx(
    model: LMSFA,
    path: str | os.PathLike,
    input_size: tuple[int, int] = (640, 640),
    dynamic: bool = False,
    opset: int = DEFAULT_OPSET,
    class_table: Optional[ClassTable] = None,
    metadata: Optional[dict] = None,
) -> Path:
    """Re-parameterise a copy of ``model`` and write it as ONNX (atomically).

    ``dynamic`` makes batch, height and width symbolic; otherwise the graph is fixed to
    (1, 3, *input_size). The ONNX checker runs on the result. Returns the written path.
    """
    if opset < 17:
        raise ValueError(f"ONNX opset must be 17 or later (GroupNorm and export fidelity), got {opset}")
    height, width = input_size
    if height % 32 or width % 32:
        raise ValueError(f"input size {input_size} must have sides that are multiples of 32")
    path = Path(path)
    export_model = copy.deepcopy(model).cpu().float().reparameterize()
    wrapper = _ExportWrapper(export_model).eval()
    example = torch.zeros(1, 3, height, width)
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {
            "images": {0: "batch", 2: "height", 3: "width"},
            "output0": {0: "batch", 2: "anchors"},
            "output1": {0: "batch", 2: "proto_height", 3: "proto_width"},
        }

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        # The tracer warns about shape arithmetic (anchor grids, 2x resize factors), which is
        # constant for inputs whose sides are multiples of 32. The dynamic-size test covers it.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                wrapper,
                (example,),
                tmp,
                dynamo=False,
                opset_version=opset,
                input_names=["images"],
                output_names=["output0", "output1"],
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
        onnx_model = onnx.load(tmp)
        props = {
            "model": "LMSF-A",
            "scale": model.scale,
            "nc": str(model.nc),
            "input_size": json.dumps([height, width]),
            "dynamic": json.dumps(dynamic),
            "stride": json.dumps([int(s) for s in model.stride.tolist()]),
        }
        if class_table is not None:
            props["class_table"] = json.dumps(class_table.to_dict())
        for key, value in (metadata or {}).items():
            props[str(key)] = value if isinstance(value, str) else json.dumps(value)
        onnx.helper.set_model_props(onnx_model, props)
        onnx.checker.check_model(onnx_model)
        onnx.save(onnx_model, tmp)
        make_shareable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("exported %s (opset %d, %s input %dx%d)", path, opset, "dynamic" if dynamic else "fixed", width, height)
    return path


def read_onnx_metadata(path: str | os.PathLike) -> dict:
    """Return the LMSF-A metadata of an exported ONNX file, with JSON values decoded."""
    onnx_model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in onnx_model.metadata_props}
    decoded = {}
    for key, value in props.items():
        try:
            decoded[key] = json.loads(value)
        except (json.JSONDecodeError, TypeError):
            decoded[key] = value
    return decoded
