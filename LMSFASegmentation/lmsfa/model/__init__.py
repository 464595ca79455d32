"""The LMSF-A network, its checkpoints and its ONNX export."""

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint, sha256_file, verify_sha256
from .network import LMSFA
from .onnx_export import export_onnx, read_onnx_metadata

__all__ = [
    "LMSFA",
    "Checkpoint",
    "export_onnx",
    "load_checkpoint",
    "read_onnx_metadata",
    "save_checkpoint",
    "sha256_file",
    "verify_sha256",
]
