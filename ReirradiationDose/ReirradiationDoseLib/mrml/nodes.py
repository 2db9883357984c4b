"""MRML nodes in and out: volumes, segmentations and the subject hierarchy, with explicit geometry.

Arrays are indexed ``[k, j, i]`` and travel with an :class:`~ReirradiationDoseLib.core.geometry.ImageGeometry`
in LPS millimetres, like everywhere in the core. Slicer's volume nodes store an IJK-to-RAS matrix; the LPS <-> RAS
conversion (negate x and y) happens here, explicitly, and nowhere else.

Dose volumes are tagged the way SlicerRT tags them (attribute ``DicomRtImport.DoseVolume = "1"``), so SlicerRT's
modules (Isodose, DVH, Dose comparison) recognise our outputs as doses.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import slicer
import vtk
from vtkmodules.util import numpy_support

from ..core.errors import InputError
from ..core.geometry import ImageGeometry, rasToLps

logger = logging.getLogger(__name__)

__all__ = [
    "DOSE_VOLUME_ATTRIBUTE",
    "DOSE_COLOR_TABLE_NAME",
    "UNKNOWN_DOSE_COLOR_TABLE_NAME",
    "unknownDoseColorTableNode",
    "JACOBIAN_COLOR_TABLE_NAME",
    "JACOBIAN_DESCRIPTION",
    "jacobianColorTableNode",
    "volumeNodeFromArray",
    "arrayAndGeometryFromVolumeNode",
    "geometryFromVolumeNode",
    "segmentationNodeFromMasks",
    "masksFromSegmentationNode",
    "ensureClosedSurface",
    "doseColorTableNode",
    "defaultStructureColors",
    "placeInStudy",
    "removeNodes",
    "presentNames",
    "removeNamedSince",
    "vtkMatrixFromArray",
    "arrayFromVtkMatrix",
    "orientedImageFromArray",
]

DOSE_VOLUME_ATTRIBUTE = "DicomRtImport.DoseVolume"  # SlicerRT's tag of a dose volume (value "1")
DOSE_COLOR_TABLE_NAME = "ReirradiationDose_DoseColorTable"
_LPS_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# Distinct, colour-blind-friendly structure colours (Okabe-Ito, then Tableau), RGB in 0..1.
_STRUCTURE_PALETTE = (
    (0.90, 0.62, 0.00), (0.34, 0.71, 0.91), (0.00, 0.62, 0.45), (0.94, 0.89, 0.26), (0.00, 0.45, 0.70),
    (0.84, 0.37, 0.00), (0.80, 0.47, 0.65), (0.89, 0.10, 0.11), (0.60, 0.31, 0.64), (0.55, 0.34, 0.29),
)


# ---- small conversions --------------------------------------------------------------------------------------
def vtkMatrixFromArray(matrix) -> vtk.vtkMatrix4x4:
    """A ``vtkMatrix4x4`` holding a 4x4 numpy matrix."""
    matrix = np.asarray(matrix, dtype=float)
    out = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            out.SetElement(r, c, float(matrix[r, c]))
    return out


def arrayFromVtkMatrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _vtkArray(array: np.ndarray):
    array = np.ascontiguousarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    return numpy_support.numpy_to_vtk(array.ravel(order="C"), deep=True)


def _requireShape(array: np.ndarray, geometry: ImageGeometry, what: str) -> None:
    if array.ndim != 3 or tuple(array.shape) != tuple(geometry.shape):
        raise InputError(f"{what}: array shape {array.shape} does not match the grid {geometry.describe()} "
                         f"(expected {geometry.shape}, indexed [k, j, i])")


def _geometryFromIjkToRas(ijkToRas: np.ndarray, sizeXyz) -> ImageGeometry:
    ijkToLps = _LPS_RAS @ ijkToRas
    axes = ijkToLps[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    if np.any(spacing <= 0):
        raise InputError("the volume's IJK-to-RAS matrix has a zero-length axis")
    direction = axes / spacing[None, :]
    return ImageGeometry(tuple(int(s) for s in sizeXyz), tuple(spacing), tuple(ijkToLps[:3, 3]),
                         tuple(direction.ravel()))


def orientedImageFromArray(array: np.ndarray, geometry: ImageGeometry) -> slicer.vtkOrientedImageData:
    """A ``vtkOrientedImageData`` (what segmentations store) holding a copy of ``array`` on ``geometry``."""
    array = np.asarray(array)
    _requireShape(array, geometry, "labelmap")
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(*geometry.sizeXyz)
    image.GetPointData().SetScalars(_vtkArray(array))
    image.SetImageToWorldMatrix(vtkMatrixFromArray(geometry.ijkToRasMatrix()))
    return image


def _emptyOrientedImage(geometry: ImageGeometry) -> slicer.vtkOrientedImageData:
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(*geometry.sizeXyz)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    image.GetPointData().GetScalars().Fill(0)
    image.SetImageToWorldMatrix(vtkMatrixFromArray(geometry.ijkToRasMatrix()))
    return image


def _arrayFromImageData(image: vtk.vtkImageData, what: str) -> np.ndarray:
    scalars = image.GetPointData().GetScalars() if image is not None else None
    if scalars is None:
        raise InputError(f"{what} has no voxel data")
    if scalars.GetNumberOfComponents() != 1:
        raise InputError(f"{what} has {scalars.GetNumberOfComponents()} components per voxel; a scalar image "
                         "is required")
    dims = image.GetDimensions()
    return numpy_support.vtk_to_numpy(scalars).reshape(dims[2], dims[1], dims[0]).copy()


def _requireNoTransform(node, what: str) -> None:
    if node.GetParentTransformNode() is not None:
        raise InputError(f"{what} '{node.GetName()}' is under the transform "
                         f"'{node.GetParentTransformNode().GetName()}'; harden the transform first so its voxels "
                         "are where its geometry says")


# ---- volumes ------------------------------------------------------------------------------------------------
def _colorTableNode(scene, name: str, entries) -> slicer.vtkMRMLColorTableNode:
    """The scene's colour table ``name``, made once from ``entries`` ``[(label, r, g, b, a), ...]``."""
    existing = scene.GetFirstNodeByName(name)
    if existing is not None and existing.IsA("vtkMRMLColorTableNode"):
        return existing
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    table.SetTypeToUser()
    table.SetNumberOfColors(len(entries))
    for index, (label, *rgba) in enumerate(entries):
        table.SetColor(index, label, *rgba)
    table.SetAttribute("Category", "Reirradiation")
    return table


def doseColorTableNode(scene) -> slicer.vtkMRMLColorTableNode:
    """The dose colour table of ``scene`` (created once): 256 colours blue -> cyan -> green -> yellow -> red.

    The first entry is transparent, so with the dose display threshold the zero-dose region does not tint the CT.
    """
    stops = np.array([[0.0, 0.0, 0.0, 1.0], [0.25, 0.0, 1.0, 1.0], [0.5, 0.0, 1.0, 0.0], [0.75, 1.0, 1.0, 0.0],
                      [1.0, 1.0, 0.0, 0.0]])
    entries = [(f"{index}", *(float(np.interp(index / 255.0, stops[:, 0], stops[:, c])) for c in (1, 2, 3)),
                0.0 if index == 0 else 1.0) for index in range(256)]
    return _colorTableNode(scene, DOSE_COLOR_TABLE_NAME, entries)


UNKNOWN_DOSE_COLOR_TABLE_NAME = "ReirradiationDose_UnknownDoseColorTable"


def unknownDoseColorTableNode(scene) -> slicer.vtkMRMLColorTableNode:
    """The colour table of the unknown-dose label map (created once): 0 transparent, 1 "dose unknown" in a dark
    slate (shown at half opacity over the composite's colour wash, whose value there is only the known
    courses' sum: a review found it read as known dose in the slice views)."""
    return _colorTableNode(scene, UNKNOWN_DOSE_COLOR_TABLE_NAME,
                           [("known", 0.0, 0.0, 0.0, 0.0), ("dose unknown", 0.25, 0.25, 0.35, 1.0)])


JACOBIAN_COLOR_TABLE_NAME = "ReirradiationDose_JacobianColorTable"
JACOBIAN_DESCRIPTION = ("Jacobian determinant of the registration, shown from 0 to 2: white 1 (volume kept), blue < 1 "
                        "(compressed), red > 1 (expanded), magenta 0 or less (folding: no physical mapping there)")


def jacobianColorTableNode(scene) -> slicer.vtkMRMLColorTableNode:
    """The colour table of a Jacobian determinant shown over 0 .. 2 (created once): 256 colours, the first magenta
    (folding, J <= 0, which the window clamps onto it), then blue -> white at 1 -> red (a review: the grey ramp
    showed neither where 1 lies nor folding)."""
    entries = [("folding", 1.0, 0.0, 1.0, 1.0)]
    for index in range(1, 256):
        value = 2.0 * index / 255.0
        if value < 1.0:
            fade = value  # 0 dark blue .. 1 white
            rgb = (fade, fade, 0.5 + 0.5 * fade)
        else:
            fade = value - 1.0  # 0 white .. 1 dark red
            rgb = (1.0 - 0.3 * fade, 1.0 - fade, 1.0 - fade)
        entries.append((f"{value:.3f}", *rgb, 1.0))
    return _colorTableNode(scene, JACOBIAN_COLOR_TABLE_NAME, entries)


def volumeNodeFromArray(scene, array: np.ndarray, geometry: ImageGeometry, name: str, isDose: bool = False,
                        isLabel: bool = False) -> slicer.vtkMRMLScalarVolumeNode:
    """A new volume node in ``scene`` holding a copy of ``array`` (indexed [k, j, i]) on ``geometry`` (LPS).

    The node's IJK-to-RAS matrix is ``geometry.ijkToRasMatrix()`` (LPS -> RAS: negate x and y).
    ``isLabel`` makes a ``vtkMRMLLabelMapVolumeNode`` (integer voxels, Labels colour table).
    ``isDose`` tags the node as SlicerRT does (``DicomRtImport.DoseVolume = "1"``) and displays it with the dose
    colour table, window 0 .. max dose and voxels under 1 % of the maximum transparent.
    """
    array = np.asarray(array)
    _requireShape(array, geometry, f"volume '{name}'")
    if isLabel and isDose:
        raise ValueError("a volume cannot be both a dose and a label map")
    if isLabel:
        if array.dtype == bool:
            array = array.astype(np.uint8)
        elif not np.issubdtype(array.dtype, np.integer):
            raise InputError(f"label map '{name}' must hold integer labels, got {array.dtype}")
        elif array.dtype.itemsize > 4:
            array = array.astype(np.int32)
    elif array.dtype == np.float16 or array.dtype == bool:
        array = array.astype(np.float32 if array.dtype == np.float16 else np.uint8)

    className = "vtkMRMLLabelMapVolumeNode" if isLabel else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(className, name)
    try:
        image = vtk.vtkImageData()
        image.SetDimensions(*geometry.sizeXyz)
        image.GetPointData().SetScalars(_vtkArray(array))
        node.SetIJKToRASMatrix(vtkMatrixFromArray(geometry.ijkToRasMatrix()))
        node.SetAndObserveImageData(image)
        node.CreateDefaultDisplayNodes()
        if isDose:
            node.SetAttribute(DOSE_VOLUME_ATTRIBUTE, "1")
            _showAsDose(node, float(np.nanmax(array)) if array.size else 0.0)
    except Exception:
        removeNodes(scene, [node])
        raise
    return node


def _showAsDose(node, maximumGy: float) -> None:
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(doseColorTableNode(node.GetScene()).GetID())
    top = maximumGy if maximumGy > 0 else 1.0
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, top)
    display.AutoThresholdOff()
    display.SetLowerThreshold(0.01 * top)
    display.SetUpperThreshold(max(top, 1e-6) * 10.0)
    display.ApplyThresholdOn()


def arrayAndGeometryFromVolumeNode(node, ignoreParentTransform: bool = False) -> tuple[np.ndarray, ImageGeometry]:
    """A copy of the node's voxels (indexed [k, j, i]) and their grid in LPS: the exact inverse of
    :func:`volumeNodeFromArray`. A node under a transform is refused (harden it first), unless
    ``ignoreParentTransform``: then its own grid is returned, as if the transform were not there."""
    geometry = geometryFromVolumeNode(node, ignoreParentTransform)
    return _arrayFromImageData(node.GetImageData(), f"volume '{node.GetName()}'"), geometry


def geometryFromVolumeNode(node, ignoreParentTransform: bool = False) -> ImageGeometry:
    """The grid of :func:`arrayAndGeometryFromVolumeNode` without copying the voxels (same checks)."""
    if node is None or not node.IsA("vtkMRMLVolumeNode"):
        raise InputError("a volume node is required")
    if not ignoreParentTransform:
        _requireNoTransform(node, "volume")
    image = node.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None:
        raise InputError(f"volume '{node.GetName()}' has no voxel data")
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ijkToRas = arrayFromVtkMatrix(matrix)
    extent = image.GetExtent()
    if extent[0] or extent[2] or extent[4]:  # an extent not starting at 0 shifts the first voxel
        ijkToRas[:3, 3] = ijkToRas[:3, :3] @ np.array([extent[0], extent[2], extent[4]], float) + ijkToRas[:3, 3]
    return _geometryFromIjkToRas(ijkToRas, image.GetDimensions())


# ---- segmentations --------------------------------------------------------------------------------------------
def defaultStructureColors(names: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """A distinct colour per structure name, in order (cycles after 10)."""
    return {name: _STRUCTURE_PALETTE[index % len(_STRUCTURE_PALETTE)] for index, name in enumerate(names)}


def _binaryLabelmapName() -> str:
    return slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()


def _closedSurfaceName() -> str:
    return slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()


def segmentationNodeFromMasks(scene, masks: Mapping[str, np.ndarray], geometry: ImageGeometry,
                              colors: Mapping[str, Sequence[float]] | Sequence[Sequence[float]] | None = None,
                              name: str = "Structures",
                              referenceVolumeNode=None, startsKji: Mapping[str, Sequence[int]] | None = None
                              ) -> slicer.vtkMRMLSegmentationNode:
    """A new segmentation node with one named, coloured segment per mask.

    Each mask (bool array [k, j, i] on ``geometry``) becomes a binary labelmap segment in its own layer, so
    overlapping structures stay independent; the binary labelmap is the source representation. The closed surface
    (for 3D display) is made on demand by :func:`ensureClosedSurface`. The segmentation's reference geometry is
    ``referenceVolumeNode``'s when given, otherwise ``geometry``. Segment IDs are the structure names.
    ``startsKji``: masks given cropped to a box of ``geometry`` starting at that index (k, j, i), e.g. a structure's
    bounding box (:meth:`.ImageGeometry.crop`).
    """
    if isinstance(colors, Mapping):
        colorOf = {key: tuple(float(c) for c in value[:3]) for key, value in colors.items()}
    elif colors is not None:
        colorOf = {key: tuple(float(c) for c in value[:3]) for key, value in zip(masks, colors, strict=False)}
    else:
        colorOf = {}
    fallback = defaultStructureColors(list(masks))
    startsKji = startsKji or {}
    geometries = {structure: geometry.crop(startsKji[structure], np.shape(mask)) if structure in startsKji
                  else geometry for structure, mask in masks.items()}
    for structure, mask in masks.items():
        _requireShape(np.asarray(mask), geometries[structure], f"structure '{structure}'")

    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    try:
        node.CreateDefaultDisplayNodes()
        node.GetDisplayNode().SetSliceIntersectionThickness(2)  # outlines readable on screenshots
        node.SetSourceRepresentationToBinaryLabelmap()
        segmentation = node.GetSegmentation()
        if referenceVolumeNode is not None:
            node.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolumeNode)
        else:
            segmentation.SetConversionParameter(
                slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(),
                slicer.vtkSegmentationConverter.SerializeImageGeometry(_emptyOrientedImage(geometry)))
        for structure, mask in masks.items():
            segment = slicer.vtkSegment()
            segment.SetName(str(structure))
            segment.SetColor(*colorOf.get(structure, fallback[structure]))
            segment.AddRepresentation(_binaryLabelmapName(),
                                      orientedImageFromArray(np.asarray(mask).astype(np.uint8),
                                                             geometries[structure]))
            if not segmentation.AddSegment(segment, str(structure)):
                raise InputError(f"structure '{structure}' could not be added to the segmentation '{name}'")
    except Exception:
        removeNodes(scene, [node])
        raise
    logger.debug("segmentation '%s' with %d segments", name, len(masks))
    return node


def ensureClosedSurface(segmentationNode) -> None:
    """Create the closed-surface representation (for 3D views) if it is not there yet."""
    segmentationNode.CreateClosedSurfaceRepresentation()


def masksFromSegmentationNode(segmentationNode, geometry: ImageGeometry,
                              ignoreParentTransform: bool = False) -> dict[str, np.ndarray]:
    """Every segment as a bool mask on ``geometry``: {segment name: array [k, j, i]}.

    The resampling onto ``geometry`` is explicit: a binary-labelmap segment is resampled with nearest-neighbour
    interpolation (voxel centres of ``geometry`` take the label of the source voxel they fall in; outside the source
    extent: False). A segmentation whose source is a closed surface (e.g. an RTSTRUCT loaded by SlicerRT) is
    rasterised directly on ``geometry`` (a copy is converted; the node is not modified). A node under a transform is
    refused (harden it first), unless ``ignoreParentTransform``: then its own coordinates are taken, as if the
    transform were not there.
    """
    if segmentationNode is None or not segmentationNode.IsA("vtkMRMLSegmentationNode"):
        raise InputError("a segmentation node is required")
    if not ignoreParentTransform:
        _requireNoTransform(segmentationNode, "segmentation")
    segmentation = segmentationNode.GetSegmentation()
    reference = _emptyOrientedImage(geometry)
    labelmapName = _binaryLabelmapName()
    source = segmentation
    if segmentation.GetSourceRepresentationName() != labelmapName:
        source = slicer.vtkSegmentation()
        source.DeepCopy(segmentation)
        for representation in (labelmapName,):
            if source.ContainsRepresentation(representation):
                source.RemoveRepresentation(representation)
        source.SetConversionParameter(slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(),
                                      slicer.vtkSegmentationConverter.SerializeImageGeometry(reference))
        if not source.CreateRepresentation(labelmapName, True):
            raise InputError(f"segmentation '{segmentationNode.GetName()}' could not be converted to a binary "
                             "labelmap")

    masks: dict[str, np.ndarray] = {}
    for index in range(source.GetNumberOfSegments()):
        segmentId = source.GetNthSegmentID(index)
        segment = source.GetSegment(segmentId)
        label = segment.GetLabelValue()
        labelmap = segment.GetRepresentation(labelmapName)
        key = segment.GetName() or segmentId
        if key in masks:
            key = f"{key} ({segmentId})"
        if labelmap is None or labelmap.GetPointData().GetScalars() is None or _isEmptyExtent(labelmap):
            masks[key] = np.zeros(geometry.shape, dtype=bool)
            continue
        resampled = slicer.vtkOrientedImageData()
        if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
                labelmap, reference, resampled, False, False):
            raise InputError(f"segment '{key}' could not be resampled onto {geometry.describe()}")
        masks[key] = _maskOnReference(resampled, reference, label)
    return masks


def _isEmptyExtent(image) -> bool:
    extent = image.GetExtent()
    return extent[1] < extent[0] or extent[3] < extent[2] or extent[5] < extent[4]


def _maskOnReference(resampled, reference, label: int) -> np.ndarray:
    """The resampled labelmap placed on the reference extent (the resampler may return a sub-extent)."""
    refExtent = reference.GetExtent()
    shape = (refExtent[5] - refExtent[4] + 1, refExtent[3] - refExtent[2] + 1, refExtent[1] - refExtent[0] + 1)
    out = np.zeros(shape, dtype=bool)
    if _isEmptyExtent(resampled) or resampled.GetPointData().GetScalars() is None:
        return out
    values = _arrayFromImageData(resampled, "resampled segment") == label
    extent = resampled.GetExtent()
    lo = [max(extent[2 * a], refExtent[2 * a]) for a in range(3)]
    hi = [min(extent[2 * a + 1], refExtent[2 * a + 1]) for a in range(3)]
    if any(h < low for low, h in zip(lo, hi, strict=True)):
        return out
    src = values[lo[2] - extent[4]:hi[2] - extent[4] + 1, lo[1] - extent[2]:hi[1] - extent[2] + 1,
                 lo[0] - extent[0]:hi[0] - extent[0] + 1]
    out[lo[2] - refExtent[4]:hi[2] - refExtent[4] + 1, lo[1] - refExtent[2]:hi[1] - refExtent[2] + 1,
        lo[0] - refExtent[0]:hi[0] - refExtent[0] + 1] = src
    return out


# ---- subject hierarchy and clean-up ------------------------------------------------------------------------
def _childByName(shNode, parentItem: int, name: str, level: str) -> int:
    children = vtk.vtkIdList()
    shNode.GetItemChildren(parentItem, children)
    for index in range(children.GetNumberOfIds()):
        item = children.GetId(index)
        if shNode.GetItemName(item) == name and shNode.GetItemLevel(item) == level:
            return item
    return 0


def placeInStudy(scene, nodes: Iterable, patientName: str, studyDescription: str) -> int:
    """Put ``nodes`` under Patient ``patientName`` / Study ``studyDescription`` in the subject hierarchy
    (both created if absent, reused otherwise). Returns the study item ID."""
    shNode = scene.GetSubjectHierarchyNode()
    if shNode is None:
        raise ValueError("the scene has no subject hierarchy (create it with createScene())")
    constants = slicer.vtkMRMLSubjectHierarchyConstants
    patientLevel, studyLevel = constants.GetDICOMLevelPatient(), constants.GetDICOMLevelStudy()
    sceneItem = shNode.GetSceneItemID()
    patient = _childByName(shNode, sceneItem, patientName, patientLevel) or \
        shNode.CreateSubjectItem(sceneItem, patientName)
    study = _childByName(shNode, patient, studyDescription, studyLevel) or \
        shNode.CreateStudyItem(patient, studyDescription)
    for node in nodes:
        if node is None:
            continue
        item = shNode.GetItemByDataNode(node)
        if item:
            shNode.SetItemParent(item, study)
        else:
            shNode.CreateItem(study, node)
    return study


def nodesWithAttribute(scene, attribute: str, value: str | None = None, className: str = "vtkMRMLNode") -> list:
    """Nodes of ``className`` in ``scene`` carrying ``attribute`` (with exactly ``value`` when given).

    How both modules find the outputs of an earlier run again, so a re-run updates them instead of piling up."""
    collection = scene.GetNodesByClass(className)
    collection.UnRegister(None)
    found = []
    for index in range(collection.GetNumberOfItems()):
        node = collection.GetItemAsObject(index)
        current = node.GetAttribute(attribute)
        if current is not None and (value is None or current == value):
            found.append(node)
    return found


def removeNodes(scene, nodes: Iterable) -> None:
    """Remove ``nodes`` (and their display and storage nodes) from ``scene``; None and foreign nodes are skipped.

    Used for clean-up when a step fails, so nothing is left half-made in the scene.
    """
    for node in list(nodes):
        if node is None or node.GetScene() is not scene:
            continue
        helpers = []
        if node.IsA("vtkMRMLDisplayableNode"):
            helpers += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
        if node.IsA("vtkMRMLStorableNode"):
            helpers += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
        scene.RemoveNode(node)
        for helper in helpers:
            if helper is not None and helper.GetScene() is scene:
                scene.RemoveNode(helper)


def presentNames(scene, names: Iterable[str]) -> set[str]:
    """Which of ``names`` a node of ``scene`` bears now: before a run that may make shared nodes (colour tables),
    so that :func:`removeNamedSince` removes only what the run made when it fails."""
    return {name for name in names if scene.GetFirstNodeByName(name) is not None}


def removeNamedSince(scene, names: Iterable[str], present: set[str]) -> None:
    """Remove the nodes named in ``names`` that were not ``present`` (:func:`presentNames`) before a run that failed;
    those made earlier stay."""
    removeNodes(scene, [scene.GetFirstNodeByName(name) for name in names if name not in present])


# ---- how much of a segment a grid holds ---------------------------------------------------------------------------
def segmentMask(segmentationNode, segmentId: str, geometry: ImageGeometry) -> np.ndarray:
    """One segment as a bool mask on ``geometry``, from a copy (the input node is not touched)."""
    source = segmentationNode.GetSegmentation()
    single = slicer.vtkMRMLSegmentationNode()  # not in any scene: a private copy holding one segment
    copy = single.GetSegmentation()
    copy.SetSourceRepresentationName(source.GetSourceRepresentationName())
    if not copy.CopySegmentFromSegmentation(source, segmentId, False):
        raise InputError(f"segment '{segmentId}' of '{segmentationNode.GetName()}' could not be read")
    masks = masksFromSegmentationNode(single, geometry)
    return next(iter(masks.values()))


def _segmentPointsRas(segment, sourceName: str) -> np.ndarray | None:
    """Points (RAS) whose hull holds the segment: the corners of its labelmap voxels that hold its label (not the
    labelmap's whole extent, which may be padded), else its surface's points; None for an empty segment."""
    representation = segment.GetRepresentation(sourceName)
    if representation is None:
        return None
    if sourceName == _binaryLabelmapName():
        scalars = representation.GetPointData().GetScalars()
        if scalars is None or _isEmptyExtent(representation):
            return None
        extent = representation.GetExtent()
        shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
        inside = numpy_support.vtk_to_numpy(scalars).reshape(shape) == segment.GetLabelValue()
        if not inside.any():
            return None
        first, last = [], []
        for axis in (2, 1, 0):  # i, j, k
            along = np.flatnonzero(inside.any(axis=tuple(a for a in range(3) if a != axis)))
            first.append(along[0])
            last.append(along[-1])
        lo = np.array(first, float) + np.array(extent[0::2], float) - 0.5
        hi = np.array(last, float) + np.array(extent[0::2], float) + 0.5
        corners = np.array([[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        matrix = vtk.vtkMatrix4x4()
        representation.GetImageToWorldMatrix(matrix)
        return (arrayFromVtkMatrix(matrix) @ corners.T).T[:, :3]
    points = representation.GetPoints() if hasattr(representation, "GetPoints") else None
    if points is None or points.GetNumberOfPoints() == 0:
        return None
    return numpy_support.vtk_to_numpy(points.GetData()).astype(float)


def segmentIndexBox(segmentationNode, segmentId: str, geometry: ImageGeometry) -> tuple[np.ndarray, np.ndarray] | None:
    """The box of ``geometry``'s voxel indices (i, j, k; first and last, possibly beyond the grid) that holds the
    segment: its labelmap voxels' corners or its surface's points taken into the grid's index space, so that an
    oblique grid is not overshot as the segment's axis-aligned RAS bounds overshoot it; None for an empty
    segment."""
    segmentation = segmentationNode.GetSegmentation()
    points = _segmentPointsRas(segmentation.GetSegment(segmentId), segmentation.GetSourceRepresentationName())
    if points is None:
        return None
    index = geometry.lpsToIndex(rasToLps(points))
    return np.ceil(index.min(axis=0) - 1e-3).astype(int), np.floor(index.max(axis=0) + 1e-3).astype(int)


def boxInside(box: tuple[np.ndarray, np.ndarray], geometry: ImageGeometry) -> bool:
    """An index box of :func:`segmentIndexBox` lies within ``geometry``'s voxels."""
    return bool(np.all(box[0] >= 0) and np.all(box[1] <= np.array(geometry.sizeXyz) - 1))


def segmentationReferenceGeometry(segmentationNode) -> ImageGeometry | None:
    """The grid the segmentation was drawn on (its "Reference image geometry" conversion parameter), or None."""
    from ..core.segio import geometryFromSlicerGeometryString

    text = segmentationNode.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    return geometryFromSlicerGeometryString(text) if text else None


def gridCovering(geometry: ImageGeometry, boxes, maxVoxels: float = 0.0) -> ImageGeometry:
    """``geometry`` extended (same directions, spacing and voxel positions) to hold every index box of ``boxes``;
    with ``maxVoxels`` its spacing is multiplied by a whole factor until it has no more voxels than that."""
    lo = np.minimum.reduce([np.zeros(3, int), *(box[0] for box in boxes)])
    hi = np.maximum.reduce([np.array(geometry.sizeXyz) - 1, *(box[1] for box in boxes)])
    step = 1
    if maxVoxels:
        while float(np.prod((hi - lo) // step + 1)) > maxVoxels:
            step += 1
    size = tuple(int(v) for v in (hi - lo) // step + 1)
    spacing = tuple(float(s) * step for s in geometry.spacingMm)
    origin = tuple(float(v) for v in geometry.indexToLps(lo.astype(float)))
    return ImageGeometry(size, spacing, origin, geometry.direction)


def segmentOutsidePercent(segmentationNode, segmentId: str, geometry: ImageGeometry,
                          maxVoxels: float = 32_000_000) -> float:
    """Percentage of the segment's volume whose voxels lie outside ``geometry``: the part a grid crops away (a
    delineation review's common grid, the planning CT of a dose run). Measured on ``geometry`` extended to hold the
    whole segment (coarsened to ``maxVoxels`` when it reaches far beyond it); 0 when the segment's box lies inside."""
    box = segmentIndexBox(segmentationNode, segmentId, geometry)
    if box is None or boxInside(box, geometry):
        return 0.0
    covering = gridCovering(geometry, [box], maxVoxels)
    kji = np.argwhere(segmentMask(segmentationNode, segmentId, covering))
    if not kji.size:
        return 0.0
    index = geometry.lpsToIndex(covering.indexToLps(kji[:, ::-1].astype(float)))
    inside = np.all((index >= -0.5) & (index <= np.array(geometry.sizeXyz, dtype=float) - 0.5), axis=1)
    return 100.0 * float(np.count_nonzero(~inside)) / len(inside)
