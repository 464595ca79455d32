"""Network runners: the same batch in, the same two arrays out, on PyTorch or ONNX Runtime.

Every runner takes a float32 (B, 3, H, W) batch of letterboxed RGB inputs in 0..1. It returns
NumPy float32 ``(pred, protos)``. ``pred`` is (B, 4 + nc + 32, N): boxes (cx, cy, w, h) in
input pixels, class probabilities and mask coefficients. ``protos`` is (B, 32, H / 4, W / 4).

NOTE: the CUDA paths (PyTorch fp16 and the ONNX Runtime CUDA provider) are written to the
documented APIs but have not yet been run on a GPU; the tests cover them only up to device
selection.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import InputError

logger = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def installed_accelerators() -> str:
    """Describe the installed torch and onnxruntime builds, for messages about CUDA."""
    parts = []
    try:
        import torch

        cuda_build = torch.version.cuda or "none, a CPU-only build"
        parts.append(
            f"torch {torch.__version__} (CUDA build: {cuda_build}; "
            f"GPU visible: {'yes' if torch.cuda.is_available() else 'no'})"
        )
    except ImportError:
        parts.append("torch not installed")
    try:
        import onnxruntime

        parts.append(f"onnxruntime {onnxruntime.__version__} (providers: {', '.join(onnxruntime.get_available_providers())})")
    except ImportError:
        parts.append("onnxruntime not installed")
    return "; ".join(parts)


def _cuda_unavailable(backend: str) -> InputError:
    if backend == "torch":
        fix = "install a CUDA build of torch for this GPU"
    else:
        fix = "install onnxruntime-gpu in place of onnxruntime"
    return InputError(
        f"device 'cuda' was requested for the {backend} backend, but CUDA is not available. "
        f"Installed: {installed_accelerators()}. Use the CPU device ('cpu' or 'auto'), or {fix}"
    )


def resolve_device(device: str, backend: str) -> str:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into the device the backend will use.

    ``"auto"`` picks CUDA when the backend can use it and the CPU otherwise. Raises
    :class:`InputError` for an unknown name or a CUDA request where CUDA is missing.
    """
    name = str(device).strip().lower()
    if name not in ("auto", "cpu", "cuda") and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise InputError(f"invalid device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if name == "cpu":
        return "cpu"
    if backend == "torch":
        import torch

        available = torch.cuda.is_available()
    else:
        import onnxruntime

        available = CUDA_PROVIDER in onnxruntime.get_available_providers()
    if name == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise _cuda_unavailable(backend)
    return name


class TorchRunner:
    """Runs a re-parameterised copy of an LMSF-A module, in fp16 when ``half`` (CUDA only)."""

    backend = "torch"
    fixed_input_hw: Optional[tuple[int, int]] = None
    fixed_batch: Optional[int] = None

    def __init__(self, model, device: str = "cpu", half: bool = False, copy_model: bool = True):
        import torch

        if half and not device.startswith("cuda"):
            raise InputError("half=True (fp16) needs device 'cuda'; on the CPU use half=False or None")
        self.device = torch.device(device)
        self.half = bool(half)
        module = copy.deepcopy(model) if copy_model else model
        if hasattr(module, "reparameterize"):
            module.reparameterize()
        else:
            logger.warning("%s has no reparameterize(); running it as it is", type(module).__name__)
        module = module.eval().to(self.device)
        if self.half:
            module = module.half()
        self.model = module
        self.nc = getattr(module, "nc", None)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.inference_mode():
            images = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            if self.half:
                images = images.half()
            pred, (_, _, protos) = self.model(images)
            return pred.float().cpu().numpy(), protos.float().cpu().numpy()


class OnnxRunner:
    """Runs an exported LMSF-A ONNX file with ONNX Runtime (CPU, or the CUDA provider).

    ``metadata`` contains the file's decoded ``metadata_props`` (class table, input size,
    stride). ``fixed_input_hw`` and ``fixed_batch`` are the static input sizes of the graph,
    ``None`` where the axis is dynamic.
    """

    backend = "onnx"

    def __init__(self, path: str | os.PathLike, device: str = "cpu", num_threads: Optional[int] = None):
        import json

        import onnxruntime

        path = Path(path)
        if not path.is_file():
            raise InputError(f"ONNX model not found: {path}")
        options = onnxruntime.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
            options.inter_op_num_threads = 1
        if device.startswith("cuda"):
            device_id = int(device.split(":")[1]) if ":" in device else 0
            providers = [(CUDA_PROVIDER, {"device_id": device_id}), CPU_PROVIDER]
        else:
            providers = [CPU_PROVIDER]
        try:
            self.session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types for bad files
            raise InputError(f"ONNX Runtime could not load {path}: {error}") from error
        if device.startswith("cuda") and CUDA_PROVIDER not in self.session.get_providers():
            raise InputError(
                f"ONNX Runtime lists the CUDA provider but could not start it for {path} (CUDA or cuDNN "
                f"libraries missing?). Installed: {installed_accelerators()}. Use the CPU device ('cpu')"
            )
        self.device = device
        self.path = path
        self.num_threads = num_threads

        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata = {}
        for key, value in props.items():
            try:
                self.metadata[key] = json.loads(value)
            except (json.JSONDecodeError, TypeError):
                self.metadata[key] = value

        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        shape = model_input.shape
        if len(shape) != 4:
            raise InputError(f"{path}: expected a (B, 3, H, W) image input, the graph's input is {shape}")
        batch_dim, _, height, width = shape
        self.fixed_batch = batch_dim if isinstance(batch_dim, int) else None
        self.fixed_input_hw = (height, width) if isinstance(height, int) and isinstance(width, int) else None

        outputs = {o.name: o for o in self.session.get_outputs()}
        names = list(outputs)
        self.output_names = ["output0", "output1"] if {"output0", "output1"} <= set(outputs) else names[:2]
        channels = outputs[self.output_names[0]].shape[1]
        self.nc = channels - 4 - 32 if isinstance(channels, int) else self.metadata.get("nc")

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        size = batch.shape[0]
        if self.fixed_batch is None or size == self.fixed_batch:
            pred, protos = self.session.run(self.output_names, {self.input_name: batch})
            return pred, protos

        # A graph with a static batch size runs the batch in chunks, the last one zero-padded.
        preds, protos = [], []
        for start in range(0, size, self.fixed_batch):
            chunk = batch[start : start + self.fixed_batch]
            used = chunk.shape[0]
            if used < self.fixed_batch:
                padding = np.zeros((self.fixed_batch - used,) + chunk.shape[1:], dtype=np.float32)
                chunk = np.concatenate([chunk, padding])
            pred_chunk, protos_chunk = self.session.run(self.output_names, {self.input_name: chunk})
            preds.append(pred_chunk[:used])
            protos.append(protos_chunk[:used])
        return np.concatenate(preds), np.concatenate(protos)
