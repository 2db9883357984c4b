"""Progress reporting without Qt: long functions take ``progress(fraction, message)``.

The callback may raise :class:`~ReirradiationDoseLib.core.errors.ProcessingCancelled` to cancel; the Slicer widget
connects it to a progress dialog, the CLI to a text bar.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Protocol

from .errors import ProcessingCancelled

__all__ = ["ProgressCallback", "noProgress", "subProgress", "finishProgress", "committedProgress",
           "ProcessingCancelled", "INTERRUPT", "deferInterrupts"]

# An interruption (Ctrl-C, SIGTERM) the command line's signal handler noted: "signal" is its number (None: none);
# while "deferred" > 0 the handler only notes it instead of raising KeyboardInterrupt, because Python code then runs
# inside a C++ library's callback (SimpleITK's iteration events), where an exception is printed with a traceback
# and wrapped in a RuntimeError. The callback sees the note and stops the library; the caller then raises.
INTERRUPT: dict = {"signal": None, "deferred": 0}


@contextlib.contextmanager
def deferInterrupts(raiseOnExit: bool = True):
    """Note, not raise, an interruption while a library whose callbacks run Python is executing (see INTERRUPT); one
    noted is raised as KeyboardInterrupt on leaving. ``raiseOnExit`` False: a step that must finish once begun (an
    output folder put in place: interrupted between its renames, neither the earlier output nor the new one was
    where it belongs — a verification review); the run then ends as if the interruption came after it."""
    INTERRUPT["deferred"] += 1
    try:
        yield
    finally:
        INTERRUPT["deferred"] -= 1
    if raiseOnExit and INTERRUPT["signal"] is not None and not INTERRUPT["deferred"]:
        raise KeyboardInterrupt


class ProgressCallback(Protocol):
    def __call__(self, fraction: float, message: str = "") -> None: ...


def noProgress(fraction: float, message: str = "") -> None:
    """The default callback: does nothing."""


def finishProgress(progress: Callable[[float, str], None] | None, message: str = "Done") -> None:
    """Report 100 %. A cancel that arrives then is too late: the work is done and its nodes are in the scene, so it
    is ignored (raised from here it left the outputs in the scene while the module said "nothing was added")."""
    committedProgress(progress)(1.0, message)


def committedProgress(progress: Callable[[float, str], None] | None) -> ProgressCallback:
    """``progress`` past the point of no return: reported, but a cancel is ignored (the outputs are being written
    and are completed; stopped half-way they mixed two runs while the module said "nothing was added")."""
    def callback(fraction: float, message: str = "") -> None:
        if progress is None:
            return
        try:
            progress(fraction, message)
        except ProcessingCancelled:
            pass

    return callback


def subProgress(progress: Callable[[float, str], None] | None, start: float, stop: float) -> ProgressCallback:
    """A callback mapping [0, 1] of a sub-step onto [start, stop] of the parent's progress."""
    parent = progress or noProgress

    def callback(fraction: float, message: str = "") -> None:
        parent(start + (stop - start) * min(max(float(fraction), 0.0), 1.0), message)

    return callback


class TextProgressBar:
    """``progress(fraction, message)`` drawn as a one-line text bar on a terminal, or as plain lines otherwise."""

    def __init__(self, stream=None, width: int = 30):
        import sys

        self.stream = stream or sys.stderr
        self.width = width
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self._lastMessage = None
        self._lastLength = 0

    def __call__(self, fraction: float, message: str = "") -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        if self.interactive:
            filled = int(round(fraction * self.width))
            line = f"[{'#' * filled}{'.' * (self.width - filled)}] {fraction * 100:3.0f}% {message}"[:120]
            self.stream.write("\r" + line + " " * max(0, self._lastLength - len(line)))
            self._lastLength = len(line)
            self.stream.flush()
        elif message != self._lastMessage:
            self.stream.write(f"[{fraction * 100:3.0f}%] {message}\n")
            self.stream.flush()
        self._lastMessage = message

    def finish(self) -> None:
        if self.interactive and self._lastLength:
            self.stream.write("\n")
            self.stream.flush()
