"""Shared pytest fixtures: paths, the shared real data, and a real MRML scene from slicer-core."""

from __future__ import annotations

from pathlib import Path

import pytest

from reirradiation_testing import ARTIFACTS, PROJECT_ROOT, SHARED_DATA, sharedDataPath  # noqa: F401


@pytest.fixture
def sharedData():
    return sharedDataPath


@pytest.fixture(scope="session")
def artifactsDir() -> Path:
    """Where tests write pictures and reports for a human to look at (git-ignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def demoCase(tmp_path_factory):
    """The small built-in demo case, generated once per test session (deterministic)."""
    from ReirradiationDoseLib.core.democase.generate import generateDemoCase

    return generateDemoCase(tmp_path_factory.mktemp("demo") / "case", size="small")
