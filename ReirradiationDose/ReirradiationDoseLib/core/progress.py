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
