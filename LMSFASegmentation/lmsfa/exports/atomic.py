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


# Every folder an export writes contains this file. Overwriting replaces only folders that
# have it, so ``--overwrite`` never deletes a folder of the user's own files.
EXPORT_MARKER = ".lmsfa-export"


def check_target(path: Path, overwrite: bool) -> Path:
    """Raise :class:`InputError` when ``path`` exists without ``overwrite`` or its folder is missing."""
    path = Path(path).absolute()
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists: choose another output name or allow overwriting (--overwrite)")
    if not path.parent.is_dir():
        raise InputError(f"output folder {path.parent} does not exist: create it first")
    return path


@contextlib.contextmanager
def atomic_file(path: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary path with the final file name; move it onto ``path`` when the block succeeds.

    The temporary file sits in a hidden temporary folder inside the target folder, because
    ``os.replace`` is atomic only within one file system. It keeps the final file name,
    because Slicer's writers derive the format (and a bundle's scene name) from it.

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

    With ``overwrite`` an existing export folder (one that contains :data:`EXPORT_MARKER`)
    is moved aside first and deleted after the new folder is in place. Any other existing
    file or folder is never replaced. If the final move fails, the old output
    is moved back.

    Raises:
        InputError: see :func:`check_target`.
    """
    path = check_target(path, overwrite)
    if path.is_file():
        raise InputError(f"{path} is a file: give a folder name for this export format")
    if path.is_dir() and not (path / EXPORT_MARKER).is_file():
        raise InputError(
            f"{path} is a folder that no lmsfa export wrote: --overwrite replaces only earlier export "
            "folders, so choose a new output folder"
        )
    temp_folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    old = None
    try:
        yield temp_folder
        (temp_folder / EXPORT_MARKER).write_text("written by lmsfa export; replaced by --overwrite\n")
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

