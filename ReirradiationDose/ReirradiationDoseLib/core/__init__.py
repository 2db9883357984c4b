"""Slicer-free core: numpy, scipy, SimpleITK and pydicom only (what Slicer itself bundles)."""

__version__ = "0.1.0"
