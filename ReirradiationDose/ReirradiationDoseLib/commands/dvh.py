"""``reirradiation dvh``: DVH and metrics of a dose for every structure of a segmentation.

Structures given as planar contours (.seg.vtm, RTSTRUCT) are rasterised on a grid ``--supersample`` times finer
than the dose in every direction and the dose is interpolated there (REFERENCE §5); voxel segmentations (.seg.nrrd)
are used on their own grid, the dose being interpolated at their voxel centres when that grid differs from the
dose grid (no mask resampling).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
from pathlib import Path

NAME = "dvh"
MAX_SUPERSAMPLE = 8
HELP = "dose-volume histograms and metrics (volume, Dmin/Dmean/Dmax, D0.03cc, D2cc, D95%%) per structure"

logger = logging.getLogger(__name__)

_CSV_COLUMNS = ["name", "volumeCc", "dminGy", "dmeanGy", "dmaxGy", "d0_03ccGy", "d0_1ccGy", "d2ccGy", "d95PercentGy",
                "note"]


def addArguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dose", required=True, help="dose image (NRRD/NIfTI/MHA in Gy, or RTDOSE)")
    parser.add_argument("--segmentation", required=True, help="structures: .seg.nrrd, .seg.vtm or RTSTRUCT")
    parser.add_argument("--json", help="write metrics and curves to this JSON file")
    parser.add_argument("--csv", help="write the metrics table to this CSV file")
    parser.add_argument("--bin-width", type=float, default=0.1, help="DVH curve bin width in Gy (default 0.1)")
    parser.add_argument("--supersample", type=int, default=2,
                        help="sub-voxel sampling factor for contour structures (default 2; 1 = dose grid)")
    parser.add_argument("--structure", action="append", help="only this structure (repeatable)")


def _readStructures(path: str, doseGeometry, supersample: int, frameOfReferenceUid: str | None = None,
                    dosePath: str | None = None):
    """The structures on the dose grid (contours on a grid ``supersample`` times finer) and the names of those whose
    contours the grid cut at its edge; an RTSTRUCT of another frame of reference than the RTDOSE's
    (``frameOfReferenceUid``) is refused naming both files."""
    from ..core.dicomimage import isDicomPath
    from ..core.dvh import supersampledGeometry
    from ..core.segio import readSegmentationWithGeometry

    # an RTSTRUCT by content too ("RS.1.2.840...": a verification review found it read without the sub-voxel
    # sampling and the edge notes)
    isContour = str(path).lower().endswith((".vtm", ".vtp")) or Path(path).is_dir() or isDicomPath(path)
    cut: set = set()
    if isContour:
        grid = supersampledGeometry(doseGeometry, supersample) if supersample > 1 else doseGeometry
        masks, geometry, _ = readSegmentationWithGeometry(path, grid, frameOfReferenceUid, dosePath, cutAtEdge=cut)
        return masks, geometry, cut
    masks, geometry, _ = readSegmentationWithGeometry(path, doseGeometry, frameOfReferenceUid, dosePath)
    return masks, geometry, cut


def _gridNote(mask, cutAtEdge: bool) -> str:
    """What the DVH of a structure rasterised on the dose grid leaves out (an adversarial review: a rectum cut to
    49.6 of its 111 cc at the dose grid's edge, and one wholly outside it as 0 cc, were written without a word).
    ``cutAtEdge``: the rasteriser found contours beyond the grid (a structure merely touching the edge of a dose grid
    that covers it is not: a verification review found the body noted so)."""
    if not mask.any():
        return "no voxel on the grid: the structure lies outside the dose grid or is smaller than its voxels"
    if cutAtEdge:
        return "cut at the edge of the dose grid: the part beyond it is not counted (its volume is what lies inside)"
    return ""


def _isTargetName(name: str) -> bool:
    from ..core.tissues import TissueTable

    entry = TissueTable.default().lookup(name)
    return bool(entry and entry.isTarget)


def _structureNamed(name: str, masks: dict, where) -> str:
    """The structure ``--structure`` names: the exact name, else the one name equal to it without case, spaces and
    separators (as the dose command and studies match names)."""
    from ..core.errors import InputError
    from ..core.tissues import normalizeStructureName

    if name in masks:
        return name
    same = [present for present in masks if normalizeStructureName(present) == normalizeStructureName(name)]
    if len(same) == 1:
        return same[0]
    why = ""
    from ..core.dicomimage import isDicomPath

    if not same and isDicomPath(where):
        from ..core.rtstruct import readRtStruct

        # an ROI of the RTSTRUCT with no contours (or only points) holds no voxel: say so, not "not found"
        drawn = [roi for roi in readRtStruct(where).rois
                 if normalizeStructureName(roi.name) == normalizeStructureName(name) and (roi.isEmpty or roi.isPoint)]
        if drawn:
            why = f": the RTSTRUCT's ROI '{drawn[0].name}' has {'only points' if drawn[0].isPoint else 'no contours'}"
    raise InputError(f"structure {name} not found" + (f" (several match: {', '.join(same)})" if same else why)
                     + f"; present: {', '.join(masks)}", where)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..core.atomic import atomicWriteText, checkOutputFiles
    from ..core.dvh import computeDvh
    from ..core.errors import InputError
    from ..core.rtdose import PLAN_SUMMATION_TYPES
    from ..core.pipeline import IMPLAUSIBLE_COURSE_DOSE_GY
    from .eqd2 import readDoseFile

    if args.supersample < 1:
        raise InputError("--supersample must be ≥ 1")
    if args.supersample > MAX_SUPERSAMPLE:  # 50 asked for 91.6 GiB on a demo dose grid
        raise InputError(f"--supersample must be at most {MAX_SUPERSAMPLE} (each step multiplies the grid by its cube)")
    checkOutputFiles({"--csv": args.csv, "--json": args.json}, [args.dose, args.segmentation],
                     {"--csv": (".csv",), "--json": (".json",)})
    dose, geometry, doseInfo = readDoseFile(args.dose)
    # a newcomer's review: a dose in cGy gave a PTV Dmean of 4588 "Gy" without a word. Warned, not refused as eqd2
    # does: a DVH only describes the dose, and brachytherapy near its sources or another tool's EQD2 map exceeds it
    # (a verification review); this tool's own maps name their quantity and pass
    top = float(np.nanmax(dose)) if np.isfinite(dose).any() else 0.0
    if top > IMPLAUSIBLE_COURSE_DOSE_GY and not doseInfo.get("quantity"):
        logger.warning("the dose (%s) reaches %.1f Gy, more than an external-beam course gives (%g Gy): if it is in "
                       "cGy, divide it by 100 (the DVH reads its values as Gy)", Path(args.dose).name, top,
                       IMPLAUSIBLE_COURSE_DOSE_GY)
    summation = doseInfo.get("summationType")
    if doseInfo.get("format") == "RTDOSE" and summation and summation not in PLAN_SUMMATION_TYPES:
        logger.warning("%s: the RTDOSE is a %s dose (DoseSummationType), not the whole plan's: the DVH is of that "
                       "dose", Path(args.dose).name, summation)
    masks, maskGeometry, cut = _readStructures(args.segmentation, geometry, args.supersample,
                                          doseInfo.get("frameOfReferenceUid") or None, args.dose)
    from ..core.dicomimage import isDicomPath

    if not doseInfo.get("frameOfReferenceUid") and isDicomPath(args.segmentation):
        logger.warning("%s has no frame of reference (a dose image): whether the structures (%s) belong to it "
                       "cannot be checked", Path(args.dose).name, Path(args.segmentation).name)
    if args.structure:
        chosen = [_structureNamed(name, masks, args.segmentation) for name in args.structure]
        masks = {name: masks[name] for name in dict.fromkeys(chosen)}
    results = []
    for name, mask in masks.items():
        try:
            dvh = computeDvh(dose, mask, geometry, name, maskGeometry=maskGeometry)
        except InputError as error:  # name the dose file (a structure touching its NaN voxels: unknown dose)
            raise InputError(str(error), args.dose) from None
        row = dvh.toDict(args.bin_width)
        notes = [_gridNote(mask, name in cut)]
        if mask.any() and _isTargetName(name) and row["dmaxGy"] is not None and top > 0 \
                and row["dmaxGy"] < 0.05 * top:
            # a newcomer's review: a prostate PTV read 0 Gy on another patient's dose without a word (5 %: a prior
            # course's target outlined on today's CT receives some of today's dose, and is not noted)
            notes.append(f"a target that receives almost no dose (its maximum {row['dmaxGy']:.2f} Gy, the dose's "
                         f"{top:.2f} Gy): is the dose of this plan and patient?")
        if mask.any():
            # a metric left empty says why (a newcomer's review: D2cc of a 1.4 cc structure was an unexplained blank)
            notes += [f"{key}: {reason}" for key, reason in (row.get("undefined") or {}).items()]
        row["note"] = "; ".join(n for n in notes if n)
        if row["note"]:
            logger.warning("%s: %s", name, row["note"])
        results.append(row)
    writer = csv.writer(sys.stdout)
    writer.writerow(_CSV_COLUMNS)
    for row in results:
        writer.writerow([row["name"]] + [("" if row[k] is None else row[k] if k == "note" else f"{row[k]:.4f}")
                                         for k in _CSV_COLUMNS[1:]])
    if args.csv:
        buffer = io.StringIO(newline="")
        out = csv.writer(buffer)
        out.writerow(_CSV_COLUMNS)
        for row in results:
            out.writerow([row["name"]] + ["" if row[k] is None else row[k] for k in _CSV_COLUMNS[1:]])
        atomicWriteText(Path(args.csv).absolute(), buffer.getvalue())
    if args.json:
        payload = {"dose": str(args.dose), "segmentation": str(args.segmentation),
                   "supersample": args.supersample, "structures": results}
        atomicWriteText(Path(args.json).absolute(), json.dumps(payload, indent=1))
        logger.info("wrote %s", args.json)
    return 0
