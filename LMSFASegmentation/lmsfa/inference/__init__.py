"""Inference: letterbox preprocessing, PyTorch and ONNX Runtime runners, post-processing.

``Predictor`` turns RGB frames into :class:`lmsfa.results.Instance` lists; ``letterbox``,
``Letterbox`` and ``postprocess`` are the steps it is built from.
"""

from .letterbox import Letterbox, letterbox
from .postprocess import decode_raw_maps, mask_to_polygons, postprocess
from .predictor import Predictor
from .runners import installed_accelerators

__all__ = [
    "Letterbox",
    "Predictor",
    "decode_raw_maps",
    "installed_accelerators",
    "letterbox",
    "mask_to_polygons",
    "postprocess",
]
