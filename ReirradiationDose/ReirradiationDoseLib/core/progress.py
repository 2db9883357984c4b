"""Progress reporting without Qt: long functions take ``progress(fraction, message)``.

The callback may raise :class:`~ReirradiationDoseLib.core.errors.ProcessingCancelled` to cancel; the Slicer widget
connects it to a progress dialog, the CLI to a text bar.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .errors import ProcessingCancelled

__all__ = ["ProgressCallback", "noProgress", "subProgress", "ProcessingCancelled"]


class ProgressCallback(Protocol):
    def __call__(self, fraction: float, message: str = "") -> None: ...


def noProgress(fraction: float, message: str = "") -> None:
    """The default callback: does nothing."""


def subProgress(progress: Callable[[float, str], None] | None, start: float, stop: float) -> ProgressCallback:
    """A callback mapping [0, 1] of a sub-step onto [start, stop] of the parent's progress."""
    parent = progress or noProgress

    def callback(fraction: float, message: str = "") -> None:
        parent(start + (stop - start) * min(max(float(fraction), 0.0), 1.0), message)

    return callback


class TextProgressBar:
    """A terminal progress bar for the CLI: ``[#####.....]  52 % message`` on one rewritten line of ``stream``."""

    def __init__(self, stream=None, width: int = 30):
        import sys

        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self._last = None
        self._interactive = hasattr(self.stream, "isatty") and self.stream.isatty()

    def __call__(self, fraction: float, message: str = "") -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        filled = int(round(self.width * fraction))
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {100 * fraction:3.0f} % {message}"
        if self._interactive:
            self.stream.write("\r" + line[:120].ljust(120))
            if fraction >= 1.0:
                self.stream.write("\n")
        elif message != self._last:
            self.stream.write(line + "\n")
        self._last = message
        self.stream.flush()
