"""Atomic outputs: a run writes into a temporary folder and moves it into place only on success.

An interrupted or failed run therefore never leaves a half-written output folder that looks complete; a previous
complete output of the same name is kept until the new one is whole.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

__all__ = ["OUTPUT_MARKER", "checkOutputDir", "checkOutputFiles", "atomicOutputDir", "atomicWriteText",
           "atomicWriteFile", "safeName"]

# every output folder holds this file; only a folder that holds it (or an empty one) is ever replaced
OUTPUT_MARKER = ".reirradiation-output"


def checkOutputDir(path, overwrite: bool = True) -> Path:
    """The absolute output folder, or an InputError naming it when it cannot be written or must not be replaced:
    an empty path (it would be the current folder), a file, a folder holding anything but an earlier output of
    this tool (its inputs, the current folder, someone's documents: replacing it would delete them), or a place
    where no folder can be made. Called before a long run, so that it fails at once, and again when writing."""
    from .errors import InputError

    if not str(path).strip():
        raise InputError("no output folder given (an empty path would mean the current folder)")
    path = Path(path).absolute()
    if path.is_symlink():
        try:
            target = path.resolve(strict=False)
        except (RuntimeError, OSError) as error:  # a link that leads back to itself: failed after the whole run
            raise InputError(f"the output folder is a symbolic link that cannot be followed ({error})", path
                             ) from None
        if not path.exists() and not target.parent.is_dir():
            # a link to a share not mounted: its whole path was made on the local disk (an adversarial review)
            raise InputError(f"the output folder is a symbolic link to {target}, whose folder {target.parent} does "
                             "not exist (a share not mounted?)", path)
    if path.exists() and not path.is_dir():
        raise InputError("the output path exists and is not a folder", path)
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise InputError("the output folder exists and is not empty", path)
        if not _isEarlierOutput(path):
            raise InputError("the output folder exists and holds files that are not an earlier output of "
                             f"Reirradiation (it has no {OUTPUT_MARKER}): it is not replaced; give a new folder, "
                             "or empty this one first", path)
        added = _filesNotWritten(path)
        if added:
            # a newcomer's review: notes put into an earlier output were deleted with it, without a word
            shown = ", ".join(added[:5]) + (f" and {len(added) - 5} more" if len(added) > 5 else "")
            raise InputError(f"the output folder is an earlier output of Reirradiation, but holds files it did not "
                             f"write ({shown}): replacing the folder would delete them; move them out or give a new "
                             "folder", path)
    blocked = _unwritableAncestor(path)
    if blocked is not None:
        raise InputError(f"the output folder cannot be made: {blocked} is not a writable folder", path)
    return path


def checkOutputFiles(outputs: dict, inputs=(), suffixes: dict | None = None) -> None:
    """Refuse, before anything is computed or written, output files (``{option: path}``, None = not asked) that
    cannot be written: an empty path, a folder, a folder that cannot be made, the same file twice, an input file
    (``inputs``: it would be overwritten), or a name without one of ``suffixes[option]``. A command checked its
    outputs only when writing them: one written, the next failing with a traceback, an input overwritten."""
    from .errors import InputError

    asked = {option: path for option, path in outputs.items() if path is not None}
    seen: dict = {}
    inputPaths = {Path(str(p).split("#")[0]).absolute() for p in inputs if p}
    for option, path in asked.items():
        if not str(path).strip():
            raise InputError(f"{option}: no file name given")
        target = Path(path).absolute()
        wanted = (suffixes or {}).get(option)
        if wanted and not target.name.casefold().endswith(tuple(wanted)):
            raise InputError(f"{option}: the file must end with {' or '.join(wanted)}", target)
        if target.is_dir():
            raise InputError(f"{option}: this is a folder; give a file name", target)
        if target in inputPaths:
            raise InputError(f"{option}: this is one of the inputs; it would be overwritten", target)
        if target in seen:
            raise InputError(f"{option} and {seen[target]} name the same file", target)
        seen[target] = option
        blocked = _unwritableAncestor(target)
        if blocked is not None:
            raise InputError(f"{option}: the file cannot be written: {blocked} is not a writable folder", target)


def _unwritableAncestor(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` when it is not a folder this process may write into (the place
    where ``path`` cannot be made), else None."""
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
        return existing
    # permissions can say yes where nothing can be made (a read-only mount, /proc, /sys, as root): a folder made and
    # removed at once tells (an adversarial review: refused only after the whole computation, naming the hidden
    # temporary folder)
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".reirradiation-probe-", dir=existing))
    except OSError:
        return existing
    return None


def safeName(name: str) -> str:
    """A name usable in an output file name (a course's maps: ``course_<safeName>_eqd2.nrrd``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "course"


_MANIFEST_HEADER = "files written:"


def _manifest(folder: Path) -> list[str]:
    """Every file under ``folder`` (relative, '/'-separated) but the marker."""
    return sorted(f.relative_to(folder).as_posix() for f in folder.rglob("*")
                  if (f.is_file() or f.is_symlink()) and f.name != OUTPUT_MARKER)


def _filesNotWritten(path: Path) -> list[str]:
    """Files of an earlier output that its marker does not list (added by someone since); none for a marker without
    a list (written before the list existed)."""
    try:
        text = (path / OUTPUT_MARKER).read_text(encoding="utf-8")
    except OSError:
        return []
    if _MANIFEST_HEADER not in text:
        return []
    written = {line.strip() for line in text.split(_MANIFEST_HEADER, 1)[1].splitlines() if line.strip()}
    return [name for name in _manifest(path) if name not in written and not fileBrowserFile(name)]


def fileBrowserFile(relative: str) -> bool:
    """What a file browser leaves in a folder it shows (.DS_Store, ._name, Icon\\r, .AppleDouble/, Thumbs.db,
    ehthumbs.db, desktop.ini, .directory): not the user's work (a verification review: a Finder visit blocked the next
    `demo`). Any other hidden file (.git, notes) is the user's and stops the run like any file."""
    parts = relative.split("/")
    name = parts[-1]
    return (name.startswith("._") or name == "Icon\r" or ".AppleDouble" in parts[:-1]
            or name.lower() in (".ds_store", "thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini",
                                ".directory"))


def _isEarlierOutput(path: Path) -> bool:
    """An output of this tool: it holds the marker, or (written before the marker existed) a ``summary.json`` or
    ``study.json`` that names Reirradiation as its software."""
    import json

    if (path / OUTPUT_MARKER).is_file():
        return True
    for name in ("summary.json", "study.json"):
        try:
            data = json.loads((path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and str(data.get("software", "")).lower().startswith("reirradiation"):
            return True
    return False


@contextlib.contextmanager
def atomicOutputDir(path, overwrite: bool = True):
    """Yield a temporary folder beside ``path``; on normal exit it replaces ``path``, on error it is deleted.

    Parameters
    ----------
    path : the final output folder; an existing one is replaced only when it is empty or an earlier output (it
        holds ``OUTPUT_MARKER``, which every output gets): :func:`checkOutputDir`.
    overwrite : replace an existing earlier output (default). When False an existing non-empty folder is refused.

    A ``path`` that is a symbolic link (an output folder on a share) is written through: the folder it points to is
    replaced, beside itself, and the link stays. Before, the link itself was renamed away: ``path`` became a local
    folder, the share kept the old results and the old link was left as a hidden ``.<name>.previous-<pid>``.
    """
    path = checkOutputDir(path, overwrite)
    if path.is_symlink():
        path = checkOutputDir(path.resolve(), overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        temporary.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the output is an ordinary folder
        (temporary / OUTPUT_MARKER).write_text("Written by Reirradiation. Writing the same output again replaces "
                                               "this folder as a whole.\n", encoding="utf-8")
        yield temporary
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    marker = temporary / OUTPUT_MARKER
    marker.write_text(marker.read_text(encoding="utf-8") + _MANIFEST_HEADER + "\n"
                      + "".join(f"{name}\n" for name in _manifest(temporary)), encoding="utf-8")
    from .progress import deferInterrupts

    with deferInterrupts(raiseOnExit=False):  # Ctrl-C or SIGTERM waits until the new output is in place
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
    path.parent.mkdir(parents=True, exist_ok=True)
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
