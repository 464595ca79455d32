"""LMSF-A checkpoint files: weights plus everything needed to use them safely.

A checkpoint is a ``torch.save`` dictionary of plain types and tensors only, so it loads with
``torch.load(weights_only=True)``. A file that needs arbitrary pickled objects is rejected
before anything in it runs. Keys:

- ``format`` (``"lmsfa-checkpoint"``) and ``format_version`` (int);
- ``config``: ``{"scale": "n", "nc": int, "reparameterized": bool}``;
- ``class_table``: :meth:`lmsfa.classes.ClassTable.to_dict` (names, colours, SNOMED CT codes);
- ``input_size``: ``[height, width]`` in pixels that the model was trained at;
- ``provenance``: free-form plain-type dict (data set, command, epochs, metrics, date);
- ``state_dict``: the weights.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from ..classes import ClassTable
from ..errors import CheckpointError
from ..fileio import make_shareable
from .network import LMSFA, SCALES

logger = logging.getLogger(__name__)

FORMAT_NAME = "lmsfa-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """The metadata of a loaded checkpoint (the weights go into the model)."""

    config: dict
    class_table: ClassTable
    input_size: tuple[int, int]
    provenance: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    sha256: Optional[str] = None
    path: Optional[Path] = None


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Return the lowercase hex SHA-256 digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: Optional[str]) -> str:
    """Compute the file's SHA-256 and, when ``expected`` is given, raise if it differs."""
    if expected is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", expected.strip()):
        raise CheckpointError(
            f"invalid expected SHA-256 {expected!r}: give the 64 hexadecimal digits that `sha256sum` prints"
        )
    actual = sha256_file(path)
    if expected is not None and actual.lower() != expected.strip().lower():
        raise CheckpointError(
            f"SHA-256 of {path} is {actual}, expected {expected.strip().lower()}: the file is corrupt, "
            "incomplete or a different model; download or copy it again"
        )
    return actual


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the target folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        make_shareable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    path: str | os.PathLike,
    model: LMSFA,
    class_table: ClassTable,
    input_size: tuple[int, int],
    provenance: Optional[dict] = None,
) -> str:
    """Write a checkpoint atomically and return its SHA-256."""
    if len(class_table) != model.nc:
        raise CheckpointError(
            f"the class table has {len(class_table)} classes but the model has {model.nc}: {class_table.names}"
        )
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": {"scale": model.scale, "nc": model.nc, "reparameterized": model.reparameterized},
        "class_table": class_table.to_dict(),
        "input_size": [int(input_size[0]), int(input_size[1])],
        "provenance": dict(provenance or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    atomic_torch_save(payload, path)
    return sha256_file(path)


def read_checkpoint_file(path: str | os.PathLike, expected_sha256: Optional[str] = None) -> tuple[dict, str]:
    """Load the raw checkpoint dictionary safely; returns ``(payload, sha256)``."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give the path of a .pt checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"model file {path} is empty (0 bytes); copy or download it again")

    digest = verify_sha256(path, expected_sha256)
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint: it is not the zip archive that torch.save writes"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # Name the rejected object, but not torch's hint to retry with weights_only=False.
        found = [line.strip() for line in str(error).splitlines() if "Unsupported global" in line]
        detail = f" ({found[0].split('. Please')[0]})" if found else ""
        raise CheckpointError(
            f"{path} was rejected: it contains Python objects other than weights and plain data, which "
            f"could run code when loaded{detail}. Only load LMSF-A checkpoints written by `lmsfa train` "
            "or lmsfa.model.save_checkpoint"
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {error}") from error

    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{path} is not an LMSF-A checkpoint (no format marker {FORMAT_NAME!r}); checkpoints of other "
            "frameworks, such as Ultralytics .pt files, cannot be loaded"
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}; this lmsfa reads versions up to "
            f"{FORMAT_VERSION}: update lmsfa"
        )
    return payload, digest


def load_state_dict_checked(model: torch.nn.Module, state_dict: dict, source: str = "checkpoint") -> None:
    """Load weights, raising :class:`CheckpointError` that names each mismatching layer."""
    expected = model.state_dict()
    problems = []
    for key, tensor in state_dict.items():
        if key not in expected:
            problems.append(f"unexpected layer {key} with shape {tuple(tensor.shape)}")
        elif tuple(expected[key].shape) != tuple(tensor.shape):
            problems.append(
                f"layer {key}: {source} has shape {tuple(tensor.shape)}, the model expects {tuple(expected[key].shape)}"
            )
    for key in expected:
        if key not in state_dict:
            problems.append(f"missing layer {key} (the model expects shape {tuple(expected[key].shape)})")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise CheckpointError(f"the weights in {source} do not fit the LMSF-A network: {shown}")
    model.load_state_dict(state_dict, strict=True)


def load_checkpoint(
    path: str | os.PathLike,
    expected_sha256: Optional[str] = None,
    map_location: str | torch.device = "cpu",
) -> tuple[LMSFA, Checkpoint]:
    """Build the model a checkpoint describes and load its weights.

    Raises :class:`CheckpointError` for a missing, corrupt, untrusted or mismatching file, or
    a SHA-256 that differs from ``expected_sha256``. The model is returned in eval mode.
    """
    payload, digest = read_checkpoint_file(path, expected_sha256)
    try:
        config = dict(payload["config"])
        nc = int(config["nc"])
        scale = str(config.get("scale", "n"))
        class_table = ClassTable.from_dict(payload["class_table"])
        input_size = tuple(int(v) for v in payload["input_size"])
        state_dict = payload["state_dict"]
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} is an incomplete LMSF-A checkpoint: {error!r}") from error
    if scale not in SCALES:
        raise CheckpointError(f"{path} uses scale {scale!r}; this lmsfa builds {sorted(SCALES)}")
    if len(class_table) != nc:
        raise CheckpointError(
            f"{path} is an invalid checkpoint: config says {nc} classes, its class table lists "
            f"{len(class_table)} ({class_table.names}); write it again with save_checkpoint"
        )
    if len(input_size) != 2 or any(v <= 0 or v % 32 for v in input_size):
        raise CheckpointError(f"{path} has input size {input_size}; sides must be positive multiples of 32")

    model = LMSFA(nc, scale)
    if config.get("reparameterized"):
        model.reparameterize()
    load_state_dict_checked(model, state_dict, source=str(path))
    model.eval().to(map_location)
    meta = Checkpoint(
        config=config,
        class_table=class_table,
        input_size=input_size,
        provenance=dict(payload.get("provenance") or {}),
        format_version=int(payload["format_version"]),
        sha256=digest,
        path=Path(path),
    )
    logger.info("loaded %s (%d classes, input %dx%d, SHA-256 %s)", path, nc, input_size[1], input_size[0], digest)
    return model, meta
