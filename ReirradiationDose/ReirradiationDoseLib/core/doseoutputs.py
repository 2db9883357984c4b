"""Write every output of a dose workflow result into a folder, atomically.

Files (on the reference grid, LPS geometry in the NRRD headers)::

    composite_eqd2.nrrd        Gy EQD2, NaN where any course's dose is unknown (outside its dose grid)
    course_<name>_eqd2.nrrd    each course's EQD2 (recovery not applied)
    course_<name>_physical.nrrd  each course's physical dose mapped onto the reference grid
    alpha_beta.nrrd            the α/β map used (Gy)
    remaining_budget.nrrd      largest physical dose a planned course may add (when a planned course is given)
    dvh.csv, constraints.csv, summary.json, report.html
    contour_check.csv          the contour check of each course's registration (courses with their own structures)
    composite_eqd2.dcm         RTDOSE (DoseType EFFECTIVE, SeriesDescription states EQD2 and α/β); where the
                               composite is unknown, the known courses' sum (a lower bound), said in DoseComment
    *.png, scene.mrb           pictures and the Slicer scene, through ``pictureWriter`` (the mrml layer)
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .atomic import atomicOutputDir, safeName
from .dosereport import constraintRows, contourCheckRows, dvhRows, reportHtml, summaryDict, writeCsv
from .geometry import ImageGeometry, imageFromArray
from .progress import noProgress
from .recovery import monthsText
from .rtdose import PHYSICAL_QUANTITY, QUANTITY_KEY

logger = logging.getLogger(__name__)

__all__ = ["writeDoseOutputs", "safeName"]


def writeNrrd(path: Path, array: np.ndarray, geometry, quantity: str = "", unit: str = "Gy", kind: str = "") -> Path:
    """A float32 map as compressed NRRD; ``quantity`` and ``unit`` go into its header (``quantity:=...``,
    ``unit:=...``), so that the file says what its numbers are without the report beside it, and ``kind`` (what it
    holds: ``rtdose.PHYSICAL_QUANTITY``, "EQD2", "alpha/beta", ...) into ``ReirradiationDose.Quantity``, which the
    dose reader checks: only a physical dose is taken as a course's dose."""
    image = imageFromArray(np.asarray(array, dtype=np.float32), geometry)
    if quantity:
        image.SetMetaData("quantity", quantity)
        image.SetMetaData("unit", unit)
    if kind:
        image.SetMetaData(QUANTITY_KEY, kind)
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


def writeDoseOutputs(result, outputDir, pictures: bool | Callable = True, includeIdentity: bool = False,
                     anonymize: bool = False, progress=None) -> list[Path]:
    """Write all outputs; returns the written paths (inside the final folder).

    ``pictures``: False for none; True to use the mrml layer's renderer when slicer-core is importable; or a
    callable ``(result, folder) -> dict[title, png bytes]`` that writes PNGs and the scene into ``folder``.
    """
    progress = progress or noProgress
    # the writers' warnings (RTDOSE lower bound, pictures skipped) go to a copy: writing the same result twice (the
    # module's Save) repeated them in the result and in the second summary
    result = copy.copy(result)
    result.warnings = list(result.warnings)
    written: list[str] = []
    geometry = result.referenceGeometry
    with atomicOutputDir(outputDir) as folder:
        progress(0.0, "Writing volumes")
        unknown = "; NaN = unknown (outside a course's dose grid)"
        written.append(writeNrrd(folder / "composite_eqd2.nrrd", result.compositeEqd2Gy, geometry,
                                 "composite EQD2: sum over courses of (1 - recovery) x EQD2 at the voxel alpha/beta "
                                 "(alpha_beta.nrrd)" + unknown, kind="EQD2 (composite)").name)
        for course in result.courses:
            stem = f"course_{safeName(course.name)}"
            written.append(writeNrrd(folder / f"{stem}_eqd2.nrrd", course.eqd2Gy, geometry,
                                     f"EQD2 of course {safeName(course.name)} alone ({course.numberOfFractions} "
                                     "fractions) at the voxel alpha/beta, no recovery" + unknown,
                                     kind="EQD2").name)
            written.append(writeNrrd(folder / f"{stem}_physical.nrrd", course.mappedDoseGy, geometry,
                                     f"physical dose of course {safeName(course.name)} on the reference grid"
                                     + unknown, kind=PHYSICAL_QUANTITY).name)
        written.append(writeNrrd(folder / "alpha_beta.nrrd", result.alphaBetaGy, geometry,
                                 "alpha/beta of the tissue owning each voxel", kind="alpha/beta").name)
        if result.remainingBudgetGy is not None:
            written.append(writeNrrd(folder / "remaining_budget.nrrd", result.remainingBudgetGy, geometry,
                                     f"largest physical dose a planned course of {result.settings.plannedFractions} "
                                     f"fractions ({result.settings.plannedSchedule.describe()}) may add before the "
                                     "tightest cumulative near-maximum limit of the organs holding the voxel; NaN "
                                     "where no limit gives one (outside constrained organs, outside a criterion's "
                                     "conditions) and where a course's dose is unknown",
                                     kind="remaining budget of a planned course").name)

        written += _writeRegistrations(result, folder, anonymize)
        progress(0.2, "Writing tables")
        writeCsv(folder / "dvh.csv", dvhRows(result))
        writeCsv(folder / "constraints.csv", constraintRows(result))
        written += ["dvh.csv", "constraints.csv"]
        contourRows = contourCheckRows(result)
        if contourRows:
            writeCsv(folder / "contour_check.csv", contourRows)
            written.append("contour_check.csv")

        progress(0.3, "Writing the RTDOSE")
        rtdosePath, ps = _writeRtDose(result, folder / "composite_eqd2.dcm", anonymize, result.warnings)
        written.append(rtdosePath.name)
        newUids = {"studyInstanceUid": ps.studyInstanceUid, "frameOfReferenceUid": ps.frameOfReferenceUid}

        images: dict[str, bytes] = {}
        if pictures:
            progress(0.4, "Rendering the slice views and the scene")
            writer = pictures if callable(pictures) else _defaultPictureWriter()
            if writer is None:
                result.warnings.append("pictures and scene.mrb skipped: slicer-core is not installed")
            else:
                images = _writePictures(writer, result, folder)
                written += [p.name for p in folder.glob("*.png")] + [p.name for p in folder.glob("*.mrb")]

        progress(0.9, "Writing the report")
        summary = summaryDict(result, includeIdentity=includeIdentity and not anonymize, anonymize=anonymize,
                              newUids=newUids)
        (folder / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        (folder / "report.html").write_text(reportHtml(result, images, includeIdentity and not anonymize,
                                                       anonymize=anonymize), encoding="utf-8")
        written += ["summary.json", "report.html"]
    progress(1.0, "Outputs written")
    final = Path(outputDir)
    return [final / name for name in dict.fromkeys(written)]


def _writePictures(writer, result, folder: Path) -> dict[str, bytes]:
    """The pictures and the scene through ``writer``; should it fail, none of them (what it made is removed) and a
    warning naming the step and the error: they are a view of the numbers, and a rendering failure (no OpenGL
    context, scene.mrb not written) used to throw away every numeric output of the run."""
    from .progress import ProcessingCancelled

    try:
        return writer(result, folder) or {}
    except ProcessingCancelled:
        raise
    except Exception as error:
        logger.exception("The pictures could not be written")
        for made in [*folder.glob("*.png"), *folder.glob("*.mrb")]:
            made.unlink()
        step = getattr(writer, "__name__", type(writer).__name__)
        result.warnings.append(f"pictures and scene.mrb skipped: the picture step ({step}) failed: "
                               f"{type(error).__name__}: {error}")
        return {}


def _writeRegistrations(result, folder: Path, anonymize: bool = False) -> list[str]:
    """The transforms used (reference CT LPS -> course / MRI LPS, SimpleITK convention), so a run can be reviewed
    and reused: ``registration_<course>.h5`` and ``registration_mri.tfm``; and each course's registration as a
    DICOM REG (``registration_<course>.dcm``, spatial or deformable) for a planning system, when both frames of
    reference are known and the run is not anonymised."""
    from .transformio import writeTransform

    names = []
    for course in result.courses:
        if course.transform is not None:
            path = folder / f"registration_{safeName(course.name)}.h5"
            writeTransform(course.transform, path)
            names.append(path.name)
            regName = _writeDicomRegistration(result, course, folder, anonymize)
            if regName:
                names.append(regName)
    if result.mri is not None and result.mri.get("transform") is not None:
        transform = result.mri["transform"]
        suffix = ".h5" if "Displacement" in transform.GetName() or "Composite" in transform.GetName() else ".tfm"
        path = folder / f"registration_mri{suffix}"
        writeTransform(transform, path)
        names.append(path.name)
    return names


def _writeDicomRegistration(result, course, folder: Path, anonymize: bool) -> str | None:
    from . import dicomreg
    from .registration import FIELD_EXPORT_SPACING_MM

    fixedUid = str(result.referenceInfo.get("frameOfReferenceUid") or "")
    # the frame of the image that was registered (the course's CT); the dose's only when no image was (a file)
    movingUid = str((course.registration or {}).get("movingFrameOfReferenceUid")
                    or (course.doseInfo or {}).get("frameOfReferenceUid") or "")
    if anonymize or not fixedUid or not movingUid or fixedUid == movingUid:
        return None
    grid = ImageGeometry.fromImage(result.referenceImage).coarsened(FIELD_EXPORT_SPACING_MM)
    path = folder / f"registration_{safeName(course.name)}.dcm"
    dicomreg.writeDicomRegistration(path, course.transform, fixedUid, movingUid,
                                    _patientStudyFor(result.referenceInfo, anonymize=False),
                                    referenceGrid=grid.emptyImage(sitk.sitkUInt8),
                                    seriesDescription=f"Reirradiation: {course.name} to current CT",
                                    contentDescription=f"course '{course.name}' registered onto the reference CT")
    return path.name


def _defaultPictureWriter():
    try:
        from ..mrml.dosescene import writeDosePictures
    except ImportError as error:  # slicer-core absent: pictures are optional in headless use
        logger.info("No pictures: %s", error)
        return None
    return writeDosePictures


def _writeRtDose(result, path: Path, anonymize: bool, warnings: list | None = None):
    """The composite as an RTDOSE referencing the planning CT's study and frame of reference.

    Unknown voxels (NaN: some course's dose is unknown there) cannot be stored in an RTDOSE. They are written as the
    lower bound the known courses give, Σ (1 − r) EQD2 over the courses known at the voxel (an unknown course adds
    ≥ 0), and 0 Gy where no course is known; DoseComment (which planning systems show) says so with the share of the
    grid, ImageComments in full, and ``warnings`` gets it. Before, they were 0 Gy: the demo's Bowel Dmean from the
    file read 9.69 Gy against 12.38 Gy in the report, with up to 49.9 Gy of the prior course known under the zeros.
    A reference image without a DICOM frame of reference (NRRD, a volume not loaded from DICOM) gives an RTDOSE
    with new UIDs, warned.
    """
    from . import dicomwrite

    warnings = [] if warnings is None else warnings
    composite = np.asarray(result.compositeEqd2Gy, dtype=np.float32)
    unknown = ~np.isfinite(composite)
    # DoseComment holds 64 characters (LO): its first sentence(s) that fit; ImageComments (LT) holds the whole text
    credited, recoveryText = _recoveryCredit(result)
    lead = "recovery in organs" if credited else "no recovery credited"  # fits "EQD2 Gy, <lead>. Lower bound ..."
    comment = (f"Composite EQD2 (Gy), {'recovery credited to some organs' if credited else lead}. Sum of "
               f"(1 - recovery) x EQD2 of courses. Voxel-wise alpha/beta. {recoveryText}")
    if unknown.any():
        bound, noneKnown = knownCoursesSum(result, unknown)
        share = 100.0 * int(unknown.sum()) / unknown.size
        comment = (f"EQD2 Gy, {lead}. Lower bound in {share:.1f} % of grid. " + comment
                   + f" Where a course's dose is unknown ({int(unknown.sum())} voxels, {share:.1f} % of the grid: "
                   "outside its dose grid) the values are a lower bound: the sum over the courses known there only.")
        message = (f"RTDOSE: {int(unknown.sum())} voxels ({share:.1f} % of the grid) of unknown composite dose (a "
                   "course's dose is unknown there) written as a lower bound (the known courses' sum)")
        if noneKnown:
            comment += f" {noneKnown} voxels where no course's dose is known are 0."
            message += f"; {noneKnown} of them, where no course's dose is known, as 0 Gy"
        warnings.append(message)
        composite = np.where(unknown, bound, composite).astype(np.float32)
    abValues = sorted({round(float(v), 2) for v in np.unique(result.alphaBetaGy)})
    description = "EQD2 composite, a/b " + "/".join(f"{v:g}" for v in abValues) + " Gy (voxel-wise)"
    if len(description) > 64:  # LO: the range and the count rather than a list cut in the middle of a value
        description = (f"EQD2 composite, a/b {abValues[0]:g}-{abValues[-1]:g} Gy ({len(abValues)} values, "
                       "voxel-wise)")
    info = result.referenceInfo
    if not info.get("frameOfReferenceUid") and not anonymize:
        source = Path(str(info.get("path") or "")).name or str(info.get("node") or "the reference image")
        warnings.append(f"RTDOSE: the reference image ({source}) carries no DICOM frame of reference (it was "
                        "not read from DICOM): the RTDOSE has a new frame of reference and study, and a "
                        "planning system will not place it on the planning CT by itself")
    ps = _patientStudyFor(info, anonymize)
    overlong = ps.overlongIdentity()
    if overlong:
        warnings.append(f"RTDOSE: the planning CT's {overlong} is longer than DICOM's 64 characters: written as it "
                        "is (never cut: a shortened ID names another patient); a strict reader may refuse the file "
                        "(--anonymize writes none)")
    # the plans summed (each course's RTDOSE names its RTPLAN), as a MULTI_PLAN dose references them; not when
    # anonymised (the UIDs lead back to the patient's own records)
    plans = [] if anonymize else [str((c.doseInfo or {}).get("referencedPlanUid") or "") for c in result.courses]
    dicomwrite.writeRtDose(path, composite, result.referenceGeometry, ps, doseType="EFFECTIVE",
                           summationType="MULTI_PLAN", seriesDescription=description, comment=comment,
                           referencedPlanUid=plans)
    return path, ps


def _recoveryCredit(result) -> tuple[bool, str]:
    """Whether the composite credits recovery of any prior course, and a sentence naming it for every prior course
    (organ, fraction, model, interval; "none" for a course credited nothing) (a physicist's review: the RTDOSE a
    planning system shows did not say whether its prior dose was discounted; a verification review: a course
    credited nothing went unmentioned and 0.4 % read "0 %")."""
    parts, credited = [], False
    for course in result.courses:
        if course.isCurrent:
            continue
        recovery = course.recovery or {}
        months = recovery.get("intervalMonths")
        when = "" if months is None else f" ({monthsText(months)} months before)"
        structures = [f"{name} {100.0 * float(d['fraction']):.3g} % ({(d.get('model') or {}).get('model', '?')})"
                      for name, d in (recovery.get("structures") or {}).items() if (d.get("fraction") or 0.0) > 0]
        if not structures and recovery.get("maxRecoveredFraction"):
            structures = [f"up to {100.0 * float(recovery['maxRecoveredFraction']):.3g} % (outside the structures)"]
        credited = credited or bool(structures)
        parts.append(f"'{course.name}'{when}: " + (", ".join(structures) if structures else "none"))
    if not credited:
        return False, "No recovery credited: prior courses count in full."
    return True, ("Recovery credited to some organs (their prior EQD2 discounted; none where a target owns a "
                  "voxel): " + "; ".join(parts) + ".")


def knownCoursesSum(result, unknown: np.ndarray) -> tuple[np.ndarray, int]:
    """Σ (1 − r_k) EQD2_k over the courses whose dose is known at each voxel (the composite's own recovery map per
    course), and how many ``unknown`` voxels no course is known at (0 there). Where every course is known it equals
    the composite; elsewhere it is a lower bound, as each unknown course's EQD2 is ≥ 0."""
    from .radiobiology import compositeEqd2

    courses = list(result.courses)
    if not courses:
        return np.zeros(unknown.shape, dtype=np.float64), int(unknown.sum())
    eqd2s = [np.asarray(c.eqd2Gy, dtype=np.float64) for c in courses]
    known = np.zeros(unknown.shape, dtype=bool)
    for eqd2 in eqd2s:
        known |= np.isfinite(eqd2)
    recoveries = [c.recoveryFor() for c in courses]
    bound = compositeEqd2([np.where(np.isfinite(e), e, 0.0) for e in eqd2s], recoveries)
    return bound, int(np.count_nonzero(unknown & ~known))


def _patientStudyFor(info: dict, anonymize: bool):
    """The planning CT's patient/study/frame of reference for the output RTDOSE.

    With ``anonymize`` the identity is removed and the study and frame-of-reference UIDs are replaced by new UIDs
    derived from the originals with a per-run random salt: consistent within the run, not traceable back; the study
    date and time are left empty (General Study Type 2; the series and content dates follow them, Type 3 / 2C),
    as the PS3.15 Basic Profile blanks them: the planning CT's date was kept before.
    """
    import datetime as _dt
    import secrets

    from pydicom.uid import generate_uid

    from . import dicomwrite

    studyDate = str(info.get("studyDate") or _dt.date.today().strftime("%Y%m%d"))
    studyUid = info.get("studyInstanceUid") or generate_uid()
    frameUid = info.get("frameOfReferenceUid") or generate_uid()
    name, pid = str(info.get("patientName") or ""), str(info.get("patientId") or "")
    if anonymize:
        salt = secrets.token_hex(16)
        studyUid = generate_uid(entropy_srcs=[salt, studyUid])
        frameUid = generate_uid(entropy_srcs=[salt, frameUid])
        name, pid = "ANONYMOUS", "ANON"
        return dicomwrite.PatientStudy(patientName=name, patientId=pid, studyInstanceUid=studyUid, studyDate="",
                                       studyTime="", frameOfReferenceUid=frameUid,
                                       studyDescription="Re-irradiation composite EQD2")
    return dicomwrite.PatientStudy(patientName=name, patientId=pid, studyInstanceUid=studyUid, studyDate=studyDate,
                                   frameOfReferenceUid=frameUid, studyDescription="Re-irradiation composite EQD2")
