"""The dose workflow on MRML nodes: what the ReirradiationDose module's Logic calls.

Nodes in (planning CT, current dose, structures, prior doses with their registration transform nodes), nodes out
(composite EQD2 dose volume, α/β map, DVH and constraint tables, isodose models). The computation is the core's
:func:`~ReirradiationDoseLib.core.pipeline.computeDose`; inputs are never modified; on failure the nodes created
by the run are removed (see :func:`~ReirradiationDoseLib.mrml.dosescene.addDoseResultToScene`).
"""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer

from ..core.casefile import TissueSpec
from ..core.errors import InputError
from ..core.geometry import imageFromArray
from ..core.pipeline import (
    CourseInput,
    DoseInputs,
    DoseSettings,
    bodyOutlineImage,
    computeDose,
    implausibleDoseWarning,
    refuseEmptyDose,
    requireVolumeGrid,
    suppliedQuality,
)
from ..core.progress import finishProgress, noProgress, subProgress
from ..core.radiobiology import checkAlphaBeta
from ..core.radiobiology import FractionSchedule
from ..core.recovery import dateMonthsBefore
from .dicomdatabase import checkFractions, referenceInfoFromDatabase
from .dosescene import KEPT_RUN_ATTRIBUTE, OUTPUT_ATTRIBUTE, addDoseResultToScene
from .nodes import arrayAndGeometryFromVolumeNode, masksFromSegmentationNode, segmentOutsidePercent

logger = logging.getLogger(__name__)

__all__ = ["runDoseWorkflow", "doseInputsFromNodes", "saveDoseOutputs"]



def _fromTransformNode(node, referenceGeometry) -> tuple[sitk.Transform, dict]:
    """A transform node's whole chain as a SimpleITK transform (:func:`.transforms.sitkTransformFromNode`) and the
    registration record naming it (and the nodes it sits under)."""
    from .transforms import sitkTransformFromNode, transformChainNames

    chain = transformChainNames(node)
    registration = {"method": "transform node", "node": chain[0]}
    if len(chain) > 1:
        registration["chain"] = chain
    return sitkTransformFromNode(node, referenceGeometry), registration


def _courseDoseInput(name: str, doseNode, transformNode, fractions: int, date, isCurrent: bool,
                     referenceGeometry, dicomDatabase=None, warnings: list | None = None, referenceImage=None,
                     bodyImage=None, landmarks=None, fractionsPerDay=1, hoursBetweenFractions=None) -> CourseInput:
    """One course from its nodes. A deformable transform node (a grid or B-spline transform, ours or a planning
    system's DICOM REG loaded by SlicerRT) has its quality measured on the reference grid like the dose command's
    (:func:`~ReirradiationDoseLib.core.pipeline.suppliedQuality`) and a fold inside ``bodyImage`` warned.

    The transform is the node's whole chain (:func:`.transforms.sitkTransformFromNode`: with the transform nodes it
    sits under). A dose volume placed under a transform node is mapped as Slicer shows it: under the course's
    registration its own grid is the course's frame, which the registration maps; under a transform node while the
    course has none, that node is taken as the registration (and warned); under another node than the course's
    registration it is refused (its grid would be mapped twice or through the wrong transform). Today's dose under a
    transform is refused (harden it first: it is then on the reference frame)."""
    from ..core.regquality import MODULE_CONSERVATIVE_REMEDY, foldingWarning

    if doseNode is None:
        raise InputError(f"course '{name}' has no dose volume")
    parent = None if isCurrent else doseNode.GetParentTransformNode()  # today's dose: hardened or refused
    if parent is not None and transformNode is None:
        transformNode = parent
        if warnings is not None:
            warnings.append(f"course '{name}': no registration was chosen; the dose '{doseNode.GetName()}' sits under "
                            f"the transform '{parent.GetName()}', which was used (as the views show the dose)")
    elif parent is not None and parent.GetID() != transformNode.GetID():
        raise InputError(f"course '{name}': the dose '{doseNode.GetName()}' is under the transform "
                         f"'{parent.GetName()}', not the course's registration '{transformNode.GetName()}'; place "
                         "the dose under the registration or under no transform (the registration maps the dose's own "
                         "grid, as the course's planning system wrote it)")
    dose, geometry = arrayAndGeometryFromVolumeNode(doseNode, ignoreParentTransform=parent is not None)
    transform = None
    registration = {"method": "none"}
    if transformNode is not None:
        transform, registration = _fromTransformNode(transformNode, referenceGeometry)
        quality = None if referenceImage is None else suppliedQuality(transform, referenceImage, bodyImage)
        if quality is not None:
            registration["quality"] = quality
            folded = foldingWarning(quality, f"course '{name}' (transform '{transformNode.GetName()}')",
                                    MODULE_CONSERVATIVE_REMEDY)
            if folded and warnings is not None:
                warnings.append(folded)
    if landmarks is not None:
        from ..core.landmarks import landmarkCheck
        currentPoints, coursePoints = landmarks
        summary, landmarkWarnings = landmarkCheck(
            transform, (currentPoints.GetName(), pointsFromMarkupsNode(currentPoints, world=True)),
            (coursePoints.GetName(), _coursePoints(coursePoints, transformNode, name)), referenceGeometry.spacingMm)
        registration["landmarks"] = summary
        if warnings is not None:
            warnings.extend(f"course '{name}': {w}" for w in landmarkWarnings)
    tagged = doseNode.GetAttribute("DicomRtImport.DoseVolume") == "1"  # a dose volume (SlicerRT's RTDOSE): Gy
    if not tagged:
        logger.info("Course %s: volume %s is not tagged as a dose volume; taken as Gy", name, doseNode.GetName())
    refuseEmptyDose(dose, name, f"the dose '{doseNode.GetName()}'")
    implausible = implausibleDoseWarning(dose, name, f"the dose '{doseNode.GetName()}'", tagged, "volume")
    if implausible and warnings is not None:
        warnings.append(implausible)
    try:
        schedule = FractionSchedule(fractionsPerDay, hoursBetweenFractions)
    except InputError as error:
        raise InputError(f"course '{name}': {error}") from None
    doseInfo = {"node": doseNode.GetName()}  # with the RTPLAN the dose was read with, when it came from DICOM
    source, fractionWarnings = checkFractions(doseNode, int(fractions), dicomDatabase, name, detail=doseInfo)
    if warnings is not None:
        warnings.extend(fractionWarnings)
    return CourseInput(name=name, doseGy=np.asarray(dose, dtype=np.float32), doseGeometry=geometry,
                       numberOfFractions=int(fractions), isCurrent=isCurrent, date=date,
                       fractionsSource=source, doseFile=doseNode.GetName(),
                       doseInfo=doseInfo, transform=transform, registration=registration,
                       schedule=schedule)


def pointsFromMarkupsNode(node, world: bool) -> dict:
    """``{label: LPS point}`` of a point list's placed control points: in world coordinates (``world``) or in the
    node's own frame (its coordinates before its parent transform). A label twice or a point without one is refused
    naming the node."""
    from ..core.geometry import rasToLps

    points = {}
    for index in range(node.GetNumberOfControlPoints()):
        if node.GetNthControlPointPositionStatus(index) != node.PositionDefined:
            continue
        label = node.GetNthControlPointLabel(index).strip()
        if not label:
            raise InputError(f"point list '{node.GetName()}': control point {index + 1} has no label (landmarks are "
                             "paired by label)")
        if label in points:
            raise InputError(f"point list '{node.GetName()}': landmark '{label}' appears twice")
        ras = [0.0, 0.0, 0.0]
        (node.GetNthControlPointPositionWorld if world else node.GetNthControlPointPosition)(index, ras)
        points[label] = np.asarray(rasToLps(ras), dtype=float)
    if not points:
        raise InputError(f"point list '{node.GetName()}' has no placed points")
    return points


def _coursePoints(node, transformNode, course: str) -> dict:
    """The course's landmarks in the course CT's frame: a point list placed on the course's CT shown under its
    registration sits under the same transform node (its own coordinates are then the course CT's); one under no
    transform is taken as placed on the CT shown without it; under another transform it is refused."""
    parent = node.GetParentTransformNode()
    if parent is not None and (transformNode is None or parent.GetID() != transformNode.GetID()):
        raise InputError(f"course '{course}': the point list '{node.GetName()}' is under the transform "
                         f"'{parent.GetName()}', not the course's registration; place it under the registration (as "
                         "the course's CT) or under none")
    return pointsFromMarkupsNode(node, world=False)


def _checkNodes(currentCt, currentDose, currentFractions, structures, mri, priorCourses) -> None:
    """Refuse, naming the node, what a widget selection can get wrong: a node of the wrong kind (a labelmap as the
    structures, a volume as a transform), a node deleted from the scene since it was chosen, one dose volume in two
    courses (counted twice), the CT as a dose, missing fractions. Before, these ran with the deleted node, counted a
    dose twice silently, or stopped in an AttributeError."""
    scene = currentCt.GetScene() if currentCt is not None else None
    if currentCt is None or not currentCt.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError("choose the current planning CT (a scalar volume)")

    def check(node, what: str, kind: str, label: str):
        if node is None:
            return
        if not node.IsA(kind) or (kind == "vtkMRMLScalarVolumeNode" and node.IsA("vtkMRMLLabelMapVolumeNode")):
            raise InputError(f"{what} '{node.GetName()}' is a {node.GetClassName()}, not {label}")
        if node.GetScene() is not scene:
            raise InputError(f"{what} '{node.GetName()}' is no longer in the scene (deleted?): choose it again")

    check(currentCt, "the planning CT", "vtkMRMLScalarVolumeNode", "a volume")
    check(currentDose, "the current dose", "vtkMRMLScalarVolumeNode", "a dose volume")
    check(structures, "the structures", "vtkMRMLSegmentationNode",
          "a segmentation (import a labelmap into a segmentation in the Segmentations module)")
    check(mri, "the MRI", "vtkMRMLScalarVolumeNode", "a volume")
    doses = [("the current course", currentDose)]
    for index, prior in enumerate(priorCourses):
        name = prior.get("name") or f"Prior course {index + 1}"
        check(prior.get("doseNode"), f"course '{name}': the dose", "vtkMRMLScalarVolumeNode", "a dose volume")
        check(prior.get("transformNode"), f"course '{name}': the registration", "vtkMRMLTransformNode",
              "a transform")
        fractions = prior.get("numberOfFractions")
        if fractions is None or isinstance(fractions, bool) or not float(fractions).is_integer() or fractions < 1:
            raise InputError(f"course '{name}' needs its number of fractions (a whole number of at least 1), "
                             f"got {fractions!r}")
        doses.append((f"course '{name}'", prior.get("doseNode")))
    seen: dict = {}
    for what, node in doses:
        if node is None:
            continue
        if node is currentCt:
            raise InputError(f"{what}: the dose '{node.GetName()}' is the planning CT")
        if node.GetID() in seen:
            raise InputError(f"{seen[node.GetID()]} and {what} use the same dose '{node.GetName()}': it would be "
                             "counted twice")
        seen[node.GetID()] = what
        fileName = _storageFile(node)
        if fileName and fileName in seen:  # two nodes loaded from one file: one dose in two courses
            raise InputError(f"{seen[fileName]} and {what} use doses loaded from the same file ({fileName}): it would "
                             "be counted twice")
        if fileName:
            seen[fileName] = what
        for uid in _dicomInstanceUids(node):  # one RTDOSE loaded twice, e.g. from two copies of its folder
            if ("uid", uid) in seen:
                raise InputError(f"{seen[('uid', uid)]} and {what} use the same RTDOSE (SOP Instance UID {uid}, "
                                 f"'{node.GetName()}'): it would be counted twice; each course needs its own dose")
            seen[("uid", uid)] = what
        made = node.GetAttribute(OUTPUT_ATTRIBUTE) or (node.GetAttribute(KEPT_RUN_ATTRIBUTE) and "an earlier run's")
        if made:  # the composite EQD2, the alpha/beta or budget map: converted again the fractionation counts twice
            raise InputError(f"{what}: '{node.GetName()}' is an output of a run of this module ({made}), not a "
                             "course's physical dose: choose the course's plan dose")
        _refuseSavedMap(node, what)


def _dicomInstanceUids(node) -> list[str]:
    """The SOP Instance UIDs the subject hierarchy holds for a node loaded from DICOM (SlicerRT's RTDOSE import and
    Slicer's DICOM plugins store them as the item's "DICOMInstanceUID"), [] for any other node."""
    scene = node.GetScene()
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene) if scene is not None else None
    if shNode is None:
        return []
    item = shNode.GetItemByDataNode(node)
    if not item:
        return []
    uids = shNode.GetItemUID(item, slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMInstanceUIDName()) or ""
    return [uid for uid in uids.split() if uid]


def _storageFile(node) -> str:
    """The (resolved) file a node was loaded from, "" when none."""
    storage = node.GetStorageNode() if hasattr(node, "GetStorageNode") else None
    fileName = storage.GetFileName() if storage is not None else None
    return str(Path(fileName).resolve()) if fileName else ""


def _refuseSavedMap(node, what: str) -> None:
    """Refuse a dose node loaded from one of this tool's saved maps (composite_eqd2.nrrd, a course's EQD2, the
    alpha/beta or budget map): Slicer keeps no custom header field on the node, so the file's header is read (a
    verification review: a saved composite loaded in a later session took the composite from 80.09 to 127.41 Gy)."""
    from ..core.rtdose import headerQuantityOfFile, refuseNonPhysicalMap

    fileName = _storageFile(node)
    from ..core.dicomimage import isDicomPath

    if not fileName or not Path(fileName).is_file() or isDicomPath(fileName):
        return
    try:
        refuseNonPhysicalMap(headerQuantityOfFile(fileName), fileName)
    except InputError as error:
        raise InputError(f"{what}: '{node.GetName()}' {error}") from None


def doseInputsFromNodes(currentCt, currentDose, currentFractions: int, structures=None, mri=None,
                        priorCourses=(), settings: DoseSettings | None = None, today: _dt.date | None = None,
                        dicomDatabase=None, currentFractionsPerDay: int = 1,
                        currentHoursBetweenFractions: float | None = None) -> DoseInputs:
    """Build the core's in-memory inputs from nodes.

    A course given more than once a day: ``currentFractionsPerDay`` / ``currentHoursBetweenFractions``, and
    ``"fractionsPerDay"`` / ``"hoursBetweenFractions"`` in a prior course's dict (incomplete repair, with the
    settings' repair half-time).

    ``priorCourses``: ``[{"name", "doseNode", "transformNode", "numberOfFractions", "monthsBefore"}]`` — the
    transform node maps the current CT's points to the prior dose's frame ("from parent"), i.e. it is the
    registration of the prior CT to the current CT as Slicer stores it. An optional ``"landmarks"``:
    ``(point list on the current CT, the same points on the prior CT)`` checks the registration at them (target
    registration error per label, :func:`~ReirradiationDoseLib.core.landmarks.landmarkCheck`); the prior CT's point
    list sits under the course's transform node (placed on the prior CT shown registered) or under none.

    ``dicomDatabase`` (``slicer.dicomDatabase`` in the application, or a ``dicomdatabase.FolderDicomIndex``): each
    dose loaded from DICOM has its fractions checked against its RTPLAN (:func:`.dicomdatabase.checkFractions`: a
    BEAM or RELATIVE dose is refused, a different planned number is a warning, the source is recorded),
    and the planning CT's patient, study and frame of reference are read for the exported RTDOSE
    (:func:`.dicomdatabase.referenceInfoFromDatabase`).
    """
    _checkNodes(currentCt, currentDose, currentFractions, structures, mri, priorCourses)
    referenceArray, referenceGeometry = arrayAndGeometryFromVolumeNode(currentCt)
    requireVolumeGrid(referenceGeometry, f"the planning CT '{currentCt.GetName()}'")
    referenceImage = imageFromArray(referenceArray, referenceGeometry)
    masks, colors = {}, {}
    nodeWarnings: list[str] = []
    if structures is not None:
        masks = masksFromSegmentationNode(structures, referenceGeometry)
        empty = sorted(name for name, mask in masks.items() if not mask.any())
        if masks and len(empty) == len(masks):
            raise InputError(f"no structure of '{structures.GetName()}' lies on the planning CT "
                             f"'{currentCt.GetName()}' (every segment is empty on its grid): the segmentation belongs "
                             "to another image or position")
        if empty:
            nodeWarnings.append(f"structure(s) {', '.join(empty)} of '{structures.GetName()}' are empty on the "
                                f"planning CT '{currentCt.GetName()}' (outside it, or without contours)")
        segmentation = structures.GetSegmentation()
        for index in range(segmentation.GetNumberOfSegments()):
            segment = segmentation.GetNthSegment(index)
            colors[segment.GetName()] = tuple(segment.GetColor())
            outside = segmentOutsidePercent(structures, segmentation.GetNthSegmentID(index), referenceGeometry)
            if 0 < outside < 100:
                # the case file's reader says so for an RTSTRUCT; from nodes a third of a rectum below the CT's first
                # slice was dropped without a word, its DVH and unknown-dose share read on the rest (a review)
                nodeWarnings.append(f"{outside:.1f} % of structure '{segment.GetName()}' of '{structures.GetName()}' "
                                    f"lies outside the planning CT '{currentCt.GetName()}': its volume, DVH and "
                                    "constraints describe the part inside")
    bodyImage = bodyOutlineImage(masks, referenceImage)
    today = today or _dt.date.today()
    courses = []
    warnings: list[str] = nodeWarnings
    for index, prior in enumerate(priorCourses):
        months = float(prior.get("monthsBefore", 0.0) or 0.0)
        if months <= 0:
            raise InputError(f"prior course '{prior.get('name', index + 1)}' needs the time since it was given "
                             "(months before the current course, > 0)")
        date = dateMonthsBefore(today, months)  # calendar months: 12 months before is today's date a year ago
        courses.append(_courseDoseInput(prior.get("name") or f"Prior course {index + 1}", prior.get("doseNode"),
                                        prior.get("transformNode"), prior.get("numberOfFractions"), date, False,
                                        referenceGeometry, dicomDatabase, warnings, referenceImage, bodyImage,
                                        prior.get("landmarks"), prior.get("fractionsPerDay", 1),
                                        prior.get("hoursBetweenFractions")))
    courses.append(_courseDoseInput("Current course", currentDose, None, currentFractions, today, True,
                                    referenceGeometry, dicomDatabase, warnings,
                                    fractionsPerDay=currentFractionsPerDay,
                                    hoursBetweenFractions=currentHoursBetweenFractions))
    from ..core.pipeline import samePlanWarnings

    warnings += samePlanWarnings(courses)  # two courses of one RTPLAN: the phases of one treatment
    mriEntry = None
    if mri is not None:
        mriEntry = _mriAsPlaced(mri, referenceImage, referenceGeometry)
    return DoseInputs(referenceImage=referenceImage, masks=masks, courses=courses,
                      settings=settings or DoseSettings(),
                      referenceInfo=referenceInfoFromDatabase(currentCt, dicomDatabase),
                      structureColors=colors, mri=mriEntry, warnings=warnings)


def _mriAsPlaced(mri, referenceImage, referenceGeometry) -> dict:
    """The MRI on the planning CT's grid as the views show it: under a transform node (where the module's
    registration puts it) resampled through that node and the nodes above it
    (:func:`.transforms.sitkTransformFromNode`), else as its own geometry places it."""
    parent = mri.GetParentTransformNode()
    mriArray, mriGeometry = arrayAndGeometryFromVolumeNode(mri, ignoreParentTransform=parent is not None)
    transform = sitk.Transform(3, sitk.sitkIdentity)
    registration: dict = {"method": "as placed in the scene"}
    if parent is not None:
        transform, registration = _fromTransformNode(parent, referenceGeometry)
    resampled = sitk.Resample(imageFromArray(mriArray.astype(np.float32), mriGeometry), referenceImage, transform,
                              sitk.sitkLinear, 0.0)
    return {"image": resampled, "registration": registration, "path": mri.GetName()}


# column names of a tissue table node (case, spaces, "_" and "-" ignored) → the TissueSpec field they fill
_TISSUE_COLUMNS = {"structure": "structure", "name": "structure", "alphabeta": "alphaBeta", "α/β": "alphaBeta",
                   "alphabetagy": "alphaBeta", "ab": "alphaBeta", "recovery": "recovery",
                   "repairhalftime": "halfTime", "repairhalftimehours": "halfTime", "halftime": "halfTime",
                   "t½": "halfTime", "priority": "priority"}


def tissueSpecsFromTableNode(tableNode) -> dict:
    """The module's tissue table (a table node: one row per structure) as ``{structure: TissueSpec}``.

    Columns, by name: ``structure`` (or ``name``), ``alphaBeta`` (Gy; also "α/β"), and optionally ``recovery`` (a
    model name: none, nieder-doi, price; or a constant percentage 0-100, "25" or "25 %"), ``repairHalfTimeHours``
    and ``priority``; empty cells leave the shipped value. A row that cannot be read is refused naming the table,
    the row and the value (the module passed the node itself on, and any table stopped with a TypeError).
    """
    from ..core.recovery import recoveryModelFromDict
    from ..core.radiobiology import checkRepairHalfTime
    from ..core.tissues import normalizeStructureName

    name = tableNode.GetName()
    table = tableNode.GetTable()
    columns = {}
    for index in range(table.GetNumberOfColumns()):
        key = normalizeStructureName(table.GetColumnName(index) or "") or (table.GetColumnName(index) or "").lower()
        raw = (table.GetColumnName(index) or "").strip().lower().replace(" ", "")
        field = _TISSUE_COLUMNS.get(key) or _TISSUE_COLUMNS.get(raw)
        if field is None:
            raise InputError(f"tissue table '{name}': unknown column '{table.GetColumnName(index)}' (known: structure, "
                             "alphaBeta, recovery, repairHalfTimeHours, priority)")
        if field in columns:
            raise InputError(f"tissue table '{name}': two columns give the {field}")
        if field in ("recovery", "priority") and not table.GetColumn(index).IsA("vtkStringArray"):
            # a number column has no empty cell: every row would set 0 (no recovery, lowest priority) silently
            raise InputError(f"tissue table '{name}': the '{table.GetColumnName(index)}' column holds numbers; make "
                             "it a text column, so that an empty cell keeps the shipped value")
        columns[field] = index
    if "structure" not in columns:
        raise InputError(f"tissue table '{name}' needs a 'structure' column (and alphaBeta, recovery...)")
    specs: dict = {}
    for row in range(table.GetNumberOfRows()):
        cell = {field: table.GetValue(row, index).ToString().strip() for field, index in columns.items()}
        structure = cell["structure"]
        if not structure:
            if any(cell.values()):
                raise InputError(f"tissue table '{name}', row {row + 1}: no structure name")
            continue
        where = f"tissue table '{name}', row {row + 1} ({structure})"
        clash = next((other for other in specs if normalizeStructureName(other) == normalizeStructureName(structure)),
                     None)
        if clash is not None:
            raise InputError(f"tissue table '{name}': '{structure}' is listed twice"
                             + (f" (as '{clash}' too: names are matched without case and spaces)"
                                if clash != structure else ""))
        alphaBeta = _cellNumber(cell, "alphaBeta", float, "α/β", "a number of Gy", where)
        if alphaBeta is not None:
            checkAlphaBeta(alphaBeta, f"{where}: α/β")  # 0.1-100 Gy, as the case file and the eqd2 command
        recovery = None
        text = cell.get("recovery", "")
        if text:
            try:
                percent = float(text.replace("%", "").strip())
            except ValueError:
                try:
                    recovery = recoveryModelFromDict(text).toDict()
                except InputError as error:
                    raise InputError(f"{where}: recovery '{text}': {error}") from None
            else:
                if not (np.isfinite(percent) and 0.0 <= percent <= 100.0):
                    raise InputError(f"{where}: a constant recovery is a percentage 0-100, got {text}")
                if "%" not in text and 0.0 < percent <= 1.0:  # 0.25: 25 % written as a fraction, or 0.25 %?
                    raise InputError(f"{where}: recovery '{text}' is ambiguous (a fraction, {100 * percent:g} %, or "
                                     f"{percent:g} %?): write the percentage with its sign, e.g. "
                                     f"'{100 * percent:g} %'")
                recovery = {"model": "constant", "fraction": percent / 100.0}
        halfTime = _cellNumber(cell, "halfTime", float, "repair half-time", "a number of hours", where)
        if halfTime is not None:
            halfTime = checkRepairHalfTime(halfTime, f"{where}:")
        priority = _cellNumber(cell, "priority", int, "priority", "a whole number", where)
        specs[structure] = TissueSpec(alphaBeta, recovery, priority, None, (), halfTime)
    return specs


def _cellNumber(cell: dict, field: str, convert, what: str, expected: str, where: str):
    """A tissue-table cell as a number (``convert``), None when empty; refused naming the row when unreadable."""
    if not cell.get(field):
        return None
    try:
        return convert(cell[field])
    except ValueError:
        raise InputError(f"{where}: {what} '{cell[field]}' is not {expected}") from None


def _isTargetName(name: str, targets) -> bool:
    """A target for the module's recovery rules: named in ``targets`` or GTV*/CTV*/PTV*/ITV* (case ignored)."""
    return name.lower() in {t.lower() for t in targets} or name.lower().startswith(("gtv", "ctv", "ptv", "itv"))


def settingsForModule(structureNames, tissueTable=None, defaultAlphaBetaGy: float = 3.0,
                      recoveryModel: str = "none", constantRecoveryPercent: float = 0.0,
                      constraintSetName: str | None = "pelvic-reirradiation", isodoseLevelsGy=(),
                      targets=None, repairHalfTimeHours: float | None = None) -> DoseSettings:
    """Settings from the module's widgets: one recovery model for the organs at risk of every prior course. Isodose
    levels that are not positive finite doses are refused (they were dropped silently). ``targets`` None: the
    default GTV, CTV (said so in the report)."""
    targetsByDefault = targets is None
    targets = DoseSettings.targets if targets is None else tuple(targets)
    bad = [level for level in isodoseLevelsGy if not (np.isfinite(float(level)) and float(level) > 0)]
    if bad:
        raise InputError(f"isodose levels must be positive doses in Gy, got {', '.join(map(str, bad))}")
    if tissueTable is not None and hasattr(tissueTable, "GetTable"):  # the module's table node
        tableName = tissueTable.GetName()
        tissueTable = tissueSpecsFromTableNode(tissueTable)
        for name, spec in tissueTable.items():
            if spec.recovery is not None and spec.recovery.get("model") != "none" and _isTargetName(name, targets):
                raise InputError(f"tissue table '{tableName}': {name} is a target and takes no recovery (recovery is "
                                 "a normal-tissue concept); leave its recovery empty")
    tissues: dict = dict(tissueTable or {})
    if recoveryModel not in (None, "", "none"):
        recovery = {"model": recoveryModel}
        if recoveryModel == "constant":
            if not 0.0 <= constantRecoveryPercent <= 100.0:
                raise InputError(f"constant recovery must be 0-100 %, got {constantRecoveryPercent}")
            recovery["fraction"] = constantRecoveryPercent / 100.0
        for name in structureNames:
            if _isTargetName(name, targets):
                continue
            spec = tissues.get(name, TissueSpec())
            if spec.recovery is not None:
                continue  # the tissue table's own recovery for this structure wins over the module-wide model
            tissues[name] = TissueSpec(spec.alphaBetaGy, recovery, spec.priority, spec.isTarget, spec.aliases,
                                       spec.repairHalfTimeHours)
    if repairHalfTimeHours is not None:
        from ..core.radiobiology import checkRepairHalfTime
        repairHalfTimeHours = checkRepairHalfTime(repairHalfTimeHours, "the")
    return DoseSettings(tissues=tissues, defaultAlphaBetaGy=float(defaultAlphaBetaGy), targets=tuple(targets),
                        targetsByDefault=targetsByDefault,
                        constraints=constraintSetName or None, isodoseLevelsGy=tuple(sorted(isodoseLevelsGy)),
                        repairHalfTimeHours=repairHalfTimeHours)


def runDoseWorkflow(scene, currentCt, currentDose, currentFractions: int, structures=None, mri=None,
                    priorCourses=(), tissueTable=None, defaultAlphaBetaGy: float = 3.0, recoveryModel: str = "none",
                    constantRecoveryPercent: float = 0.0, constraintSetName: str = "pelvic-reirradiation",
                    isodoseLevelsGy=(), progress=None, dicomDatabase=None, currentFractionsPerDay: int = 1,
                    currentHoursBetweenFractions: float | None = None,
                    repairHalfTimeHours: float | None = None, keepPrevious: bool = False) -> dict:
    """Compute the composite EQD2 from nodes and add (or update) the output nodes; see the module docstring.

    Returns ``{"compositeEqd2", "alphaBetaMap", "dvhTable", "constraintTable", "isodoseModels", "dvhChart",
    "result", "summary"}``. Outputs are found again by their ``Reirradiation.Output`` attribute, so re-running
    replaces them instead of piling up, or with ``keepPrevious`` keeps the previous run's beside the new, renamed
    "(earlier run N)".
    ``dicomDatabase``: see :func:`doseInputsFromNodes` (fractions checked against each dose's RTPLAN).
    """
    progress = progress or noProgress
    if scene is None:
        scene = currentCt.GetScene()
    _checkNodes(currentCt, currentDose, currentFractions, structures, mri, priorCourses)
    structureNames = []
    if structures is not None:
        segmentation = structures.GetSegmentation()
        structureNames = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    settings = settingsForModule(structureNames, tissueTable, defaultAlphaBetaGy, recoveryModel,
                                 constantRecoveryPercent, constraintSetName, isodoseLevelsGy,
                                 repairHalfTimeHours=repairHalfTimeHours)
    progress(0.0, "Reading the input nodes")
    inputs = doseInputsFromNodes(currentCt, currentDose, currentFractions, structures, mri, priorCourses, settings,
                                 dicomDatabase=dicomDatabase, currentFractionsPerDay=currentFractionsPerDay,
                                 currentHoursBetweenFractions=currentHoursBetweenFractions)
    result = computeDose(inputs, subProgress(progress, 0.05, 0.85))
    progress(0.86, "Creating the output nodes")
    given = [currentDose, mri, tissueTable]
    for prior in priorCourses:
        given += [prior.get("doseNode"), prior.get("transformNode"), *(prior.get("landmarks") or ())]
    nodes = addDoseResultToScene(scene, result, referenceVolumeNode=currentCt, segmentationNode=structures,
                                 keepPrevious=keepPrevious, inputNodes=[n for n in given if n is not None])
    finishProgress(progress, "Done")
    from ..core.dosereport import constraintRows, failureSentence

    finite = np.isfinite(result.compositeEqd2Gy)
    currentName = next((c.name for c in result.courses if c.isCurrent), None)
    summary = (f"Composite EQD2 max {float(result.compositeEqd2Gy[finite].max()) if finite.any() else 0:.1f} Gy; "
               + failureSentence(constraintRows(result), currentName))
    from ..core.dosereport import scalingSentence, scalingSummary
    sentence = scalingSentence(scalingSummary(result))
    if sentence:
        summary += f"; {sentence}"
    return {"compositeEqd2": nodes["composite"], "alphaBetaMap": nodes["alphaBeta"], "dvhTable": nodes["dvhTable"],
            "constraintTable": nodes["constraintTable"], "isodoseModels": nodes.get("isodose", []),
            "dvhChart": nodes["dvhChart"], "result": result, "summary": summary, "warnings": result.warnings}


def saveDoseOutputs(result, outputDir, includeIdentity: bool = False, anonymize: bool = False,
                    progress=None) -> list:
    """Write a run's outputs into the new folder ``outputDir``, as the ``dose`` command does (composite and course
    maps, α/β map, DVH / constraint / contour-check tables, the composite as an RTDOSE, ``summary.json``, the HTML
    report, the pictures and ``scene.mrb``; :func:`~ReirradiationDoseLib.core.doseoutputs.writeDoseOutputs`:
    atomic, nothing is left half-written). ``result``: the ``"result"`` of :func:`runDoseWorkflow`.

    The pictures are rendered in a scene of their own; should that fail (the application's rendering), the other
    outputs are written without them and the report says so. Returns the written paths.
    """
    from ..core.doseoutputs import writeDoseOutputs
    from .dosescene import writeDosePictures

    # the writer keeps the numbers when the pictures fail, and adds its warnings to a copy of the result (saving the
    # same run twice repeats none of them)
    return writeDoseOutputs(result, outputDir, pictures=writeDosePictures, includeIdentity=includeIdentity,
                            anonymize=anonymize, progress=progress)
