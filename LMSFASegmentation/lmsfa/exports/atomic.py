"""Atomic output: a file or a whole folder appears under its final name only when complete.

Each writer works in a hidden temporary folder inside the target's folder, because
``os.replace`` is atomic only within one file system. An existing target is replaced
only with ``overwrite=True``, and only after the new output is complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import InputError, LmsfaError
from ..fileio import make_shareable


def check_target(path: Path, overwrite: bool) -> Path:
    """Raise :class:`InputError` when ``path`` exists without ``overwrite`` or its folder is missing."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists: choose another output name or allow overwriting (--overwrite)")
    if not path.parent.is_dir():
        raise InputError(f"output folder {path.parent} does not exist: create it first")
    return path


@contextlib.contextmanager
def atomic_file(path: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary path with the final file name; move it onto ``path`` when the block succeeds.

    Raises:
        InputError: see :func:`check_target`.
        LmsfaError: the block wrote no file.
    """
    path = check_target(path, overwrite)
    temp_folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    temp_path = temp_folder / path.name
    try:
        yield temp_path
        if not temp_path.is_file():
            raise LmsfaError(f"writing {path} failed: the writer produced no file")
        os.replace(temp_path, path)
    finally:
        shutil.rmtree(temp_folder, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(path: Path, overwrite: bool) -> Iterator[Path]:
    """Yield an empty temporary folder; it becomes ``path`` when the block succeeds.

    With ``overwrite`` an existing ``path`` (file or folder) is moved aside first and
    deleted after the new folder is in place. If the final move fails, the old output
    is moved back.

    Raises:
        InputError: see :func:`check_target`.
    """
    path = check_target(path, overwrite)
    temp_folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    old = None
    try:
        yield temp_folder
        make_shareable(temp_folder, folder=True)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent)) / path.name
            os.replace(path, old)
        try:
            os.replace(temp_folder, path)
        except OSError:
            if old is not None:
                os.replace(old, path)
            raise
    finally:
        shutil.rmtree(temp_folder, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old.parent, ignore_errors=True)

