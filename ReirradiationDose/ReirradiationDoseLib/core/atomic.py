"""Atomic outputs: a run writes into a temporary folder and moves it into place only on success.

An interrupted or failed run therefore never leaves a half-written output folder that looks complete; a previous
complete output of the same name is kept until the new one is whole.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["atomicOutputDir", "atomicWriteText", "atomicWriteFile"]


@contextlib.contextmanager
def atomicOutputDir(path, overwrite: bool = True):
    """Yield a temporary folder beside ``path``; on normal exit it replaces ``path``, on error it is deleted.

    Parameters
    ----------
    path : the final output folder.
    overwrite : replace an existing ``path`` (default). When False an existing non-empty folder is refused.
    """
    from .errors import InputError

    path = Path(path).absolute()
    if path.exists() and not path.is_dir():
        raise InputError("the output path exists and is not a folder", path)
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise InputError("the output folder exists and is not empty", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        temporary.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the output is an ordinary folder
        yield temporary
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    backup = None
    if path.exists():
        backup = path.parent / f".{path.name}.previous-{os.getpid()}"
        shutil.rmtree(backup, ignore_errors=True)
        path.rename(backup)
    try:
        temporary.rename(path)
    except BaseException:
        if backup is not None:
            backup.rename(path)
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def _umask() -> int:
    """The process's file-creation mask (read by setting and restoring it: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomicWriteFile(path, write) -> None:
    """Write a file through ``write(temporaryPath)`` on a temporary file in the same folder and an atomic rename:
    a failed write leaves neither a partial file nor a changed old one."""
    path = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private; the file is an ordinary one
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def atomicWriteText(path, text: str, encoding: str = "utf-8") -> None:
    """Write a text file through a temporary file in the same folder and an atomic rename."""
    atomicWriteFile(path, lambda temporary: Path(temporary).write_text(text, encoding=encoding))
