"""``reirradiation eqd2``: EQD2 (and optionally BED) per voxel of one course's physical dose.

α/β is either one number (``--alpha-beta``) or a voxel map from structures and the tissue table
(``--segmentation`` + ``--tissues``; overlaps resolved by the table's priority rule, REFERENCE §1). A course given more
than once a day (``--fractions-per-day 2 --hours-between-fractions 6``) needs a repair half-time
(``--repair-half-time``, hours; with ``--segmentation`` a tissue table's own half-times take precedence) for the
incomplete-repair correction (Thames 1985, radiobiology.incompleteRepairFactor).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.geometry import ImageGeometry

NAME = "eqd2"
HELP = "convert a physical dose of one course to EQD2 (Gy) per voxel, d = voxel dose / fractions"

logger = logging.getLogger(__name__)


def readDoseFile(path: str | Path, physicalOnly: bool = False, sessions: float | None = None
                 ) -> tuple[np.ndarray, ImageGeometry, dict]:
    """Dose in Gy and its grid from an image file (NRRD, NIfTI, MHA via SimpleITK) or a DICOM RTDOSE.
    ``physicalOnly``: refuse an RTDOSE that is neither a whole plan's nor a whole fraction group's dose
    (:func:`rtdose.requirePlanDose`), or is already an EQD2 (converted again it would count the fractionation
    twice); a sum of plans only with ``sessions`` (the plans given together in that many sessions). Images are read
    by ``rtdose.readScalarDoseImage`` and checked by
    ``rtdose.checkedDoseArray`` as the dose command reads them; NaN (unknown dose) and negative values are accepted
    unless ``physicalOnly`` (``dvh`` of a composite or a difference)."""
    path = Path(path)
    if not path.exists():
        raise InputError("the dose file does not exist", path)
    from ..core.dicomimage import isDicomPath

    isDicom = path.is_dir() or isDicomPath(path)  # also an RTDOSE without ".dcm" or the 128-byte preamble
    if isDicom:
        from ..core.rtdose import readRtDose, refuseEqd2Dose, requirePlanDose

        rtDose = readRtDose(path)
        if physicalOnly:
            requirePlanDose(refuseEqd2Dose(rtDose, path), path, sessions=sessions)
            from ..core.rtdose import isPlanSum, planSumWarning

            if isPlanSum(rtDose):
                logger.warning("%s", planSumWarning(rtDose, sessions, Path(path).name))
        return (np.asarray(rtDose.doseGy, dtype=np.float32), rtDose.geometry,
                {"format": "RTDOSE", "doseType": rtDose.doseType, "summationType": rtDose.summationType,
                 "frameOfReferenceUid": rtDose.frameOfReferenceUid, "referencedPlanUid": rtDose.referencedPlanUid,
                 "referencedFractionGroupNumber": rtDose.referencedFractionGroupNumber})
    from ..core.rtdose import checkedDoseArray, headerQuantity, readScalarDoseImage, refuseNonPhysicalMap

    image = readScalarDoseImage(path)
    if physicalOnly:  # before the values: an EQD2 map of the dose command holds NaN where its dose is unknown
        refuseNonPhysicalMap(headerQuantity(image), path)
    dose = checkedDoseArray(image, path, allowUnknown=not physicalOnly, allowNegative=not physicalOnly)
    return dose, ImageGeometry.fromImage(image), {"format": "image", "quantity": headerQuantity(image)}


def _courseFractions(args, doseInfo: dict) -> tuple[int, str, float | None, bool]:
    """The number of fractions, where it comes from, the plan's prescription (None without) and whether that is one
    fraction group's of a plan of several (:func:`prescriptionWarning`'s ``ofGroup``): ``--fractions``, else
    the RTPLAN (``--plan``): of the fraction group the RTDOSE names, a plan the RTDOSE names another than refused,
    ``--fractions`` that differ from the plan's used and warned (a physicist's review: a wrong --fractions went
    unnoticed where the dose command warns)."""
    from types import SimpleNamespace

    from ..core.pipeline import checkPlanOfDose, planFractionsOfDose, planPrescriptionOfDose
    from ..core.radiobiology import validateNumberOfFractions
    from ..core.rtplan import readRtPlan

    given = None if args.fractions is None else validateNumberOfFractions(args.fractions)
    if args.plan is None:
        return given, "command line", None, False
    plan = readRtPlan(Path(args.plan))
    dose = SimpleNamespace(**{k: doseInfo.get(k) for k in ("referencedPlanUid", "referencedFractionGroupNumber",
                                                           "summationType")}, path=args.dose)
    prescription = planPrescriptionOfDose(plan, dose)
    ofGroup = len(plan.fractionGroups) > 1
    checkPlanOfDose(plan, dose, args.plan, args.dose, "--plan", "or --fractions without --plan")
    planName = Path(args.plan).name
    try:
        planFractions = planFractionsOfDose(plan, dose)
    except InputError as error:
        if given is None:
            raise
        logger.warning("%s fractions (--fractions) are used: the RTPLAN (%s) gives no single number (%s)", given,
                       planName, str(error).removeprefix(f"{error.path}: "))
        return given, "--fractions (the RTPLAN gives no single number)", prescription, ofGroup
    if given is None:
        return planFractions, f"RTPLAN {planName}", prescription, ofGroup
    if given != planFractions:
        logger.warning("%d fractions (--fractions) replace the %d of the RTPLAN (%s)", given, planFractions, planName)
        return given, f"--fractions (overrides RTPLAN's {planFractions})", prescription, ofGroup
    return given, "--fractions (as the RTPLAN)", prescription, ofGroup


def addArguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dose", required=True, help="physical dose of the course (NRRD/NIfTI/MHA in Gy, or RTDOSE)")
    parser.add_argument("--fractions", type=float,
                        help="number of fractions of the course (with --plan: overrides the plan's, warned)")
    parser.add_argument("--plan", help="the course's RTPLAN: its number of fractions (of the fraction group the RTDOSE "
                                       "names), and a plan the RTDOSE does not belong to refused")
    parser.add_argument("--alpha-beta", type=float, help="α/β in Gy for every voxel (e.g. 3)")
    parser.add_argument("--segmentation", help="structures (.seg.nrrd, .seg.vtm, RTSTRUCT) for a voxel α/β map")
    parser.add_argument("--tissues", default="default",
                        help="tissue table JSON for the α/β map ('default': the shipped table)")
    parser.add_argument("--default-alpha-beta", type=float, default=None,
                        help="α/β outside every structure with --segmentation (default: the table's, 3 Gy)")
    parser.add_argument("--fractions-per-day", type=int, default=1,
                        help="fractions given per day (default 1; 2 for twice a day: incomplete repair is modelled)")
    parser.add_argument("--hours-between-fractions", type=float, default=None,
                        help="hours between the fractions of one day (needed with --fractions-per-day above 1)")
    parser.add_argument("--repair-half-time", type=float, default=None,
                        help="repair half-time in hours for the incomplete-repair correction (needed with more than "
                             "one fraction a day; with --segmentation, for tissues without their own in the table)")
    parser.add_argument("--output", "-o", required=True, help="output EQD2 image (.nrrd)")
    parser.add_argument("--bed-output", help="also write BED (Gy) to this image")
    parser.add_argument("--alpha-beta-output", help="also write the α/β map used (Gy) to this image")


def _checkDoseLevel(dose, doseInfo: dict, path) -> None:
    """The dose command's checks of a course's dose level (a review: eqd2 turned a NRRD in cGy into EQD2 up to
    115 213 Gy, exit code 0): beyond any external-beam course, refused without units (an image: most likely cGy)
    and warned with them (an RTDOSE); no dose at all warned."""
    from ..core.pipeline import emptyDoseMessage, implausibleDoseWarning

    what = f"the dose ({Path(path).name})"
    unitsKnown = doseInfo.get("format") == "RTDOSE" or bool(doseInfo.get("quantity"))  # this tool's maps: Gy
    for warning in (implausibleDoseWarning(dose, None, what, unitsKnown, where=path),
                    emptyDoseMessage(dose, what)):
        if warning:
            logger.warning("%s", warning)


def run(args: argparse.Namespace) -> int:
    import SimpleITK as sitk

    from ..core.atomic import checkOutputFiles
    from ..core.geometry import imageFromArray
    from ..core.radiobiology import (
        FractionSchedule,
        bedGy,
        checkAlphaBeta,
        eqd2Gy,
        incompleteRepairFactor,
        validateNumberOfFractions,
    )

    if args.fractions is None and args.plan is None:
        raise InputError("give the number of fractions (--fractions) or the course's RTPLAN (--plan)")
    schedule = FractionSchedule(validateNumberOfFractions(args.fractions_per_day, "number of fractions per day"),
                                args.hours_between_fractions)
    if args.repair_half_time is not None:
        from ..core.radiobiology import checkRepairHalfTime
        checkRepairHalfTime(args.repair_half_time, "--repair-half-time:")
    if schedule.isHyperfractionated and args.repair_half_time is None and args.segmentation is None:
        raise InputError(f"{schedule.describe()}: give --repair-half-time (hours) for the incomplete-repair "
                         "correction (published values about 0.5-5 h; a longer one gives a higher EQD2)")
    if not schedule.isHyperfractionated and args.repair_half_time is not None:
        raise InputError("--repair-half-time is for a course given more than once a day: give --fractions-per-day "
                         "and --hours-between-fractions, or leave it out")
    images = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
    checkOutputFiles({"--output": args.output, "--bed-output": args.bed_output,
                      "--alpha-beta-output": args.alpha_beta_output},
                     [args.dose, args.segmentation, None if args.tissues == "default" else args.tissues, args.plan],
                     dict.fromkeys(("--output", "--bed-output", "--alpha-beta-output"), images))
    dose, geometry, doseInfo = readDoseFile(args.dose, physicalOnly=True,
                                            sessions=args.fractions if args.plan is None else None)
    _checkDoseLevel(dose, doseInfo, args.dose)
    fractions, fractionsSource, prescription, ofGroup = _courseFractions(args, doseInfo)
    from ..core.pipeline import dosePerFractionWarning, prescriptionWarning
    what = f"the dose ({Path(args.dose).name})"
    for warning in (dosePerFractionWarning(dose, fractions, geometry.voxelVolumeCc, what),
                    prescriptionWarning(dose, prescription, what, Path(args.plan).name if args.plan else "",
                                        ofGroup=ofGroup)):
        if warning:
            logger.warning("%s", warning)
    if (args.alpha_beta is None) == (args.segmentation is None):
        raise InputError("give either --alpha-beta (one value) or --segmentation (an α/β map from the tissue table)")
    if args.default_alpha_beta is not None:
        if args.segmentation is None:  # a verification: ignored without a word beside --alpha-beta
            raise InputError("--default-alpha-beta is the α/β outside every structure of --segmentation; with "
                             "--alpha-beta every voxel takes that one value")
        checkAlphaBeta(args.default_alpha_beta, "--default-alpha-beta")
    repairFactor = 1.0
    if args.alpha_beta is not None:
        alphaBeta = checkAlphaBeta(args.alpha_beta, "--alpha-beta")
        alphaBetaLabel = f"{alphaBeta:g}"
        abMap = None
        if schedule.isHyperfractionated:
            repairFactor = incompleteRepairFactor(fractions, schedule, args.repair_half_time)
    else:
        from dataclasses import replace

        from ..core.segio import readSegmentation
        from ..core.tissues import TissueTable, alphaBetaMap, repairHalfTimes

        table = TissueTable.default() if args.tissues == "default" else TissueTable.fromJson(args.tissues)
        # structures drawn in another frame of reference than the RTDOSE's are refused naming both files
        masks = readSegmentation(args.segmentation, geometry, doseInfo.get("frameOfReferenceUid") or None, args.dose)
        abMap, owner, names = alphaBetaMap(masks, table, args.default_alpha_beta)
        alphaBeta = abMap
        alphaBetaLabel = "map"
        logger.info("α/β map from %d structures (precedence: %s)", len(names), ", ".join(names))
        if schedule.isHyperfractionated:
            if args.repair_half_time is not None:
                table = replace(table, defaultRepairHalfTimeHours=float(args.repair_half_time))
            halfTimes, missing = repairHalfTimes(names, table)
            if missing:
                raise InputError(f"{schedule.describe()}: no repair half-time for {', '.join(missing)}; give "
                                 "--repair-half-time (hours) for tissues without their own in the table")
            lut = incompleteRepairFactor(fractions, schedule, np.array(halfTimes, dtype=np.float64))
            repairFactor = lut.astype(np.float32)[owner]
    eqd2 = eqd2Gy(dose, fractions, alphaBeta, repairFactor=repairFactor)
    metadata = {"ReirradiationDose.Quantity": "EQD2", "ReirradiationDose.Unit": "Gy",
                "ReirradiationDose.AlphaBetaGy": alphaBetaLabel,
                "ReirradiationDose.NumberOfFractions": str(fractions),
                "ReirradiationDose.FractionsSource": fractionsSource,
                "ReirradiationDose.FractionsPerDay": str(schedule.fractionsPerDay),
                "ReirradiationDose.Source": json.dumps({"dose": str(args.dose)})}
    if schedule.isHyperfractionated:
        metadata["ReirradiationDose.HoursBetweenFractions"] = f"{schedule.hoursBetweenFractions:g}"
        if args.repair_half_time is not None:
            metadata["ReirradiationDose.RepairHalfTimeHours"] = f"{float(args.repair_half_time):g}" + (
                " (tissues without their own)" if args.segmentation else "")
        metadata["ReirradiationDose.IncompleteRepairFactor"] = (
            f"{float(np.min(repairFactor)):.6g}" if np.ndim(repairFactor) == 0 or np.ptp(repairFactor) == 0
            else f"{float(np.min(repairFactor)):.6g}-{float(np.max(repairFactor)):.6g} (per tissue)")

    def write(array, path, quantity):
        image = imageFromArray(np.asarray(array, dtype=np.float32), geometry)
        for key, value in metadata.items():
            image.SetMetaData(key, value)
        image.SetMetaData("ReirradiationDose.Quantity", quantity)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(path), True)
        logger.info("wrote %s (%s)", path, quantity)

    write(eqd2, args.output, "EQD2")
    if args.bed_output:
        write(bedGy(dose, fractions, alphaBeta, repairFactor=repairFactor), args.bed_output, "BED")
    if args.alpha_beta_output:
        write(abMap if abMap is not None else np.full(geometry.shape, alphaBeta, np.float32), args.alpha_beta_output,
              "AlphaBeta")
    logger.info("EQD2 (α/β %s Gy, %d fx, %s): max %.2f Gy (physical max %.2f Gy)", alphaBetaLabel, fractions,
                schedule.describe(), float(np.max(eqd2)), float(np.max(dose)))
    if schedule.isHyperfractionated:
        logger.info("incomplete repair (Thames 1985): quadratic term ×%.4g–%.4g", float(np.min(repairFactor)),
                    float(np.max(repairFactor)))
    return 0
