"""The bundled default model: where it lies and the SHA-256 it must have.

``Resources/Models/models.json`` at the extension's top level names each bundled file
and its SHA-256; the default model is verified against it on every load, so a corrupt
or replaced file is never used silently.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from .errors import InputError

# LMSFA_MODELS_DIR points elsewhere, for installs that keep models apart from the code.
MODELS_DIR = Path(os.environ.get("LMSFA_MODELS_DIR", Path(__file__).resolve().parents[2] / "Resources" / "Models"))
INDEX_FILE = "models.json"


def bundled_models(models_dir: Optional[Path] = None) -> dict:
    """Read the model index ``{"default": name, "models": {name: {"file", "sha256", ...}}}``."""
    folder = Path(models_dir or MODELS_DIR)
    index = folder / INDEX_FILE
    if not index.is_file():
        raise InputError(
            f"the bundled model index {index} is missing: reinstall the extension or pass a model file "
            "with --model"
        )
    return json.loads(index.read_text(encoding="utf-8"))


def default_model(kind: str = "pt", models_dir: Optional[Path] = None) -> tuple[Path, str]:
    """Return ``(path, expected SHA-256)`` of the default checkpoint (``kind="pt"``) or ONNX export."""
    folder = Path(models_dir or MODELS_DIR)
    index = bundled_models(folder)
    entry = index["models"][index["default"]]
    file_key, sha_key = ("file", "sha256") if kind == "pt" else ("onnx_file", "onnx_sha256")
    path = folder / entry[file_key]
    if not path.is_file():
        raise InputError(
            f"the bundled default model {path} is missing: reinstall the extension or pass a model file "
            "with --model"
        )
    return path, entry[sha_key]
