"""One small progress-and-cancel interface shared by the CLI, the Slicer GUI and tests.

Long work (decoding, inference, training, export) calls ``progress.update(done, total)``
and ``progress.check_cancelled()`` between units of work. The GUI sets the cancel flag
from its thread; the CLI sets it on Ctrl+C.
"""

from __future__ import annotations

import threading
from typing import Callable, Optional

from .errors import Cancelled

ProgressCallback = Callable[[int, Optional[int], str], None]


class Progress:
    """Progress reporting with a thread-safe cancel flag.

    ``callback(done, total, message)`` receives the number of finished units, the total
    when known (``None`` otherwise) and a short status message.
    """

    def __init__(self, callback: Optional[ProgressCallback] = None):
        self._callback = callback
        self._cancel = threading.Event()

    def update(self, done: int, total: Optional[int] = None, message: str = "") -> None:
        if self._callback is not None:
            self._callback(done, total, message)

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` when :meth:`cancel` has been called."""
        if self._cancel.is_set():
            raise Cancelled("cancelled by the user")


NULL_PROGRESS = Progress()
