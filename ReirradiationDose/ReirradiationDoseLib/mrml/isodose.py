"""Isodose surfaces as model nodes, shown in slice views as coloured lines (like SlicerRT's Isodose module).

Each level L (Gy) gives the surface D(x) = L of the dose, extracted with flying edges (``vtkFlyingEdges3D``, linear
interpolation between voxel centres) in voxel (IJK) coordinates and mapped to RAS by the dose grid's IJK-to-RAS
matrix, so oblique grids are handled exactly. The model's display shows its intersection with every slice view
(``Visibility2D``) as a line in the level's colour.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import vtk
from scipy import ndimage
from vtkmodules.util import numpy_support

from ..core.errors import InputError
from ..core.geometry import ImageGeometry
from .nodes import arrayAndGeometryFromVolumeNode, removeNodes, vtkMatrixFromArray

logger = logging.getLogger(__name__)

__all__ = ["createIsodoseModels", "defaultIsodoseColors", "isodoseLegend", "ISODOSE_LEVEL_ATTRIBUTE"]

ISODOSE_LEVEL_ATTRIBUTE = "Reirradiation.IsodoseLevelGy"

# Default isodose colour scheme, low -> high dose: blue, cyan, green, yellow, orange, red, magenta.
_ISODOSE_STOPS = ((0.0, 0.2, 1.0), (0.0, 0.85, 1.0), (0.0, 0.8, 0.0), (1.0, 0.9, 0.0), (1.0, 0.5, 0.0),
                  (1.0, 0.0, 0.0), (1.0, 0.0, 1.0))


def defaultIsodoseColors(levelsGy: Sequence[float]) -> list[tuple[float, float, float]]:
    """One colour per level, ordered by dose: the lowest level blue, the highest red (magenta above 7 levels'
    worth), interpolated along blue -> cyan -> green -> yellow -> orange -> red -> magenta."""
    levels = [float(v) for v in levelsGy]
    if not levels:
        return []
    order = np.argsort(levels)
    count = len(levels)
    stops = np.array(_ISODOSE_STOPS)
    # use the stops up to red for <= 6 levels, the whole scale beyond
    top = 5 if count <= 6 else len(stops) - 1
    colors: list = [None] * count
    for rank, index in enumerate(order):
        t = 0.0 if count == 1 else rank / (count - 1) * top
        lo = int(np.floor(t))
        hi = min(lo + 1, len(stops) - 1)
        frac = t - lo
        colors[index] = tuple(float(c) for c in (1 - frac) * stops[lo] + frac * stops[hi])
    if count == 1:
        colors[0] = tuple(_ISODOSE_STOPS[5])
    return colors


def isodoseLegend(levelsGy: Sequence[float], colors: Sequence[Sequence[float]] | None = None,
                  unit: str = "Gy") -> list[tuple[str, tuple[float, float, float]]]:
    """Legend entries ``[(f"{level:g} Gy", colour), ...]`` from the highest level down."""
    colors = colors if colors is not None else defaultIsodoseColors(levelsGy)
    pairs = sorted(zip(levelsGy, colors, strict=True), key=lambda p: -float(p[0]))
    return [(f"{float(level):g} {unit}", tuple(float(c) for c in color[:3])) for level, color in pairs]


def _ijkImage(array: np.ndarray, geometry: ImageGeometry):
    """A vtkImageData of ``array`` ([k, j, i]) in voxel (IJK) space: spacing 1, origin 0."""
    image = vtk.vtkImageData()
    image.SetDimensions(*geometry.sizeXyz)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(
        np.ascontiguousarray(array, dtype=np.float32).ravel(), deep=True))
    return image


def createIsodoseModels(scene, dose, levelsGy: Sequence[float], colors: Sequence[Sequence[float]] | None = None,
                        name: str = "Isodose", lineThicknessPx: int = 2) -> list:
    """One model node per isodose level that the dose reaches, named ``f"{name} {level:g} Gy"``.

    Parameters
    ----------
    dose : a dose volume node, or ``(array [k, j, i] in Gy, ImageGeometry)``.
    levelsGy : dose levels in Gy. A level above the maximum dose (or below the minimum) has no surface and is
        skipped (logged); the returned list then has fewer models than levels.
    colors : RGB (0..1) per level; default :func:`defaultIsodoseColors`.

    The models show as lines of ``lineThicknessPx`` pixels in slice views and as semi-transparent surfaces in 3D.
    The level is stored in the node attribute ``Reirradiation.IsodoseLevelGy``.
    """
    if isinstance(dose, tuple):
        array, geometry = dose
        array = np.asarray(array)
        if not isinstance(geometry, ImageGeometry) or array.shape != geometry.shape:
            raise InputError("the dose must be a volume node or (array, ImageGeometry) of matching shape")
    else:
        array, geometry = arrayAndGeometryFromVolumeNode(dose)
    levels = [float(v) for v in levelsGy]
    if colors is None:
        colors = defaultIsodoseColors(levels)
    if len(colors) != len(levels):
        raise InputError(f"{len(levels)} isodose levels but {len(colors)} colours")

    known = np.isfinite(array)
    clipToKnown = None
    if not known.all() and known.any():
        # Unknown dose (NaN: outside a course's dose grid) is neither 0 Gy nor contoured: filled with the nearest
        # known value, so that no line runs along the edge of the unknown region (filled with 0 Gy, every level
        # below the dose there traced that edge), and each surface is clipped where the dose is known.
        nearest = ndimage.distance_transform_edt(~known, return_distances=False, return_indices=True)
        array = array[tuple(nearest)]
        clipToKnown = vtk.vtkImplicitVolume()
        clipToKnown.SetVolume(_ijkImage(known.astype(np.float32), geometry))
        clipToKnown.SetOutValue(0.0)
    image = _ijkImage(array, geometry)
    ijkToRas = vtk.vtkTransform()
    ijkToRas.SetMatrix(vtkMatrixFromArray(geometry.ijkToRasMatrix()))

    finite = array[np.isfinite(array)]
    lowest, highest = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    created = []
    try:
        for level, color in zip(levels, colors, strict=True):
            if not (lowest < level < highest):
                logger.info("isodose %g Gy skipped: the dose ranges %.2f .. %.2f Gy", level, lowest, highest)
                continue
            contour = vtk.vtkFlyingEdges3D()
            contour.SetInputData(image)
            contour.SetValue(0, level)
            contour.ComputeNormalsOff()
            contour.ComputeGradientsOff()
            contour.ComputeScalarsOff()
            toRas = vtk.vtkTransformPolyDataFilter()
            if clipToKnown is not None:
                clip = vtk.vtkClipPolyData()
                clip.SetInputConnection(contour.GetOutputPort())
                clip.SetClipFunction(clipToKnown)
                clip.SetValue(0.5)  # keeps the part where the known indicator (interpolated) exceeds 0.5
                toRas.SetInputConnection(clip.GetOutputPort())
            else:
                toRas.SetInputConnection(contour.GetOutputPort())
            toRas.SetTransform(ijkToRas)
            normals = vtk.vtkPolyDataNormals()  # consistent normals for shading in 3D after a flipping transform
            normals.SetInputConnection(toRas.GetOutputPort())
            normals.SplittingOff()
            normals.Update()
            polyData = vtk.vtkPolyData()
            polyData.DeepCopy(normals.GetOutput())
            if polyData.GetNumberOfPoints() == 0:
                logger.info("isodose %g Gy skipped: empty surface", level)
                continue
            model = scene.AddNewNodeByClass("vtkMRMLModelNode", f"{name} {level:g} Gy")
            created.append(model)
            model.SetAndObservePolyData(polyData)
            model.SetAttribute(ISODOSE_LEVEL_ATTRIBUTE, f"{level:g}")
            model.CreateDefaultDisplayNodes()
            display = model.GetDisplayNode()
            display.SetColor(*[float(c) for c in color[:3]])
            display.SetOpacity(0.3)
            display.SetVisibility(True)
            display.SetVisibility2D(True)
            display.SetSliceIntersectionThickness(int(lineThicknessPx))
            display.SetScalarVisibility(False)
    except Exception:
        removeNodes(scene, created)
        raise
    return created
