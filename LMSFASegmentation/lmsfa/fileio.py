"""File permissions for atomically written outputs.

``tempfile.mkstemp`` and ``mkdtemp`` create owner-only entries (0600 and 0700), so a file or
folder renamed into place from them would keep those modes. Outputs get the modes a plain
``open()`` or ``mkdir()`` would give under the process umask instead.
"""

from __future__ import annotations

import os


def _umask() -> int:
    # Linux reports the umask without changing it; os.umask must set it to read it, which
    # briefly affects files that other threads create.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_shareable(path: str | os.PathLike, folder: bool = False) -> None:
    """Set ``path`` to 0666 (files) or 0777 (folders) minus the process umask."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())
