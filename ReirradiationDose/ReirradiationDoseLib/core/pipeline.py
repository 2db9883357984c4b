"""The re-irradiation dose workflow, headless: load → register → map → EQD2 per course → composite → DVH,
constraints and remaining budget.

Every step is explicit and recorded in the result (what was read, how it was mapped, which α/β and recovery were
used) so that the report can state every assumption the ESTRO-EORTC re-irradiation consensus asks for
(Andratschke et al., Lancet Oncol 2022, doi 10.1016/S1470-2045(22)00447-8).

Method (REFERENCE §1, §6):

Two stages, so the Slicer module can feed nodes instead of files: :func:`loadCaseInputs` reads and registers
(files → :class:`DoseInputs`), :func:`computeDose` does the rest (in memory → :class:`DoseResult`).

1. The reference grid is the current planning CT. Structures are rasterised onto it.
2. Each course's physical dose is pulled back onto the reference grid through its registration
   (linear interpolation; voxels mapping outside the course's dose grid are *unknown* (NaN), never 0 Gy).
3. Each course is converted to EQD2 voxel by voxel with that voxel's own dose per fraction and α/β (and, for a
   course given more than once a day, the incomplete-repair factor of that voxel's tissue's repair half-time).
4. Composite EQD2 = Σ_k (1 − r_k) EQD2_k, r_k = recovery of prior course k on organ-at-risk voxels (0 for the
   current course and for targets). Voxels where any course is unknown are unknown in the composite.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import logging
import time
from pathlib import Path
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from .casefile import CaseSpec, CourseSpec
from .errors import InputError
from .geometry import ImageGeometry
from .progress import noProgress, subProgress
from .radiobiology import FractionSchedule, eqd2FromBedGy, validateNumberOfFractions
from .recovery import NoRecovery, monthsText

logger = logging.getLogger(__name__)

__all__ = ["DoseSettings", "CourseInput", "DoseInputs", "CourseResult", "DoseResult", "loadCaseInputs",
           "computeDose", "runDoseWorkflow", "registerCourse"]


@dataclass(frozen=True)
class DoseSettings:
    """How to compute: the tissue table overrides, targets, constraints and display levels."""

    tissues: dict = field(default_factory=dict)  # name -> casefile.TissueSpec
    defaultAlphaBetaGy: float = 3.0
    targets: tuple[str, ...] = ("GTV", "CTV")
    targetsByDefault: bool = False  # no targets given (case file, module): GTV and CTV
    constraints: object = None  # shipped set name or a JSON path
    isodoseLevelsGy: tuple[float, ...] = ()
    plannedFractions: int | None = None
    conservativeRadiusMm: float = 0.0
    description: str = ""
    sourcePath: str = ""  # the case file, when there is one
    repairHalfTimeHours: float | None = None  # tissues without their own, for courses given more than once a day
    plannedSchedule: FractionSchedule = FractionSchedule()  # the planned course's fractions a day

    @classmethod
    def fromCase(cls, case: CaseSpec) -> DoseSettings:
        return cls(tissues=dict(case.tissues), defaultAlphaBetaGy=case.defaultAlphaBetaGy, targets=case.targets,
                   targetsByDefault=case.targetsByDefault,
                   constraints=case.constraints, isodoseLevelsGy=case.isodoseLevelsGy,
                   plannedFractions=case.plannedCourse.fractions if case.plannedCourse else None,
                   conservativeRadiusMm=case.conservativeRadiusMm, description=case.description,
                   sourcePath=str(case.path), repairHalfTimeHours=case.repairHalfTimeHours,
                   plannedSchedule=case.plannedCourse.schedule if case.plannedCourse else FractionSchedule())


@dataclass
class CourseInput:
    """One course in memory: its physical dose on its own grid and the transform reference → dose frame."""

    name: str
    doseGy: np.ndarray
    doseGeometry: ImageGeometry
    numberOfFractions: int
    isCurrent: bool = False
    date: _dt.date | None = None
    startDate: _dt.date | None = None  # a prior course's first fraction when known (``date`` is its last)
    fractionsSource: str = "given"
    prescriptionGy: float | None = None
    doseFile: str = ""
    doseInfo: dict = field(default_factory=dict)
    transform: sitk.Transform | None = None  # maps reference LPS points to the course's dose frame; None = same
    registration: dict = field(default_factory=lambda: {"method": "none"})
    identities: list = field(default_factory=list)  # (what, file, PatientID) of the course's files
    reviewImage: np.ndarray | None = None  # the course's CT on the reference grid through the transform (int16 HU)
    # the course's own structures carried onto the reference grid (contour check): {name: (start kji, cropped mask)}
    carriedStructures: dict | None = None
    schedule: FractionSchedule = FractionSchedule()  # fractions a day and hours between them


@dataclass
class DoseInputs:
    referenceImage: sitk.Image
    masks: dict[str, np.ndarray]
    courses: list[CourseInput]
    settings: DoseSettings = field(default_factory=DoseSettings)
    referenceInfo: dict = field(default_factory=dict)
    structureColors: dict[str, tuple] = field(default_factory=dict)
    mri: dict | None = None  # {"image": sitk image on the reference grid, "registration": {...}, "path": ...}
    warnings: list[str] = field(default_factory=list)
    timingsS: dict = field(default_factory=dict)
    structureTypes: dict[str, str] = field(default_factory=dict)  # an RTSTRUCT's RTROIInterpretedType per ROI

    @property
    def referenceGeometry(self) -> ImageGeometry:
        return ImageGeometry.fromImage(self.referenceImage)


@dataclass
class CourseResult:
    name: str
    isCurrent: bool
    date: _dt.date | None
    numberOfFractions: int
    fractionsSource: str
    prescriptionGy: float | None
    doseFile: str
    doseInfo: dict
    registration: dict
    mappedDoseGy: np.ndarray  # physical dose on the reference grid (NaN = unknown)
    coverageFraction: float
    eqd2Gy: np.ndarray
    recovery: dict
    recoveryMap: np.ndarray | None  # fraction recovered per voxel (None for the current course)
    transform: sitk.Transform | None = None  # reference LPS -> course dose frame (None = same frame)
    reviewImage: np.ndarray | None = None  # the course's CT pulled onto the reference grid (int16 HU), for review
    carriedStructures: dict | None = None  # the course's structures carried onto the reference grid (cropped)
    schedule: FractionSchedule = FractionSchedule()
    # incomplete-repair factor g of the quadratic term per voxel (float 1.0: one fraction a day), and what it assumed
    repairFactor: object = 1.0
    incompleteRepair: dict | None = None

    # per structure, the incomplete-repair factor of its own tissue's half-time (None: one fraction a day)
    organRepairFactors: dict | None = None
    # voxels a target owns (bool, prior courses): no recovery there, also when an organ's own recovery is read
    targetVoxels: np.ndarray | None = None
    startDate: _dt.date | None = None  # a prior course's first fraction when known (``date`` is its last)

    def repairFactorFor(self, structure: str | None = None):
        """The repair factor to read ``structure`` with: its own tissue's (a constraint on the sacral plexus reads
        the plexus's half-time also where a target owns the voxel, as it reads the plexus's α/β), else the voxel
        owners' map."""
        if structure is not None and self.organRepairFactors is not None:
            return self.organRepairFactors[structure]
        return self.repairFactor

    def ownRecovery(self, structure: str | None) -> float | None:
        """``structure``'s own tissue's recovered fraction in this course (None: the current course, or a structure
        not in the recovery summary)."""
        if self.recoveryMap is None or structure is None:
            return None
        own = (self.recovery.get("structures") or {}).get(structure)
        return None if own is None else float(own["fraction"])

    def recoveryFor(self, structure: str | None = None):
        """The recovered fraction to read ``structure`` with: its own tissue's where an organ owns the voxel (a
        rectum limit reads the rectum's recovery also where the bowel owns a voxel, as it reads the rectum's α/β;
        before, a rectum with none read 89.0 instead of 124.0 Gy where it lay in a bowel with 50 %) and none where a
        target owns it (REFERENCE §1); without ``structure`` the voxel owners' map; None for the current course."""
        if self.recoveryMap is None:
            return None
        own = self.ownRecovery(structure)
        return self.recoveryMap if own is None else self.recoveryOutsideTargets(own)

    def recoveryOutsideTargets(self, fraction: float):
        """``fraction`` recovered wherever an organ or nothing owns the voxel, none where a target does (REFERENCE
        §1: recovery is a normal-tissue concept); a number when no target lies on the grid."""
        if self.targetVoxels is None or not self.targetVoxels.any():
            return fraction
        return np.where(self.targetVoxels, np.float32(0.0), np.float32(fraction))

    def eqd2At(self, alphaBetaGy: float, structure: str | None = None) -> np.ndarray:
        """This course's EQD2 at one α/β for every voxel, NaN where its dose is unknown; the repair factor of
        ``structure``'s own tissue when given (see :meth:`repairFactorFor`), else of each voxel's owner."""
        from .radiobiology import eqd2Gy

        return eqd2Gy(self.mappedDoseGy, self.numberOfFractions, float(alphaBetaGy), allowNan=True,
                      repairFactor=self.repairFactorFor(structure))


@dataclass
class DoseResult:
    settings: DoseSettings
    referenceGeometry: ImageGeometry
    referenceImage: sitk.Image
    referenceInfo: dict
    masks: dict[str, np.ndarray]
    structureColors: dict[str, tuple]
    alphaBetaGy: np.ndarray
    alphaBetaOwners: object
    tissueTable: object
    courses: list[CourseResult]
    compositeEqd2Gy: np.ndarray
    dvh: dict  # structure -> {"composite": DvhResult, course name: DvhResult}
    constraintResults: list
    remainingBudgetGy: np.ndarray | None = None
    budgetByOrgan: list = field(default_factory=list)
    # per cumulative constraint and organ: how far the current course's dose may be scaled (currentCourseScaling)
    currentScaling: list = field(default_factory=list)
    mri: dict | None = None
    warnings: list[str] = field(default_factory=list)
    timingsS: dict = field(default_factory=dict)


def runDoseWorkflow(case: CaseSpec, progress=None) -> DoseResult:
    """Load, register and compute a case file's composite EQD2 (both stages)."""
    progress = progress or noProgress
    inputs = loadCaseInputs(case, subProgress(progress, 0.0, 0.8))
    return computeDose(inputs, subProgress(progress, 0.8, 1.0))


def loadCaseInputs(case: CaseSpec, progress=None) -> DoseInputs:
    """Read every file of the case, check consistency and register each course onto the reference image."""
    from . import dicomimage, segio

    progress = progress or noProgress
    warnings: list[str] = []
    timings: dict[str, float] = {}
    started = time.perf_counter()
    progress(0.0, "Loading the reference image")
    referenceImage, referenceInfo = _readImage(case.referenceImage, "reference image", dicomimage)
    referenceGeometry = ImageGeometry.fromImage(referenceImage)
    requireVolumeGrid(referenceGeometry, "the reference image (the current planning CT)", case.referenceImage)
    logger.info("Reference image: %s", referenceGeometry.describe())
    for skipped in referenceInfo.get("skippedFiles") or ():
        warnings.append(f"reference image folder: file skipped: {skipped}")
    masks: dict[str, np.ndarray] = {}
    colors: dict[str, tuple] = {}
    structureTypes: dict[str, str] = {}
    if case.structures is not None:
        progress(0.03, "Rasterising the structures")
        masks, colors = _readStructures(case.structures, referenceGeometry, segio, warnings,
                                        referenceInfo.get("frameOfReferenceUid") or "",
                                        case.allowFrameOfReferenceMismatch, structureTypes)
    _checkRepairHalfTimes(case, masks)  # now, not after minutes of registration
    timings["load"] = time.perf_counter() - started

    courses = []
    n = len(case.courses)
    checkDates = _timeBasedRecovery(case, masks)  # whether a course's date changes a recovered fraction
    doseUids: dict[str, tuple[str, str]] = {}
    for index, course in enumerate(case.courses):
        t0 = time.perf_counter()
        _refuseSameRtDose(course, doseUids)
        # the course's own structures guide or check its registration by name (a verification: said in the log only)
        warnings += duplicateRoiWarnings(course.structures, what=f"course '{course.name}' structures ")
        courses.append(_loadCourse(case, course, referenceImage, referenceInfo, masks, warnings,
                                   subProgress(progress, 0.05 + 0.8 * index / n, 0.05 + 0.8 * (index + 1) / n),
                                   checkDates))
        timings[f"load+register {course.name}"] = time.perf_counter() - t0
    warnings += samePlanWarnings(courses)

    mri = None
    if case.mri is not None:
        t0 = time.perf_counter()
        mri = _registerMri(case, referenceImage, subProgress(progress, 0.86, 1.0), dicomimage, warnings,
                           referenceInfo.get("frameOfReferenceUid") or None)
        timings["mri"] = time.perf_counter() - t0
    identities = [("reference image", str(case.referenceImage), referenceInfo.get("patientId", ""))]
    identities += [(f"course '{c.name}' {what}", path, pid) for c in courses for what, path, pid in c.identities]
    if mri is not None:
        identities.append(("MRI", str(case.mri.image), (mri.get("info") or {}).get("patientId", "")))
    if case.structures is not None and dicomimage.isDicomPath(case.structures):
        from .rtstruct import readRtStruct
        identities.append(("structures", str(case.structures), readRtStruct(case.structures).patientId))
    _checkSamePatient(identities, case, warnings)
    return DoseInputs(referenceImage=referenceImage, masks=masks, courses=courses,
                      settings=DoseSettings.fromCase(case), referenceInfo=referenceInfo, structureColors=colors,
                      mri=mri, warnings=warnings, timingsS=timings, structureTypes=structureTypes)


def computeDose(inputs: DoseInputs, progress=None) -> DoseResult:
    """Map each course onto the reference grid, convert to EQD2, sum, and evaluate DVHs, constraints and budget."""
    from . import dosemapping, radiobiology
    from .tissues import alphaBetaMap, recoveryMap, recoverySummary

    progress = progress or noProgress
    settings = inputs.settings
    warnings = list(inputs.warnings)
    timings = dict(inputs.timingsS)
    started = time.perf_counter()
    referenceGeometry = inputs.referenceGeometry
    masks = inputs.masks
    for name, mask in masks.items():
        if mask.shape != referenceGeometry.shape:
            raise InputError(f"structure '{name}' is not on the reference grid ({referenceGeometry.describe()})")
    currents = [c for c in inputs.courses if c.isCurrent]
    if len(currents) != 1:
        raise InputError(f"exactly one course must be the current one (got {len(currents)})")
    current = currents[0]
    names = [c.name for c in inputs.courses]
    if len(set(names)) != len(names):
        raise InputError(f"course names must be unique (got {', '.join(names)})")

    tissueTable = tissueTableFor(settings)
    alphaBeta, ownerLabels, ownerNames = alphaBetaMap(masks, tissueTable,
                                                      defaultAlphaBetaGy=settings.defaultAlphaBetaGy,
                                                      shape=referenceGeometry.shape)
    if not masks:  # one α/β everywhere: targets cannot be told from organs
        warnings.append(f"no structures were given: every voxel takes the default α/β of {float(alphaBeta.flat[0]):g} "
                        "Gy, the target included, and there are no DVHs or structure constraints")
    else:
        warnings.extend(_unmatchedTissues(settings, tissueTable, masks))
        warnings.extend(typedTargetWarnings(inputs.structureTypes, tissueTable, masks))
    repairFactorOf = _incompleteRepair(inputs, settings, tissueTable, ownerLabels, ownerNames, warnings)
    targetLabels = [k + 1 for k, name in enumerate(ownerNames) if tissueTable.entryFor(name).isTarget]
    targetVoxels = np.isin(ownerLabels, targetLabels) if targetLabels else None

    results: list[CourseResult] = []
    for index, course in enumerate(inputs.courses):
        progress(0.6 * index / len(inputs.courses), f"Course '{course.name}': mapping and EQD2")
        if course.numberOfFractions is None or course.numberOfFractions <= 0:
            raise InputError(f"course '{course.name}' needs a positive number of fractions "
                             f"(got {course.numberOfFractions})", course.doseFile or None)
        doseArray = np.asarray(course.doseGy, dtype=np.float32)
        if not np.all(np.isfinite(doseArray)) or float(doseArray.min()) < 0:
            raise InputError(f"course '{course.name}': the dose holds negative or non-finite values",
                             course.doseFile or None)
        perFraction = dosePerFractionWarning(doseArray, course.numberOfFractions, course.doseGeometry.voxelVolumeCc,
                                             f"course '{course.name}' ({Path(course.doseFile).name or 'in memory'})")
        if perFraction:  # here, so that the module's courses (fractions typed by hand) are checked too
            warnings.append(perFraction)
        mapped = dosemapping.mapDose(doseArray, course.doseGeometry, course.transform, referenceGeometry)
        mappedDose = np.asarray(mapped.doseGy, dtype=np.float32)
        registration = dict(course.registration)
        source = Path(course.doseFile).name or "in memory"
        unknown = ~np.isfinite(mappedDose)
        outsideField = mapped.outsideFieldMask
        if outsideField is not None:
            _reportUnknown(outsideField, masks, warnings,
                           f"lies outside the displacement field of the registration of course '{course.name}': there "
                           "the field does not move points at all (ITK's zero displacement), so its dose there is "
                           "unknown, not mapped as if undeformed")
        _reportUnknown(unknown if outsideField is None else unknown & ~outsideField, masks, warnings,
                       f"lies outside the dose grid of course '{course.name}' ({source}): its dose there is unknown, "
                       "not 0 Gy")
        if settings.conservativeRadiusMm > 0 and not course.isCurrent:
            conservative = dosemapping.conservativeMaxFilter(mappedDose, referenceGeometry,
                                                             settings.conservativeRadiusMm)
            _reportUnknown(~np.isfinite(conservative) & ~unknown, masks, warnings,
                           f"lies within the conservative radius ({settings.conservativeRadiusMm:g} mm) of where the "
                           f"dose of course '{course.name}' ({source}) is unknown: its maximum within the radius is "
                           "unknown there too", "a further ")
            mappedDose = conservative
            registration["conservativeRadiusMm"] = settings.conservativeRadiusMm
        repairFactor, incompleteRepair, organFactors = repairFactorOf(course.numberOfFractions, course.schedule,
                                                                      f"course '{course.name}'")
        eqd2 = radiobiology.eqd2Gy(mappedDose, course.numberOfFractions, alphaBeta, allowNan=True,
                                   repairFactor=repairFactor)
        if course.isCurrent:
            recovery, rMap = {"model": "none (current course)"}, None
        else:
            rMap = recoveryMap(masks, tissueTable, course.date, current.date, shape=referenceGeometry.shape)
            recovery = recoverySummary(masks, tissueTable, course.date, current.date)
            recovery["maxRecoveredFraction"] = float(rMap.max()) if rMap is not None and rMap.size else 0.0
            early = earlyRecoveryWarning(course.name, recovery)
            if early:
                warnings.append(early)
        logger.info("Course %s: %d fractions (%s), mapped dose max %.2f Gy, coverage %.1f %%", course.name,
                    course.numberOfFractions, course.fractionsSource,
                    float(np.nanmax(mappedDose)) if np.isfinite(mappedDose).any() else float("nan"),
                    100 * float(mapped.coverageFraction))
        results.append(CourseResult(
            name=course.name, isCurrent=course.isCurrent, date=course.date, startDate=course.startDate,
            numberOfFractions=int(course.numberOfFractions), fractionsSource=course.fractionsSource,
            prescriptionGy=course.prescriptionGy, doseFile=course.doseFile, doseInfo=dict(course.doseInfo),
            registration=registration, mappedDoseGy=mappedDose, coverageFraction=float(mapped.coverageFraction),
            eqd2Gy=eqd2, recovery=recovery, recoveryMap=rMap, transform=course.transform,
            reviewImage=course.reviewImage, carriedStructures=course.carriedStructures, schedule=course.schedule,
            repairFactor=repairFactor, incompleteRepair=incompleteRepair, organRepairFactors=organFactors,
            targetVoxels=None if course.isCurrent else targetVoxels))

    progress(0.65, "Summing the composite EQD2")
    composite = compositeAtAlphaBeta(results, None)  # the voxel α/β map, each voxel's owner's recovery
    progress(0.7, "DVH and constraints")
    dvh, constraintResults = _dvhAndConstraints(settings, masks, referenceGeometry, composite, results, warnings,
                                                 tissueTable)
    budget, budgetByOrgan = _remainingBudget(settings, masks, referenceGeometry, results, repairFactorOf,
                                             alphaBeta)
    if settings.plannedFractions is not None and not settings.constraints:
        warnings.append(f"plannedCourse ({settings.plannedFractions} fractions): no constraint set is given "
                        "('constraints'), so no remaining budget is computed")
    elif settings.plannedFractions is not None and not budgetByOrgan:
        warnings.append(f"plannedCourse ({settings.plannedFractions} fractions): no cumulative near-maximum limit "
                        "(Dmax, D0.03cc, D0.1cc, D1cc, D2cc in Gy) of the constraint set reads a structure of this "
                        "case, so no remaining budget is computed (volume and mean limits give none)")
    currentScaling = currentCourseScaling(settings, masks, referenceGeometry, results, alphaBeta)
    timings["compute"] = time.perf_counter() - started
    progress(1.0, "Done")
    return DoseResult(
        settings=settings, referenceGeometry=referenceGeometry, referenceImage=inputs.referenceImage,
        referenceInfo=inputs.referenceInfo, masks=masks, structureColors=inputs.structureColors,
        alphaBetaGy=alphaBeta, alphaBetaOwners={"labels": ownerLabels, "names": ownerNames},
        tissueTable=tissueTable, courses=results,
        compositeEqd2Gy=composite, dvh=dvh, constraintResults=constraintResults, remainingBudgetGy=budget,
        budgetByOrgan=budgetByOrgan, currentScaling=currentScaling, mri=inputs.mri, warnings=warnings,
        timingsS=timings)


# ---------------------------------------------------------------------------------------------------------------
def _readImage(path, what: str, dicomimage) -> tuple[sitk.Image, dict]:
    image, info = dicomimage.readImageSeries(path)
    return image, _asDict(info)


def _asDict(info) -> dict:
    if info is None:
        return {}
    if isinstance(info, dict):
        return info
    if hasattr(info, "toDict"):
        return info.toDict()
    if hasattr(info, "__dataclass_fields__"):
        return {k: getattr(info, k) for k in info.__dataclass_fields__}
    return {"description": str(info)}


def duplicateRoiWarnings(path, rt=None, what: str = "") -> list[str]:
    """One warning per ROI of an RTSTRUCT whose name an earlier ROI already has (read as "NAME (number)"), for
    summary.json and the report, not only the log; ``what`` says whose structures they are (a course's). Nothing for
    other formats."""
    from .dicomimage import isDicomPath

    if path is None or not isDicomPath(path):
        return []
    if rt is None:
        from .rtstruct import readRtStruct

        rt = readRtStruct(path)
    return [f"{what}{Path(path).name}: two ROIs are named '{name}'; ROI number {number} is read as '{readAs}' "
            f"(a constraint, a tissue or a registration guide naming '{name}' uses the first only)"
            for name, number, readAs in rt.renamed]


def _readStructures(path, geometry: ImageGeometry, segio, warnings: list, frameOfReferenceUid: str = "",
                    allowMismatch: bool = False, types: dict | None = None) -> tuple[dict, dict]:
    """Structures on the reference grid; for an RTSTRUCT every ROI without contours, every point ROI and every
    contour outside the image is reported in the warnings (not only the log). Empty ROIs are kept as empty masks,
    so a constraint on them says the organ is empty rather than missing. An RTSTRUCT drawn in another frame of
    reference than the reference image's (``frameOfReferenceUid``; the prior CT's structures given as today's) is
    refused, or warned with ``allowMismatch``: before, only "contours partly outside" was said. ``types``, when
    given, receives an RTSTRUCT's RTROIInterpretedType per ROI name."""
    path = Path(path)
    masks = colors = None
    why = {}  # why an RTSTRUCT's ROI covers no voxel of the reference grid
    withoutContours: set = set()  # ROIs said to have no contours: not said again as empty on the grid
    from .dicomimage import isDicomPath

    if isDicomPath(path):  # by content too: "RS.1.2.840..." has no suffix
        from .rtstruct import rasterizeAllWithReport, readRtStruct

        rt = readRtStruct(path)
        other = [f for f in structureSetFrames(rt) if f != frameOfReferenceUid] if frameOfReferenceUid else []
        if other:
            message = (f"the structures were drawn in frame of reference {', '.join(other)}, the reference "
                       f"image is in {frameOfReferenceUid}: they belong to another scan (the prior CT's?)")
            if not allowMismatch:
                raise InputError(message + "; give the reference CT's own RTSTRUCT (or set "
                                 "allowFrameOfReferenceMismatch if the frames are known to coincide)", path)
            warnings.append(f"{path.name}: {message} (accepted: allowFrameOfReferenceMismatch)")
        warnings += duplicateRoiWarnings(path, rt)
        masks, report = rasterizeAllWithReport(rt, geometry, includeEmpty=True)
        colors = {r.name: tuple(c / 255.0 for c in r.color) for r in rt.rois if r.color is not None and r.name in masks}
        if types is not None:
            types.update({r.name: str(r.type or "").upper() for r in rt.rois if r.name in masks})
        if report.emptyRois:
            warnings.append(f"{path.name}: ROI(s) without contours: {', '.join(report.emptyRois)}")
            withoutContours = set(report.emptyRois)
        if report.pointRois:
            warnings.append(f"{path.name}: point ROI(s) ignored: {', '.join(report.pointRois)}")
        for name in report.partlyOutside:
            warnings.append(f"{path.name}: contours of '{name}' lie partly outside the reference image: "
                            + "; ".join(report.reports[name].warnings))
        why = {name: (" (smaller than its voxels: no voxel centre lies inside the contours)"
                      if name in report.smallerThanVoxels else " (its contours lie outside the reference image)")
               for name in report.emptyOnGrid}
    else:
        masks, maskGeometry, colors = segio.readSegmentationWithGeometry(path, geometry)
        if not maskGeometry.sameGridAs(geometry):
            from .dosemapping import mapMasks
            logger.info("Resampling the structures of %s onto the reference grid (nearest neighbour)", path)
            warnings.append(f"structures of {path.name} were on their own grid and were resampled onto the "
                            "reference grid (nearest neighbour)")
            masks, _ = mapMasks(masks, maskGeometry, None, geometry)
    for name, mask in list(masks.items()):
        if not mask.any() and name not in withoutContours:  # those are said above (a review: said twice)
            warnings.append(f"structure '{name}' in {path.name} is empty on the reference grid{why.get(name, '')}")
    return masks, colors


def registerCourse(referenceImage: sitk.Image, courseImage: sitk.Image, method: str, bodyMask=None,
                   progress=None, structureMasks: dict | None = None,
                   withoutCounterpart: sitk.Image | None = None,
                   initialization: str = "geometry",
                   courseWithoutCounterpart: sitk.Image | None = None,
                   review: dict | None = None,
                   initialTransform: sitk.Transform | None = None) -> tuple[sitk.Transform, dict]:
    """Register a course's planning CT onto the reference CT: rigid, then (``method``) affine or deformable.

    ``structureMasks`` (deformable only): ``{name: (reference mask image, course mask image)}`` organs delineated
    on both CTs; they guide the demons as extra matching channels (structure-guided mode, see
    :func:`_pairedStructureMasks`). ``withoutCounterpart`` (deformable only): reference-grid mask of tissue that has
    no counterpart in the course's CT (the recurrence, new fibrosis; :func:`_withoutCounterpartMask`); it exerts
    no force and the field there follows its surroundings; ``courseWithoutCounterpart`` likewise, a mask on the
    course CT's grid of tissue the reference CT no longer holds (the prior primary tumour,
    :func:`_courseWithoutCounterpartMask`). ``initialization`` of the rigid step: ``"geometry"``
    (image centres) or ``"moments"`` (centres of mass, for an MRI whose field of view differs from the CT's);
    ``initialTransform`` (reference LPS -> course LPS, e.g. a manual pre-alignment) starts the rigid step there
    instead.

    Returns the transform (reference LPS → course LPS, for pull-back resampling) and a description with the
    registration's parameters and quality numbers. With a ``review`` dict, the course image pulled onto the reference
    grid through the result is put in it under ``"warped"`` (float32; outside the course image: its minimum, air).
    """
    from . import registration as reg

    progress = progress or noProgress
    fixed = sitk.Cast(referenceImage, sitk.sitkFloat32)
    moving = sitk.Cast(courseImage, sitk.sitkFloat32)
    description: dict = {"method": method}
    if method == "affine":  # rigid, then the 12-parameter refinement (registerAffine)
        progress(0.0, "Affine registration")
        affine = reg.registerAffine(fixed, moving, initialization=initialization, progress=progress,
                                    initialTransform=initialTransform)
        description["affine"] = _resultSummary(affine)
        description["rotationDeg"] = reg.affineDecomposition(affine.transform)["rotationDeg"]
        if review is not None:
            _keepWarped(review, moving, fixed, affine.transform)
        return affine.transform, description
    progress(0.0, "Rigid registration")
    rigid = reg.registerRigid(fixed, moving, initialization=initialization, initialTransform=initialTransform,
                              progress=subProgress(progress, 0.0, 0.25 if method == "deformable" else 1.0))
    description["rigid"] = _resultSummary(rigid)
    description["rotationDeg"] = reg.affineDecomposition(rigid.transform)["rotationDeg"]  # of the linear stage
    if method == "rigid":
        if review is not None:  # the module's registration asks for none: no resampling of a whole CT for nothing
            _keepWarped(review, moving, fixed, rigid.transform)
        return rigid.transform, description
    progress(0.25, "Deformable registration")
    deformable = reg.registerDeformable(fixed, moving, initialTransform=rigid.transform, fixedMask=bodyMask,
                                        structureMasks=structureMasks or None,
                                        withoutCounterpart=withoutCounterpart,
                                        movingWithoutCounterpart=courseWithoutCounterpart,
                                        progress=subProgress(progress, 0.25, 0.95))
    description["deformable"] = _resultSummary(deformable)
    try:
        from . import regquality
        warped = _keepWarped(review, moving, fixed, deformable.transform)
        description["quality"] = regquality.registrationQuality(deformable, fixed, warped, bodyMask=bodyMask)
    except Exception as error:  # quality is reported, never fatal
        description["quality"] = {"error": str(error)}
    return deformable.transform, description


def _keepWarped(review: dict | None, moving: sitk.Image, fixed: sitk.Image, transform: sitk.Transform) -> sitk.Image:
    """``moving`` pulled onto ``fixed``'s grid through ``transform`` (outside it: its minimum, i.e. air), stored in
    ``review["warped"]`` when a dict is given."""
    air = float(sitk.GetArrayViewFromImage(moving).min())
    warped = sitk.Resample(moving, fixed, transform, sitk.sitkLinear, air, sitk.sitkFloat32)
    if review is not None:
        review["warped"] = warped
    return warped


def _reviewArray(warped: sitk.Image | None) -> np.ndarray | None:
    """The warped course CT as int16 HU (half the memory of float32), or None."""
    if warped is None:
        return None
    return np.clip(np.rint(sitk.GetArrayViewFromImage(warped)), -32768, 32767).astype(np.int16)


def suppliedQuality(transform: sitk.Transform, referenceImage: sitk.Image, bodyMask: sitk.Image | None) -> dict | None:
    """Quality figures (:func:`.regquality.registrationQuality`) of a registration read from a file (a deformable
    DICOM REG, a displacement field): a field made elsewhere can fold as well as ours. None for a linear transform
    (Jacobian = its determinant everywhere); ``{"error": ...}`` when they cannot be computed (never fatal)."""
    from . import regquality
    from .registration import RegistrationResult

    if transform.IsLinear():  # composites too: linear when every member is
        return None
    try:
        supplied = RegistrationResult(transform=transform, metricValue=float("nan"), iterations=0,
                                      method="supplied")
        return regquality.registrationQuality(supplied, referenceImage, bodyMask=bodyMask)
    except Exception as error:  # quality is reported, never fatal
        return {"error": str(error)}


def _dicomRegistration(path, fixedUid, movingUid, registration: dict, warnings: list):
    """The transform of a DICOM REG file; what it says about itself goes into ``registration``, its warnings into
    ``warnings`` (prefixed with the file name)."""
    from . import dicomreg

    found = dicomreg.readDicomRegistration(path, fixedUid, movingUid)
    registration["dicomRegistration"] = {
        "kind": found.kind, "matrixType": found.matrixType, "reversed": found.reversed,
        "fixedFrameOfReferenceUid": found.fixedFrameOfReferenceUid,
        "movingFrameOfReferenceUid": found.movingFrameOfReferenceUid, "description": found.description,
        "seriesDescription": found.seriesDescription, "contentDate": found.contentDate, "creator": found.creator,
        "sopInstanceUid": found.sopInstanceUid}
    warnings.extend(f"{Path(path).name}: {message}" for message in found.warnings)
    return found.transform


def _loadCourse(case, course: CourseSpec, referenceImage, referenceInfo, masks, warnings, progress,
                checkDates: bool = False) -> CourseInput:
    from . import rtdose, rtplan, transformio

    progress(0.0, f"Course '{course.name}': reading the dose")
    dose = rtdose.readRtDose(course.dose)
    # an EQD2 said as such first; a sum of plans given together is one course of the sessions the case states
    sessions = course.fractions if course.plan is None else None
    rtdose.requirePlanDose(rtdose.refuseEqd2Dose(dose, course.dose), course.dose, sessions=sessions)
    if getattr(dose, "fromDicom", False) and rtdose.isPlanSum(dose):
        warnings.append(rtdose.planSumWarning(dose, sessions, f"course '{course.name}' ({Path(course.dose).name})"))
    refuseEmptyDose(dose.doseGy, course.name, "the dose", where=course.dose)
    # an RTDOSE states its units (read in Gy): a dose beyond any external-beam course is warned; without units refused
    fromDicom = getattr(dose, "fromDicom", True)
    implausible = implausibleDoseWarning(dose.doseGy, course.name, "the dose", fromDicom, where=course.dose)
    if implausible:
        warnings.append(f"{implausible} ({Path(course.dose).name}: DoseUnits and DoseGridScaling)")
    doseInfo = _asDict(dose.info() if hasattr(dose, "info") else {
        k: getattr(dose, k) for k in ("doseType", "summationType", "units", "frameOfReferenceUid",
                                      "sopInstanceUid", "referencedPlanUid") if hasattr(dose, k)})
    plan = rtplan.readRtPlan(course.plan) if course.plan is not None else None
    fractions, source, prescription, planPatientId = _fractions(course, plan, dose, warnings)
    mismatch = prescriptionWarning(dose.doseGy, planPrescriptionOfDose(plan, dose),
                                   f"course '{course.name}' ({Path(course.dose).name})",
                                   Path(course.plan).name if course.plan else "",
                                   ofGroup=plan is not None and len(plan.fractionGroups) > 1)
    if mismatch:
        warnings.append(mismatch)
    if plan is not None and checkDates:
        dateWarning = priorCourseDateWarning(course, plan, fractions)
        if dateWarning:
            warnings.append(dateWarning)
    # an impossible date, whatever reads it (time-based recovery, the ≥ 6 months of Nieder's criterion)
    currentDateWarning = currentCourseDateWarning(course, plan)
    if currentDateWarning:
        warnings.append(currentDateWarning)
    spanWarning = priorCourseSpanWarning(course, fractions)  # the dates give the interval to the next course
    if spanWarning:
        warnings.append(spanWarning)
    identities = [("dose", str(course.dose), getattr(dose, "patientId", "") or "")]
    if course.plan is not None:
        identities.append(("plan", str(course.plan), planPatientId))
    transform = None
    reviewImage = None
    courseImage, courseMasks, pairs, carried = None, None, None, None
    registration: dict = {"method": course.registration}
    for key in ("withoutCounterpart", "courseWithoutCounterpart"):
        if getattr(course, key) is not None and course.registration != "deformable":
            warnings.append(f"course '{course.name}': '{key}' is used by deformable registration only; "
                            f"ignored with registration '{course.registration}'")
    if course.registration == "file":
        registration["file"] = str(course.transformFile)
        if transformio.isDicomRegistration(course.transformFile):
            # the item relating the current CT's frame to the prior dose's (= prior CT's) frame is chosen
            transform = _dicomRegistration(course.transformFile, referenceInfo.get("frameOfReferenceUid") or None,
                                           doseInfo.get("frameOfReferenceUid") or None, registration, warnings)
        else:
            transform = transformio.readTransform(course.transformFile)
        quality = suppliedQuality(transform, referenceImage, bodyOutlineImage(masks, referenceImage))
        if quality is not None:
            registration["quality"] = quality
        if course.image is not None:  # the course's CT through the supplied registration, for the review picture
            courseImage, courseInfo = _readCourseImage(case, course, doseInfo, identities, warnings)
            reviewImage = _reviewArray(_keepWarped(None, sitk.Cast(courseImage, sitk.sitkFloat32),
                                                   sitk.Cast(referenceImage, sitk.sitkFloat32), transform))
    elif course.registration in ("rigid", "affine", "deformable"):
        # the frames checked before minutes of registration
        courseImage, courseInfo = _readCourseImage(case, course, doseInfo, identities, warnings)
        bodyImage = bodyOutlineImage(masks, referenceImage)
        newTissue, newTissueNames, goneTissue, goneTissueNames = None, [], None, []
        if course.registration == "deformable":
            courseMasks = _courseMasks(course, courseImage)
            pairs = _pairedStructureMasks(case, course, masks, referenceImage, courseImage, courseMasks)
            newTissue, newTissueNames = _withoutCounterpartMask(course, masks, referenceImage, warnings)
            goneTissue, goneTissueNames = _courseWithoutCounterpartMask(course, courseMasks, courseImage, warnings)
        review: dict = {}
        initial = _initialTransform(course.initialTransform, f"course '{course.name}'")
        try:
            transform, registration = registerCourse(referenceImage, courseImage, course.registration, bodyImage,
                                                     subProgress(progress, 0.05, 0.95), structureMasks=pairs,
                                                     withoutCounterpart=newTissue,
                                                     courseWithoutCounterpart=goneTissue, review=review,
                                                     initialTransform=initial)
        except InputError as error:
            raise InputError(f"course '{course.name}': {course.registration} registration of this image (moving) "
                             f"onto the reference CT {case.referenceImage} (fixed): {error}", course.image) from error
        if course.registration == "deformable":
            registration["withoutCounterpart"] = {"structures": newTissueNames,
                                                  "marginMm": WITHOUT_COUNTERPART_MARGIN_MM}
            registration["courseWithoutCounterpart"] = {"structures": goneTissueNames,
                                                        "marginMm": WITHOUT_COUNTERPART_MARGIN_MM}
        registration["movingImage"] = str(course.image)
        if courseInfo.get("frameOfReferenceUid"):  # the frame registered, which the DICOM REG written names
            registration["movingFrameOfReferenceUid"] = str(courseInfo["frameOfReferenceUid"])
        if course.initialTransform is not None:
            registration["initialTransform"] = str(course.initialTransform)
        from .registration import rotationWarning
        rotated = rotationWarning(registration.get("rotationDeg"), f"course '{course.name}' ({course.image})")
        if rotated:
            warnings.append(rotated)
        if course.registration == "affine":
            from .registration import affineWarnings
            warnings.extend(affineWarnings(transform, registration["affine"]["parameters"],
                                           f"course '{course.name}' ({Path(course.image).name})"))
        reviewImage = _reviewArray(review.get("warped"))
        del review
    else:
        _checkSameFrame(case, course, doseInfo, referenceInfo, warnings)
        if course.image is not None and course.structures is not None:  # to show what no registration leaves
            courseImage, courseInfo = _readCourseImage(case, course, doseInfo, identities, warnings)
    if courseImage is not None and course.structures is not None:
        progress(0.96, f"Course '{course.name}': contour check")
        carried = {}
        check = _contourCheck(case, course, masks, referenceImage, courseImage, courseMasks, transform,
                              set(pairs or {}), warnings, carried)
        if check is not None:
            registration["contourCheck"] = check
    del courseImage, courseMasks, pairs
    if course.landmarks is not None:
        from .landmarks import landmarkCheck
        landmarks, landmarkWarnings = landmarkCheck(transform, *course.landmarks, referenceImage.GetSpacing())
        registration["landmarks"] = landmarks
        warnings.extend(f"course '{course.name}': {w}" for w in landmarkWarnings)
    independent = _independentCheckWarning(course, registration)
    if independent:
        warnings.append(independent)
    from .regquality import foldingWarning
    folded = foldingWarning(registration.get("quality"), f"course '{course.name}' "
                            f"({course.transformFile if course.registration == 'file' else course.image})")
    if folded:
        warnings.append(folded)
    return CourseInput(name=course.name, doseGy=np.asarray(dose.doseGy, dtype=np.float32),
                       doseGeometry=dose.geometry, numberOfFractions=fractions, isCurrent=course.isCurrent,
                       date=course.date, startDate=course.startDate, fractionsSource=source,
                       prescriptionGy=prescription, doseFile=str(course.dose), doseInfo=doseInfo, transform=transform,
                       registration=registration,
                       identities=identities, reviewImage=reviewImage, carriedStructures=carried or None,
                       schedule=course.schedule)


def _initialTransform(path, what: str) -> sitk.Transform | None:
    """The transform file where a registration starts (``initialTransform`` of a course or the MRI), or None."""
    if path is None:
        return None
    from .transformio import readTransform

    try:
        transform = readTransform(path)
    except InputError as error:
        reason = str(error).removeprefix(f"{error.path}: ") if error.path else str(error)
        raise InputError(f"{what} initialTransform: {reason}", path) from error
    from .registration import NOT_A_LINEAR_START, homogeneousMatrix

    try:
        homogeneousMatrix(transform)
    except ValueError:  # a displacement field or B-spline crashed the run after its rigid step
        raise InputError(f"{what} initialTransform: not a linear transform ({NOT_A_LINEAR_START})", path) from None
    return transform


def requireVolumeGrid(geometry: ImageGeometry, what: str, where=None) -> None:
    """Refuse an image of one slice (or one row): the composite's isodose surfaces, DVH volumes and the registration
    need a volume. A one-slice "planning CT" ran before and gave no isodose lines and volumes of one slice."""
    thin = [axis for axis, size in zip("xyz", geometry.sizeXyz, strict=True) if size < 2]
    if thin:
        raise InputError(f"{what} is {' × '.join(map(str, geometry.sizeXyz))} voxels: one voxel thick along "
                         f"{', '.join(thin)}; the cumulative dose needs the whole planning CT (a volume), not a "
                         "single slice", where)


def bodyOutlineImage(masks: dict, referenceImage: sitk.Image) -> sitk.Image | None:
    """The body outline (:func:`findBody`) as a uint8 image on the reference grid, or None."""
    bodyName = findBody(masks)
    if bodyName is None:
        return None
    from .geometry import imageFromArray
    return imageFromArray(masks[bodyName].astype(np.uint8), ImageGeometry.fromImage(referenceImage))


# a course's physical dose above this (Gy) is not an external-beam course: most likely a dose in cGy without units
IMPLAUSIBLE_COURSE_DOSE_GY = 200.0


def implausibleDoseWarning(doseGy, course: str, what: str, unitsKnown: bool, kind: str = "image",
                           where=None) -> str | None:
    """A course's dose whose maximum exceeds ``IMPLAUSIBLE_COURSE_DOSE_GY``: without units (a NRRD, a volume not
    tagged as a dose) most likely cGy, refused naming ``what`` (the dose) and ``where`` (its file), instead of a
    composite of 140 000 Gy with exit code 0; with units (an RTDOSE) the returned warning. None when plausible."""
    top = _doseMaximum(doseGy)
    if top <= IMPLAUSIBLE_COURSE_DOSE_GY:
        return None
    prefix = f"course '{course}': " if course else ""
    if not unitsKnown:
        raise InputError(f"{prefix}{what} reaches {top:.1f} Gy, not a plausible course: a dose {kind} "
                         "must be in Gy (is this one in cGy? divide it by 100)", where)
    return (f"{prefix}{what} reaches {top:.1f} Gy, more than an external-beam course gives "
            f"({IMPLAUSIBLE_COURSE_DOSE_GY:g} Gy): check that it is in Gy")


# a course's dose whose maximum is below this (Gy) gives no dose: an empty export or a plan never computed
EMPTY_COURSE_DOSE_GY = 0.01
# A dose per fraction beyond this (Gy) over more than LARGE_VOLUME_CC is no course given in practice: single-fraction
# radiosurgery and SBRT reach it in their target (Gamma Knife 20 Gy at the 50 % line: 40 Gy at its centre; lung
# 1 x 34 Gy to a 6 cm PTV: 153 cc above 25 Gy; liver 1 x 30 Gy: 134 cc), never over a pelvis (a 46 Gy prostate plan
# read as one fraction: 403 cc)
LARGEST_DOSE_PER_FRACTION_GY = 25.0
LARGE_VOLUME_CC = 300.0
# a course's dose maximum reaches at least this a fraction (low-dose radiotherapy of benign disease gives 0.5 Gy);
# below it the dose is one session's, or the fractions are not its (a verification review: a one-session dose
# labelled FRACTION, given as a 25-fraction course, read 1.23 instead of about 50 Gy EQD2 without a word)
SMALLEST_MAXIMUM_PER_FRACTION_GY = 0.5
# a plan's dose maximum lies within these multiples of its prescription (a hot spot; radiosurgery prescribed to the
# 40 % isodose reaches 2.5, an integrated boost twice the elective dose); beyond them the plan is not the dose's
PRESCRIPTION_RATIO_RANGE = (0.9, 3.0)
# the published time-based recovery models credit nothing before this interval (Nieder 2006, Doi 2021)
EARLIEST_RECOVERY_MONTHS = 6.0


def dosePerFractionWarning(doseGy, fractions: int | None, voxelVolumeCc: float, what: str) -> str | None:
    """A dose whose number of fractions gives more than ``LARGEST_DOSE_PER_FRACTION_GY`` a fraction over more than
    ``LARGE_VOLUME_CC`` (a newcomer's review: a 47 Gy prostate plan read as one fraction gave an EQD2 of 471 Gy
    without a word; a verification review: a maximum per fraction alone warned radiosurgery plans)."""
    if not fractions:
        return None
    top = _doseMaximum(doseGy)
    if 0 < top < SMALLEST_MAXIMUM_PER_FRACTION_GY * fractions:
        return (f"{what}: its maximum {top:.3g} Gy in {fractions} fraction(s) is {top / fractions:.3g} Gy a fraction, "
                f"below the {SMALLEST_MAXIMUM_PER_FRACTION_GY:g} Gy of any but a low-dose course (e.g. total-body "
                "irradiation): is it one session's dose (DICOM's FRACTION is one fraction group's whole delivery, "
                "FRACTION_SESSION one session), or are these not its fractions? Check the number of fractions")
    over = float(np.count_nonzero(np.nan_to_num(np.asarray(doseGy), nan=0.0) > LARGEST_DOSE_PER_FRACTION_GY
                                  * fractions)) * float(voxelVolumeCc)
    if over <= LARGE_VOLUME_CC:
        return None
    return (f"{what}: {over:.0f} cc receive more than {LARGEST_DOSE_PER_FRACTION_GY:g} Gy a fraction in "
            f"{fractions} fraction(s), beyond any course given (radiosurgery reaches it in a small target only): "
            "check the number of fractions")


def planPrescriptionOfDose(plan, dose=None) -> float | None:
    """The prescription of what ``dose`` is the dose of, which its maximum is compared with: the plan's, for a plan
    of one fraction group; of its fraction group (:func:`doseFractionGroup`) in a plan of several (None when that
    group names no dose reference, or the dose, or no dose given, is not one group's: the plan's highest is not the
    group's, a two-phase plan's boost dose read 0.34 times it)."""
    if plan is None:
        return None
    try:
        group = doseFractionGroup(plan, dose)
    except InputError:  # refused with its fractions (planFractionsOfDose), or its fractions given by hand
        return None
    if len(plan.fractionGroups) <= 1:
        return plan.prescriptionGy
    return None if group is None else plan.prescriptionOfGroup(group)


class DoseGroupError(InputError):
    """The RTDOSE's fraction group does not fit its RTPLAN (:func:`doseFractionGroup`); fractions given by hand are
    used instead, with a warning."""


def doseFractionGroup(plan, dose) -> int | None:
    """The number of the fraction group ``dose`` is the whole delivery of, or None for a dose of the whole plan of
    several groups (which has no single number of fractions).

    A DoseSummationType FRACTION dose is one group's (DICOM PS3.3 C.8.8.3): the group it names
    (ReferencedFractionGroupNumber), which the plan must have, or the plan's only group; naming none in a plan of
    several is refused. Any other dose is the whole plan's: of a plan of one group, that group; of several, None
    (before, a whole-plan dose naming a group took that group's fractions: 5 instead of the plan's 30). InputError
    names the RTDOSE and says to give the fractions by hand."""
    groups = [g.number for g in plan.fractionGroups]
    named = getattr(dose, "referencedFractionGroupNumber", None)
    where = getattr(dose, "path", None) or None
    if str(getattr(dose, "summationType", "") or "").upper() != "FRACTION" or not groups:
        return groups[0] if len(groups) == 1 else None
    if named is None:
        if len(groups) == 1:
            return groups[0]
        raise DoseGroupError(f"the RTDOSE is a FRACTION dose (one fraction group's whole delivery) but names no "
                             f"fraction group (ReferencedFractionGroupSequence), and its RTPLAN has {len(groups)} "
                             f"({', '.join(str(n) for n in groups)}): give the course's number of fractions by hand",
                             where)
    if named not in groups:
        raise DoseGroupError(f"the RTDOSE is the dose of fraction group {named}, which its RTPLAN does not have "
                             f"(its groups: {', '.join(str(n) for n in groups)}): is this the dose's plan? Give the "
                             "plan the dose names, or the number of fractions by hand", where)
    return named


def prescriptionWarning(doseGy, prescriptionGy: float | None, what: str, planName: str = "",
                        ofGroup: bool = False) -> str | None:
    """A dose whose maximum lies outside ``PRESCRIPTION_RATIO_RANGE`` times its RTPLAN's prescription: not the
    plan's dose, or not this plan (a NRRD dose cannot name its plan: a newcomer's review took a breast boost's 7
    fractions for a 47 Gy prostate dose, EQD2 91.6 instead of 47.5 Gy); ``prescriptionGy`` from
    :func:`planPrescriptionOfDose`. ``ofGroup``: the prescription is a fraction group's, whose dose reference may hold
    the cumulative prescription of all the plan's phases (a 10 Gy boost read 0.17 times 60 Gy): a low maximum is
    still warned (one session of a 3-fraction group read 0.35 times its 24 Gy: a verification review), saying so."""
    top = _doseMaximum(doseGy)
    if not prescriptionGy or top <= 0:
        return None
    ratio = top / float(prescriptionGy)
    low, high = PRESCRIPTION_RATIO_RANGE
    if low <= ratio <= high:
        return None
    plan = f"the RTPLAN {planName}" if planName else "the RTPLAN"
    return (f"{what}: its maximum {top:.1f} Gy is {ratio:.2f} times the prescription of {plan} "
            f"({float(prescriptionGy):g} Gy), outside {low:g}-{high:g}: is this the plan of this dose? Its number of "
            "fractions converts the dose" + (" (a fraction group's dose reference may hold the prescription of all the "
                                             "plan's phases: then a lower maximum is expected)"
                                             if ofGroup and ratio < low else ""))


def earlyRecoveryWarning(course: str, recovery: dict) -> str | None:
    """A prior course credited recovery although it ended less than ``EARLIEST_RECOVERY_MONTHS`` before the current
    course: a constant recovery does not look at the interval (a newcomer's review: 25 % credited to the bowel 53
    days after the prior course, read against Berman's limit, without a word)."""
    months = recovery.get("intervalMonths")
    if months is None or months >= EARLIEST_RECOVERY_MONTHS:
        return None
    credited = [f"{name} {100.0 * float(d['fraction']):.3g} % ({(d.get('model') or {}).get('model', '?')})"
                for name, d in (recovery.get("structures") or {}).items() if (d.get("fraction") or 0.0) > 0]
    if not credited:
        return None
    return (f"course '{course}': recovery is credited {monthsText(months)} months after it ({', '.join(credited)}); "
            f"the published time-based models credit none before {EARLIEST_RECOVERY_MONTHS:g} months (Nieder 2006, Doi "
            "2021): a constant recovery does not look at the interval")


def _doseMaximum(doseGy) -> float:
    """The largest finite dose, 0 for none."""
    return float(np.nanmax(doseGy)) if np.size(doseGy) and np.isfinite(doseGy).any() else 0.0


def emptyDoseMessage(doseGy, what: str) -> str | None:
    """"<what> is 0 Gy at most, no dose at all: ..." for a dose (about) 0 Gy everywhere, else None."""
    top = _doseMaximum(doseGy)
    if top >= EMPTY_COURSE_DOSE_GY:
        return None
    return f"{what} is {top:.3g} Gy at most, no dose at all: an empty export or a plan whose dose was never computed"


def refuseEmptyDose(doseGy, course: str, what: str, where=None) -> None:
    """Refuse a course's dose that is (about) 0 Gy everywhere: an uncomputed plan or an empty export summed as a
    course would pass every limit it should fail (a review: the demo's prior RTDOSE zeroed gave a composite of 30.56
    instead of 81.77 Gy and offered to scale the new course by 2.286 instead of 1.343, exit code 0)."""
    message = emptyDoseMessage(doseGy, what)
    if message:
        raise InputError(f"course '{course}': {message}; give the course's computed plan dose", where)


def _timeBasedRecovery(case: CaseSpec, masks: dict) -> bool:
    """Whether any organ of the case takes a recovery model that depends on the interval between the courses."""
    table = tissueTableFor(DoseSettings.fromCase(case))
    entries = (table.lookup(name) for name in masks)
    return any(e is not None and not e.isTarget and getattr(e.recovery, "needsInterval", False) for e in entries)


def _treatmentDays(fractions: int, fractionsPerDay: int = 1) -> int:
    """The days a course's fractions take at ``fractionsPerDay`` a day."""
    return -(-int(fractions) // max(1, int(fractionsPerDay)))


def shortestCourseDays(fractions: int, fractionsPerDay: int = 1) -> int:
    """Calendar days from a course's first fraction to its last when its fractions are given ``fractionsPerDay`` a
    day on five days a week without a break (the shortest the course can take)."""
    treatmentDays = _treatmentDays(fractions, fractionsPerDay)
    return (treatmentDays - 1) + 2 * ((treatmentDays - 1) // 5)


def latestFirstFraction(lastFraction: _dt.date, fractions: int, fractionsPerDay: int = 1) -> _dt.date:
    """The latest a course whose last fraction was ``lastFraction`` can have begun: its treatment days counted back
    over the weekdays (Monday to Friday), without a break."""
    remaining = _treatmentDays(fractions, fractionsPerDay) - 1
    day = lastFraction
    while remaining > 0:
        day -= _dt.timedelta(days=1)
        if day.weekday() < 5:
            remaining -= 1
    return day


def priorCourseDateWarning(course: CourseSpec, plan, fractions: int) -> str | None:
    """A prior course dated before it can have ended, by its own RTPLAN: the warning, else None.

    A prior course's ``date`` is taken as its last fraction: the conservative reading of "the interval between the
    courses" (Nieder 2006), and the one of the spinal-cord retreatment models, which count recovery from the
    completion of the first course. A date earlier than the plan's ``RTPlanDate`` plus the fractions at
    ``fractionsPerDay`` on five days a week (the shortest course the plan allows) is most likely the plan's or the
    course's start date, which lengthens the interval by the course's duration (5 weeks for 25 fractions): with a
    step model it can cross 6 or 12 months and credit 25 % more recovery than the patient has had."""
    if course.isCurrent or course.date is None or plan is None:
        return None
    try:
        planDate = _dt.datetime.strptime(str(plan.date).strip()[:8], "%Y%m%d").date()
    except ValueError:
        return None
    earliestEnd = planDate + _dt.timedelta(days=shortestCourseDays(fractions, course.schedule.fractionsPerDay))
    if course.date >= earliestEnd:
        return None
    return (f"course '{course.name}' is dated {course.date.isoformat()}, but its RTPLAN ({Path(course.plan).name}) is "
            f"dated {planDate.isoformat()} and its {fractions} fractions on five days a week end on "
            f"{earliestEnd.isoformat()} at the earliest: the time-based recovery counts the interval from a prior "
            "course's date as its LAST fraction. If this is the plan's or the first fraction's date, the interval is "
            f"too long by at least {_days((earliestEnd - course.date).days)}, which may credit recovery the patient "
            "has not had: give the date of the last fraction")


def currentCourseDateWarning(course: CourseSpec, plan) -> str | None:
    """The current course dated (its first fraction) before its own RTPLAN was made: the warning, else None (a
    review: dated 19 months before its plan without a word; a date too early shortens the intervals from the prior
    courses, so it credits less recovery, not more, but it is a date typed wrong)."""
    if not course.isCurrent or course.date is None or plan is None:
        return None
    try:
        planDate = _dt.datetime.strptime(str(plan.date).strip()[:8], "%Y%m%d").date()
    except ValueError:
        return None
    if course.date >= planDate:
        return None
    return (f"course '{course.name}' (the current course) is dated {course.date.isoformat()}, "
            f"{_days((planDate - course.date).days)} before its RTPLAN ({Path(course.plan).name}, dated "
            f"{planDate.isoformat()}): its date is its first fraction, which cannot precede its plan; the intervals "
            "from the prior courses, and their time-based recovery, are read to this date: check it")


def priorCourseSpanWarning(course: CourseSpec, fractions: int) -> str | None:
    """A prior course whose ``startDate`` and ``date`` (its first and last fractions) are closer than its fractions
    can be given (at its fractions a day on five days a week): the warning, else None. One of the dates, the number
    of fractions or the fractions a day is wrong, and the interval to the next course is read from these dates."""
    start = getattr(course, "startDate", None)
    if course.isCurrent or start is None or course.date is None:
        return None
    perDay = course.schedule.fractionsPerDay
    shortest = shortestCourseDays(fractions, perDay)
    if (course.date - start).days >= shortest:
        return None
    return (f"course '{course.name}' runs from {start.isoformat()} ('startDate') to {course.date.isoformat()} "
            f"('date'), {_days((course.date - start).days)}, but its {fractions} fractions"
            f"{f' at {perDay} a day' if perDay > 1 else ''} on five days a week take at least {_days(shortest)}: "
            "check the dates, the fractions and the fractions a day (the interval between courses is read from the "
            "dates)")


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def checkPlanOfDose(plan, dose, planPath, dosePath, what: str, instead: str) -> None:
    """Refuse an RTPLAN the RTDOSE does not belong to (its ReferencedRTPlanSequence names another plan): its
    fractions would convert the wrong course. ``what`` leads the message ("course 'prior'"), ``instead`` says what to
    give otherwise."""
    referenced = str(getattr(dose, "referencedPlanUid", "") or "")
    if referenced and plan.sopInstanceUid and referenced != plan.sopInstanceUid:
        raise InputError(f"{what}: the RTDOSE ({dosePath}) belongs to another RTPLAN than the one given ({planPath}): "
                         f"its ReferencedRTPlanSequence names {referenced}, the plan is {plan.sopInstanceUid}. Give "
                         f"the course's own plan ({instead})", planPath)


def planFractionsOfDose(plan, dose) -> int:
    """The plan's number of fractions for ``dose``: of its fraction group (:func:`doseFractionGroup`: a FRACTION
    dose's, or the plan's only one); InputError when the plan gives no single number (a dose of the whole plan of
    several groups) or the dose's group is not the plan's."""
    return int(plan.fractionsOfGroup(doseFractionGroup(plan, dose)))


def _fractions(course: CourseSpec, plan, dose=None, warnings: list | None = None
               ) -> tuple[int, str, float | None, str]:
    """The course's number of fractions (case file, else its RTPLAN ``plan``, read from ``course.plan``; None
    without one), the source of that number, the prescription and the plan's patient ID. An RTPLAN that the RTDOSE
    does not belong to (the dose names another plan) is refused: its fractions would convert the wrong course.
    Fractions in the case file that differ from the plan's are used and warned. The plan's number is that of the
    dose's fraction group (:func:`doseFractionGroup`: a FRACTION dose's, or the plan's only group); where the plan
    gives none (a dose of the whole plan of several groups: two phases of 25 fractions are 50 for it; a group stating
    none; a FRACTION dose naming no group or one the plan lacks) the course is refused naming it, its plan and each
    group's count, or, when the case file gives the fractions, those are used and warned."""
    prescription = None
    planFractions = None
    planAmbiguous = False
    patientId = ""
    if plan is not None:
        prescription = planPrescriptionOfDose(plan, dose)
        patientId = plan.patientId
        checkPlanOfDose(plan, dose, course.plan, course.dose, f"course '{course.name}'",
                        "or its 'fractions' without a 'plan'")
        try:
            planFractions = planFractionsOfDose(plan, dose)
        except InputError as error:
            if course.fractions is None:  # the course and its plan named, with each group's count
                groups = ", ".join(f"group {g.number}: {g.numberOfFractionsPlanned or 'not stated'} fx"
                                   for g in plan.fractionGroups) or "no fraction group"
                raise InputError(f"course '{course.name}': {str(error).removeprefix(f'{error.path}: ')} (its RTPLAN "
                                 f"{Path(course.plan).name}: {groups}; by hand: the course's 'fractions' in the case "
                                 "file)", error.path) from None
            # a verification review: a plan of one group stating no number (NumberOfFractionsPlanned is Type 2)
            # was refused although the case gave the fractions
            planAmbiguous = True
            message = (f"course '{course.name}': {course.fractions} fractions from the case file are used: its RTPLAN "
                       f"({Path(course.plan).name}) gives no single number of fractions "
                       f"({str(error).removeprefix(f'{error.path}: ')})")
            logger.warning("%s", message)
            if warnings is not None:
                warnings.append(message)
        perDay = plan.fractionsPerDay
        if perDay is not None and perDay != course.schedule.fractionsPerDay and warnings is not None:
            warnings.append(f"course '{course.name}': its RTPLAN's fraction pattern ({Path(course.plan).name}) gives "
                            f"{perDay} fraction(s) a day, the case file {course.schedule.fractionsPerDay}: the case's "
                            "is used (give 'fractionsPerDay' and 'hoursBetweenFractions' for the incomplete-repair "
                            "correction of a course given more than once a day)")
    if course.fractions is not None:
        if planFractions is not None and planFractions != course.fractions:
            message = (f"course '{course.name}': {course.fractions} fractions from the case file replace the "
                       f"{planFractions} of its RTPLAN ({Path(course.plan).name})")
            logger.warning("%s", message)
            if warnings is not None:
                warnings.append(message)
            return course.fractions, f"case file (overrides RTPLAN's {planFractions})", prescription, patientId
        if planAmbiguous:
            return course.fractions, "case file (the RTPLAN gives no single number)", prescription, patientId
        return course.fractions, "case file", prescription, patientId
    if planFractions is None:
        raise InputError(f"course '{course.name}' has no number of fractions: give an RTPLAN ('plan') or "
                         "'fractions' in the case file", course.dose)
    try:  # a verification review: 5000 fractions from a plan were refused naming neither course nor plan
        validateNumberOfFractions(planFractions, f"number of fractions of course '{course.name}' (its RTPLAN)")
    except InputError as error:
        raise InputError(str(error), course.plan) from None
    return int(planFractions), f"RTPLAN {course.plan.name}", prescription, patientId


def samePlanWarnings(courses) -> list[str]:
    """One warning per RTPLAN whose doses are given as several courses (the phases of one plan, each a FRACTION dose
    of its group): they are summed as courses of their own, so a prior one is credited the recovery a prior course
    earns before the next (a verification review: a boost phase credited 25 % of its first phase, 47.5 instead of
    60 Gy, with only the generic early-recovery warning)."""
    byPlan: dict[str, list[str]] = {}
    for course in courses:
        uid = str((getattr(course, "doseInfo", None) or {}).get("referencedPlanUid") or "")
        if uid:
            byPlan.setdefault(uid, []).append(course.name)
    return [f"courses {', '.join(repr(n) for n in names)} are doses of one RTPLAN ({uid}), the phases of one "
            "treatment: each is summed as a course of its own, and a prior one is credited any recovery the case "
            "gives before the next" for uid, names in byPlan.items() if len(names) > 1]


def _refuseSameRtDose(course: CourseSpec, seen: dict) -> None:
    """Refuse an RTDOSE another course of the case already uses (the same SOP Instance UID in another file: a copy,
    a re-export): summed twice it doubles that course (a physicist's review: a copied prior course took the rectum's
    D2cc from 78.46 to 128.27 Gy without a word; the case file refused only the same path). Read from the header only,
    before the course is registered."""
    from .dicomimage import isDicomFile

    path = Path(course.dose)
    if not path.is_file() or not isDicomFile(path):
        return
    try:
        import pydicom

        uid = str(pydicom.dcmread(path, stop_before_pixels=True, force=True,  # also without the preamble
                                  specific_tags=["SOPInstanceUID"]).get("SOPInstanceUID", "") or "")
    except Exception:  # noqa: BLE001 - an unreadable header is refused, naming the file, by the RTDOSE reader
        return
    if uid and uid in seen:
        other, otherPath = seen[uid]
        raise InputError(f"course '{course.name}' and course '{other}' give the same RTDOSE (SOP Instance UID {uid}; "
                         f"{otherPath} and {path}): it would be counted twice. A course given again is a new plan "
                         "with its own RTDOSE", path)
    if uid:
        seen[uid] = (course.name, str(path))


def _checkSamePatient(identities: list[tuple[str, str, str]], case: CaseSpec, warnings: list) -> None:
    """Every DICOM file of a case must belong to one patient (PatientID); a mismatch names both files.

    Files without a PatientID (NRRD, or an anonymised export) are not compared. ``allowPatientMismatch`` in the
    case file downgrades the refusal to a warning.
    """
    known = [(what, path, pid) for what, path, pid in identities if pid]
    if not known:
        return
    firstWhat, firstPath, firstId = known[0]
    for what, path, pid in known[1:]:
        if pid != firstId:
            message = (f"{what} ({path}) belongs to patient ID {pid} but the {firstWhat} ({firstPath}) to "
                       f"{firstId}")
            if not case.allowPatientMismatch:
                raise InputError(message + "; check the files, or set allowPatientMismatch if this is intended",
                                 path)
            warnings.append(message + " (accepted: allowPatientMismatch)")


def findBody(masks: dict) -> str | None:
    for name in masks:
        if name.strip().lower() in ("body", "external", "skin", "outline", "body outline"):
            return name
    return None


# Tissue without counterpart is grown by this margin: its partial-volume border belongs to it, not to the tissue
# around it.
WITHOUT_COUNTERPART_MARGIN_MM = 5.0


def _withoutCounterpartMask(course: CourseSpec, masks: dict, referenceImage, warnings: list):
    """:func:`withoutCounterpartMask` for a course of the case file."""
    return withoutCounterpartMask(masks, ImageGeometry.fromImage(referenceImage), course.withoutCounterpart,
                                  warnings, f"course '{course.name}'")


def withoutCounterpartMask(masks: dict, geometry: ImageGeometry, names=None, warnings: list | None = None,
                           owner: str = "the registration", key: str = "withoutCounterpart",
                           among: str = "the reference structures"):
    """The structures (``masks`` on ``geometry``) whose tissue has no counterpart in the other CT (``names``;
    None: every structure whose name starts with GTV: a recurrence is tissue the prior CT did not hold, a prior
    primary tumour tissue the current CT no longer holds), grown by ``WITHOUT_COUNTERPART_MARGIN_MM``, as a uint8
    mask image on ``geometry``; with the names used. A name that is not among ``masks`` is reported in
    ``warnings`` (as ``owner``'s ``key``, not among ``among``) and ignored. ``(None, names)`` when empty.

    Demons matching the recurrence's tumour against whatever prior tissue lay there (sacrum, muscle) drags the
    tissue around it. On the clinical-size demo case (Testing/benchmarks/registration_demo.py), GTV and Fibrosis
    without counterpart: p95 displacement error within 10 mm of the GTV 8.4 -> 2.4 mm, in the PTV 8.4 -> 3.0 mm.
    """
    from scipy import ndimage

    from .geometry import imageFromArray

    byName = {name.strip().lower(): name for name in masks}
    if names is None:
        used = [name for name in masks if name.strip().lower().startswith("gtv")]
    else:
        used = []
        for wanted in names:
            if wanted.strip().lower() in byName:
                used.append(byName[wanted.strip().lower()])
            elif warnings is not None:
                warnings.append(f"{owner}: structure '{wanted}' named in '{key}' is not among {among}; ignored")
    union = np.zeros(geometry.shape, dtype=bool)
    for name in used:
        union |= np.asarray(masks[name], dtype=bool)
    if not union.any():
        return None, used
    grown = ndimage.distance_transform_edt(~union, sampling=np.array(geometry.spacingMm)[::-1]) \
        <= WITHOUT_COUNTERPART_MARGIN_MM
    return imageFromArray(grown.astype(np.uint8), geometry), used


def _readCourseImage(case, course: CourseSpec, doseInfo: dict, identities: list, warnings: list):
    """The course's CT ``(image, info)``: its patient noted for the identity check (and its RTSTRUCT's), its frame of
    reference compared with the dose's and with its structures' (:func:`_checkCourseStructuresFrame`)."""
    from . import dicomimage

    courseImage, courseInfo = _readImage(course.image, f"course '{course.name}' image", dicomimage)
    identities.append(("image", str(course.image), courseInfo.get("patientId", "")))
    _checkCourseImageFrame(case, course, courseInfo, doseInfo, warnings)
    _checkCourseStructuresFrame(case, course, courseInfo, identities, warnings)
    return courseImage, courseInfo


def structureSetFrames(rt) -> list[str]:
    """The frames of reference an RTSTRUCT's ROIs are drawn in (each ROI's own, ReferencedFrameOfReferenceUID of its
    StructureSetROISequence item, DICOM PS3.3 C.8.8.5; the set's first frame for an ROI stating none, and for a set
    without ROIs): a set also listing another frame (an MR it was registered with) is not of that frame (a
    verification review: such a set was refused although every ROI lay in the CT's frame)."""
    frames = {roi.frameOfReferenceUid or rt.frameOfReferenceUid for roi in rt.rois} if rt.rois else {
        rt.frameOfReferenceUid}
    return sorted(f for f in frames if f)


def _checkCourseStructuresFrame(case, course: CourseSpec, courseInfo: dict, identities: list, warnings: list) -> None:
    """Refuse a course's own RTSTRUCT drawn in another frame of reference than its CT's (today's structures given as
    the prior's), or warn with ``allowFrameOfReferenceMismatch``: before, it was rasterised on the prior CT and guided
    and checked its registration without a word. Read before any registration, without rasterising (the masks are
    made where they are used); its patient joins the identity check."""
    if course.structures is None:
        return
    from .dicomimage import isDicomPath

    if not isDicomPath(course.structures) or Path(course.structures).is_dir():
        return
    from .rtstruct import readRtStruct

    rt = readRtStruct(course.structures)
    identities.append(("structures", str(course.structures), rt.patientId))
    imageFrame = str(courseInfo.get("frameOfReferenceUid") or "")
    other = [f for f in structureSetFrames(rt) if f != imageFrame]
    if not imageFrame or not other:
        return
    message = (f"course '{course.name}': its structures ({course.structures}) were drawn in frame of reference "
               f"{', '.join(other)}, its image ({course.image}) is in {imageFrame}: they do not belong to it")
    if not getattr(case, "allowFrameOfReferenceMismatch", False):
        raise InputError(message + "; give the RTSTRUCT drawn on the course's CT, or set allowFrameOfReferenceMismatch "
                         "if the frames are known to coincide", course.structures)
    warnings.append(message + " (accepted: allowFrameOfReferenceMismatch)")


def _courseMasks(course: CourseSpec, courseImage) -> dict | None:
    """The course's own structures (``"structures"`` of the course) on its CT's grid (contours rasterised on it, a
    labelmap on a grid of its own resampled onto it, nearest neighbour); None without. Their frame of reference is
    checked when the CT is read (:func:`_checkCourseStructuresFrame`)."""
    if course.structures is None:
        return None
    from . import segio

    geometry = ImageGeometry.fromImage(courseImage)
    courseMasks, maskGeometry, _ = segio.readSegmentationWithGeometry(course.structures, geometry)
    if not maskGeometry.sameGridAs(geometry):
        from .dosemapping import mapMasks
        courseMasks, _ = mapMasks(courseMasks, maskGeometry, None, geometry)
    return courseMasks


def _courseWithoutCounterpartMask(course: CourseSpec, courseMasks: dict | None, courseImage, warnings: list):
    """:func:`withoutCounterpartMask` of the course's own structures (``courseWithoutCounterpart``) on its CT."""
    if not courseMasks:
        return None, []
    return withoutCounterpartMask(courseMasks, ImageGeometry.fromImage(courseImage), course.courseWithoutCounterpart,
                                  warnings, f"course '{course.name}'", "courseWithoutCounterpart",
                                  f"the structures of {Path(course.structures).name}")


def _pairedStructureMasks(case, course: CourseSpec, masks: dict, referenceImage, courseImage,
                          courseMasks: dict | None = None) -> dict | None:
    """:func:`pairStructureMasks` of the reference structures with the course's own (``"structures"`` of the
    course on the course CT's grid, :func:`_courseMasks`, or ``courseMasks`` already so); None without course
    structures."""
    if course.structures is None or not masks:
        return None
    courseMasks = courseMasks if courseMasks is not None else _courseMasks(course, courseImage)
    courseGeometry = ImageGeometry.fromImage(courseImage)
    pairs = pairStructureMasks(masks, ImageGeometry.fromImage(referenceImage), courseMasks, courseGeometry,
                               tuple(case.targets) + tuple(course.validationStructures))
    logger.info("Structure-guided registration of course '%s': %s", course.name, ", ".join(sorted(pairs or {}))
                or "none")
    return pairs


def _independentCheckWarning(course: CourseSpec, registration: dict) -> str | None:
    """A warning when a course's registration was checked by nothing independent of it: every structure its contour
    check measured guided the (structure-guided) registration, which makes them agree by construction, and no landmark
    pair was given. Sets ``contourCheck["independent"]`` (the structures measured that did not guide it)."""
    check = registration.get("contourCheck")
    if not check:
        return None
    measured = [r for r in check["structures"] if r["dice"] is not None]
    check["independent"] = [r["structure"] for r in measured if not r["guided"]]
    check["validationStructures"] = list(course.validationStructures)
    if not measured or check["independent"] or (registration.get("landmarks") or {}).get("pairs"):
        return None
    names = ", ".join(r["structure"] for r in measured)
    advice = (f"none of its validation structures ({', '.join(course.validationStructures)}) is delineated on both "
              "CTs: delineate one on both, or give 'landmarks'" if course.validationStructures else
              "name one or more in the course's 'validationStructures' or give 'landmarks'")
    return (f"course '{course.name}': every structure of the contour check ({names}) guided the registration, so "
            f"they agree by construction: nothing here checks the registration independently; {advice}")


def _contourCheck(case, course: CourseSpec, masks: dict, referenceImage, courseImage, courseMasks: dict | None,
                  transform, guided, warnings: list, carried: dict | None = None) -> dict | None:
    """The contour check of a course's registration (:func:`.contourcheck.checkRegistration`) with the course's
    ``structures`` on its CT; validation structures found on one CT only are warned. None without course structures
    or a course CT."""
    from . import contourcheck

    if course.structures is None or courseImage is None or not masks:
        return None
    courseMasks = courseMasks if courseMasks is not None else _courseMasks(course, courseImage)
    leftOut = (tuple(case.targets) + tuple(course.withoutCounterpart or ())
               + tuple(course.courseWithoutCounterpart or ()))
    check = contourcheck.checkRegistration(masks, ImageGeometry.fromImage(referenceImage), courseMasks,
                                           ImageGeometry.fromImage(courseImage), transform, guided, leftOut, carried)
    checked = {r["structure"].strip().lower() for r in check["structures"]}
    for name in course.validationStructures:
        if name.strip().lower() not in checked:
            warnings.append(f"course '{course.name}': validation structure '{name}' is not delineated on both CTs "
                            f"({Path(case.structures).name if case.structures else 'reference'} and "
                            f"{Path(course.structures).name}): it neither guided nor checked the registration")
    where = course.transformFile if course.registration == "file" else course.image
    warnings.extend(contourcheck.agreementWarnings(check["structures"], check["toleranceMm"],
                                                   f"course '{course.name}' ({where})"))
    return check


def pairStructureMasks(referenceMasks: dict, referenceGeometry: ImageGeometry, movingMasks: dict,
                       movingGeometry: ImageGeometry, targets=()) -> dict | None:
    """Organs delineated on both CTs, as ``{name: (reference mask, moving mask)}`` uint8 images for
    structure-guided DIR.

    Pairs by name (case-insensitive), leaving out the body outline (already the registration mask) and targets
    (``targets`` and any GTV/CTV/ITV/PTV name: a recurrence's target is not the prior target moved) and structures
    empty on either side. On the demo case (Testing/benchmarks/registration_demo.py) the pairs halve the
    displacement error p95 around the recurrence and raise the Jacobian minimum from 0.12 to 0.40. None when
    nothing pairs.
    """
    from .contourcheck import pairedNames
    from .geometry import imageFromArray

    pairs = {}
    for name, courseName in pairedNames(referenceMasks, movingMasks, targets):
        mask = np.asarray(referenceMasks[name], dtype=bool)
        other = np.asarray(movingMasks[courseName], dtype=bool)
        if mask.any() and other.any():
            pairs[name] = (imageFromArray(mask.astype(np.uint8), referenceGeometry),
                           imageFromArray(other.astype(np.uint8), movingGeometry))
    return pairs or None


def _checkSameFrame(case, course, doseInfo, referenceInfo, warnings) -> None:
    doseFrame = doseInfo.get("frameOfReferenceUid")
    refFrame = referenceInfo.get("frameOfReferenceUid")
    if doseFrame and refFrame and doseFrame != refFrame:
        message = (f"course '{course.name}' dose ({course.dose}) is in frame of reference {doseFrame} but the "
                   f"reference image ({case.referenceImage}) is in {refFrame}, and its registration is 'none'")
        if not case.allowFrameOfReferenceMismatch:
            raise InputError(message + "; register it or set allowFrameOfReferenceMismatch", course.dose)
        warnings.append(message + " (accepted: allowFrameOfReferenceMismatch)")


def _checkCourseImageFrame(case, course, courseInfo, doseInfo, warnings) -> None:
    """Refuse a course whose CT (``image``) and dose lie in different frames of reference (both stated), or warn
    with ``allowFrameOfReferenceMismatch``: the dose is mapped through the registration of that CT as if it lay on
    it, and the DICOM REG written names the CT's frame. Before, nothing compared them: a dose of another scan was
    mapped silently and the REG named a frame no registered image was in."""
    imageFrame = str(courseInfo.get("frameOfReferenceUid") or "")
    doseFrame = str(doseInfo.get("frameOfReferenceUid") or "")
    if not imageFrame or not doseFrame or imageFrame == doseFrame:
        return
    where = f"case file {case.path}: " if getattr(case, "path", None) else ""
    message = (f"{where}course '{course.name}': its image ({course.image}) is in frame of reference {imageFrame} but "
               f"its dose ({course.dose}) is in {doseFrame}: the dose would be mapped as if it lay on that image")
    if not case.allowFrameOfReferenceMismatch:
        raise InputError(message + "; give the CT the dose was planned on, or set allowFrameOfReferenceMismatch if "
                         "the frames are known to coincide", course.dose)
    warnings.append(message + " (accepted: allowFrameOfReferenceMismatch)")


def _reportUnknown(unknown: np.ndarray, masks: dict, warnings: list, why: str, prefix: str = "") -> None:
    """Warn, per structure, the share of it in ``unknown``: "<prefix><share> % of '<structure>' <why>"."""
    if not unknown.any():
        return
    for name, mask in masks.items():
        if not mask.any():
            continue
        inside = int(np.count_nonzero(unknown & mask))
        if inside:
            warnings.append(f"{prefix}{100.0 * inside / int(np.count_nonzero(mask)):.1f} % of '{name}' {why}")


def _resultSummary(result) -> dict:
    out = {}
    for key in ("method", "metricValue", "iterations", "elapsedS", "parameters"):
        if hasattr(result, key):
            out[key] = getattr(result, key)
    return out


def _registerMri(case: CaseSpec, referenceImage, progress, dicomimage, warnings: list,
                 referenceFrameUid: str | None = None) -> dict:
    from . import transformio
    mriImage, mriInfo = _readImage(case.mri.image, "MRI", dicomimage)
    registration: dict = {"method": case.mri.registration}
    if case.mri.registration == "file":
        registration["file"] = str(case.mri.transformFile)
        if transformio.isDicomRegistration(case.mri.transformFile):  # the item for the MRI's frame
            # the item relating today's CT (not another CT of the patient) to the MRI, as for a course
            transform = _dicomRegistration(case.mri.transformFile, referenceFrameUid,
                                           mriInfo.get("frameOfReferenceUid") or None, registration, warnings)
        else:
            transform = transformio.readTransform(case.mri.transformFile)
    elif case.mri.registration in ("rigid", "affine"):
        from . import registration as reg
        register = reg.registerRigid if case.mri.registration == "rigid" else reg.registerAffine
        initial = _initialTransform(case.mri.initialTransform, "MRI")
        try:
            result = register(sitk.Cast(referenceImage, sitk.sitkFloat32), sitk.Cast(mriImage, sitk.sitkFloat32),
                              metric="mattes", initialization="moments", progress=progress, initialTransform=initial)
        except InputError as error:
            raise InputError(f"MRI: {case.mri.registration} registration of this image (moving) onto the reference "
                             f"CT {case.referenceImage} (fixed): {error}", case.mri.image) from error
        transform = result.transform
        registration.update(_resultSummary(result))
        if initial is not None:
            registration["initialTransform"] = str(case.mri.initialTransform)
        registration["rotationDeg"] = reg.affineDecomposition(transform)["rotationDeg"]
        rotated = reg.rotationWarning(registration["rotationDeg"], f"MRI ({case.mri.image})")
        if rotated:
            warnings.append(rotated)
        if case.mri.registration == "affine":
            warnings.extend(reg.affineWarnings(transform, result.parameters, f"MRI ({Path(case.mri.image).name})"))
    else:
        transform = sitk.Transform(3, sitk.sitkIdentity)
    resampled = sitk.Resample(sitk.Cast(mriImage, sitk.sitkFloat32), referenceImage, transform, sitk.sitkLinear, 0.0)
    return {"image": resampled, "transform": transform, "registration": registration, "info": mriInfo,
            "path": str(case.mri.image)}


# RTROIInterpretedType terms of a target volume (DICOM PS3.3 C.8.8.8)
_TARGET_ROI_TYPES = ("GTV", "CTV", "PTV")


def typedTargetWarnings(types: dict[str, str], tissueTable, masks: dict) -> list[str]:
    """A warning for each structure its RTSTRUCT types as a target volume (RTROIInterpretedType GTV, CTV, PTV) that is
    read as an organ here (a review on real data: a tumour bed typed CTV, not named GTV or CTV, was read at α/β 3 with
    the breast's recovery credited in its high-dose region, without a word). Warned, not made a target: planning
    systems also type whole organs GTV (the same data set typed the breast so)."""
    out = []
    for name, kind in types.items():
        mask = masks.get(name)
        if kind in _TARGET_ROI_TYPES and mask is not None and np.any(mask) and not tissueTable.entryFor(name).isTarget:
            entry = tissueTable.entryFor(name)
            recovery = "" if isinstance(entry.recovery, NoRecovery) else ", with its recovery"
            out.append(f"structure '{name}' is typed {kind} in its RTSTRUCT but is read as an organ here (α/β "
                       f"{entry.alphaBetaGy:g} Gy{recovery}): if it is a target, name it in the case's 'targets' "
                       "(targets take α/β 10 Gy, recover nothing and win overlaps)")
    return out


def _unmatchedTissues(settings: DoseSettings, tissueTable, masks: dict) -> list[str]:
    """Warnings for the case's tissue entries (and named targets beyond the default GTV/CTV) that match no structure:
    a misspelt "Rectumm" left the rectum at the shipped entry, without the case's recovery, and said nothing."""
    from .tissues import normalizeStructureName

    owners = {entry.name for entry in (tissueTable.lookup(name) for name in masks) if entry is not None}
    messages = []
    for name in settings.tissues:
        entry = tissueTable.lookup(name)
        if entry is None or entry.name not in owners:
            messages.append(f"tissues['{name}'] in the case matches no structure (structures: "
                            f"{', '.join(sorted(masks))}): its α/β, recovery and repair half-time apply nowhere; "
                            "check the name")
    for name in settings.targets:
        if name not in ("GTV", "CTV") and name not in settings.tissues and not any(
                normalizeStructureName(name) == normalizeStructureName(m) for m in masks):
            messages.append(f"target '{name}' in the case matches no structure: check the name")
    for name, spec in settings.tissues.items():
        entry = tissueTable.lookup(name)
        recovery = spec.recovery if isinstance(spec.recovery, dict) else None
        if entry is not None and entry.isTarget and recovery and recovery.get("model") not in (None, "none"):
            # a physicist's review: the recovery was dropped without a word (the module refuses the same entry)
            of = "" if entry.name == name else f" (tissue-table entry '{entry.name}')"
            messages.append(f"tissues['{name}'] in the case gives a recovery ({recovery.get('model')}), but "
                            f"'{name}' is a target{of}: targets recover nothing, the recovery is not applied")
    return messages


def _tissueTableWith(replace, table, entries, name: str, where):
    """``table`` with ``entries``; a name two entries claim is refused naming the case's tissue and file."""
    try:
        return replace(table, entries=entries)
    except InputError as error:
        raise InputError(f"tissues['{name}'] in the case: {error}", where) from None


def tissueTableFor(settings: DoseSettings):
    """The shipped tissue table with the case's per-structure edits and target list applied.

    An edit naming an entry replaces its α/β / recovery / priority and keeps its aliases. An edit naming a structure
    the shipped table reads through another entry (an alias or a prefix: "CTV" of "Tumour", "Anal_Canal" of "Rectum")
    applies to that structure alone: it becomes an entry of its own, starting from the shared entry's values (before,
    the edit changed the shared entry, and with it every structure reading it: "CTV" at α/β 5 moved the GTV and PTV
    too, and a recovery given to "Anal_Canal" was credited to the rectum). A structure named in ``targets`` becomes a
    target (no recovery, wins overlaps); a target absent from the table gets α/β 10 Gy (tumour convention,
    REFERENCE §1) unless the case gives one; a target the table reads through another entry becomes an entry of its
    own with that entry's α/β, the shared entry (an organ) left as it was.
    """
    from dataclasses import replace

    from .recovery import NoRecovery, recoveryModelFromDict
    from .tissues import TissueEntry, TissueTable, normalizeStructureName

    table = replace(TissueTable.default(), defaultAlphaBetaGy=settings.defaultAlphaBetaGy,
                    defaultRepairHalfTimeHours=settings.repairHalfTimeHours)
    targets = {t for t in settings.targets}

    def sharesAnEntry(name: str) -> bool:
        entry = table.lookup(name)
        return entry is not None and normalizeStructureName(name) != normalizeStructureName(entry.name)

    # the entries' own edits first, then the structures split off them start from the edited values, whatever the
    # order of the case's keys (a verification review: "Anal_Canal" listed before "Rectum" kept the shipped α/β 3)
    ordered = sorted(settings.tissues.items(), key=lambda item: sharesAnEntry(item[0]))
    where = settings.sourcePath or None
    seen: dict[str, str] = {}
    for name in settings.tissues:
        other = seen.setdefault(normalizeStructureName(name), name)
        if other != name:  # a newcomer's review: "rectum" 50 % and "Rectum" 25 % merged, one of them silently
            raise InputError(f"tissues '{other}' and '{name}' in the case name the same structure (names are "
                             "compared without case, spaces and separators): give it once", where)
    for name, spec in ordered:
        existing = table.lookup(name)
        if existing is not None and normalizeStructureName(name) != normalizeStructureName(existing.name):
            # the structure leaves the shared entry, with the aliases the case gives it: its own entry, from the
            # shared one's values
            keys = {normalizeStructureName(n) for n in (name, *spec.aliases)}
            shared = replace(existing, aliases=tuple(a for a in existing.aliases
                                                     if normalizeStructureName(a) not in keys))
            own = replace(existing, name=name, aliases=(), prefixes=(), source=f"shipped '{existing.name}'")
            table = _tissueTableWith(replace, table, tuple(shared if e is existing else e for e in table.entries)
                                     + (own,), name, where)
            existing = own
        isTarget = spec.isTarget if spec.isTarget is not None else (
            name in targets or (existing.isTarget if existing else False))
        alphaBeta = spec.alphaBetaGy or (existing.alphaBetaGy if existing else
                                          (10.0 if isTarget else settings.defaultAlphaBetaGy))
        # a target recovers nothing: one split off an organ's entry does not keep the organ's recovery (a
        # verification review found it written in the target's table entry, though never applied)
        recovery = recoveryModelFromDict(spec.recovery) if spec.recovery is not None else (
            existing.recovery if existing and not isTarget else NoRecovery())
        entry = TissueEntry(
            name=existing.name if existing else name, alphaBetaGy=alphaBeta, recovery=recovery,
            # a target split off an organ keeps neither its recovery nor its priority (a verification review: two
            # overlapping targets read by the organ's priority 70)
            priority=spec.priority if spec.priority is not None else (
                existing.priority if existing and (existing.isTarget or not isTarget) else 0),
            isTarget=isTarget,
            aliases=tuple(dict.fromkeys((existing.aliases if existing else ()) + spec.aliases
                                        + ((name,) if existing and name != existing.name else ()))),
            prefixes=existing.prefixes if existing else (), source="case file",
            repairHalfTimeHours=spec.repairHalfTimeHours if spec.repairHalfTimeHours is not None else (
                existing.repairHalfTimeHours if existing else None))
        try:
            table = table.withEntry(entry)
        except InputError as error:  # a name another entry holds (an alias given twice)
            raise InputError(f"tissues['{name}'] in the case: {error}", where) from None
    for name in sorted(targets):
        existing = table.lookup(name)
        if existing is None:
            table = table.withEntry(TissueEntry(name, 10.0, NoRecovery(), isTarget=True, source="case target"))
        elif existing.isTarget:
            continue
        elif sharesAnEntry(name):
            # a target the table reads through an organ's entry ("Anal_Canal" of "Rectum") becomes an entry of its
            # own: the organ stays an organ with its recovery (a review: listing "Anal_Canal" made the whole rectum
            # a target, its 25 % recovery gone: 73.5 -> 86.0 Gy)
            key = normalizeStructureName(name)
            shared = replace(existing, aliases=tuple(a for a in existing.aliases if normalizeStructureName(a) != key))
            own = replace(existing, name=name, aliases=(), prefixes=(), priority=0, isTarget=True,
                          recovery=NoRecovery(), source=f"case target, the α/β of shipped '{existing.name}'")
            table = _tissueTableWith(replace, table, tuple(shared if e is existing else e for e in table.entries)
                                     + (own,), name, where)
        else:
            table = table.withEntry(replace(existing, isTarget=True, recovery=NoRecovery()))
    return table


def organRepairKey(courses: list[CourseResult], structure: str) -> tuple:
    """The repair factors ``structure`` is read with in each course (1.0 once a day): what a dose at a constraint's
    α/β depends on besides the α/β, to compute it once for the organs that share them."""
    return tuple(c.repairFactorFor(structure) if c.organRepairFactors else 1.0 for c in courses)


def compositeAtAlphaBeta(courses: list[CourseResult], alphaBetaGy: float | None, structure: str | None = None,
                         withRecovery: bool | float = True) -> np.ndarray:
    """Σ (1 − r_k) EQD2_k at one α/β for all voxels (what a constraint stated at that α/β is compared with; None: at
    the voxel α/β map); with ``structure``, each course with that structure's own recovery and, at an α/β, its own
    repair half-time (courses given more than once a day); ``withRecovery`` False: the courses' plain sum (a limit
    that already allows for recovery, :attr:`.constraints.OrganConstraint.recoveryInLimit`); a number: that fraction
    of every prior course recovered (a limit whose source discounts the prior dose so,
    :attr:`.constraints.OrganConstraint.priorRecovery`)."""
    from .radiobiology import compositeEqd2

    doses = [c.eqd2Gy if alphaBetaGy is None else c.eqd2At(alphaBetaGy, structure) for c in courses]
    return compositeEqd2(doses, _courseRecoveries(courses, structure, withRecovery))


def _courseRecoveries(courses: list[CourseResult], structure: str | None, withRecovery: bool | float):
    """The recovered fraction (or map) of each course for :func:`compositeAtAlphaBeta`; None for the plain sum; a
    limit's own fraction none where a target owns the voxel, as an organ's own recovery (a verification review:
    a GTV inside the liver was discounted 50 % too)."""
    if withRecovery is False:
        return None
    if withRecovery is True:
        return [c.recoveryFor(structure) for c in courses]
    return [None if c.recoveryMap is None else c.recoveryOutsideTargets(np.float32(withRecovery)) for c in courses]


def _earlyPriorRecoveryWarnings(constraintSet, masks: dict, courses: list[CourseResult]) -> list[str]:
    """A limit whose source discounts the prior dose (``priorRecovery``) read for a prior course that ended less than
    ``EARLIEST_RECOVERY_MONTHS`` before: the discount stands (the source's definition) and is said (a verification
    review: Owen's 50 % was credited one month after the prior course without a word, where a user's constant
    recovery is warned)."""
    warnings = []
    for constraint in constraintSet.constraints:
        if constraint.priorRecovery is None or not any(constraint.matches(n) and m.any() for n, m in masks.items()):
            continue
        for course in courses:
            months = (course.recovery or {}).get("intervalMonths") if not course.isCurrent else None
            if months is not None and months < EARLIEST_RECOVERY_MONTHS:
                warnings.append(f"{constraint.structure} {constraint.metric} {constraint.comparison} "
                                f"{constraint.limit:g} {constraint.unit} is read with the prior courses' dose "
                                f"discounted {100 * constraint.priorRecovery:g} % as its source does "
                                f"({constraint.source}), although course '{course.name}' ended "
                                f"{monthsText(months)} months before: time-based recovery models credit none before "
                                f"{EARLIEST_RECOVERY_MONTHS:g} months")
    return warnings


def organRecoveryKey(courses: list[CourseResult], structure: str, withRecovery: bool | float = True) -> tuple:
    """The recovered fractions ``structure`` is read with in each course (its own tissue's; 0 for a limit read on the
    plain sum; a limit's own fraction for the prior courses): with :func:`organRepairKey`, what an organ's composite
    depends on besides the α/β."""
    if withRecovery is False:
        return (0.0,) * len(courses)
    if withRecovery is not True:
        return tuple(0.0 if c.recoveryMap is None else float(withRecovery) for c in courses)
    return tuple(0.0 if c.recoveryMap is None else c.ownRecovery(structure) for c in courses)


def organCompositeKey(courses: list[CourseResult], alphaBetaGy: float | None, structure: str,
                      withRecovery: bool | float = True) -> tuple:
    """What :func:`compositeAtAlphaBeta` of ``structure`` depends on: the α/β, the organ's repair factors at that α/β
    and its recovered fractions; organs with the same key share one composite (made once per key)."""
    return (alphaBetaGy, None if alphaBetaGy is None else organRepairKey(courses, structure),
            organRecoveryKey(courses, structure, withRecovery))


def _incompleteRepair(inputs: DoseInputs, settings: DoseSettings, tissueTable, ownerLabels, ownerNames,
                      warnings: list[str]):
    """A function ``(numberOfFractions, schedule, what) → (repair factor, summary, {structure: its own tissue's
    factor})`` for the courses and the planned course.

    The factor is 1.0 for one fraction a day; for more, each voxel takes the Thames factor of its owner tissue's
    repair half-time (the case's ``tissues`` entry, else the case's ``repairHalfTimeHours``), one value per tissue
    mapped through the owner labels. A hyperfractionated course with a tissue left without a half-time is refused
    naming it; half-times given while every course is once a day are noted as unused.
    """
    from .radiobiology import incompleteRepairFactor
    from .tissues import repairHalfTimes

    hyper = _hyperfractionated(inputs.courses, settings)
    halfTimes, missing = repairHalfTimes(ownerNames, tissueTable)
    if not hyper:
        if any(value is not None for value in halfTimes):
            warnings.append("repair half-times were given but every course is given once a day: they are not used "
                            "(the incomplete-repair correction is for more than one fraction a day)")
        return lambda n, schedule, what: (1.0, None, None)
    _refuseMissingHalfTimes(hyper, missing, settings.sourcePath or None)
    labelNames = ["outside every structure", *ownerNames]
    perTissue = dict(zip(labelNames, halfTimes, strict=True))

    def factorOf(numberOfFractions: int, schedule: FractionSchedule, what: str):
        """(factor per voxel or one value, summary, {structure: its own tissue's factor}) of one course."""
        if not schedule.isHyperfractionated:
            return 1.0, None, None
        lut = incompleteRepairFactor(numberOfFractions, schedule, np.array(halfTimes, dtype=np.float64))
        factors = lut.astype(np.float32)[ownerLabels] if len(set(lut.tolist())) > 1 else float(lut[0])
        summary = {"model": "incomplete repair between the fractions of a day (Thames 1985, mono-exponential, "
                            "complete repair overnight)", **schedule.toDict(),
                   "repairHalfTimeHours": perTissue,
                   "quadraticFactor": {name: float(lut[k]) for k, name in enumerate(labelNames)}}
        _overnightWarning(numberOfFractions, schedule, perTissue, summary["quadraticFactor"], what, warnings)
        return factors, summary, {name: float(lut[k + 1]) for k, name in enumerate(ownerNames)}

    return factorOf


def _hyperfractionated(courses, settings: DoseSettings) -> list[str]:
    """The courses (and the planned course) given more than once a day, named for messages."""
    hyper = [f"course '{c.name}'" for c in courses if c.schedule.isHyperfractionated]
    if settings.plannedFractions is not None and settings.plannedSchedule.isHyperfractionated:
        hyper.append("the planned course")
    return hyper


def _refuseMissingHalfTimes(hyper: list[str], missing: list[str], where) -> None:
    if missing:
        raise InputError(f"{' and '.join(hyper)} {'give' if len(hyper) > 1 else 'gives'} more than one fraction a "
                         "day, and these voxels have no repair half-time for the incomplete-repair correction: "
                         f"{', '.join(missing)}. Give a repair half-time for every tissue (case file: "
                         "\"repairHalfTimeHours\", per tissue in its 'tissues' entry; module: Repair half-time)",
                         where)


def _checkRepairHalfTimes(case: CaseSpec, masks: dict) -> None:
    """Refuse a case with a course given more than once a day whose structures are not all given a repair half-time
    (the computation would refuse it too, after the registrations)."""
    from .tissues import repairHalfTimes

    settings = DoseSettings.fromCase(case)
    hyper = _hyperfractionated(case.courses, settings)
    if hyper:
        _refuseMissingHalfTimes(hyper, repairHalfTimes(sorted(masks), tissueTableFor(settings))[1], case.path)


def _overnightWarning(numberOfFractions, schedule, perTissue: dict, factors: dict, what: str, warnings: list) -> None:
    """Warn when the complete-repair-overnight assumption understates a tissue's quadratic term by more than 1 %
    (a long half-time and a short night: 4 h and 18 h, CHART's 12 h nights)."""
    from .radiobiology import overnightRepairFactor

    worst = None
    for name, halfTime in perTissue.items():
        full = overnightRepairFactor(numberOfFractions, schedule, halfTime)
        if full > factors[name] * 1.01 and (worst is None or full / factors[name] > worst[1] / worst[2]):
            worst = (name, full, factors[name], halfTime)
    if worst is None:
        return
    name, full, assumed, halfTime = worst
    left = 100.0 * 2.0 ** (-schedule.hoursOvernight / halfTime)
    warnings.append(f"{what}: with a repair half-time of {halfTime:g} h ({name}), the {schedule.hoursOvernight:g} h "
                    f"from a day's last fraction to the next day's first leave {left:.1f} % of the damage unrepaired; "
                    "the model assumes complete repair overnight. Counting it too (days back to back), the "
                    f"quadratic term would be ×{full:.4f} instead of ×{assumed:.4f}: the EQD2 is understated there")


def knownDvh(doseGy: np.ndarray, mask: np.ndarray, geometry: ImageGeometry, name: str):
    """DVH over the structure's voxels whose dose is known; returns ``(dvh, unknownPercent)``.

    Voxels of unknown dose (outside a course's dose grid, NaN) are left out of the DVH and their share of the
    structure is returned, so that nothing unknown is counted as 0 Gy.
    """
    from .dvh import computeDvh

    finite = np.isfinite(doseGy)
    known = mask & finite
    total = int(np.count_nonzero(mask))
    unknownPercent = 100.0 * (total - int(np.count_nonzero(known))) / total if total else 0.0
    if unknownPercent == 0.0:
        return computeDvh(doseGy, mask, geometry, name=name), 0.0
    return computeDvh(np.where(finite, doseGy, 0.0), known, geometry, name=name), unknownPercent


def _criterionConditionsUnmet(constraint, structure: str, courseResults: list[CourseResult], masks: dict,
                              geometry: ImageGeometry, bedOf: list[CourseResult] | None = None) -> list[str]:
    """Why an organ lies outside the conditions of a criterion (``constraint.conditions``): courses closer than
    ``minIntervalMonths`` calendar months (a prior course's date is its last fraction, the next course's its first) or
    of unknown date, a course whose own value of the metric exceeds ``maxCourseBedGy`` as BED at the constraint's α/β
    (BED = EQD2 (1 + 2 / (α/β))) or is unknown. [] when every condition holds. ``bedOf``: the courses whose own BED
    is checked (default: all; the scaling of the current course checks its own as a cap instead)."""
    from .recovery import calendarMonthsBetween

    reasons = []
    minMonths = constraint.condition("minIntervalMonths")
    if minMonths is not None and len(courseResults) > 1:
        if any(c.date is None for c in courseResults):
            undated = ", ".join(f"'{c.name}'" for c in courseResults if c.date is None)
            reasons.append(f"the date of course {undated} is not known, so the ≥ {minMonths:g} months between courses "
                           "cannot be checked (give each course's date)")
        else:
            ordered = sorted(courseResults, key=lambda c: c.date)
            for earlier, later in zip(ordered[:-1], ordered[1:], strict=True):
                # the current course's date is its first fraction; a prior course's its last: its first is estimated
                # (its fractions on five days a week, no break: the latest it can have begun) (a physicist's review:
                # two prior courses read 6.3 months apart began 5.2 months after the first ended)
                start, about = later.date, ""
                if not later.isCurrent and later.startDate is not None:
                    start = later.startDate
                elif not later.isCurrent:
                    perDay = later.schedule.fractionsPerDay
                    start = latestFirstFraction(later.date, later.numberOfFractions, perDay)
                    about = (f" (its first fraction estimated from its last, {later.date.isoformat()}, and its "
                             f"{later.numberOfFractions} fractions{f' ({perDay} a day)' if perDay > 1 else ''} on "
                             f"weekdays: {start.isoformat()} at the latest; give its 'startDate')")
                # courses that overlap (or end the same day) have no interval between them: 0 months
                months = calendarMonthsBetween(earlier.date, start) if start > earlier.date else 0.0
                if months < minMonths:
                    reasons.append(f"course '{earlier.name}' ended {monthsText(months)} months before course "
                                   f"'{later.name}' began{about} (the criterion needs ≥ {minMonths:g}; the phases of "
                                   "one course, e.g. an initial plan and its boost, belong in one course)")
    maxBed = constraint.condition("maxCourseBedGy")
    if maxBed is not None:
        ab = constraint.alphaBetaGy
        for course in (courseResults if bedOf is None else bedOf):
            dvh, unknown = knownDvh(course.eqd2At(ab, structure), masks[structure], geometry, structure)
            value = dvh.metric(constraint.metric).value
            if value is None or unknown > 0:
                reasons.append(f"course '{course.name}' alone: {constraint.metric} of {structure} is unknown, so its "
                               f"BED ≤ {maxBed:g} Gy cannot be checked")
                continue
            bed = float(value) * (1.0 + 2.0 / ab)
            if bed > maxBed:
                reasons.append(f"course '{course.name}' alone gives {structure} {constraint.metric} BED {bed:.1f} Gy "
                               f"(α/β {ab:g} Gy; the criterion needs each course ≤ {maxBed:g})")
    return reasons


def _recoveryCredited(courses: list[CourseResult], structure: str) -> str:
    """What recovery the composite credits ``structure`` per prior course: "recovery credited: 'prior' 25 %
    (constant, 30.0 months before)", or "no recovery credited"; voxels a target owns get none either way."""
    parts, credited = [], False
    for course in courses:
        if course.recoveryMap is None:
            continue
        own = course.ownRecovery(structure) or 0.0
        credited = credited or own > 0
        model = ((course.recovery.get("structures") or {}).get(structure) or {}).get("model") or {}
        name = model.get("model", "none") if isinstance(model, dict) else str(model)
        months = course.recovery.get("intervalMonths")
        when = f", {monthsText(months)} months before" if isinstance(months, (int, float)) else ", interval unknown"
        parts.append(f"'{course.name}' {100 * own:g} % ({name}{when})")
    if not credited:
        return "no recovery credited" + (f" ({'; '.join(parts)})" if parts else "")
    return "recovery credited: " + "; ".join(parts) + " (none where a target owns a voxel)"


def _tissueAlphaBeta(tissueTable, structure: str) -> float | None:
    """The α/β of ``structure``'s own tissue (the DVH table's), or None without a table."""
    if tissueTable is None:
        return None
    return float(tissueTable.entryFor(structure).alphaBetaGy)


def _dvhAndConstraints(settings, masks, geometry, composite, courseResults, warnings: list[str], tissueTable=None):
    """DVHs of the composite and of each course, each structure at its own tissue's α/β (``tissueTable``; the voxel
    α/β map without one), and the constraint results.

    A constraint is stated in EQD2 at its own α/β (e.g. spinal cord at 2 Gy) or, without one, in the dose of its
    source. A cumulative constraint is evaluated on the composite recomputed at its α/β (all courses, the organ's
    own recovery applied; without an α/β the composite at the voxel α/β map), so a structure's tissue α/β or another
    organ's recovery never silently replaces the constraint's organ's; a limit that already allows for recovery
    (``recoveryInLimit``, Nieder's cord criterion) on the courses' plain sum, and outside its ``conditions``
    (interval, each course's BED) "not evaluated" unless it fails anyway. A first-course limit (a single-course
    tolerance, e.g. Tunio's lumbosacral plexus V50 < 30 %) is evaluated on every course alone, one result per
    course, in that course's EQD2 at the constraint's α/β or, without one, its physical dose (its EQD2 at the organ's
    own α/β where higher: a tolerance from conventional fractionation read on a hypofractionated course): a prior
    course's row says what the organ received then (before, only the current course was read, and a plexus that the
    prior course had given V50 90 % passed at 0 %). Every result names the dose it was read from. Where part of the
    organ has unknown dose, a constraint that would pass is reported "not evaluated" (a fail stays a fail: the known
    part alone already breaks it).
    """
    from dataclasses import replace

    from .constraints import ConstraintSet, evaluateConstraints, loadConstraintSet

    dvh: dict = {}
    # each structure's DVHs at its own tissue's α/β and, for the composite, with its own recovery (none where a target
    # owns a voxel), as its constraints read it. At the voxel α/β map a rectum's D2cc labelled α/β 3 was read in its
    # GTV part at α/β 10 (79.31 against 78.47 Gy at α/β 3 in the demo; a hypofractionated course reads higher at 3,
    # so the error changes sign), and the composite map's owner-by-owner recovery gave a rectum inside a 50 % bowel
    # Dmax 45.2 Gy in the DVH table and 70.0 Gy in the constraint table of one report
    ownComposite: dict = {}
    ownCourse: dict = {}
    for name, mask in masks.items():
        if not mask.any():
            continue
        own = _tissueAlphaBeta(tissueTable, name)
        entry = {}
        key = organCompositeKey(courseResults, own, name)
        if key not in ownComposite:
            ownComposite[key] = compositeAtAlphaBeta(courseResults, own, name)
        dvhResult, unknown = knownDvh(ownComposite[key], mask, geometry, name)
        entry["composite"] = dvhResult
        entry["_unknownPercent"] = {"composite": unknown}
        for index, course in enumerate(courseResults):
            courseKey = (index, own, key[1][index] if key[1] is not None else None)
            if courseKey not in ownCourse:
                ownCourse[courseKey] = course.eqd2Gy if own is None else course.eqd2At(own, name)
            entry[course.name], entry["_unknownPercent"][course.name] = knownDvh(ownCourse[courseKey], mask,
                                                                                   geometry, name)
        dvh[name] = entry
    results = []
    if not settings.constraints:
        return dvh, results
    constraintSet = loadConstraintSet(settings.constraints)
    warnings.extend(_earlyPriorRecoveryWarnings(constraintSet, masks, courseResults))

    def doseFor(constraint, course):
        """(a function of the structure giving the dose array, its description) a constraint is read from;
        ``course`` None: the composite, with the structure's own recovery (or none: ``recoveryInLimit``). At a
        constraint's α/β, a course given more than once a day is read with the structure's own repair half-time (as
        with its α/β: also where a target owns the voxel)."""
        ab = constraint.alphaBetaGy
        if course is None:
            recovered = constraint.recoveryRule
            how = ("the organ's own recovery applied" if recovered is True else
                   "summed without recovery: the limit allows for it" if recovered is False else
                   f"every prior course discounted {100 * recovered:g} %, as the limit's source does")
            return (lambda structure: compositeAtAlphaBeta(courseResults, ab, structure, recovered)), (
                f"composite EQD2 {'at the voxel α/β map' if ab is None else f'at α/β {ab:g} Gy'} (all courses, {how})")
        if ab is None:
            # a single-course tolerance from conventional practice (about 2 Gy a fraction), read on the physical
            # dose, or on its EQD2 at the organ's own α/β where that is higher (more than 2 Gy a fraction): a
            # physicist's review: a 5-fraction course giving a femoral head 31.35 Gy (58.1 Gy EQD2 at α/β 3)
            # passed Dmax < 50 Gy on its physical dose
            def physicalOrEqd2(structure):
                own = _tissueAlphaBeta(tissueTable, structure)
                eqd2 = course.eqd2Gy if own is None else course.eqd2At(own, structure)
                return np.fmax(course.mappedDoseGy, eqd2)

            return physicalOrEqd2, (f"course '{course.name}' alone: physical dose, or its EQD2 at the organ's α/β "
                                    "where higher (more than 2 Gy a fraction, or incomplete repair)")
        return (lambda structure: course.eqd2At(ab, structure)), f"course '{course.name}' alone: EQD2 at α/β {ab:g} Gy"

    def doseKey(constraint, course, description, name):
        """Which dose a structure is read from: the description, and the recovered fractions (the composite) and
        repair factors it depends on."""
        if course is None:
            return description, organCompositeKey(courseResults, constraint.alphaBetaGy, name, constraint.recoveryRule)
        if constraint.alphaBetaGy is None:  # the organ's own α/β where the EQD2 exceeds the physical dose
            return description, (_tissueAlphaBeta(tissueTable, name), organRepairKey([course], name))
        return description, organRepairKey([course], name)

    # which structures each dose is read on; each dose is then made once (a full grid each, not kept)
    plan = []
    needed: dict = {}
    for constraint in constraintSet.constraints:
        courses = [None] if constraint.kind == "cumulative" else list(courseResults)
        for course in courses:
            compute, description = doseFor(constraint, course)
            names = [name for name, mask in masks.items() if mask.any() and constraint.matches(name)]
            keys = {name: doseKey(constraint, course, description, name) for name in names}
            for name, key in keys.items():
                needed.setdefault(key, (compute, []))[1].append(name)
            plan.append((constraint, course, courses, description, keys))
    dvhCache: dict = {}
    for key, (compute, names) in needed.items():
        dose = compute(names[0] if key[1] is not None else None)
        for name in dict.fromkeys(names):
            dvhCache[key + (name,)] = knownDvh(dose, masks[name], geometry, name)
        del dose

    for constraint, course, courses, description, keys in plan:
        subset = ConstraintSet(name=constraintSet.name, constraints=(constraint,))
        dvhs = {name: dvhCache[key + (name,)] for name, key in keys.items()}
        courseName = None if course is None else course.name
        for item in evaluateConstraints(subset, {name: d for name, (d, _) in dvhs.items()}):
            item = replace(item, dose=description, course=courseName)
            if course is not None and not course.isCurrent and item.structureName:
                # a prior course's row shares the verdict column with the plan's: say what it is
                delivered = ("dose delivered in a prior course, against its single-course tolerance: what the organ "
                             "received then, not a verdict on the new plan")
                item = replace(item, reason=f"{item.reason}; {delivered}" if item.reason else delivered)
            if course is None and constraint.recoveryRule is True and item.structureName:
                # the recovery actually credited beside the number (ESTRO-EORTC: α/β, recovery and interval with
                # every cumulative dose), not only "the organ's own recovery applied"
                item = replace(item, dose=f"{description}; {_recoveryCredited(courseResults, item.structureName)}")
            if item.structureName is None:
                if course is not None and course is not courses[0]:
                    continue  # an organ that is missing is said once, not once per course
                empty = [name for name, mask in masks.items() if not mask.any() and constraint.matches(name)]
                item = replace(item, dose="" if course is not None else description, course=None)
                if empty:
                    item = replace(item, reason=f"structure '{empty[0]}' is empty (no contours on the reference "
                                                f"grid)", structureName=empty[0])
            unknown = dvhs.get(item.structureName, (None, 0.0))[1] if item.structureName else 0.0
            if constraint.conditions and item.status == "pass":
                outside = _criterionConditionsUnmet(constraint, item.structureName, courseResults, masks, geometry)
                if outside:
                    item = replace(item, passed=None, status="not evaluated", margin=None,
                                   reason=f"outside the conditions of the criterion ({constraint.source}): "
                                          + "; ".join(outside) + f" (the plain sum passes at {item.value:.2f} "
                                          f"{constraint.unit})")
                    warnings.append(f"{item.structureName}: {constraint.describe()} not evaluated, outside the "
                                    "criterion's conditions: " + "; ".join(outside))
            if unknown > 0 and item.status in ("pass", "fail"):
                # the known part's value is at most the whole organ's for Dmax, D/V/CV at cc: an upper limit it
                # breaks is broken, a lower limit it meets is met; anything else cannot be judged on it
                upper = constraint.comparison in ("<", "<=")
                judged = knownPartBound(constraint) == "below" and (item.status == "fail") == upper
                if not judged:
                    what = ("the known part passes" if item.status == "pass" else "the known part fails")
                    if knownPartBound(constraint) is None:
                        what += f", which says nothing of the whole organ for {constraint.metric}"
                    # the value stays (the known part's, said so), the margin goes: it is not the organ's
                    item = replace(item, passed=None, status="not evaluated", margin=None,
                                   reason=f"{unknown:.1f} % of {item.structureName} has unknown dose (outside a "
                                          f"course's dose grid); {what} at {item.value:.2f} {constraint.unit}")
            elif unknown >= 100.0 and item.status == "not evaluated":
                item = replace(item, reason=f"the dose of all of {item.structureName} is unknown (outside a course's "
                                            "dose grid)")
            results.append(item)
    return dvh, results


def currentCourseScaling(settings, masks, geometry, courseResults, alphaBetaMap) -> list[dict]:
    """How far the current course's dose may be scaled before each cumulative limit is reached.

    For every cumulative constraint and organ: the largest factor ``s`` with the organ's metric of
    ``prior + EQD2(s × current)`` within the limit (:func:`.budget.maxPrescriptionScaling`, bisection to 1e-4), where
    ``prior`` is the EQD2 of the prior courses discounted by the organ's own recovery (not for a limit that allows for
    recovery itself, ``recoveryInLimit``) at the constraint's α/β (else the voxel map) and the
    current course keeps its fractions (its dose per fraction scales with ``s``) and its incomplete-repair factor.
    ``s < 1``: the current plan already breaks the limit (0: the prior courses alone reach it). An organ with unknown
    dose in part is read on its known part where that bounds the factor (Dmax, D/V/CV at cc: an upper bound for an
    upper limit, a lower bound for a lower one, ``bound``) and is not evaluated otherwise (Dmean, percentages). Rows
    are dicts (structure, constraint, level, scaling or None, unlimited, the metric at ``s`` and now, bound, reason,
    source).
    """
    if not settings.constraints:
        return []
    from .budget import maxPrescriptionScaling, scaledCourseMetric
    from .constraints import loadConstraintSet

    current = next(c for c in courseResults if c.isCurrent)
    priors = [c for c in courseResults if not c.isCurrent]
    priorAt: dict = {}
    rows = []
    for constraint in loadConstraintSet(settings.constraints).constraints:
        if constraint.kind != "cumulative":
            continue
        ab = constraint.alphaBetaGy
        for name, mask in masks.items():
            if not constraint.matches(name) or not mask.any():
                continue
            # an organ is read with its own recovery and, at a constraint's α/β, its own repair half-time (as in
            # the constraint table)
            recovered = constraint.recoveryRule
            key = organCompositeKey(priors, ab, name, recovered)
            if key not in priorAt:
                if not priors:
                    priorAt[key] = np.zeros(geometry.shape, dtype=np.float64)
                else:
                    priorAt[key] = compositeAtAlphaBeta(priors, ab, name, recovered)
            organ = name if ab is not None else None
            prior, planned = priorAt[key][mask], np.asarray(current.mappedDoseGy, dtype=np.float64)[mask]
            row = {"structure": name, "constraint": constraint.describe(), "level": constraint.level,
                   "alphaBetaGy": ab, "scaling": None, "unlimited": False, "metricAtScaling": None,
                   "metricNow": None, "reason": "", "bound": None, "source": constraint.source}
            known = np.isfinite(prior) & np.isfinite(planned)
            unknownPercent = 100.0 * float(np.count_nonzero(~known)) / known.size
            row["unknownPercent"] = unknownPercent
            if not known.any():
                row["reason"] = f"not evaluated: the dose of {name} is unknown (outside a course's dose grid)"
                rows.append(row)
                continue
            g = current.repairFactorFor(organ)
            g = g if np.ndim(g) == 0 else g[mask][known]
            abValues = ab if ab is not None else alphaBetaMap[mask][known]
            volumes = np.full(np.count_nonzero(known), geometry.voxelVolumeCc)

            # the constraint's metric of the organ's known part with the current course scaled by the argument
            metricAt = functools.partial(scaledCourseMetric, prior[known], planned[known], current.numberOfFractions,
                                         abValues, volumes, constraint, repairFactor=g, name=name)

            if constraint.conditions:
                # a criterion that holds only under its conditions (Nieder's: ≥ 6 months between courses, each course
                # ≤ 98 Gy₂ BED) gives no factor outside them, and none that takes the current course beyond them (a
                # physicist's review: ×1.960 was offered against it with courses 3 months apart, and at ×1.960 the
                # current course alone gave the cord 116 Gy₂)
                unmet = _criterionConditionsUnmet(constraint, name, courseResults, masks, geometry, bedOf=priors)
                if unmet:
                    row["reason"] = "not evaluated: outside the criterion's conditions: " + "; ".join(unmet)
                    row["metricNow"] = metricAt(1.0)
                    rows.append(row)
                    continue
            selected = np.ones(np.count_nonzero(known), dtype=bool)
            found = maxPrescriptionScaling(prior[known], planned[known], current.numberOfFractions, abValues, selected,
                                           geometry.voxelVolumeCc, constraint, name, repairFactor=g)
            row.update(scaling=None if found.scaling is None or np.isinf(found.scaling) else float(found.scaling),
                       unlimited=found.scaling is not None and bool(np.isinf(found.scaling)),
                       metricAtScaling=found.metricValueAtScaling, reason=found.reason)
            maxBed = constraint.condition("maxCourseBedGy")
            if maxBed is not None and (row["unlimited"] or row["scaling"] is not None):
                # the current course alone must stay within the criterion's BED per course
                courseLimit = dataclasses.replace(constraint, limit=eqd2FromBedGy(maxBed, ab), comparison="<=",
                                                  conditions=())
                own = maxPrescriptionScaling(np.zeros(np.count_nonzero(known)), planned[known],
                                             current.numberOfFractions, abValues, selected, geometry.voxelVolumeCc,
                                             courseLimit, name, repairFactor=g)
                if own.scaling is not None and not np.isinf(own.scaling) and (
                        row["unlimited"] or own.scaling < row["scaling"]):
                    row.update(scaling=float(own.scaling), unlimited=False,
                               metricAtScaling=metricAt(float(own.scaling)),
                               reason=f"capped by the criterion's condition: beyond ×{own.scaling:.3f} the current "
                                      f"course alone gives {name} more than {maxBed:g} Gy BED (α/β {ab:g} Gy)")
            if row["unlimited"]:
                row["reason"] = "not limiting up to ×1000 of the current course's dose"
            elif found.scaling == 0.0 and not np.any(planned[known] > 0):
                row["reason"] = "the prior courses alone already reach the limit; the current course gives no dose here"
            row["metricNow"] = metricAt(1.0)
            if unknownPercent > 0:
                unknownText = f"{unknownPercent:.1f} % of {name} has unknown dose (outside a course's dose grid)"
                if knownPartBound(constraint) is None:  # Dmean, V%, ...: the known part says nothing of the whole
                    row.update(scaling=None, unlimited=False, metricAtScaling=None, metricNow=None,
                               reason=f"not evaluated: {unknownText}, and {constraint.metric} of the known part says "
                                      "nothing of the whole organ")
                elif constraint.comparison not in ("<", "<=") and row["scaling"] == 0.0:
                    # a lower limit (volume below a dose) the known part alone does not meet: the rest may meet it
                    row.update(scaling=None, metricAtScaling=None,
                               reason=f"not evaluated: {unknownText}, and the known part alone does not meet the "
                                      "limit")
                elif row["scaling"] == 0.0 and constraint.comparison in ("<", "<="):
                    row["reason"] = f"{unknownText}; the known part alone already reaches the limit" + (
                        f"; {row['reason']}" if row["reason"] else "")
                else:  # the known part's metric is at most the whole's: a bound on the factor
                    bound = "upper" if constraint.comparison in ("<", "<=") else "lower"
                    row["bound"] = bound
                    row["reason"] = (f"{'an upper' if bound == 'upper' else 'a lower'} bound: {unknownText} and may "
                                     f"allow {'less' if bound == 'upper' else 'more'}"
                                     + (f"; {row['reason']}" if row["reason"] else ""))
            rows.append(row)
    return rows


def knownPartBound(constraint) -> str | None:
    """How a constraint's metric read on an organ's known part (dose known in every course) relates to the whole
    organ's: "below" when it can only be lower or equal (Dmax, D at cc, V at cc, CV at cc: the known voxels are a
    subset), None when it may be either (Dmean, Dmin, any percentage of the volume: a known part that is all hot
    reads V20Gy[%] 100 % of an organ whose cold unknown rest makes it 40 %)."""
    from .dvh import parseDvhMetric

    try:
        metric = parseDvhMetric(constraint.metric)
    except InputError:
        return None
    if metric.kind == "dmax" or (metric.kind in ("dose-at-volume", "volume-at-dose", "volume-below-dose")
                                 and metric.volumeUnit == "cc"):
        return "below"
    return None


def givesVoxelBudget(constraint) -> bool:
    """Whether a limit gives a per-voxel remaining budget: a cumulative upper limit in Gy on a near-maximum (Dmax,
    D0.03cc, D0.1cc, D1cc, D2cc), applied voxel by voxel as a maximum (conservative for D2cc). Volume and mean
    limits (V40Gy, Dmean) give none."""
    metric = str(constraint.metric).replace(" ", "").lower()
    return (constraint.kind == "cumulative" and constraint.unit == "Gy" and constraint.isUpperLimit
            and (metric.startswith("dmax") or metric in ("d0.03cc", "d0.1cc", "d2cc", "d1cc")))


def _remainingBudget(settings, masks, geometry, courseResults, repairFactorOf, alphaBetaMap):
    """Per voxel, the largest physical dose a planned course of n fractions may add before the tightest cumulative
    near-maximum limit (Dmax, D0.03cc, D0.1cc, D2cc) of every organ containing the voxel is reached (LQ inverse,
    REFERENCE §1, at the constraint's α/β, else at the voxel α/β map as the constraint table reads it; every course
    with the organ's own recovery, none for a limit that allows for recovery itself; a planned course given more than
    once a day with its incomplete-repair factor). NaN outside constrained organs and where a course's dose is
    unknown; a row's minimum is then over the organ's known part only (an upper bound: the unknown part may allow
    less), its ``unknownPercent`` says how much."""
    if settings.plannedFractions is None or not settings.constraints:
        return None, []
    _, plannedRepair, plannedOrganFactors = repairFactorOf(settings.plannedFractions, settings.plannedSchedule,
                                                            "the planned course")
    from .budget import remainingPhysicalDoseGy
    from .constraints import loadConstraintSet

    constraintSet = loadConstraintSet(settings.constraints)
    budget = np.full(geometry.shape, np.nan, dtype=np.float32)
    rows = []
    compositeFor: dict[tuple, np.ndarray] = {}
    for constraint in constraintSet.constraints:
        if not givesVoxelBudget(constraint):
            continue
        ab = constraint.alphaBetaGy
        recovered = constraint.recoveryRule
        for name, mask in masks.items():
            if not constraint.matches(name) or not mask.any():
                continue
            key = organCompositeKey(courseResults, ab, name, recovered)
            if key not in compositeFor:
                compositeFor[key] = compositeAtAlphaBeta(courseResults, ab, name, recovered)
            prior = compositeFor[key][mask].astype(np.float64)
            abValues = ab if ab is not None else alphaBetaMap[mask]
            plannedFactor = (plannedOrganFactors or {}).get(name, 1.0)
            note = f" ({constraint.recoveryNote})" if constraint.recoveryNote else ""
            row = {"structure": name, "constraint": f"{constraint.metric} {constraint.comparison} "
                   f"{constraint.limit:g} Gy EQD2{note}",
                   "alphaBetaGy": ab if ab is not None else "voxel map",
                   "allCoursesMaxEqd2Gy": float(np.nanmax(prior)) if np.isfinite(prior).any() else None}
            planned = {"plannedFractions": settings.plannedFractions,
                       "plannedFractionsPerDay": settings.plannedSchedule.fractionsPerDay}
            conditionNote = ""
            if constraint.conditions:
                # a criterion that holds only under its conditions gives no budget outside them, and the planned
                # course itself must stay within them (a physicist's review: 23.0 Gy was offered against Nieder's
                # criterion with courses 3 months apart)
                unmet = _criterionConditionsUnmet(constraint, name, courseResults, masks, geometry)
                if unmet:
                    rows.append({**row, "minRemainingPhysicalGy": None, "unknownPercent": None, **planned,
                                 "note": "no budget (NaN in the map): outside the criterion's conditions: "
                                         + "; ".join(unmet),
                                 "source": constraint.source})
                    continue
                months, maxBed = constraint.condition("minIntervalMonths"), constraint.condition("maxCourseBedGy")
                parts = []
                if months is not None:
                    parts.append(f"the planned course must begin ≥ {months:g} months after the last course ended")
                if maxBed is not None:
                    parts.append(f"capped where the planned course alone would exceed {maxBed:g} Gy BED")
                conditionNote = "the criterion's conditions: " + "; ".join(parts)
            allowed = remainingPhysicalDoseGy(constraint.limit - prior, settings.plannedFractions, abValues,
                                              repairFactor=plannedFactor)
            maxBed = constraint.condition("maxCourseBedGy")
            if maxBed is not None:
                ownCap = remainingPhysicalDoseGy(np.full(prior.shape, eqd2FromBedGy(maxBed, ab)),
                                                 settings.plannedFractions, abValues, repairFactor=plannedFactor)
                allowed = np.minimum(allowed, ownCap)  # NaN (unknown dose) stays NaN
            current = budget[mask]
            budget[mask] = np.where(np.isnan(current), allowed, np.fmin(current, allowed))
            finite = np.asarray(allowed)[np.isfinite(allowed)]
            unknownPercent = 100.0 * float(np.count_nonzero(~np.isfinite(prior))) / prior.size
            rows.append({**row,
                         "minRemainingPhysicalGy": float(finite.min()) if finite.size else None,
                         "unknownPercent": unknownPercent, **planned,
                         **({} if plannedRepair is None else {
                             "plannedRepairHalfTimeHours": plannedRepair["repairHalfTimeHours"][name],
                             "plannedQuadraticFactor": plannedOrganFactors[name]}),
                         "note": "; ".join(n for n in (conditionNote, "" if unknownPercent == 0 else
                                  f"{unknownPercent:.1f} % of {name} has unknown dose: the minimum is over its known "
                                  "part, an upper bound (the rest may allow less)") if n),
                         "source": constraint.source})
    return budget, rows
