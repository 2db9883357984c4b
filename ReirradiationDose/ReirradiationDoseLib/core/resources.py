"""Paths of the module's shipped resources (tissue table, constraint sets), and the JSON reading shared by the
user's files (case file, constraint and tissue files).

``Resources/ReirradiationDose/`` sits two levels above this file both in the source tree
(``ReirradiationDose/ReirradiationDoseLib/core``) and after Slicer installs the module (one flat folder holding
``ReirradiationDoseLib/`` and ``Resources/``).
"""

from __future__ import annotations

from pathlib import Path

from .errors import InputError

__all__ = ["resourceFolder", "resourcePath", "uniqueKeysObject", "DuplicateKeyError"]


def resourceFolder() -> Path:
    return Path(__file__).resolve().parents[2] / "Resources" / "ReirradiationDose"


def resourcePath(name: str) -> Path:
    """The path of a shipped resource file; :class:`InputError` when it is missing."""
    path = resourceFolder() / name
    if not path.is_file():
        raise InputError(f"the shipped resource {name!r} is missing from {resourceFolder()}", path)
    return path


class DuplicateKeyError(ValueError):
    """A JSON object holds one key twice."""


def uniqueKeysObject(pairs) -> dict:
    """``json.loads(..., object_pairs_hook=uniqueKeysObject)``: a key given twice in one object (``"fractions": 25``
    ... ``"fractions": 5``) raises :class:`DuplicateKeyError` instead of silently keeping the last one."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(f"the key '{key}' is given twice in one object")
        out[key] = value
    return out
