"""The LMSF-A network, its checkpoints and its ONNX export."""

from .network import LMSFA

__all__ = ["LMSFA"]
