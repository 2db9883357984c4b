"""Fixtures for tests on a real MRML scene from slicer-core (no Slicer application, no Qt)."""

from __future__ import annotations

import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install -e .[test])")


@pytest.fixture
def scene():
    """A fresh scene from createScene(), with its module logics; cleared and released after the test."""
    from ReirradiationDoseLib.mrml.scene import closeScene, createScene

    newScene = createScene()
    yield newScene
    closeScene(newScene)
