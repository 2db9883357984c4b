"""Paths of the test suite: project root, the shared real data (../shared/data), artifacts for humans to look at.

Import as ``from reirradiation_testing import sharedDataPath`` (a unique name: each test folder has a conftest).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("REIRRADIATION_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))
ARTIFACTS = PROJECT_ROOT / "Testing" / "_artifacts"


def sharedDataPath(*parts: str) -> Path:
    """Path inside ../shared/data; skips the calling test with a clear message when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared test data not found at {path} (it lives beside the project in ../shared/data; "
                    "a fresh clone without it skips these tests)")
    return path
