"""The Delineation Review workflow on MRML nodes: observers' segmentation nodes in, tables, consensus, agreement map,
plot and border-mark check out.

:func:`runDelineationReview` is what ``DelineationReviewLogic.process`` calls (same keyword arguments plus
``scene``). It

1. picks **one segment per observer** segmentation node by ``structureName`` with the study's tolerant name matching
   (:func:`DelineationReviewLib.core.study.matchStructureName`: case, spaces, TG-263 aliases, "GTV_obs3"); an
   observer without (or with an ambiguous) match is refused with an ``InputError`` naming the segmentation and the
   segments it holds;
2. names each observer by its **segmentation node name**. Two nodes with the same name (common: every RTSTRUCT
   loaded by SlicerRT may be called "RTSTRUCT") are kept apart by appending " (2)", " (3)" … to the later ones; a
   warning is logged and the observer table lists each observer's node ID. The same node checked twice is refused;
3. puts every observer on **one grid**, explicitly: the grid of ``referenceVolume`` when given, else the first
   observer's own labelmap geometry (its "Reference image geometry" conversion parameter, else its first segment's
   labelmap). Segments are resampled with nearest neighbour (binary labelmaps) or rasterised on that grid (closed
   surfaces) by :func:`ReirradiationDoseLib.mrml.nodes.masksFromSegmentationNode`, working on a copy of the one
   chosen segment: **input nodes are never modified** (not even their segment colours);
4. runs :func:`DelineationReviewLib.core.iov.analyzeObservers` (progress and cancel pass through) and, for the
   consensus segmentation, computes the other consensus too (STAPLE with the same crop rule as the core: union
   bounding box + ``DEFAULT_CROP_MARGIN_MM``; majority vote on the agreement map) so both are always available;
5. checks the radiologist's **border marks** (markups nodes) against every observer
   (:func:`DelineationReviewLib.core.marks.evaluateMarks`, tolerance = ``marksToleranceMm``). Markups positions are
   taken where the views show them, in Slicer world coordinates, the frame the segmentations are shown in (the
   planning CT): a node under a transform through it (marks placed on the MRI, under the MRI's registration); a
   node that says it was placed on the MRI (``frame=MRI``) and is under no transform is refused;
6. writes the outputs (below). Output nodes carry the attribute ``DelineationReview.Output`` = key: re-running
   finds and **updates them in place** (tables refilled, segments replaced, voxels replaced) instead of adding new
   nodes. All numbers are computed before the first node is touched; if creating the nodes fails (or is
   cancelled), the nodes this call created are removed (nodes of a previous run that were being updated keep their
   new, possibly partial content: re-run to complete them).

Outputs (keys of the returned dict)
-----------------------------------
- ``metricsTable``: pairwise table, one row per pair (a < b in the order given): ``a``, ``b`` (strings) and
  ``dice``, ``jaccard``, ``hausdorffMm``, ``hdPercentileMm``, ``msdMm``, ``surfaceDice``, ``centroidShiftMm`` plus
  any scalar metric of a registered plugin, as ``vtkDoubleArray`` columns (NaN = undefined, reason in
  ``undefined``) so Slicer's plots can use them;
- ``observerTable``: one row per observer against the reference (STAPLE, majority or the reference observer):
  ``observer``, ``index`` (1..N, the plot's x), ``nodeId``, ``segment``, ``volumeCc``, the pair metrics,
  ``sensitivity``, ``specificity`` (and STAPLE's own ``stapleSensitivity`` / ``stapleSpecificity``);
- ``studyTable``: ``quantity``, ``value``, ``unit``, ``definition``: number of observers, CIgen, volume CV, the
  uncertainty band, union, intersection, reference / STAPLE / majority volumes, median and minimum pairwise Dice,
  tolerance and percentile used;
- ``consensusSegmentation``: segments ``STAPLE consensus`` and ``Majority consensus`` (segment IDs
  :data:`STAPLE_SEGMENT_ID`, :data:`MAJORITY_SEGMENT_ID`; other segments of a given node are left alone);
- ``agreementMap``: labelmap volume on the common grid, voxel value = number of observers including it (0..N), shown
  with ``agreementColorTable`` (entry k = "k of N observers", 0 transparent);
- ``diceChart`` with ``diceSeries`` and ``surfaceDiceSeries``: per-observer (surface) Dice to the reference, bars;
- ``observerOutlines``: a display-only segmentation, one segment per observer (named by the observer) in distinct
  colours (Okabe-Ito / Tableau palette, repeats after 10 observers), outlines only. This is how the observers are
  shown in distinct colours without recolouring the inputs;
- ``borderMarksTable`` (when ``borderMarks`` holds marks): rows = marks x observers: ``mark``, ``markId``,
  ``kind``, ``observer``, ``rasR``, ``rasA``, ``rasS`` (mark tip, scene RAS mm), ``signedDistanceMm``
  (positive = the GTV stops short of the mark), ``honoured``,
  ``reachesBorder``, ``withinTolerance``, ``overContoured``, ``clearMiss``, ``arrowCoverage``,
  ``arrowUncoveredMm`` (numeric, booleans 1/0), ``missed`` (1 = not honoured) and ``flag`` ("" / "missed" /
  "CLEAR MISS", the latter beyond the tolerance plus the voxel uncertainty);
- ``summary`` (one sentence), ``iovResult`` (:class:`~DelineationReviewLib.core.iov.IovResult`),
  ``marksEvaluation`` (or None), ``observerNames``, ``geometry``, ``structureName``, ``referenceLabel``.

One review per scene: the outputs are found by key, so a review of another structure updates the same nodes
(renamed after the structure). Keep a result by renaming its nodes and removing their
``DelineationReview.Output`` attribute.

Also :func:`exportTables` (CSV + JSON of every table of a result) and :func:`renderLargestDisagreementPanel` (PNG of
the slice with the most uncertainty-band voxels, observer outlines over the agreement map).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import slicer
import vtk

from DelineationReviewLib.core import consensus as consensusLib
from DelineationReviewLib.core.iov import DEFAULT_CROP_MARGIN_MM, IovResult, analyzeObservers, definitions
from DelineationReviewLib.core.marks import DEFAULT_TOLERANCE_MM, MarkEvaluation, MarkSet, evaluateMarks
from DelineationReviewLib.core.metrics import DEFAULT_SURFACE_DICE_TOLERANCE_MM
from DelineationReviewLib.core.study import matchStructureName, rankStructureMatches
from DelineationReviewLib.core.surface import CropBox, growCropBox, marginVoxelsFor, unionCropBox
from DelineationReviewLib.mrml.marks import markSetFromMarkupsNodes, statedFrame
from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.geometry import ImageGeometry, lpsToRas
from ReirradiationDoseLib.core.progress import committedProgress, finishProgress, noProgress, subProgress
from ReirradiationDoseLib.mrml.nodes import (
    arrayFromVtkMatrix,
    boxInside,
    defaultStructureColors,
    gridCovering,
    nodesWithAttribute,
    orientedImageFromArray,
    removeNodes,
    segmentIndexBox,
    segmentMask,
    segmentationReferenceGeometry,
    segmentOutsidePercent,
    vtkMatrixFromArray,
)

__all__ = [
    "OUTPUT_ATTRIBUTE",
    "STAPLE_SEGMENT_ID",
    "MAJORITY_SEGMENT_ID",
    "REFERENCE_METHODS",
    "runDelineationReview",
    "exportTables",
    "renderLargestDisagreementPanel",
    "largestDisagreementSlice",
    "borderMarkRas",
]

logger = logging.getLogger(__name__)

OUTPUT_ATTRIBUTE = "DelineationReview.Output"
STAPLE_SEGMENT_ID = "DelineationReview_STAPLE"
MAJORITY_SEGMENT_ID = "DelineationReview_Majority"
REFERENCE_METHODS = ("staple", "majority", "observer")
_FOLDER_KEY = "folder"

# Pair metrics shown first, in this order (any other scalar metric of a registered plugin follows).
_PAIR_METRICS = ("dice", "jaccard", "hausdorffMm", "hdPercentileMm", "msdMm", "surfaceDice", "centroidShiftMm")
_METRIC_DESCRIPTIONS = {
    "dice": "Dice similarity coefficient 2|A∩B| / (|A| + |B|)",
    "jaccard": "Jaccard index |A∩B| / |A∪B|",
    "hausdorffMm": "Hausdorff distance: max of the two directed maximum surface distances",
    "hdPercentileMm": "robust Hausdorff distance at the chosen percentile and convention",
    "surfaceDice": "surface Dice at the tolerance (Nikolov et al. 2021), area weighted",
    "centroidShiftMm": "distance between the centres of mass",
}
_STAPLE_COLOR = (1.0, 1.0, 1.0)
_MAJORITY_COLOR = (0.0, 0.85, 0.85)  # cyan: a grey outline vanished on soft tissue (an independent review)
# Agreement map: 1 observer (pale pink) .. all observers (magenta); 0 is transparent. Magenta is not in
# the observer palette of the first six observers, so outlines stay readable over the map.
_AGREEMENT_LOW = np.array([1.0, 0.85, 1.0])
_AGREEMENT_HIGH = np.array([0.72, 0.0, 0.72])
# The agreement map is shown at this label-layer opacity; its colour table's entries are opaque: an entry's own alpha
# (0.35 for "1 of N" before) lowered the slice view's blended alpha and the view darkened it against its black
# background, "1 of 4" drawn (132, 122, 132) over grey 127 (an independent review)
AGREEMENT_LABEL_OPACITY = 0.6


# ---------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------
def _asNodeList(nodes) -> list:
    if nodes is None:
        return []
    if isinstance(nodes, list | tuple):
        return [n for n in nodes if n is not None]
    return [nodes]


def _requireNoTransform(node, what: str) -> None:
    if node.GetParentTransformNode() is not None:
        raise InputError(f"the {what} '{node.GetName()}' is under the transform "
                         f"'{node.GetParentTransformNode().GetName()}'; harden the transform first so it is where "
                         "its coordinates say")


def _uniqueObserverNames(nodes: Sequence) -> list[str]:
    """Observer names = node names; later duplicates get " (2)", " (3)" … (logged)."""
    names: list[str] = []
    for node in nodes:
        base = (node.GetName() or "").strip() or node.GetID()
        name, count = base, 2
        while name in names:
            name = f"{base} ({count})"
            count += 1
        if name != base:
            logger.warning("two observer segmentations are named '%s': the one with node ID %s is called '%s' in the "
                           "results", base, node.GetID(), name)
        names.append(name)
    return names


def _geometryFromMatrix(ijkToRas: np.ndarray, extent) -> ImageGeometry:
    """The LPS grid of an image with this IJK-to-RAS matrix and extent (an extent not starting at 0 shifts the
    first voxel)."""
    ijkToLps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(ijkToRas, dtype=float)
    axes = ijkToLps[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    if np.any(spacing <= 0):
        raise InputError("the image's IJK-to-RAS matrix has a zero-length axis")
    origin = ijkToLps[:3, 3] + axes @ np.array([extent[0], extent[2], extent[4]], dtype=float)
    size = (extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1)
    if min(size) < 1:
        raise InputError("the image has no voxels")
    return ImageGeometry(size, tuple(spacing), tuple(origin), tuple((axes / spacing[None, :]).ravel()))


def _volumeGeometry(volumeNode) -> ImageGeometry:
    if not volumeNode.IsA("vtkMRMLVolumeNode"):
        raise InputError(f"'{volumeNode.GetName()}' is not a volume; choose the planning CT as reference volume")
    _requireNoTransform(volumeNode, "reference volume")
    image = volumeNode.GetImageData()
    if image is None:
        raise InputError(f"the reference volume '{volumeNode.GetName()}' holds no voxels")
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return _geometryFromMatrix(arrayFromVtkMatrix(matrix), image.GetExtent())


def _segmentationOwnGeometry(segmentationNode, segmentId: str | None = None) -> ImageGeometry:
    """The observer's own labelmap grid: its reference image geometry, else the labelmap of ``segmentId`` (the
    compared structure; an independent review: the first segment's, a small rectum crop, cut both GTVs), else any
    segment's labelmap."""
    geometry = segmentationReferenceGeometry(segmentationNode)
    if geometry is not None:
        return geometry
    segmentation = segmentationNode.GetSegmentation()
    labelmapName = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    ids = [segmentation.GetNthSegmentID(index) for index in range(segmentation.GetNumberOfSegments())]
    for candidate in ([segmentId] if segmentId in ids else []) + ids:
        labelmap = segmentation.GetSegment(candidate).GetRepresentation(labelmapName)
        if labelmap is not None and labelmap.GetPointData().GetScalars() is not None:
            matrix = vtk.vtkMatrix4x4()
            labelmap.GetImageToWorldMatrix(matrix)
            return _geometryFromMatrix(arrayFromVtkMatrix(matrix), labelmap.GetExtent())
    raise InputError(f"the segmentation '{segmentationNode.GetName()}' has no voxel grid of its own (no reference "
                     "image geometry, no labelmap); choose a reference volume (e.g. the planning CT)")


def _extendedToCover(geometry: ImageGeometry, observers, chosen, maxGrowth: float = 4.0) -> ImageGeometry:
    """An observer's own grid extended to hold every observer's compared segment (a grid taken from one observer
    cut the others' delineations where they reached beyond it); not beyond ``maxGrowth`` times its voxels (a
    delineation far away, in another position, stays outside and is said so by ``segmentOutsidePercent``)."""
    boxes = [box for node, (segmentId, _) in zip(observers, chosen, strict=True)
             if (box := segmentIndexBox(node, segmentId, geometry)) is not None]
    if all(boxInside(box, geometry) for box in boxes):
        return geometry
    covering = gridCovering(geometry, boxes)
    return covering if np.prod(covering.sizeXyz) <= maxGrowth * np.prod(geometry.sizeXyz) else geometry


def _chooseSegment(segmentationNode, structureName: str) -> tuple[str, str]:
    """(segment ID, segment name) of the one segment matching ``structureName``."""
    segmentation = segmentationNode.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    names = [segmentation.GetSegment(i).GetName() or i for i in ids]
    chosen = matchStructureName(names, structureName)
    if chosen is None:
        ranked = rankStructureMatches(names, structureName)
        if ranked:
            raise InputError(f"the segmentation '{segmentationNode.GetName()}' has several segments matching "
                             f"'{structureName}' equally well ({', '.join(n for _, n in ranked)}); rename them so one "
                             "matches")
        raise InputError(f"the segmentation '{segmentationNode.GetName()}' has no segment matching "
                         f"'{structureName}'; its segments are: {', '.join(names) or 'none'}")
    index = names.index(chosen)
    return ids[index], chosen


def _markSet(borderMarks) -> tuple[MarkSet | None, list[str]]:
    """The border marks where the views show them (Slicer world coordinates, the segmentations' frame), and notes: a
    node under a transform through it, so marks placed on the MRI and put under its registration land on the CT. A
    node that says it was placed on the MRI and sits under no transform is refused: its coordinates are the MRI's (a
    review: the demo's marks file, loaded, was checked 29-31 mm from its place and every observer flagged). A node
    that says it was placed on the CT but sits under a transform is checked where the views show it, noted."""
    nodes = _asNodeList(borderMarks)
    if not nodes:
        return None, []
    try:
        stated = {node.GetID(): statedFrame(node) for node in nodes}
    except ValueError as error:  # a node mixing frames
        raise InputError(f"border marks: {error}") from error
    onMri = [n.GetName() for n in nodes if n.GetParentTransformNode() is None and stated[n.GetID()] == "MRI"]
    if onMri:
        # hardened under the MRI's registration, a node keeps saying frame=MRI (a verification review): said too
        raise InputError(f"the border marks {', '.join(repr(n) for n in onMri)} say they were placed on the MRI "
                         "(frame=MRI) and are under no transform: their coordinates are taken as the MRI's, not the "
                         "planning CT's. Place them under the MRI's registration transform (Data module) so that they "
                         "show on the registered MRI, then run again. If they were hardened onto the CT already, "
                         "their control point descriptions still say frame=MRI: change it to frame=CT (Markups "
                         "module)")
    try:
        markSet = markSetFromMarkupsNodes(nodes, frame="CT", world=True)
    except ValueError as error:
        raise InputError(f"border marks: {error}") from error
    notes = []
    for node in nodes:
        parent = node.GetParentTransformNode()
        if parent is None or stated[node.GetID()] != "CT":
            continue
        local, world = [0.0] * 3, [0.0] * 3
        moved = 0.0
        for index in range(node.GetNumberOfControlPoints()):
            node.GetNthControlPointPosition(index, local)
            node.GetNthControlPointPositionWorld(index, world)
            moved = max(moved, math.dist(local, world))
        if moved > 0.01:
            notes.append(f"the border marks '{node.GetName()}' say they were placed on the CT (frame=CT) but are "
                         f"under the transform '{parent.GetName()}': checked where the views show them, up to "
                         f"{_roundedUp(moved)} mm from their own coordinates")
    through = sorted({n.GetParentTransformNode().GetName() for n in nodes if n.GetParentTransformNode() is not None})
    if through:
        markSet = dataclasses.replace(markSet, source=f"{markSet.source} (through {', '.join(through)})")
    if len(markSet) == 0:
        logger.warning("the border marks (%s) hold no placed point: no border-mark check",
                       ", ".join(n.GetName() for n in nodes))
        return None, notes
    return markSet, notes


# ---------------------------------------------------------------------------------------------------------------
# Computation (no node is touched)
# ---------------------------------------------------------------------------------------------------------------
def _stapleOnCoreRule(masks: Sequence[np.ndarray], geometry: ImageGeometry) -> tuple[np.ndarray, CropBox, dict]:
    """STAPLE with the crop rule of ``analyzeObservers`` (union bounding box + DEFAULT_CROP_MARGIN_MM)."""
    unionBox = unionCropBox(masks, geometry.shape, (0, 0, 0))
    if unionBox is None:
        box = CropBox((0, 0, 0), (1, 1, 1), (0, 0, 0), "all observers' masks are empty")
        return np.zeros((1, 1, 1), bool), box, {"iterations": 0}
    margin = marginVoxelsFor(geometry.spacingMm, DEFAULT_CROP_MARGIN_MM)
    box = growCropBox(unionBox, margin, geometry.shape,
                      f"union bounding box of all observers + {DEFAULT_CROP_MARGIN_MM:g} mm margin, clipped")
    result = consensusLib.staple([m[box.slices] for m in masks], geometry.spacingMm)
    return result.mask, box, {"iterations": result.iterations, "threshold": result.threshold}


def _referenceLabel(referenceMethod: str, referenceName: str | None) -> str:
    if referenceMethod == "staple":
        return "STAPLE consensus"
    if referenceMethod == "majority":
        return "majority vote"
    return f"observer {referenceName}"


def _number(value) -> float:
    if value is None or isinstance(value, str):
        return math.nan
    return float(value)


# ---------------------------------------------------------------------------------------------------------------
# Output nodes
# ---------------------------------------------------------------------------------------------------------------
class _Outputs:
    """Finds or creates the output nodes of one run and remembers which ones it created (for the roll-back)."""

    def __init__(self, scene, structureName: str):
        self.scene = scene
        self.structureName = structureName
        self.created: list = []

    def find(self, key: str, className: str):
        found = nodesWithAttribute(self.scene, OUTPUT_ATTRIBUTE, key, className)
        return found[0] if found else None

    def get(self, key: str, className: str, name: str, given=None):
        """The node for ``key``: ``given`` (a node the caller chose), else the one a previous run made, else new."""
        node = given if given is not None else self.find(key, className)
        if node is not None and not node.IsA(className):
            raise InputError(f"'{node.GetName()}' is a {node.GetClassName()}, a {className} is needed for the "
                             f"{key} output")
        if node is None:
            node = self.scene.AddNewNodeByClass(className, name)
            self.created.append(node)
        elif node.GetAttribute(OUTPUT_ATTRIBUTE) == key or given is None:
            node.SetName(name)  # ours from a previous run: follow the structure name
        node.SetAttribute(OUTPUT_ATTRIBUTE, key)
        return node


def _fillTable(tableNode, columns: Sequence[tuple]) -> None:
    """Replace the table's columns: ``(name, kind, values, unit, description)``, kind "double" or "string"
    (doubles: None and undefined values -> NaN; booleans -> 1/0)."""
    wasModifying = tableNode.StartModify()
    try:
        # the column names as the view's header: otherwise Slicer's table view shows them as an editable first row
        # and the view's rows are the table's shifted by one (a static review: a click on a border mark centred the
        # views on the next mark)
        tableNode.SetUseColumnTitleAsColumnHeader(True)
        tableNode.RemoveAllColumns()
        for name, kind, values, unit, description in columns:
            array = vtk.vtkDoubleArray() if kind == "double" else vtk.vtkStringArray()
            array.SetName(name)
            array.SetNumberOfValues(len(values))
            for row, value in enumerate(values):
                if kind == "double":
                    array.SetValue(row, _number(value))
                else:
                    array.SetValue(row, "" if value is None else str(value))
            tableNode.AddColumn(array)
            if unit:
                tableNode.SetColumnUnitLabel(name, unit)
            if description:
                tableNode.SetColumnDescription(name, description)
        tableNode.GetTable().Modified()
    finally:
        tableNode.EndModify(wasModifying)


def _cropGeometry(geometry: ImageGeometry, start, stop) -> ImageGeometry:
    """The sub-grid of ``geometry`` covering the box [start, stop) (indexed k, j, i)."""
    size = tuple(int(b - a) for a, b in zip(start[::-1], stop[::-1], strict=True))
    origin = geometry.indexToLps(np.array(start[::-1], dtype=float))
    return ImageGeometry(size, geometry.spacingMm, tuple(origin), geometry.direction)


def _setSegments(segmentationNode, segments: Sequence[tuple], geometry: ImageGeometry, replaceAll: bool) -> None:
    """Put ``(segmentId, name, mask on a crop, crop start, color)`` segments into the node (each its own layer,
    stored on its crop); remove all other segments when ``replaceAll``, else only those with the same IDs."""
    segmentation = segmentationNode.GetSegmentation()
    labelmapName = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    wanted = {segmentId for segmentId, *_ in segments}
    wasModifying = segmentationNode.StartModify()
    try:
        if segmentation.GetNumberOfSegments() and not replaceAll and \
                segmentation.GetSourceRepresentationName() != labelmapName:
            segmentationNode.CreateBinaryLabelmapRepresentation()  # keep the other segments when switching source
        segmentationNode.SetSourceRepresentationToBinaryLabelmap()
        existing = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
        for segmentId in existing:
            if replaceAll or segmentId in wanted:
                segmentation.RemoveSegment(segmentId)
        if segmentation.GetNumberOfSegments() == 0:
            matrix = vtkMatrixFromArray(geometry.ijkToRasMatrix())
            extent = [0, geometry.sizeXyz[0] - 1, 0, geometry.sizeXyz[1] - 1, 0, geometry.sizeXyz[2] - 1]
            segmentation.SetConversionParameter(
                slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(),
                slicer.vtkSegmentationConverter.SerializeImageGeometry(matrix, extent))
        for segmentId, name, mask, start, color in segments:
            stop = tuple(a + n for a, n in zip(start, mask.shape, strict=True))
            segment = slicer.vtkSegment()
            segment.SetName(name)
            segment.SetColor(*color[:3])
            segment.AddRepresentation(labelmapName, orientedImageFromArray(mask.astype(np.uint8),
                                                                           _cropGeometry(geometry, start, stop)))
            if not segmentation.AddSegment(segment, segmentId):
                raise RuntimeError(f"segment '{name}' could not be added to '{segmentationNode.GetName()}'")
    finally:
        segmentationNode.EndModify(wasModifying)
    if segmentationNode.GetDisplayNode() is None:
        segmentationNode.CreateDefaultDisplayNodes()


def _setLabelmapVoxels(volumeNode, array: np.ndarray, geometry: ImageGeometry) -> None:
    from vtkmodules.util import numpy_support

    image = vtk.vtkImageData()
    image.SetDimensions(*geometry.sizeXyz)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True))
    volumeNode.SetIJKToRASMatrix(vtkMatrixFromArray(geometry.ijkToRasMatrix()))
    volumeNode.SetAndObserveImageData(image)
    if volumeNode.GetDisplayNode() is None:
        volumeNode.CreateDefaultDisplayNodes()


def agreementColors(numberOfObservers: int) -> list[tuple[str, tuple[float, float, float, float]]]:
    """Names and RGBA of the agreement colour table: entry 0 transparent, k = "k of N observers" (pale pink for 1 to
    magenta for N), opaque: shown at ``AGREEMENT_LABEL_OPACITY``."""
    n = int(numberOfObservers)
    entries = [("none", (0.0, 0.0, 0.0, 0.0))]
    for k in range(1, n + 1):
        t = 0.0 if n == 1 else (k - 1) / (n - 1)
        rgb = (1 - t) * _AGREEMENT_LOW + t * _AGREEMENT_HIGH
        entries.append((f"{k} of {n} observers", (*(float(c) for c in rgb), 1.0)))
    return entries


def _fillColorTable(colorNode, numberOfObservers: int) -> None:
    colorNode.SetTypeToUser()
    entries = agreementColors(numberOfObservers)
    colorNode.SetNumberOfColors(len(entries))
    for index, (name, rgba) in enumerate(entries):
        colorNode.SetColor(index, name, *rgba)
    colorNode.SetAttribute("Category", "DelineationReview")


def _placeInFolder(scene, nodes: Sequence, folderName: str) -> None:
    """Put ``nodes`` into the review's subject hierarchy folder (created once, found again by its attribute).
    Tables, charts and displayable nodes without an item (slicer-core has no subject hierarchy plugins to make
    them) get one; colour tables and plot series stay where Slicer keeps them."""
    shNode = scene.GetSubjectHierarchyNode()
    if shNode is None:
        return
    sceneItem = shNode.GetSceneItemID()
    children = vtk.vtkIdList()
    shNode.GetItemChildren(sceneItem, children)
    folder = 0
    for index in range(children.GetNumberOfIds()):
        item = children.GetId(index)
        if shNode.GetItemAttribute(item, OUTPUT_ATTRIBUTE) == _FOLDER_KEY:
            folder = item
            break
    if not folder:
        folder = shNode.CreateFolderItem(sceneItem, folderName)
        shNode.SetItemAttribute(folder, OUTPUT_ATTRIBUTE, _FOLDER_KEY)
    else:
        shNode.SetItemName(folder, folderName)
    for node in nodes:
        item = shNode.GetItemByDataNode(node)
        if item:
            shNode.SetItemParent(item, folder)
        elif any(node.IsA(c) for c in ("vtkMRMLTableNode", "vtkMRMLPlotChartNode", "vtkMRMLDisplayableNode")):
            shNode.CreateItem(folder, node)


# ---------------------------------------------------------------------------------------------------------------
# Table contents
# ---------------------------------------------------------------------------------------------------------------
def _scalarMetricKeys(dicts: Sequence[dict]) -> list[str]:
    keys = [k for k in _PAIR_METRICS if any(k in d for d in dicts)]
    for d in dicts:
        for key, value in d.items():
            if key not in keys and not isinstance(value, list | dict | str) and key not in (
                    "a", "b", "name", "sensitivity", "specificity", "stapleSensitivity", "stapleSpecificity"):
                keys.append(key)
    return keys


def _description(key: str, iov: IovResult) -> str:
    """A metric column's description, naming the conventions the numbers were computed under."""
    if key == "msdMm":
        meaning = definitions(iov.surfaceConvention, iov.msdConvention)["msdMm"]
        text = f"mean surface distance ({iov.msdConvention}): {meaning}"
    else:
        text = _METRIC_DESCRIPTIONS.get(key, "")
    distanceLike = key in ("hausdorffMm", "hdPercentileMm", "msdMm", "surfaceDice")
    return text + (" (surfels: Nikolov et al.'s area-weighted surface elements)"
                   if distanceLike and iov.surfaceConvention == "surfel" else "")


def _unit(key: str) -> str:
    return "mm" if key.endswith("Mm") else ("cc" if key.endswith("Cc") else "")


def _undefinedText(entry: dict) -> str:
    return "; ".join(f"{k}: {v}" for k, v in (entry.get("undefined") or {}).items())


def _pairColumns(iov: IovResult) -> list[tuple]:
    pairs = [p.toDict() for p in iov.pairs]
    keys = _scalarMetricKeys(pairs)
    columns = [("a", "string", [p["a"] for p in pairs], "", "first observer"),
               ("b", "string", [p["b"] for p in pairs], "", "second observer")]
    for key in keys:
        columns.append((key, "double", [p.get(key) for p in pairs], _unit(key), _description(key, iov)))
    columns.append(("undefined", "string", [_undefinedText(p) for p in pairs], "", "why a value is undefined"))
    return columns


def _observerColumns(iov: IovResult, nodeIds: Sequence[str], segmentNames: Sequence[str]) -> list[tuple]:
    entries = list(iov.consensus["observers"]) if iov.consensus else [{"name": o["name"]} for o in iov.observers]
    volumes = [o["volumeCc"] for o in iov.observers]
    keys = _scalarMetricKeys(entries)
    columns = [("observer", "string", [e["name"] for e in entries], "", "observer (segmentation node name)"),
               ("index", "double", list(range(1, len(entries) + 1)), "", "observer number (x of the plot)"),
               ("nodeId", "string", list(nodeIds), "", "segmentation node ID"),
               ("segment", "string", list(segmentNames), "", "segment compared"),
               ("volumeCc", "double", volumes, "cc", "observer's volume")]
    for key in keys:
        columns.append((key, "double", [e.get(key) for e in entries], _unit(key),
                        _description(key, iov) + " (observer vs reference)"))
    for key, description in (("sensitivity", "reference voxels the observer included"),
                             ("specificity", "non-reference voxels of the metric crop the observer left out"),
                             ("stapleSensitivity", "STAPLE's own sensitivity estimate"),
                             ("stapleSpecificity", "STAPLE's own specificity estimate (STAPLE crop)")):
        if any(key in e for e in entries):
            columns.append((key, "double", [e.get(key) for e in entries], "", description))
    columns.append(("undefined", "string", [_undefinedText(e) for e in entries], "", "why a value is undefined"))
    return columns


def _studyColumns(iov: IovResult, referenceLabel: str, stapleCc: float, majorityCc: float) -> list[tuple]:
    dice = [p.values.get("dice") for p in iov.pairs]
    dice = [d for d in dice if d is not None and math.isfinite(d)]
    agreement = iov.agreement
    rows = [
        ("numberOfObservers", len(iov.observers), "", "observers compared"),
        ("CIgen", iov.cigen, "", "generalised conformity index: sum of pairwise intersections / sum of pairwise "
                                 "unions (Kouwenhoven et al. 2009)"),
        ("volumeCV", iov.volumeCv, "", "coefficient of variation of the observers' volumes (sample SD / mean)"),
        ("uncertaintyBandCc", agreement["uncertaintyBandCc"], "cc", "voxels included by at least one observer but "
                                                                  "not by all (union minus intersection)"),
        ("unionCc", agreement["unionCc"], "cc", "voxels included by at least one observer"),
        ("intersectionCc", agreement["intersectionCc"], "cc", "voxels included by every observer"),
        ("referenceVolumeCc", iov.consensus["volumeCc"] if iov.consensus else None, "cc",
         f"volume of the reference ({referenceLabel})"),
        ("stapleVolumeCc", stapleCc, "cc", "STAPLE consensus (posterior probability >= 0.5)"),
        ("majorityVolumeCc", majorityCc, "cc", "majority vote (more than half of the observers)"),
        ("medianPairwiseDice", float(np.median(dice)) if dice else None, "", "median Dice over all pairs"),
        ("minimumPairwiseDice", min(dice) if dice else None, "", "lowest Dice of any pair"),
        ("toleranceMm", iov.toleranceMm, "mm", "surface-Dice tolerance"),
        ("hdPercentile", iov.hdPercentile, "", f"percentile of the robust Hausdorff distance ({iov.hdConvention})"),
        ("surfelConvention", 1.0 if iov.surfaceConvention == "surfel" else 0.0, "",
         "1: surfels (Nikolov et al.'s area-weighted surface elements on the voxel corners, as DeepMind's "
         "surface-distance); 0: surface voxels, distances between voxel centres"),
    ]
    return [("quantity", "string", [r[0] for r in rows], "", "what"),
            ("value", "double", [r[1] for r in rows], "", "value (NaN: undefined)"),
            ("unit", "string", [r[2] for r in rows], "", "unit"),
            ("definition", "string", [r[3] for r in rows], "", "definition")]


_NO_MARKS_NOTE = "no border marks were checked in the last run (no marks node, or one without placed points)"


def _marksColumns(evaluation: MarkEvaluation) -> list[tuple]:
    kinds = {m.id: m.kind for m in evaluation.markSet.marks}
    results = list(evaluation.results)

    def flag(r):
        if r.honoured:
            return ""
        return "CLEAR MISS" if r.clearMiss else "missed"

    columns = [("mark", "string", [r.label for r in results], "", "border mark label"),
               ("markId", "string", [r.markId for r in results], "", "border mark id"),
               ("kind", "string", [kinds.get(r.markId, "") for r in results], "", "point or arrow"),
               ("observer", "string", [r.observer for r in results], "", "observer")]
    tips = {m.id: m.tipRas for m in evaluation.markSet.marks}
    for axis, name in enumerate(("R", "A", "S")):
        columns.append((f"ras{name}", "double", [tips[r.markId][axis] if r.markId in tips else None for r in results],
                        "mm", f"{name} coordinate of the mark tip (scene RAS, where the views are centred on it)"))
    numeric = (("signedDistanceMm", "mm", "distance from the GTV surface to the mark tip; positive: the GTV stops "
                                          "short of the mark"),
               ("honoured", "", "1: the GTV reaches the mark (within the tolerance)"),
               ("reachesBorder", "", "1: signed distance <= tolerance"),
               ("withinTolerance", "", "1: |signed distance| <= tolerance"),
               ("overContoured", "", "1: the GTV extends beyond the mark by more than the tolerance"),
               ("clearMiss", "", "1: missed by more than the tolerance plus the voxel uncertainty"),
               ("arrowCoverage", "", "arrows: fraction of the arrow inside the GTV"),
               ("arrowUncoveredMm", "mm", "arrows: length of the arrow outside the GTV"))
    for key, unit, description in numeric:
        columns.append((key, "double", [getattr(r, key) for r in results], unit, description))
    columns.append(("missed", "double", [0.0 if r.honoured else 1.0 for r in results], "",
                    "1: the mark is not honoured"))
    columns.append(("flag", "string", [flag(r) for r in results], "", "missed / CLEAR MISS"))
    columns.append(("reason", "string", [r.reason for r in results], "", "why a value is undefined"))
    return columns


def tableRowOfViewRow(tableNode, viewRow: int) -> int | None:
    """The table's row shown in row ``viewRow`` of Slicer's table view (qMRMLTableModel): the same, or one less when
    the view shows the column names as a first row (``UseColumnTitleAsColumnHeader`` off, as in a table made
    elsewhere); None for that names row."""
    row = int(viewRow) - (0 if tableNode is None or tableNode.GetUseColumnTitleAsColumnHeader() else 1)
    return row if row >= 0 else None


def borderMarkRas(tableNode, row: int) -> tuple[float, float, float] | None:
    """The mark tip (scene RAS mm) of ``row`` of a border-marks table (columns ``rasR``, ``rasA``, ``rasS``), or
    None when the row or the columns are missing or the position is not finite. Used to centre the views."""
    if tableNode is None or not 0 <= int(row) < tableNode.GetNumberOfRows():
        return None
    table = tableNode.GetTable()
    position = []
    for name in ("rasR", "rasA", "rasS"):
        column = table.GetColumnByName(name)
        if column is None:
            return None
        value = column.GetVariantValue(int(row)).ToDouble()
        if not math.isfinite(value):
            return None
        position.append(float(value))
    return tuple(position)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------------
# The workflow
# ---------------------------------------------------------------------------------------------------------------
def runDelineationReview(scene, observerSegmentations, structureName: str, referenceMethod: str = "staple",
                         referenceObserver=None, referenceVolume=None, borderMarks=None,
                         toleranceMm: float = DEFAULT_SURFACE_DICE_TOLERANCE_MM,
                         hausdorffPercentile: float = 95.0, hausdorffConvention: str = "maxDirected",
                         metricsTable=None, consensusSegmentation=None, borderMarksTable=None,
                         progress=None, marksToleranceMm: float = DEFAULT_TOLERANCE_MM,
                         surfaceConvention: str = "voxel", msdConvention: str = "pooled") -> dict:
    """Compare one structure across observers' segmentation nodes and fill (or update) the output nodes.

    Parameters
    ----------
    scene : the MRML scene (default: the first observer's).
    observerSegmentations : segmentation nodes, one per observer (at least two, each node once).
    structureName : the structure to compare ("GTV"); matched tolerantly in each node.
    referenceMethod : "staple", "majority" or "observer" (then ``referenceObserver`` is the reference).
    referenceObserver : the reference observer's segmentation node (one of ``observerSegmentations``).
    referenceVolume : volume whose grid is the common grid (default: the first observer's own grid).
    borderMarks : markups node(s) (point lists, lines = arrows) with the radiologist's border marks, or None.
    toleranceMm : surface-Dice tolerance (mm).
    marksToleranceMm : border-mark tolerance (mm; default 3 mm as ``reirradiation iov`` and studies use, so that one
        marks file gives one verdict whichever tool reads it).
    hausdorffPercentile, hausdorffConvention : robust Hausdorff distance (see ``analyzeObservers``).
    surfaceConvention, msdConvention : ``analyzeObservers``' ``surface`` ("voxel" or "surfel") and ``msdConvention``
        ("pooled" or "meanDirected").
    metricsTable, consensusSegmentation, borderMarksTable : output nodes to fill (default: found by their
        ``DelineationReview.Output`` attribute, else created).
    progress : ``progress(fraction, message)``; may raise ``ProcessingCancelled``, which propagates (nothing is
        left in the scene).

    Returns
    -------
    dict of output nodes and results; see the module docstring.
    """
    progress = progress or noProgress
    observers = _asNodeList(observerSegmentations)
    if len(observers) < 2:
        raise InputError("at least two observers' segmentations are needed")
    for node in observers:
        if not node.IsA("vtkMRMLSegmentationNode"):
            raise InputError(f"'{node.GetName()}' is not a segmentation; choose one segmentation per observer")
    ids = [node.GetID() for node in observers]
    repeated = sorted({observers[i].GetName() for i, nodeId in enumerate(ids) if ids.count(nodeId) > 1})
    if repeated:
        raise InputError(f"the segmentation {', '.join(repeated)} is checked more than once; each observer counts "
                         "once")
    if scene is None:
        scene = observers[0].GetScene()
    foreign = [node.GetName() for node in observers if node.GetScene() is not scene]
    if foreign:
        raise InputError(f"the segmentation {', '.join(foreign)} is not in the scene of the review")
    structureName = (structureName or "").strip()
    if not structureName:
        raise InputError("name the structure to compare (e.g. GTV)")
    if referenceMethod not in REFERENCE_METHODS:
        raise InputError(f"unknown reference '{referenceMethod}'; use one of {', '.join(REFERENCE_METHODS)}")
    if consensusSegmentation is not None and consensusSegmentation.GetID() in ids:
        raise InputError(f"the consensus output '{consensusSegmentation.GetName()}' is one of the observers' "
                         "segmentations; inputs are not modified: choose another node or none")
    names = _uniqueObserverNames(observers)
    referenceName = None
    if referenceMethod == "observer":
        if referenceObserver is None:
            raise InputError("choose the reference observer, or use the STAPLE or majority consensus")
        if referenceObserver.GetID() not in ids:
            raise InputError(f"the reference observer '{referenceObserver.GetName()}' is not among the checked "
                             "observers' segmentations")
        referenceName = names[ids.index(referenceObserver.GetID())]

    # ---- inputs -> masks on one grid ------------------------------------------------------------------------
    progress(0.0, "Reading the observers' segmentations")
    for node in observers:
        _requireNoTransform(node, "segmentation")
    if referenceVolume is not None:
        geometry = _volumeGeometry(referenceVolume)
        gridSource = f"reference volume '{referenceVolume.GetName()}'"
    chosen = [_chooseSegment(node, structureName) for node in observers]  # all names checked before any work
    if referenceVolume is None:
        own = _segmentationOwnGeometry(observers[0], chosen[0][0])
        geometry = _extendedToCover(own, observers, chosen)
        gridSource = f"labelmap grid of '{observers[0].GetName()}'" + (
            "" if geometry is own else ", extended to hold every observer's delineation")
    markSet, marksNotes = _markSet(borderMarks)
    masks: dict[str, np.ndarray] = {}
    gridNotes: list[str] = []
    for index, (node, name, (segmentId, segmentName)) in enumerate(zip(observers, names, chosen, strict=True)):
        progress(0.15 * index / len(observers), f"Reading {segmentName} of {name}")
        masks[name] = segmentMask(node, segmentId, geometry)
        outside = segmentOutsidePercent(node, segmentId, geometry)
        if outside > 0:
            # a reference volume (or first observer's grid) smaller than a delineation crops it: every metric would
            # describe the part inside only, silently (a one-slice reference volume gave Dice 0.86 for 4-slice GTVs)
            gridNotes.append(f"{outside:.1f} % of the {segmentName} of observer '{name}' lies outside the common grid "
                             f"({gridSource}, {geometry.describe()}): the metrics describe the part inside only")
        if not masks[name].any():
            logger.warning("the %s of observer '%s' is empty on the common grid (%s)", segmentName, name, gridSource)
    logger.info("delineation review of '%s': %d observers on the %s (%s)", structureName, len(masks), gridSource,
                geometry.describe())

    # ---- numbers ------------------------------------------------------------------------------------------------
    reference = referenceMethod if referenceMethod != "observer" else referenceName
    iov = analyzeObservers(masks, geometry, reference=reference, toleranceMm=toleranceMm,
                           hdPercentile=hausdorffPercentile, hdConvention=hausdorffConvention,
                           surface=surfaceConvention, msdConvention=msdConvention,
                           progress=subProgress(progress, 0.15, 0.8))
    if gridNotes:
        for note in gridNotes:
            logger.warning("%s", note)
        iov = dataclasses.replace(iov, notes=(*gridNotes, *iov.notes))
    n = len(masks)
    crop = iov.crop
    progress(0.8, "Consensus segments")
    if referenceMethod == "staple":
        stapleMask, stapleStart = iov.consensusMask, crop.start
    else:
        stapleMask, stapleBox, _ = _stapleOnCoreRule(list(masks.values()), geometry)
        stapleStart = stapleBox.start
    majorityMask = iov.consensusMask if referenceMethod == "majority" else consensusLib.majorityVote(
        iov.agreementMap, n)
    voxelCc = geometry.voxelVolumeCc
    stapleCc = float(np.count_nonzero(stapleMask)) * voxelCc
    majorityCc = float(np.count_nonzero(majorityMask)) * voxelCc
    evaluation = None
    if markSet is not None:
        progress(0.85, "Checking the border marks")
        evaluation = evaluateMarks(markSet, masks, geometry, marksToleranceMm)
        if marksNotes:
            evaluation = dataclasses.replace(evaluation, notes=(*marksNotes, *evaluation.notes))
    referenceLabel = _referenceLabel(referenceMethod, referenceName)
    agreementFull = iov.agreementMapFull()

    # ---- output nodes (rolled back on failure) ------------------------------------------------------------------
    progress(0.9, "Creating the output nodes")  # the last point a cancel stops the run: the outputs are then written
    report = committedProgress(progress)  # whole (an independent review: a cancel at 92-97 % mixed two runs)
    outputs = _Outputs(scene, structureName)
    nodes: dict = {}
    try:
        nodes["metricsTable"] = table = outputs.get("metricsTable", "vtkMRMLTableNode",
                                                    f"{structureName} pairwise metrics", metricsTable)
        _fillTable(table, _pairColumns(iov))
        nodes["observerTable"] = table = outputs.get("observerTable", "vtkMRMLTableNode",
                                                     f"{structureName} observers vs {referenceLabel}")
        _fillTable(table, _observerColumns(iov, ids, [segmentName for _, segmentName in chosen]))
        nodes["studyTable"] = table = outputs.get("studyTable", "vtkMRMLTableNode", f"{structureName} study numbers")
        _fillTable(table, _studyColumns(iov, referenceLabel, stapleCc, majorityCc))

        report(0.92, "Consensus and observer outlines")
        consensusNode = outputs.get("consensusSegmentation", "vtkMRMLSegmentationNode",
                                    f"{structureName} consensus", consensusSegmentation)
        nodes["consensusSegmentation"] = consensusNode
        _setSegments(consensusNode, [
            (STAPLE_SEGMENT_ID, "STAPLE consensus", stapleMask, stapleStart, _STAPLE_COLOR),
            (MAJORITY_SEGMENT_ID, "Majority consensus", majorityMask, crop.start, _MAJORITY_COLOR)],
            geometry, replaceAll=False)
        consensusNode.GetDisplayNode().SetVisibility2DFill(False)
        outlines = outputs.get("observerOutlines", "vtkMRMLSegmentationNode", f"{structureName} observer outlines")
        nodes["observerOutlines"] = outlines
        colors = defaultStructureColors(names)
        _setSegments(outlines, [(f"observer{index + 1}", name, masks[name][crop.slices], crop.start, colors[name])
                                for index, name in enumerate(names)], geometry, replaceAll=True)
        outlines.GetDisplayNode().SetVisibility2DFill(False)
        outlines.GetDisplayNode().SetSliceIntersectionThickness(2)

        report(0.95, "Agreement map")
        colorNode = outputs.get("agreementColorTable", "vtkMRMLColorTableNode",
                                f"{structureName} agreement colours")
        _fillColorTable(colorNode, n)
        nodes["agreementColorTable"] = colorNode
        agreementNode = outputs.get("agreementMap", "vtkMRMLLabelMapVolumeNode", f"{structureName} agreement map")
        _setLabelmapVoxels(agreementNode, agreementFull, geometry)
        agreementNode.GetDisplayNode().SetAndObserveColorNodeID(colorNode.GetID())
        nodes["agreementMap"] = agreementNode

        report(0.97, "Plot")
        observerTable = nodes["observerTable"]
        series = []
        for key, column, title, color in (("diceSeries", "dice", "Dice", (0.0, 0.45, 0.70)),
                                          ("surfaceDiceSeries", "surfaceDice", f"Surface Dice ({toleranceMm:g} mm"
                                           + (", surfels)" if surfaceConvention == "surfel" else ")"),
                                           (0.90, 0.62, 0.00))):
            seriesNode = outputs.get(key, "vtkMRMLPlotSeriesNode", title)
            seriesNode.SetAndObserveTableNodeID(observerTable.GetID())
            seriesNode.SetXColumnName("index")
            seriesNode.SetYColumnName(column)
            seriesNode.SetLabelColumnName("observer")
            seriesNode.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeBar)
            seriesNode.SetColor(*color)
            nodes[key] = seriesNode
            series.append(seriesNode)
        chart = outputs.get("diceChart", "vtkMRMLPlotChartNode", f"{structureName}: agreement with {referenceLabel}")
        chart.RemoveAllPlotSeriesNodeIDs()
        for seriesNode in series:
            chart.AddAndObservePlotSeriesNodeID(seriesNode.GetID())
        chart.SetTitle(f"{structureName}: each observer vs the {referenceLabel}")
        chart.SetXAxisTitle("observer")
        chart.SetYAxisTitle("Dice / surface Dice")
        chart.SetYAxisRange(0.0, 1.0)
        chart.SetYAxisRangeAuto(False)
        nodes["diceChart"] = chart

        nodes["borderMarksTable"] = None
        if evaluation is not None:
            report(0.99, "Border-mark table")
            table = outputs.get("borderMarksTable", "vtkMRMLTableNode", f"{structureName} border marks",
                                borderMarksTable)
            _fillTable(table, _marksColumns(evaluation))
            nodes["borderMarksTable"] = table
        elif (table := borderMarksTable or outputs.find("borderMarksTable", "vtkMRMLTableNode")) is not None:
            # a run without marks: the last run's verdicts would stand beside this run's tables (an independent
            # review: observers Anna and Ben still flagged after a run of Anna and Carl)
            table.SetName(f"{structureName} border marks (none checked)")
            _fillTable(table, [("note", "string", [_NO_MARKS_NOTE], "", "why the table is empty")])
            nodes["borderMarksTable"] = table
        _placeInFolder(scene, outputs.created, f"Delineation review: {structureName}")
    except BaseException:
        removeNodes(scene, outputs.created)
        raise
    finishProgress(progress, "Done")

    summary = _summary(iov, structureName, referenceLabel, evaluation)
    logger.info("%s", summary)
    nodes.update({"summary": summary, "iovResult": iov, "marksEvaluation": evaluation, "observerNames": names,
                  "geometry": geometry, "structureName": structureName, "referenceLabel": referenceLabel})
    return nodes


def _roundedUp(mm: float) -> str:
    """A distance to 0.01 mm, rounded up: beyond a limit it never reads as the limit."""
    return f"{math.ceil(mm * 100 - 1e-9) / 100:.2f}"


def _summary(iov: IovResult, structureName: str, referenceLabel: str, evaluation: MarkEvaluation | None) -> str:
    dice = [p.values.get("dice") for p in iov.pairs]
    dice = [d for d in dice if d is not None and math.isfinite(d)]
    parts = [f"{len(iov.observers)} observers of {structureName}"]
    if dice:
        parts.append(f"pairwise Dice median {np.median(dice):.2f} (range {min(dice):.2f}-{max(dice):.2f})")
    if iov.cigen is not None:
        parts.append(f"CIgen {iov.cigen:.2f}")
    parts.append(f"uncertainty band {iov.agreement['uncertaintyBandCc']:.1f} cc")
    if iov.consensus:
        ranked = [(e.get("dice"), e["name"]) for e in iov.consensus["observers"] if e.get("dice") is not None]
        if ranked:
            low = min(ranked)
            parts.append(f"lowest Dice to the {referenceLabel}: {low[1]} ({low[0]:.2f})")
    if evaluation is not None:
        flagged = evaluation.flaggedObservers
        parts.append(f"border marks: {', '.join(flagged)} flagged" if flagged else "border marks: no observer flagged")
        # rounded up: a distance beyond the tolerance never reads as the tolerance (3.004 read "up to 3.00 mm")
        beyond = [f"{s.observer} ({s.nOverContoured} mark(s), up to {_roundedUp(s.worstOverContourMm)} mm)"
                  for s in evaluation.summaries if s.nOverContoured]
        if beyond:
            parts.append(f"GTV beyond the marked border by more than {evaluation.toleranceMm:g} mm: "
                         f"{', '.join(beyond)}")
    notes = [*getattr(iov, "notes", ()), *(evaluation.notes if evaluation is not None else ())]
    return "; ".join(parts) + "." + "".join(f" Note: {note}." for note in notes)


# ---------------------------------------------------------------------------------------------------------------
# Export and picture
# ---------------------------------------------------------------------------------------------------------------
def _tableRows(tableNode) -> tuple[list[str], list[list]]:
    table = tableNode.GetTable()
    columns = [table.GetColumn(c) for c in range(table.GetNumberOfColumns())]
    names = [column.GetName() for column in columns]
    rows = []
    for r in range(table.GetNumberOfRows()):
        row = []
        for column in columns:
            if column.IsA("vtkDataArray"):
                value = float(column.GetTuple1(r))
                row.append(value if math.isfinite(value) else None)
            else:
                row.append(column.GetValue(r))
        rows.append(row)
    return names, rows


def exportTables(nodes: dict, folder) -> list[Path]:
    """Write every table node of ``nodes`` (e.g. the dict :func:`runDelineationReview` returns) as
    ``<key>.csv`` (NaN written as an empty cell, floats with ``repr`` precision) and ``<key>.json`` (``{"name",
    "columns": [{"name", "unit", "description"}], "rows": [{column: value}]}``, NaN as null). When ``nodes`` holds
    ``iovResult``, its full report is written as ``iovReport.json``. Returns the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for key, node in nodes.items():
        if node is None or not hasattr(node, "IsA") or not node.IsA("vtkMRMLTableNode"):
            continue
        names, rows = _tableRows(node)
        csvPath = folder / f"{key}.csv"
        with csvPath.open("w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(names)
            for row in rows:
                writer.writerow(["" if v is None else (repr(v) if isinstance(v, float) else v) for v in row])
        jsonPath = folder / f"{key}.json"
        columns = [{"name": name, "unit": node.GetColumnUnitLabel(name) or "",
                    "description": node.GetColumnDescription(name) or ""} for name in names]
        document = {"name": node.GetName(), "columns": columns,
                    "rows": [dict(zip(names, row, strict=True)) for row in rows]}
        jsonPath.write_text(json.dumps(document, indent=2, allow_nan=False), encoding="utf-8")
        written += [csvPath, jsonPath]
    iov = nodes.get("iovResult")
    if isinstance(iov, IovResult):
        path = folder / "iovReport.json"
        path.write_text(json.dumps(iov.toDict(), indent=2, allow_nan=False, default=float), encoding="utf-8")
        written.append(path)
    logger.info("delineation review tables written to %s (%d files)", folder, len(written))
    return written


_VIEW_NORMALS_LPS = {"Axial": (0.0, 0.0, 1.0), "Coronal": (0.0, 1.0, 0.0), "Sagittal": (1.0, 0.0, 0.0)}


def largestDisagreementSlice(iov: IovResult, orientation: str = "Axial") -> tuple[int, int, np.ndarray]:
    """The slice of the common grid with the most uncertainty-band voxels (included by some observers, not all).

    Slices are taken along the grid axis closest to the view normal of ``orientation``. Returns ``(index along that
    array axis of the full grid, band voxels on it, LPS point = centre of those voxels)``. Ties go to the lowest
    index; with no band voxels at all, the slice with the most voxels of the union (else the grid centre).
    """
    if orientation not in _VIEW_NORMALS_LPS:
        raise InputError(f"unknown slice orientation '{orientation}'; use Axial, Coronal or Sagittal")
    geometry = iov.geometry
    n = len(iov.observers)
    columnXyz = int(np.argmax(np.abs(geometry.directionMatrix.T @ np.array(_VIEW_NORMALS_LPS[orientation]))))
    axis = 2 - columnXyz  # array axis (k, j, i) of that grid axis
    counts = iov.agreementMap
    band = (counts > 0) & (counts < n)
    selection = band if band.any() else counts > 0
    if not selection.any():
        centre = (np.array(geometry.sizeXyz, dtype=float) - 1) / 2
        return int(round(centre[columnXyz])), 0, geometry.indexToLps(centre)
    otherAxes = tuple(a for a in range(3) if a != axis)
    perSlice = selection.sum(axis=otherAxes)
    best = int(np.argmax(perSlice))
    kji = np.argwhere(np.take(selection, best, axis=axis))  # 2D indices of the other axes
    full = np.zeros((len(kji), 3))
    full[:, axis] = best
    full[:, list(otherAxes)] = kji
    full += np.array(iov.crop.start, dtype=float)
    centreIjk = full.mean(axis=0)[::-1]
    bandCount = int(np.take(band, best, axis=axis).sum())
    return best + iov.crop.start[axis], bandCount, geometry.indexToLps(centreIjk)


def renderLargestDisagreementPanel(scene, result: dict, referenceVolume, outputPng, orientation: str = "Axial",
                                   sizePx: tuple[int, int] = (640, 640), fieldOfViewMm: float | None = None) -> Path:
    """Write a PNG of the slice where the observers disagree most (:func:`largestDisagreementSlice`): the reference
    volume (else the agreement map) as background, the agreement map as label layer (its colour table), every
    observer's outline in its colour, a legend, the slice position in the corner.

    ``result`` is the dict :func:`runDelineationReview` returned (``iovResult``, ``agreementMap``,
    ``observerOutlines``, ``observerNames``). The view is centred on the band voxels of that slice and, unless
    ``fieldOfViewMm`` is given, is 2.5 times as wide as the union of the observers (at least 60 mm). Uses Slicer's
    own slice logic and displayable managers offscreen (:func:`ReirradiationDoseLib.mrml.render.renderSliceView`).
    """
    from ReirradiationDoseLib.mrml.render import renderSliceView

    iov: IovResult = result["iovResult"]
    index, bandVoxels, centreLps = largestDisagreementSlice(iov, orientation)
    if fieldOfViewMm is None:
        extentMm = np.array(iov.crop.shape[::-1], dtype=float) * np.array(iov.geometry.spacingMm)
        fieldOfViewMm = max(60.0, 2.5 * float(np.max(extentMm)))
    outlines = result["observerOutlines"]
    segmentation = outlines.GetSegmentation()
    legend = [(segmentation.GetNthSegment(i).GetName(), segmentation.GetNthSegment(i).GetColor())
              for i in range(segmentation.GetNumberOfSegments())]
    n = len(iov.observers)
    colors = agreementColors(n)
    legend += [(f"agreement {colors[1][0]}", colors[1][1][:3]), (f"agreement {colors[n][0]}", colors[n][1][:3])]
    background = referenceVolume if referenceVolume is not None else result["agreementMap"]
    logger.info("largest disagreement: %s slice %d (%d band voxels)", orientation, index, bandVoxels)
    return renderSliceView(scene, outputPng, orientation=orientation, positionRas=lpsToRas(centreLps),
                           background=background, labelmap=result["agreementMap"], segmentations=[outlines],
                           legend=legend, sizePx=sizePx, fieldOfViewMm=fieldOfViewMm,
                           labelOpacity=AGREEMENT_LABEL_OPACITY)
