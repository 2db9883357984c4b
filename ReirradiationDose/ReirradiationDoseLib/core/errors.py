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


def libraryReason(error: BaseException) -> str:
    """The reason in a SimpleITK / ITK exception, without the C++ source file and line it was thrown from: "Unable
    to determine ImageIO reader for ..." out of "Exception thrown in SimpleITK ImageFileReader_Execute:
    /work/src/Code/IO/src/sitkImageReaderBase.cxx:99: sitk::ERROR: Unable to ..." (an adversarial review: messages
    showed the build path and no reason)."""
    text = " ".join(str(error).split())
    # ITK writes "ITK ERROR:" or, in newer releases, "itk::ERROR:" ("sitk::ERROR:", SimpleITK's own, is looked for
    # first: it ends with the other's text)
    for marker in ("sitk::ERROR:", "itk::ERROR:", "ITK ERROR:", "Description:"):
        at = text.rfind(marker)
        if at >= 0:
            reason = text[at + len(marker):].strip()
            if marker in ("ITK ERROR:", "itk::ERROR:"):
                reason = reason.split("):", 1)[-1].strip()  # "ImageFileReader(0x55...): reason"
            if reason:
                return reason
    return text
