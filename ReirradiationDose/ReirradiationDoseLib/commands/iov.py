"""``reirradiation iov``: interobserver variation of several observers' delineations of one structure.

Each ``--observer NAME=FILE`` is a binary mask (.nrrd, .nii, .nii.gz, .mha via SimpleITK; any non-zero voxel is
inside), a segment of a Slicer segmentation (``FILE.seg.nrrd#SegmentName``) or an RTSTRUCT ROI
(``FILE.dcm#RoiName``). Segmentations and RTSTRUCTs are read through ``ReirradiationDoseLib.core.segio``.

The JSON report is assembled in :func:`buildReport`, which other options (e.g. radiologist marks) extend by
adding keys to the returned dict; :data:`REPORT_HOOKS` lists callables ``hook(report, args) -> None`` run on it.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
from pathlib import Path

import numpy as np

NAME = "iov"
HELP = "interobserver variation: Dice, Hausdorff, surface Dice, CIgen, STAPLE consensus of several observers"

logger = logging.getLogger(__name__)

# Callables ``hook(report: dict, args) -> None`` that extend the JSON report (e.g. a --marks option).
REPORT_HOOKS: list = []

_PLAIN_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


def addMetricArguments(parser: argparse.ArgumentParser) -> None:
    """The interobserver-metric options shared by ``iov`` and ``study`` (same names, defaults and meaning)."""
    from DelineationReviewLib.core.metrics import DEFAULT_SURFACE_DICE_TOLERANCE_MM, HD_CONVENTIONS, MSD_CONVENTIONS
    from DelineationReviewLib.core.surface import SURFACE_CONVENTIONS

    parser.add_argument("--reference", default="staple",
                        help="consensus to compare each observer with (per-observer metrics, sensitivity/specificity): "
                             "staple (default), majority, an observer NAME, or none")
    parser.add_argument("--tolerance-mm", type=float, default=DEFAULT_SURFACE_DICE_TOLERANCE_MM,
                        help=f"surface-Dice tolerance in mm (default {DEFAULT_SURFACE_DICE_TOLERANCE_MM:g})")
    parser.add_argument("--hd-percentile", type=float, default=95.0,
                        help="percentile of the robust Hausdorff distance (default 95: HD95; 98 for HD98)")
    parser.add_argument("--hd-convention", default="maxDirected", choices=HD_CONVENTIONS,
                        help="how the two directed percentiles are combined (default maxDirected)")
    parser.add_argument("--msd-convention", default="pooled", choices=MSD_CONVENTIONS,
                        help="mean surface distance: mean of both directions' distances pooled (default, medpy) or "
                             "mean of the two directed means (DeepMind, SlicerRT)")
    parser.add_argument("--surface", default="voxel", choices=SURFACE_CONVENTIONS,
                        help="surface elements: voxel (default: surface voxels, distances between voxel centres) or "
                             "surfel (Nikolov et al.'s area-weighted elements on the voxel corners, as DeepMind's "
                             "surface-distance: for comparison with published surface-Dice values)")


def addArguments(parser: argparse.ArgumentParser) -> None:
    from DelineationReviewLib.core.marks import DEFAULT_TOLERANCE_MM as DEFAULT_MARKS_TOLERANCE_MM

    parser.add_argument("--observer", action="append", default=[], metavar="NAME=FILE", required=True,
                        help="an observer's delineation: NAME=mask.nrrd, NAME=seg.seg.nrrd#Segment or "
                             "NAME=rtstruct.dcm#ROI (repeat for each observer)")
    addMetricArguments(parser)
    parser.add_argument("--crop-margin-mm", type=float, default=None,
                        help="margin around the union of the observers for the analysis crop and STAPLE "
                             "(default 5 mm)")
    parser.add_argument("--image", metavar="PATH",
                        help="the image the delineations were made on (DICOM folder or NRRD): its grid is used to "
                             "rasterise RTSTRUCT observers")
    parser.add_argument("--marks", metavar="FILE",
                        help="radiologist border marks (.mrk.json or .csv) to check each observer's GTV against")
    parser.add_argument("--marks-tolerance-mm", type=float, default=DEFAULT_MARKS_TOLERANCE_MM,
                        help=f"how far the GTV may stop short of a mark (default {DEFAULT_MARKS_TOLERANCE_MM:g})")
    parser.add_argument("--marks-transform", metavar="TFM",
                        help="CT->MRI registration (SimpleITK transform file) to bring MRI marks onto the CT; "
                             "MRI marks without it are refused (an identity transform if the MRI was resampled "
                             "onto the CT)")
    parser.add_argument("--marks-frame", choices=["CT", "MRI"], default=None,
                        help="frame of the marks if the file does not say")
    parser.add_argument("--json", metavar="OUT", help="write the full report as JSON")
    parser.add_argument("--csv", metavar="OUT", help="write the metrics as a long-format CSV")


def parseObserverArgument(text: str) -> tuple[str, str, str | None]:
    """``NAME=FILE[#SEGMENT]`` -> (name, file, segment or None)."""
    from ..core.errors import InputError

    if "=" not in text:
        raise InputError(f"--observer {text!r} must look like NAME=FILE (e.g. reader1=reader1.nrrd)")
    name, path = text.split("=", 1)
    name = name.strip()
    if not name:
        raise InputError(f"--observer {text!r} has an empty observer name")
    segment = None
    if "#" in path:
        path, segment = path.rsplit("#", 1)
        segment = segment or None
    return name, path, segment


def _isPlainMask(path: Path) -> bool:
    lower = path.name.lower()
    return lower.endswith(_PLAIN_SUFFIXES) and not lower.endswith(".seg.nrrd")


def readObserverMask(path: str, segment: str | None, referenceGeometry=None, frameOfReferenceUid: str | None = None,
                     referencePath: str | None = None):
    """(mask bool [k, j, i], ImageGeometry) of one observer's file (see the module docstring).

    ``referenceGeometry`` (the first observer's grid) is where planar contours (``.seg.vtm``, RTSTRUCT) are
    rasterised; an RTSTRUCT given as the first observer has no grid and is refused with a clear message.
    """
    import SimpleITK as sitk

    from ..core.errors import InputError, libraryReason
    from ..core.geometry import ImageGeometry

    file = Path(path)
    if not file.exists():
        raise InputError("file not found", path=file)
    if _isPlainMask(file) and segment is None:
        try:
            image = sitk.ReadImage(str(file))
        except RuntimeError as error:
            raise InputError(f"cannot be read as an image ({libraryReason(error)})", path=file) from error
        if image.GetDimension() != 3:
            raise InputError(f"is a {image.GetDimension()}D image; a 3D mask is required", path=file)
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError("has several components per voxel; a single-component binary mask is required "
                             "(for a Slicer segmentation give FILE.seg.nrrd#SegmentName)", path=file)
        from DelineationReviewLib.core.observers import requireBinaryMask

        array = sitk.GetArrayViewFromImage(image)
        requireBinaryMask(array, file)  # a labelmap's second label read as inside gave Dice 0.30, exit 0
        return array != 0, ImageGeometry.fromImage(image)
    try:
        from ..core import segio  # lazily: written separately, may be absent in a partial build
    except ImportError as error:
        raise InputError("reading Slicer segmentations and RTSTRUCTs needs ReirradiationDoseLib.core.segio, "
                         "which is not available in this installation; give a binary mask file instead",
                         path=file) from error
    # contour formats (.seg.vtm, RTSTRUCT) are rasterised on the first observer's grid when there is one, so no
    # resampling is needed; voxel formats keep their own grid (segio ignores the reference for them)
    # an RTSTRUCT drawn in another frame of reference than the --image is refused naming both (an adversarial review:
    # rasterised without a word; dvh and eqd2 refused it)
    masks, geometry, _ = segio.readSegmentationWithGeometry(str(file), referenceGeometry=referenceGeometry,
                                                            frameOfReferenceUid=frameOfReferenceUid,
                                                            referencePath=referencePath)
    if segment is None:
        if len(masks) != 1:
            raise InputError(f"holds {len(masks)} segments ({', '.join(masks)}); choose one with FILE#SegmentName",
                             path=file)
        segment = next(iter(masks))
    if segment not in masks:
        raise InputError(f"has no segment/ROI named {segment!r}; it has: {', '.join(masks)}", path=file)
    return np.asarray(masks[segment]) != 0, geometry


def buildReport(result, observerFiles: dict | None = None, extra: dict | None = None) -> dict:
    """The JSON report: ``result.toDict()`` plus the input files; returns a plain dict for others to extend."""
    report = {"analysis": "interobserver variation", **result.toDict()}
    if observerFiles:
        report["inputs"] = {"observers": observerFiles}
    if extra:
        report.update(extra)
    return report


def csvRows(report: dict) -> list[dict]:
    """Long-format rows: scope, a, b, metric, value, unit, undefinedReason (the CSV adds ``setting``,
    :func:`withSettings`)."""
    rows = []

    def add(scope, a, b, metric, value, reason=""):
        if isinstance(value, list):
            for direction, v in zip(("aToB", "bToA"), value, strict=False):
                add(scope, a, b, f"{metric}.{direction}", v, reason)
            return
        unit = "mm" if metric.split(".")[0].endswith("Mm") else ("cc" if metric.endswith("Cc") else "1")
        rows.append({"scope": scope, "a": a, "b": b, "metric": metric,
                     "value": "" if value is None else repr(float(value)), "unit": unit, "undefinedReason": reason})

    for observer in report["observers"]:
        add("observer", observer["name"], "", "volumeCc", observer["volumeCc"])
    for pair in report["pairs"]:
        reasons = pair.get("undefined", {})
        for key, value in pair.items():
            if key in ("a", "b", "undefined"):
                continue
            add("pair", pair["a"], pair["b"], key, value, reasons.get(key, ""))
    undefined = report.get("undefined", {})
    add("group", "", "", "cigen", report["cigen"], undefined.get("cigen", ""))
    add("group", "", "", "volumeCv", report["volumeCv"], undefined.get("volumeCv", ""))
    add("group", "", "", "uncertaintyBandCc", report["agreement"]["uncertaintyBandCc"])
    consensus = report.get("consensus")
    if consensus:
        add("consensus", consensus["reference"], "", "volumeCc", consensus["volumeCc"])
        for entry in consensus["observers"]:
            reasons = entry.get("undefined", {})
            for key, value in entry.items():
                if key in ("name", "undefined"):
                    continue
                add("consensus", entry["name"], consensus["reference"], key, value, reasons.get(key, ""))
    return rows


def withSettings(rows: list[dict], report: dict) -> list[dict]:
    """The rows with a ``setting`` column: the option a value depends on (percentile and convention, surface-Dice
    tolerance, marks tolerance), as the study's long.csv writes it (an independent check: an HD98 and an HD95 file
    could not be told apart)."""
    from DelineationReviewLib.core.study import StudyOptions, metricSetting

    marks = report.get("marks") or {}
    options = StudyOptions(toleranceMm=float(report["toleranceMm"]), hdPercentile=float(report["hdPercentile"]),
                           hdConvention=str(report["hdConvention"]),
                           msdConvention=str(report.get("msdConvention", "pooled")),
                           surface=str(report.get("surfaceConvention", "voxel")),
                           **({"marksToleranceMm": float(marks["toleranceMm"])} if "toleranceMm" in marks else {}))
    return [{**row, "setting": metricSetting(("marks." if row["scope"] in ("mark", "marksSummary") else "")
                                             + str(row["metric"]), options)} for row in rows]


def run(args: argparse.Namespace) -> int:
    from DelineationReviewLib.core.iov import DEFAULT_CROP_MARGIN_MM, analyzeObservers

    from ..core.atomic import atomicWriteText, checkOutputFiles
    from ..core.errors import InputError

    parsed = [parseObserverArgument(text) for text in args.observer]
    if len(parsed) < 2:
        raise InputError(f"interobserver variation needs at least two observers (--observer NAME=FILE, repeated); "
                         f"got {len(parsed)}")
    # before the analysis: a --csv that cannot be written left the --json written and a traceback; one naming
    # an observer's file overwrote it
    checkOutputFiles({"--json": args.json, "--csv": args.csv},
                     [path for _, path, _ in parsed] + [args.image, getattr(args, "marks", None)],
                     {"--json": (".json",), "--csv": (".csv",)})
    names = [name for name, _, _ in parsed]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InputError(f"observer name(s) {', '.join(duplicates)} given more than once; names must be unique")
    from DelineationReviewLib.core.study import observerKey

    alike = sorted({f"{a!r} and {b!r}" for i, a in enumerate(names) for b in names[i + 1:]
                    if observerKey(a) == observerKey(b)})
    if alike:
        # a review: "A" and "a" were two readers here and one in `study`
        raise InputError(f"observer names {'; '.join(alike)} differ only in upper and lower case, spaces or their "
                         "Unicode form: one reader, as `study` reads them; give each reader one name")
    observers = []
    files = {}
    referenceGeometry, frameUid = None, None
    if args.image:
        from ..core.dicomimage import readImageSeries
        from ..core.geometry import ImageGeometry

        image, info = readImageSeries(args.image)
        referenceGeometry = ImageGeometry.fromImage(image)
        frameUid = getattr(info, "frameOfReferenceUid", None) or None
    for name, path, segment in parsed:
        mask, geometry = readObserverMask(path, segment, referenceGeometry, frameUid, args.image)
        referenceGeometry = referenceGeometry or geometry
        observers.append((name, mask, geometry))
        files[name] = path + (f"#{segment}" if segment else "")
    reference = None if str(args.reference).lower() == "none" else args.reference
    if reference is not None and reference.casefold() in ("staple", "majority"):
        reference = reference.casefold()
    elif reference is not None:  # an observer, spelled as `study` matches readers (a verification review)
        reference = next((n for n, _, _ in observers if observerKey(n) == observerKey(reference)), reference)
    margin = DEFAULT_CROP_MARGIN_MM if args.crop_margin_mm is None else args.crop_margin_mm
    result = analyzeObservers(observers, None, reference=reference, toleranceMm=args.tolerance_mm,
                              hdPercentile=args.hd_percentile, hdConvention=args.hd_convention,
                              cropMarginMm=margin, surface=args.surface, msdConvention=args.msd_convention)
    report = buildReport(result, files)
    from DelineationReviewLib.core.study import emptyMaskNotes, identicalMaskNotes

    # said as the study command says it (an independent check: iov said nothing of an empty observer)
    masks = {name: mask for name, mask, _ in observers}
    extra = identicalMaskNotes(masks) + emptyMaskNotes(masks, "; its volume 0 counts in CIgen and the volume CV")
    if extra:
        report["notes"] = list(report.get("notes") or ()) + extra
    if args.marks:
        from DelineationReviewLib.core.marks import marksReportForObservers

        report["marks"] = marksReportForObservers(args.marks, {n: (m, g) for n, m, g in observers}, None,
                                                  toleranceMm=args.marks_tolerance_mm,
                                                  transform=args.marks_transform, frame=args.marks_frame)
        for name, summary in report["marks"].get("summary", {}).items():
            logger.info("%s honours %s of the %s radiologist's marks", name, summary.get("nHonoured"),
                        summary.get("nMarks"))
        for note in report["marks"].get("notes") or ():
            logger.warning("marks: %s", note)
    for hook in REPORT_HOOKS:
        hook(report, args)
    surfels = " (surfels)" if report.get("surfaceConvention") == "surfel" else ""
    for pair in report["pairs"]:
        dice = "undefined" if pair["dice"] is None else f"{pair['dice']:.3f}"
        hd = "undefined" if pair["hausdorffMm"] is None else f"{pair['hausdorffMm']:.2f} mm{surfels}"
        logger.info("%s vs %s: Dice %s, HD %s", pair["a"], pair["b"], dice, hd)
    if report["cigen"] is not None:
        logger.info("CIgen %.3f, volume CV %.3f", report["cigen"], report["volumeCv"])
    for note in report.get("notes") or ():
        logger.warning("note: %s", note)
    if args.json:
        atomicWriteText(Path(args.json).absolute(), json.dumps(report, indent=2))
        logger.info("report written to %s", args.json)
    if args.csv:
        rows = csvRows(report)
        if "marks" in report:
            from DelineationReviewLib.core.marks import iovCsvRows

            rows += iovCsvRows(report["marks"])
        rows = withSettings(rows, report)
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        atomicWriteText(Path(args.csv).absolute(), buffer.getvalue())
        logger.info("metrics written to %s", args.csv)
    return 0
