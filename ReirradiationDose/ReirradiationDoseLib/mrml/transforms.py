"""SimpleITK transforms <-> Slicer transform nodes.

The core's registration transform ``T`` maps fixed (current) LPS points to moving (prior) LPS points: ITK's
resampling transform. In Slicer that is the transform **from parent** of a node placed above the moving volume
(the node's "to parent" transform, its inverse, moves the moving image onto the fixed one), and Slicer works in
RAS. With ``F = diag(-1, -1, 1)``:

- linear: ``M_ras = F4 @ M_lps @ F4`` (``F4 = diag(-1, -1, 1, 1)``), set as the matrix *from parent*;
- displacement field: the grid's origin ``F o``, direction ``F D`` and every vector ``F u`` (a
  ``vtkOrientedGridTransform`` set as the transform *from parent* of a ``vtkMRMLGridTransformNode``).

Reading a node back gives the same LPS transform; a node that only holds its "to parent" direction (e.g. edited in
Slicer) is sampled through its from-parent transform on a reference grid. A node placed under other transform nodes
is read with them (its transform from world), as Slicer shows a volume placed under it.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from ..core.errors import InputError
from ..core.geometry import ImageGeometry
from ..core.registration import displacementFieldFromTransform, displacementFieldTransform, homogeneousMatrix
from .nodes import arrayFromVtkMatrix, vtkMatrixFromArray

__all__ = [
    "DICOM_REGISTRATION_ATTRIBUTE",
    "lpsMatrixFromSitk",
    "transformNodeFromDicomRegistration",
    "transformNodeFromSitk",
    "sitkTransformFromNode",
    "transformChainNames",
    "updateTransformNodeFromSitk",
]

# on nodes read from a DICOM REG: its path (the Kind, Frames and Warnings attributes share the prefix)
DICOM_REGISTRATION_ATTRIBUTE = "Reirradiation.DicomRegistrationFile"

_F4 = np.diag([-1.0, -1.0, 1.0, 1.0])
_F3 = np.diag([-1.0, -1.0, 1.0])


def lpsMatrixFromSitk(transform: sitk.Transform) -> np.ndarray:
    """4x4 homogeneous LPS matrix of a linear SimpleITK transform (:func:`..core.registration.homogeneousMatrix`)."""
    if not transform.IsLinear():
        raise InputError(f"a {transform.GetName()} is not linear")
    return homogeneousMatrix(transform)


def _gridTransformFromField(field: sitk.Image) -> vtk.vtkAbstractTransform:
    """A vtkOrientedGridTransform in RAS from an LPS displacement field image."""
    geometry = ImageGeometry.fromImage(field)
    vectors = sitk.GetArrayFromImage(field).astype(np.float64)  # [k, j, i, 3] LPS
    vectors[..., 0] *= -1.0
    vectors[..., 1] *= -1.0
    grid = vtk.vtkImageData()
    grid.SetDimensions(*geometry.sizeXyz)
    grid.SetSpacing(*geometry.spacingMm)
    grid.SetOrigin(*(_F3 @ np.array(geometry.originMm)))
    array = numpy_support.numpy_to_vtk(vectors.reshape(-1, 3), deep=True, array_type=vtk.VTK_DOUBLE)
    array.SetName("DisplacementField")
    grid.GetPointData().SetScalars(array)
    direction = np.eye(4)
    direction[:3, :3] = _F3 @ geometry.directionMatrix
    transform = slicer.vtkOrientedGridTransform()
    transform.SetDisplacementGridData(grid)
    transform.SetGridDirectionMatrix(vtkMatrixFromArray(direction))
    transform.SetInterpolationModeToLinear()
    return transform


def _fieldFromGridTransform(transform) -> sitk.Image:
    grid = transform.GetDisplacementGrid()
    if grid is None:
        raise InputError("the grid transform has no displacement grid")
    dims = grid.GetDimensions()
    vectors = numpy_support.vtk_to_numpy(grid.GetPointData().GetScalars()).astype(np.float64)
    vectors = vectors.reshape(dims[2], dims[1], dims[0], 3) * transform.GetDisplacementScale() \
        + transform.GetDisplacementShift()
    vectors[..., 0] *= -1.0
    vectors[..., 1] *= -1.0
    directionRas = np.eye(3)
    if transform.GetGridDirectionMatrix() is not None:
        directionRas = arrayFromVtkMatrix(transform.GetGridDirectionMatrix())[:3, :3]
    field = sitk.GetImageFromArray(vectors, isVector=True)
    field.SetSpacing(grid.GetSpacing())
    field.SetOrigin([float(v) for v in _F3 @ np.array(grid.GetOrigin())])
    field.SetDirection([float(v) for v in (_F3 @ directionRas).ravel()])
    return field


def _sampleVtkTransform(transform: vtk.vtkAbstractTransform, geometry: ImageGeometry) -> sitk.Image:
    """Displacement (LPS) of any RAS vtk transform sampled at the voxel centres of ``geometry``."""
    pointsLps = geometry.voxelCentresLps().reshape(-1, 3)
    pointsRas = pointsLps * np.array([-1.0, -1.0, 1.0])
    source = vtk.vtkPoints()
    source.SetData(numpy_support.numpy_to_vtk(pointsRas, deep=True, array_type=vtk.VTK_DOUBLE))
    target = vtk.vtkPoints()
    transform.TransformPoints(source, target)
    mappedRas = numpy_support.vtk_to_numpy(target.GetData()).astype(np.float64)
    displacement = (mappedRas - pointsRas) * np.array([-1.0, -1.0, 1.0])
    field = sitk.GetImageFromArray(displacement.reshape(geometry.shape + (3,)), isVector=True)
    geometry.applyTo(field)
    return field


def updateTransformNodeFromSitk(node, transform: sitk.Transform, referenceGeometry: ImageGeometry | None = None):
    """Store ``transform`` (fixed -> moving, LPS) in an existing linear or grid transform node (from parent, RAS)."""
    if transform.IsLinear():
        if not node.IsA("vtkMRMLLinearTransformNode"):
            raise InputError("a linear transform needs a linear transform node")
        node.SetMatrixTransformFromParent(vtkMatrixFromArray(_F4 @ lpsMatrixFromSitk(transform) @ _F4))
        return node
    if not node.IsA("vtkMRMLGridTransformNode"):
        raise InputError("a deformable transform needs a grid transform node")
    if referenceGeometry is None:
        down = transform.Downcast() if hasattr(transform, "Downcast") else transform
        if not isinstance(down, sitk.DisplacementFieldTransform):
            raise InputError("a reference grid is needed to store this deformable transform in Slicer")
        field = down.GetDisplacementField()
    else:
        field = displacementFieldFromTransform(transform, referenceGeometry.emptyImage())
    node.SetAndObserveTransformFromParent(_gridTransformFromField(field))
    return node


def transformNodeFromSitk(scene, transform: sitk.Transform, name: str = "Registration",
                          referenceGeometry: ImageGeometry | None = None):
    """A new transform node in ``scene`` holding ``transform``: linear node for linear transforms, grid node
    (displacement sampled on ``referenceGeometry``, usually the fixed CT) otherwise. Place the moving volume under
    it to see it aligned with the fixed one."""
    className = "vtkMRMLLinearTransformNode" if transform.IsLinear() else "vtkMRMLGridTransformNode"
    node = scene.AddNewNodeByClass(className, name)
    try:
        updateTransformNodeFromSitk(node, transform, referenceGeometry)
    except Exception:
        scene.RemoveNode(node)  # nothing half-made left in the scene
        raise
    return node


def sitkTransformFromNode(node, referenceGeometry: ImageGeometry | None = None) -> sitk.Transform:
    """The fixed -> moving LPS SimpleITK transform held by a transform node: its transform *from world*, i.e. its own
    transform from parent after those of the transform nodes it sits under (Slicer shows a volume placed under
    the node through all of them, so the dose mapping must use all of them).

    Linear nodes give an ``AffineTransform`` (a chain of linear nodes one matrix); grid nodes a
    ``DisplacementFieldTransform`` on the node's own grid (in a chain, composed with the others). A node that
    stores a transform that is not a plain grid (e.g. the inverse of a "to parent" grid), alone or anywhere in the
    chain, is sampled (the whole chain) on ``referenceGeometry``: exact at its voxel centres, where the dose mapping
    evaluates it.
    """
    chain = [node]
    while chain[-1].GetParentTransformNode() is not None:
        parent = chain[-1].GetParentTransformNode()
        if any(parent is seen for seen in chain):  # pragma: no cover - MRML refuses circular hierarchies
            raise InputError(f"transform '{node.GetName()}' sits in a circular transform hierarchy")
        chain.append(parent)
    if all(n.IsLinear() for n in chain):
        matrix = vtk.vtkMatrix4x4()
        node.GetMatrixTransformFromWorld(matrix)
        return _affineFromRas(arrayFromVtkMatrix(matrix))
    if all(n.IsLinear() or _plainGrid(n) is not None for n in chain):
        members = [_ownTransform(n) for n in chain]
        # SimpleITK applies a composite's last transform first: the outermost parent acts first on a world point
        return members[0] if len(members) == 1 else sitk.CompositeTransform(members)
    if referenceGeometry is None:
        raise InputError(f"transform '{node.GetName()}' is not a plain grid from parent; a reference grid is needed "
                         "to sample it")
    if len(chain) == 1:
        return displacementFieldTransform(_sampleVtkTransform(node.GetTransformFromParent(), referenceGeometry))
    fromWorld = vtk.vtkGeneralTransform()
    node.GetTransformFromWorld(fromWorld)
    return displacementFieldTransform(_sampleVtkTransform(fromWorld, referenceGeometry))


def transformChainNames(node) -> list[str]:
    """The names of ``node`` and of the transform nodes it sits under, innermost first (for reports)."""
    names = []
    while node is not None and len(names) < 64:
        names.append(node.GetName())
        node = node.GetParentTransformNode()
    return names


def _affineFromRas(matrixRas: np.ndarray) -> sitk.AffineTransform:
    lps = _F4 @ matrixRas @ _F4
    affine = sitk.AffineTransform(3)
    affine.SetMatrix([float(v) for v in lps[:3, :3].ravel()])
    affine.SetTranslation([float(v) for v in lps[:3, 3]])
    return affine


def _plainGrid(node):
    """The node's own from-parent grid transform when it is stored as such (not inverted), else None."""
    fromParent = node.GetTransformFromParent()
    if fromParent is not None and fromParent.IsA("vtkOrientedGridTransform") and not fromParent.GetInverseFlag() \
            and fromParent.GetDisplacementGrid() is not None:
        return fromParent
    return None


def _ownTransform(node) -> sitk.Transform:
    """A linear or plain-grid node's own transform from parent, as SimpleITK (LPS)."""
    if node.IsLinear():
        matrix = vtk.vtkMatrix4x4()
        node.GetMatrixTransformFromParent(matrix)
        return _affineFromRas(arrayFromVtkMatrix(matrix))
    return displacementFieldTransform(_fieldFromGridTransform(_plainGrid(node)))


def transformNodeFromDicomRegistration(scene, path, referenceGeometry: ImageGeometry | None = None,
                                       fixedFrameOfReferenceUid: str | None = None,
                                       movingFrameOfReferenceUid: str | None = None, name: str | None = None):
    """A transform node holding a DICOM REG file (spatial or deformable) read by the core's reader
    (:func:`..core.dicomreg.readDicomRegistration`: directions as PS3.3 C.20.2.1.1 / C.20.3.1.1 define them, the
    item picked by frames of reference), placed like every registration of this module: above the moving (prior)
    volume, its transform from parent mapping fixed (current CT) RAS points to moving RAS points.

    A deformable REG is sampled on ``referenceGeometry`` (the current CT's grid; required). The REG's description
    and any reader warnings are kept as node attributes ``Reirradiation.DicomRegistration*``. Returns
    ``(node, warnings)``; nothing is added to the scene when the file is refused (InputError naming it).
    """
    from ..core import dicomreg

    found = dicomreg.readDicomRegistration(path, fixedFrameOfReferenceUid, movingFrameOfReferenceUid)
    if found.kind == "deformable" and referenceGeometry is None:
        raise InputError("a deformable DICOM registration needs the reference (current CT) grid to be sampled on",
                         path)
    label = name or found.seriesDescription or found.contentLabel or "DICOM registration"
    node = transformNodeFromSitk(scene, found.transform, label,
                                 referenceGeometry if found.kind == "deformable" else None)
    node.SetAttribute(DICOM_REGISTRATION_ATTRIBUTE, str(path))
    node.SetAttribute("Reirradiation.DicomRegistrationKind", found.kind)
    node.SetAttribute("Reirradiation.DicomRegistrationFrames",
                      f"{found.fixedFrameOfReferenceUid} -> {found.movingFrameOfReferenceUid}")
    if found.warnings:
        node.SetAttribute("Reirradiation.DicomRegistrationWarnings", " | ".join(found.warnings))
    return node, list(found.warnings)
