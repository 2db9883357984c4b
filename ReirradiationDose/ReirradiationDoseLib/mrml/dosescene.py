"""A dose workflow result as MRML nodes, its pictures and the Slicer scene file.

``addDoseResultToScene`` is used both by the Slicer module (re-running updates the same output nodes instead of
piling up new ones; on failure the nodes it created are removed) and headless by ``writeDosePictures``, which
renders composite-EQD2 isodose lines over the target outlines in three planes with Slicer's own slice views and
writes ``scene.mrb``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..core.geometry import ImageGeometry, arrayFromImage, lpsToRas
from .isodose import createIsodoseModels, isodoseLegend
from .nodes import (
    DOSE_COLOR_TABLE_NAME,
    UNKNOWN_DOSE_COLOR_TABLE_NAME,
    unknownDoseColorTableNode,
    nodesWithAttribute,
    placeInStudy,
    presentNames,
    removeNamedSince,
    removeNodes,
    segmentationNodeFromMasks,
    volumeNodeFromArray,
)
from .render import renderSliceView
from .scene import closeScene, createScene

logger = logging.getLogger(__name__)

__all__ = ["addDoseResultToScene", "writeDosePictures", "targetCentreRas", "outputNode", "OUTPUT_ATTRIBUTE",
           "UNKNOWN_DOSE_LABEL_OPACITY"]

# the unknown-dose label map over the colour wash in the module's slice views
UNKNOWN_DOSE_LABEL_OPACITY = 0.5

OUTPUT_ATTRIBUTE = "Reirradiation.Output"


def _volume(scene, key: str, array: np.ndarray, geometry: ImageGeometry, name: str, created: list,
            isDose: bool = False, isLabel: bool = False):
    """Create the output volume ``key`` (a previous run's is removed when the whole new result is in place)."""
    node = volumeNodeFromArray(scene, array, geometry, name, isDose=isDose, isLabel=isLabel)
    node.SetAttribute(OUTPUT_ATTRIBUTE, key)
    created.append(node)
    return node


def _table(scene, key: str, name: str, rows: list[dict], created: list):
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table.SetUseColumnTitleAsColumnHeader(True)  # the column names as the header, not as an editable first row
    table.SetAttribute(OUTPUT_ATTRIBUTE, key)
    created.append(table)
    columns = []
    for row in rows:
        for column in row:
            if column not in columns:
                columns.append(column)
    vtkTable = table.GetTable()
    import vtk

    for column in columns:
        array = vtk.vtkStringArray()
        array.SetName(column)
        vtkTable.AddColumn(array)
    vtkTable.SetNumberOfRows(len(rows))
    for r, row in enumerate(rows):
        for c, column in enumerate(columns):
            value = row.get(column)
            if isinstance(value, float):
                text = "" if np.isnan(value) else f"{value:.3f}"
            elif isinstance(value, dict):
                text = value.get("structure") or value.get("name") or str(value)
            else:
                text = "" if value is None else str(value)
            vtkTable.SetValue(r, c, vtk.vtkVariant(text))
    table.Modified()
    return table


# Composite isodose lines, ordered by dose: blue, white, orange, red, then dark red (isodose lines are also drawn
# thicker than the structure outlines, whose colours come from the RTSTRUCT). The lowest was grey, hard to tell from
# the CT (a newcomer's review).
_COMPOSITE_ISODOSE_PALETTE = [(0.25, 0.5, 1.0), (1.0, 1.0, 1.0), (1.0, 0.55, 0.0), (1.0, 0.1, 0.1), (0.6, 0.0, 0.0)]


def compositeIsodoseColors(levelsGy) -> list[tuple[float, float, float]]:
    """One colour per level (lowest level blue … highest dark red), following the order of the levels by dose."""
    order = sorted(range(len(levelsGy)), key=lambda i: float(levelsGy[i]))
    colors: list = [None] * len(levelsGy)
    for rank, index in enumerate(order):
        colors[index] = _COMPOSITE_ISODOSE_PALETTE[min(rank, len(_COMPOSITE_ISODOSE_PALETTE) - 1)]
    return colors


def addDoseResultToScene(scene, result, referenceVolumeNode=None, segmentationNode=None,
                         isodoseLevelsGy=None, keepPrevious: bool = False, inputNodes=()) -> dict:
    """Add (or update) the outputs of ``result`` in ``scene``; returns ``{key: node}``.

    Output nodes carry the attribute ``Reirradiation.Output`` = key, so a re-run replaces them: once the whole new
    result is in the scene, every output of the previous run is removed, also those this run does not make again (a
    course no longer given, the MRI, the budget) — not before, so that a run that fails leaves the previous result
    as it was (it was removed piece by piece as the new one was made, and lost when a step failed). With
    ``keepPrevious`` the previous run's outputs stay, renamed "(earlier run N)" and no longer outputs (:func:`_keep`):
    to compare two runs. Inputs are never modified nor removed: ``inputNodes`` names the run's other inputs, which a
    previous run's output may be (a review: the last run's registered MRI chosen as the MRI was removed as a previous
    output, the widget left pointing at a deleted node). If anything fails, the nodes created by this call are removed
    before the error propagates.
    """
    from ..core.dosereport import constraintRows, dvhRows

    created: list = []
    inputs = {n.GetID() for n in (referenceVolumeNode, segmentationNode, *inputNodes) if n is not None}
    previous = [n for n in _allOutputs(scene) if n.GetID() not in inputs]
    colorTables = (DOSE_COLOR_TABLE_NAME, UNKNOWN_DOSE_COLOR_TABLE_NAME)
    hadColors = presentNames(scene, colorTables)
    geometry = result.referenceGeometry
    nodes: dict = {}
    try:
        if referenceVolumeNode is None:
            array, _ = arrayFromImage(result.referenceImage)
            referenceVolumeNode = _volume(scene, "referenceImage", array, geometry, "Planning CT", created)
        nodes["referenceImage"] = referenceVolumeNode
        if segmentationNode is None and result.masks:
            segmentationNode = segmentationNodeFromMasks(scene, result.masks, geometry,
                                                         colors=result.structureColors or None, name="Structures",
                                                         referenceVolumeNode=referenceVolumeNode)
            segmentationNode.SetAttribute(OUTPUT_ATTRIBUTE, "structures")
            created.append(segmentationNode)
        nodes["structures"] = segmentationNode
        colourOf = {name.strip().lower(): colour for name, colour in (result.structureColors or {}).items()}
        for course in result.courses:
            if not course.carriedStructures:
                continue
            # the course's own organs carried through its registration (the contour check's), for review beside
            # today's; hidden in the pictures (render shows only the segmentations it is given)
            key = f"carried:{course.name}"
            names = list(course.carriedStructures)
            carried = segmentationNodeFromMasks(
                scene, {n: course.carriedStructures[n][1] for n in names}, geometry,
                colors={n: colourOf[n.strip().lower()] for n in names if n.strip().lower() in colourOf} or None,
                name=f"{course.name} structures carried by its registration", referenceVolumeNode=referenceVolumeNode,
                startsKji={n: course.carriedStructures[n][0] for n in names})
            carried.SetAttribute(OUTPUT_ATTRIBUTE, key)
            created.append(carried)
            nodes[key] = carried
        # where a course's dose is unknown the composite node holds the known courses' sum, a lower bound, as the
        # RTDOSE does (a physicist's review: the node, tagged a dose volume, read 0 Gy where up to 99.8 Gy of
        # delivered dose was known); the "Unknown dose" node marks those voxels
        from ..core.doseoutputs import knownCoursesSum

        missing = ~np.isfinite(result.compositeEqd2Gy)
        composite = np.asarray(result.compositeEqd2Gy, dtype=np.float32)
        if missing.any():
            composite = np.where(missing, knownCoursesSum(result, missing)[0], composite).astype(np.float32)
        nodes["composite"] = _volume(scene, "composite", composite, geometry, "Composite EQD2 (Gy)", created,
                                     isDose=True)
        nodes["composite"].SetAttribute("Reirradiation.Unit", "Gy EQD2 (voxel-wise alpha/beta)")
        if missing.any():
            nodes["composite"].SetAttribute("Reirradiation.UnknownDose", "lower bound (the known courses' sum) where "
                                            "'Unknown dose (outside a dose grid)' is 1")
        for course in result.courses:
            nodes[f"course:{course.name}"] = _volume(
                scene, f"course:{course.name}", np.nan_to_num(course.eqd2Gy, nan=0.0).astype(np.float32), geometry,
                f"{course.name} EQD2 (Gy)", created, isDose=True)
            if not np.isfinite(course.eqd2Gy).all():
                nodes[f"course:{course.name}"].SetAttribute(
                    "Reirradiation.UnknownDose", "0 where this course's dose is unknown (outside its dose grid)")
        nodes["alphaBeta"] = _volume(scene, "alphaBeta", result.alphaBetaGy, geometry, "alpha/beta map (Gy)",
                                     created)
        if missing.any():
            # a label map (1 = unknown), shown over the colour wash in the slice views, dimming where the composite
            # holds only the known courses' sum
            nodes["unknown"] = _volume(scene, "unknown", missing.astype(np.uint8), geometry,
                                       "Unknown dose (outside a dose grid)", created, isLabel=True)
            nodes["unknown"].GetDisplayNode().SetAndObserveColorNodeID(unknownDoseColorTableNode(scene).GetID())
        if result.remainingBudgetGy is not None:
            nodes["budget"] = _volume(scene, "budget", np.nan_to_num(result.remainingBudgetGy, nan=0.0), geometry,
                                      "Remaining budget (Gy physical)", created)
        if result.mri is not None:
            mriArray, _ = arrayFromImage(result.mri["image"])
            nodes["mri"] = _volume(scene, "mri", mriArray, geometry, "MRI (registered)", created)
        levels = list(isodoseLevelsGy if isodoseLevelsGy is not None else result.settings.isodoseLevelsGy)
        if levels:
            models = createIsodoseModels(scene, (result.compositeEqd2Gy, geometry), levels, name="Composite EQD2",
                                         colors=compositeIsodoseColors(levels), lineThicknessPx=3)
            for model in models:
                model.SetAttribute(OUTPUT_ATTRIBUTE, f"isodose:{model.GetName()}")
                created.append(model)
            nodes["isodose"] = models
        nodes["dvhTable"] = _table(scene, "dvhTable", "DVH metrics (EQD2)", dvhRows(result), created)
        nodes["constraintTable"] = _table(scene, "constraintTable", "Organ constraints",
                                          constraintRows(result), created)
        nodes["dvhCurves"], nodes["dvhChart"] = _dvhChart(scene, result, created)
        placeInStudy(scene, [n for n in created if n.IsA("vtkMRMLDisplayableNode")],
                     "Re-irradiation patient", "Re-irradiation composite EQD2")
    except BaseException:
        removeNodes(scene, created)
        removeNamedSince(scene, colorTables, hadColors)  # colour tables made by the first dose volume of the run
        raise
    previous = [n for n in previous if n.GetScene() is scene]
    if keepPrevious:
        _keep(scene, previous)
    else:
        removeNodes(scene, previous)
    return nodes


KEPT_RUN_ATTRIBUTE = "Reirradiation.KeptRun"


def _keep(scene, nodes: list) -> None:
    """Keep a previous run's outputs beside the new one: no longer outputs (a later run leaves them alone), named
    "<name> (earlier run N)", their isodose lines hidden so that the views show the new run's only."""
    runs = [int(n.GetAttribute(KEPT_RUN_ATTRIBUTE) or 0) for n in nodesWithAttribute(scene, KEPT_RUN_ATTRIBUTE)]
    run = max(runs, default=0) + 1
    for node in nodes:
        node.RemoveAttribute(OUTPUT_ATTRIBUTE)
        node.SetAttribute(KEPT_RUN_ATTRIBUTE, str(run))
        node.SetName(f"{node.GetName()} (earlier run {run})")
        if node.IsA("vtkMRMLModelNode"):
            node.SetDisplayVisibility(False)


DVH_CURVE_BIN_WIDTH_GY = 0.5


def _dvhChart(scene, result, created: list):
    """Composite cumulative DVH curves as a table (``Dose (Gy)`` + one volume-% column per non-empty structure)
    and a line chart with one series per structure, coloured like the structure. Replaces a previous run's."""
    import vtk

    dvhs = {name: entry["composite"] for name, entry in result.dvh.items()
            if not name.startswith("_") and "composite" in entry and not entry["composite"].isEmpty}
    topGy = max([d.dmaxGy or 0.0 for d in dvhs.values()], default=0.0)
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", "DVH curves (composite EQD2)")
    table.SetUseColumnTitleAsColumnHeader(True)
    table.SetAttribute(OUTPUT_ATTRIBUTE, "dvhCurves")
    created.append(table)
    curves = {name: dvh.curve(DVH_CURVE_BIN_WIDTH_GY, maxDoseGy=topGy) for name, dvh in dvhs.items()}
    doses = next(iter(curves.values()))[0] if curves else np.zeros(0)
    vtkTable = table.GetTable()
    for name, values in [("Dose (Gy)", doses)] + [(name, curve[1]) for name, curve in curves.items()]:
        column = vtk.vtkDoubleArray()
        column.SetName(name)
        column.SetNumberOfValues(len(values))
        for r, value in enumerate(values):
            column.SetValue(r, float(value))
        vtkTable.AddColumn(column)
    table.Modified()
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", "DVH (composite EQD2)")
    chart.SetAttribute(OUTPUT_ATTRIBUTE, "dvhChart")
    created.append(chart)
    chart.SetTitle("Cumulative DVH, composite EQD2")
    chart.SetXAxisTitle("Dose EQD2 (Gy)")
    chart.SetYAxisTitle("Volume (%)")
    colours = result.structureColors or {}
    used: dict[tuple, int] = {}  # a colour that comes back (more structures than the palette) is dashed, then dotted
    for name in curves:
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", name)
        series.SetAttribute(OUTPUT_ATTRIBUTE, f"dvhSeries:{name}")
        created.append(series)
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName("Dose (Gy)")
        series.SetYColumnName(name)
        series.SetPlotType(series.PlotTypeLine)
        series.SetMarkerStyle(series.MarkerStyleNone)
        if colours.get(name) is not None:
            colour = tuple(round(float(c), 3) for c in colours[name][:3])
            series.SetColor(*colour)
            styles = (series.LineStyleSolid, series.LineStyleDash, series.LineStyleDot, series.LineStyleDashDot)
            series.SetLineStyle(styles[used.get(colour, 0) % len(styles)])
            used[colour] = used.get(colour, 0) + 1
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return table, chart


def _allOutputs(scene) -> list:
    return nodesWithAttribute(scene, OUTPUT_ATTRIBUTE)


def outputNode(scene, key: str):
    """The current run's output ``key`` ("composite", "unknown", "budget", ...), or None."""
    found = nodesWithAttribute(scene, OUTPUT_ATTRIBUTE, key)
    return found[0] if found else None


_TARGET_PREFIXES = ("gtv", "ctv", "itv", "ptv")


def _shownTargets(result) -> list[str]:
    """The non-empty targets the pictures centre on and draw: the case's, else any structure named GTV*, CTV*, ITV*
    or PTV* (in that order; a physicist's review: with a PTV the only target, delineated, the pictures left it out
    and went through the image centre, an empty slice)."""
    named = [n for t in result.settings.targets for n in result.masks
             if n.lower() == t.lower() and result.masks[n].any()]
    if named:
        return list(dict.fromkeys(named))
    return [n for prefix in _TARGET_PREFIXES for n in sorted(result.masks)
            if n.lower().startswith(prefix) and result.masks[n].any()]


def targetCentreRas(result) -> np.ndarray:
    """RAS centre of the first non-empty target (:func:`_shownTargets`), else of the composite's hottest voxel,
    else of the reference image."""
    geometry = result.referenceGeometry
    shown = _shownTargets(result)
    if shown:
        k, j, i = np.nonzero(result.masks[shown[0]])
        return lpsToRas(geometry.indexToLps([i.mean(), j.mean(), k.mean()]))
    composite = np.asarray(result.compositeEqd2Gy)
    if np.isfinite(composite).any():
        k, j, i = np.unravel_index(int(np.nanargmax(composite)), composite.shape)
        return lpsToRas(geometry.indexToLps([float(i), float(j), float(k)]))
    size = np.array(geometry.sizeXyz, dtype=float)
    return lpsToRas(geometry.indexToLps((size - 1) / 2))


def writeDosePictures(result, folder, sizePx=(640, 640)) -> dict[str, bytes]:
    """Render composite isodose lines over the structures (axial, coronal, sagittal through the target centre;
    axial over the registered MRI when there is one) and write ``scene.mrb``. Returns ``{title: PNG bytes}``."""
    folder = Path(folder)
    scene = createScene()
    try:
        from ..core.dosereport import pictureIsodoseLevels

        levels, _ = pictureIsodoseLevels(result)  # the case's, or round levels when it gives none
        nodes = addDoseResultToScene(scene, result, isodoseLevelsGy=levels)
        legend = isodoseLegend([lv for lv in levels if lv <= float(np.nanmax(result.compositeEqd2Gy))],
                               [c for lv, c in zip(levels, compositeIsodoseColors(levels), strict=True)
                                if lv <= float(np.nanmax(result.compositeEqd2Gy))]) if levels else []
        legend = [(f"{label} EQD2", colour) for label, colour in legend]
        structureLegend = _structureLegend(result)
        centre = targetCentreRas(result)
        models = nodes.get("isodose", [])
        shown = _pictureStructures(result)
        segmentations = []
        if shown:
            outlines = segmentationNodeFromMasks(scene, {n: result.masks[n] for n in shown}, result.referenceGeometry,
                                                 colors={n: result.structureColors[n] for n in shown
                                                         if n in result.structureColors} or None, name="Outlines")
            segmentations = [outlines]
        pictures: dict[str, bytes] = {}
        views = [("Axial", nodes["referenceImage"], "isodose_axial.png"),
                 ("Coronal", nodes["referenceImage"], "isodose_coronal.png"),
                 ("Sagittal", nodes["referenceImage"], "isodose_sagittal.png")]
        if nodes.get("mri") is not None:
            views.append(("Axial", nodes["mri"], "isodose_axial_mri.png"))
        unknown, unknownLegend = _unknownDoseOverlay(scene, result)
        for orientation, background, filename in views:
            path = renderSliceView(scene, folder / filename, orientation=orientation, positionRas=centre,
                                   background=background, segmentations=segmentations + unknown, models=models,
                                   legend=legend + structureLegend + unknownLegend, sizePx=sizePx,
                                   fillSegmentations=unknown)
            title = f"{orientation} over the {'MRI' if background is nodes.get('mri') else 'CT'}"
            pictures[title] = path.read_bytes()
        pictures.update(_registrationPictures(scene, result, folder, centre, segmentations, structureLegend, sizePx))
        if not scene.WriteToMRB(str(folder / "scene.mrb")):
            raise RuntimeError(f"could not write {folder / 'scene.mrb'}")
    finally:  # the scene's application and module logics go with it (closeScene), also on failure
        closeScene(scene)
    return pictures


UNKNOWN_DOSE_COLOUR = (0.3, 0.3, 0.34)
UNKNOWN_DOSE_FILL_OPACITY = 0.6


def _unknownDoseOverlay(scene, result) -> tuple[list, list]:
    """Where the composite is unknown (outside a course's dose grid) inside the body (the whole grid without a body
    outline), as a segmentation shown filled in grey over the isodose pictures, with its legend entry; nothing when
    the composite is known there (a review: the isodose lines stopped at the prior dose grid's edge, where the prior
    course alone gave up to 49.9 Gy EQD2, and nothing marked the region)."""
    from ..core.pipeline import findBody

    unknown = ~np.isfinite(np.asarray(result.compositeEqd2Gy))
    body = findBody(result.masks)
    if body is not None:
        unknown &= np.asarray(result.masks[body], bool)
    if not unknown.any():
        return [], []
    name = "Dose unknown"
    node = segmentationNodeFromMasks(scene, {name: unknown}, result.referenceGeometry,
                                     colors={name: UNKNOWN_DOSE_COLOUR}, name="Composite dose unknown")
    node.GetDisplayNode().SetOpacity2DFill(UNKNOWN_DOSE_FILL_OPACITY)
    return [node], [("dose unknown (outside a dose grid)", UNKNOWN_DOSE_COLOUR)]


REVIEW_WINDOW_HU = (1000.0, 100.0)  # window, level of the registration check: fat, muscle and bone edges all show
REVIEW_SQUARES_MM = 20.0


def _registrationPictures(scene, result, folder: Path, centre, segmentations, legend, sizePx) -> dict[str, bytes]:
    """For every course whose CT was brought onto the reference CT (``reviewImage``): a checkerboard of the reference
    CT and the course's CT through the registration, axial and coronal through the target centre, with the target
    and organ outlines; misalignment shows as edges (bone, skin, bowel) broken at the squares' borders. The course's
    CT on the reference grid stays in the scene as a volume ("<course> CT (registered)") for review in Slicer."""
    from ..core.doseoutputs import safeName
    from ..core.dosereport import REGISTRATION_PICTURE_PREFIX
    from ..core.regquality import checkerboardMask

    pictures: dict[str, bytes] = {}
    geometry = result.referenceGeometry
    current = None
    for course in result.courses:
        if course.reviewImage is None:
            continue
        if current is None:
            current, _ = arrayFromImage(result.referenceImage)
        registered = volumeNodeFromArray(scene, course.reviewImage, geometry, f"{course.name} CT (registered)")
        board = np.where(checkerboardMask(geometry.sizeXyz, geometry.spacingMm, REVIEW_SQUARES_MM),
                         course.reviewImage, current)
        node = volumeNodeFromArray(scene, board, geometry, f"{course.name} registration checkerboard")
        del board
        try:
            for volume in (node, registered):
                display = volume.GetDisplayNode()
                display.AutoWindowLevelOff()
                display.SetWindowLevel(*REVIEW_WINDOW_HU)
            for orientation in ("Axial", "Coronal"):
                filename = f"registration_{safeName(course.name)}_{orientation.lower()}.png"
                path = renderSliceView(scene, folder / filename, orientation=orientation, positionRas=centre,
                                       background=node, segmentations=segmentations, legend=legend, sizePx=sizePx)
                title = (f"{REGISTRATION_PICTURE_PREFIX}, course '{course.name}' ({orientation.lower()}): "
                         "checkerboard of the current CT and the course's CT through its registration, "
                         f"{REVIEW_SQUARES_MM:g} mm squares")
                pictures[title] = path.read_bytes()
        finally:
            removeNodes(scene, [node])  # the scene keeps the registered CT, not the picture's checkerboard
    return pictures


_NOT_IN_PICTURES = ("body", "external", "skin", "ptv", "fibrosis", "bone", "sacrum", "couch")


def _pictureStructures(result) -> list[str]:
    """Targets first, then organs at risk; the body outline, PTVs, bones and tissue labels are left out so the
    isodose lines over the GTV/CTV stay readable."""
    targets = _shownTargets(result)
    others = [n for n in sorted(result.masks) if n not in targets
              and not any(word in n.lower() for word in _NOT_IN_PICTURES)]
    return [n for n in targets + others if result.masks[n].any()]


def _structureLegend(result) -> list:
    entries = []
    for name in _pictureStructures(result):
        colour = result.structureColors.get(name)
        if colour is not None and result.masks[name].any():
            entries.append((name, tuple(float(c) for c in colour[:3])))
    return entries[:10]
