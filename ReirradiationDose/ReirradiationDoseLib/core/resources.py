"""Paths of the module's shipped resources (tissue table, constraint sets).

``Resources/ReirradiationDose/`` sits two levels above this file both in the source tree
(``ReirradiationDose/ReirradiationDoseLib/core``) and after Slicer installs the module (one flat folder holding
``ReirradiationDoseLib/`` and ``Resources/``).
"""

from __future__ import annotations

from pathlib import Path

from .errors import InputError

__all__ = ["resourceFolder", "resourcePath"]


def resourceFolder() -> Path:
    return Path(__file__).resolve().parents[2] / "Resources" / "ReirradiationDose"


def resourcePath(name: str) -> Path:
    """The path of a shipped resource file; :class:`InputError` when it is missing."""
    path = resourceFolder() / name
    if not path.is_file():
        raise InputError(f"the shipped resource {name!r} is missing from {resourceFolder()}", path)
    return path
