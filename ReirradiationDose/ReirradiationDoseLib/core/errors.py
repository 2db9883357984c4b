"""Error types of the core. Every message is a sentence a clinician understands and names the file involved.

Documented error types (anything else escaping a reader or the case parser is a bug):

- ``InputError`` (a ``ValueError``): bad or inconsistent input, refused.
- ``ProcessingCancelled``: the user cancelled a long step through the progress callback.
"""

from __future__ import annotations

import os


class InputError(ValueError):
    """Bad input. ``path`` (optional) is the file or folder the problem was found in."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class ProcessingCancelled(Exception):
    """Raised from a progress callback to stop a long computation cleanly."""
