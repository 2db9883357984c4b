"""``reirradiation study``: analyse a whole delineation study (many cases, observers and rounds).

Reads STUDY_DIR (layout in ``DelineationReviewLib.core.study``), runs the interobserver analysis on every
(case, round) and writes long.csv, summary_by_case.csv, summary_by_round.csv, rounds_comparison.csv/.json,
study.json and a self-contained report.html into ``--output`` (atomically). A case that fails is reported on
stderr and in the outputs and skipped. Exit code 0 when every case round was analysed, 4 when the outputs were
written but some case rounds or intra-observer comparisons failed (a review: 9 of 11 cases failed with exit code 0,
and a script went on to the statistics of the other 2; 3 is the command line's code for an internal error), 2 when
all failed or the input is unusable.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from ..core.progress import TextProgressBar  # noqa: F401  (re-exported: the study's terminal bar)

NAME = "study"
HELP = ("analyse a whole delineation study (cases x observers x rounds): CSV tables, study.json, HTML report; exit "
        "code 4 when some cases failed (the rest written)")
PARTIAL_FAILURE_EXIT_CODE = 4  # outputs written, some case rounds failed (0: all analysed; 2: none; 3: internal error)

logger = logging.getLogger(__name__)


def addArguments(parser: argparse.ArgumentParser) -> None:
    from DelineationReviewLib.core.marks import DEFAULT_TOLERANCE_MM as DEFAULT_MARKS_TOLERANCE_MM

    parser.add_argument("studyDir", metavar="STUDY_DIR",
                        help="study folder: STUDY_DIR/<case>/<observer>.nrrd|.nii.gz|.seg.nrrd|.dcm, or "
                             "STUDY_DIR/<case>/<round>/<observer>.*, or a demo case (observers/<round>/)")
    parser.add_argument("--output", "-o", required=True, help="output folder (replaced atomically)")
    parser.add_argument("--structure", default="GTV",
                        help="ROI / segment to take from RTSTRUCT and .seg.nrrd files (tolerant match; default GTV)")
    from .iov import addMetricArguments

    addMetricArguments(parser)
    parser.add_argument("--marks-tolerance-mm", type=float, default=DEFAULT_MARKS_TOLERANCE_MM,
                        help="distance within which a radiologist mark counts as honoured "
                             f"(default {DEFAULT_MARKS_TOLERANCE_MM:g})")
    parser.add_argument("--jobs", "-j", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--no-pictures", action="store_true", help="do not render agreement-map pictures")


def renderAgreementPicture(caseName, roundName, masks, geometry, imagePath=None) -> bytes:
    """Picture callback of the study (module level, so worker processes can use it): an axial slice through the
    centre of the observers' union, rendered offscreen by Slicer's slice logic (``mrml/render.py``).

    Shows the observers' outlines (one colour each, with a legend) over the case image when there is one (the
    agreement map, i.e. the number of observers including each voxel, blended on top in the dose colours), or
    over the agreement map in grey levels when there is none. Needs slicer-core.
    """
    import tempfile
    from pathlib import Path

    import numpy as np
    import SimpleITK as sitk
    from DelineationReviewLib.core.study import readCaseImage
    from ReirradiationDoseLib.core.geometry import ImageGeometry, lpsToRas
    from ReirradiationDoseLib.mrml import nodes, render
    from ReirradiationDoseLib.mrml.scene import closeScene, createScene, quietVtk

    counts = np.zeros(geometry.shape, dtype=np.uint8)
    for mask in masks.values():
        counts += np.asarray(mask, dtype=np.uint8)
    union = counts > 0
    if not union.any():
        return None
    kji = np.argwhere(union)
    centreKji = kji.mean(axis=0)
    sliceK = int(np.argmax(union.sum(axis=(1, 2))))  # the axial slice where the observers' union is largest
    centreLps = geometry.indexToLps([centreKji[2], centreKji[1], sliceK])
    extentMm = (kji.max(axis=0) - kji.min(axis=0) + 1)[::-1] * np.array(geometry.spacingMm)
    fieldOfViewMm = max(40.0, 2.0 * float(max(extentMm[0], extentMm[1])))
    colours = nodes.defaultStructureColors(list(masks))
    scene = createScene()
    try:
        with quietVtk():
            agreement = nodes.volumeNodeFromArray(scene, counts, geometry, "agreement", isDose=imagePath is not None)
            if imagePath is not None:
                image, imageGeometry = readCaseImage(imagePath)
                background = nodes.volumeNodeFromArray(scene, sitk.GetArrayFromImage(image).astype(np.float32),
                                                       ImageGeometry.fromImage(image), "image")
                foreground = agreement
            else:
                background, foreground = agreement, None
            segmentation = nodes.segmentationNodeFromMasks(scene, masks, geometry, colours, name="observers")
            rgb, _ = render.renderSliceViewImage(
                scene, "Axial", positionRas=lpsToRas(centreLps), background=background, foreground=foreground,
                foregroundOpacity=0.4, segmentations=[segmentation], legend=list(colours.items()),
                sizePx=(420, 420), fieldOfViewMm=fieldOfViewMm)
        with tempfile.TemporaryDirectory() as folder:
            return render.writePng(rgb, Path(folder) / "picture.png").read_bytes()
    finally:
        closeScene(scene)


def pictureCallbackIfAvailable():
    """The picture callback when slicer-core and the offscreen renderer are importable, else None (logged)."""
    try:
        from ReirradiationDoseLib.mrml import nodes, render  # noqa: F401
    except Exception as error:  # noqa: BLE001 - slicer-core absent or broken: the study runs without pictures
        logger.info("study: no agreement pictures (the offscreen renderer is unavailable: %s)", error)
        return None
    return renderAgreementPicture


def run(args: argparse.Namespace) -> int:
    from DelineationReviewLib.core.study import StudyOptions, analyzeStudy, printFailures, writeStudyOutputs
    from ReirradiationDoseLib.core.atomic import checkOutputDir
    from ReirradiationDoseLib.core.errors import InputError

    if args.jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {args.jobs}")
    checkOutputDir(args.output)  # at once, not after the study's analysis
    reference = None if str(args.reference).lower() == "none" else args.reference
    options = StudyOptions(structure=args.structure, reference=reference, toleranceMm=args.tolerance_mm,
                           hdPercentile=args.hd_percentile, hdConvention=args.hd_convention,
                           msdConvention=args.msd_convention, surface=args.surface,
                           marksToleranceMm=args.marks_tolerance_mm)
    pictureCallback = None if args.no_pictures else pictureCallbackIfAvailable()
    quieted = {}
    if not args.verbose:
        # the readers' and the IOV core's info lines (several per case) would break the progress bar; failures
        # are printed once at the end (printFailures), and every note is in study.json and the report.
        # The levels are restored afterwards: other commands in the same process keep their logging.
        for name, level in (("ReirradiationDoseLib.core", logging.WARNING),
                            ("DelineationReviewLib.core", logging.WARNING),
                            ("DelineationReviewLib.core.study", logging.ERROR)):
            quieted[name] = logging.getLogger(name).level
            logging.getLogger(name).setLevel(level)
    bar = TextProgressBar()
    started = time.perf_counter()
    try:
        study = analyzeStudy(args.studyDir, options, jobs=args.jobs, progress=bar, pictureCallback=pictureCallback)
    finally:
        bar.finish()
        for name, level in quieted.items():
            logging.getLogger(name).setLevel(level)
    intraCompared = sum(1 for entry in study.intraObserver if "metrics" in entry)
    intraErrors = [e for e in study.intraObserver if "error" in e]
    if not study.results and not intraCompared:
        # nothing to write: an earlier run's outputs in the same folder stay (a review: a failed run replaced them
        # with header-only tables)
        printFailures(study)
        for entry in intraErrors[:5]:
            print(f"study: intra-observer {entry['case']} / {entry['observer']} ({entry['roundA']} -> "
                  f"{entry['roundB']}) failed: {entry['error']}", file=sys.stderr)
        left = "left as it was" if Path(args.output).exists() else "not created"
        print(f"study: error: nothing could be analysed in {args.studyDir} ({len(study.failures)} failure(s), "
              f"{len(intraErrors)} intra-observer comparison(s) failed; {len(study.cases)} case folder(s) found): "
              f"nothing written, {args.output} {left}", file=sys.stderr)
        return 2
    output = writeStudyOutputs(study, args.output)
    printFailures(study)
    print(f"study: {len(study.results)} case round(s) analysed in {time.perf_counter() - started:.1f} s; "
          f"outputs in {output}", file=sys.stderr)
    if study.singleObserverRounds:
        print(f"study: {len(study.singleObserverRounds)} round(s) of one reader: no interobserver analysis there, "
              f"compared with the reader's other rounds ({intraCompared} intra-observer comparison(s) in all)",
              file=sys.stderr)
    for entry in intraErrors[:5]:
        print(f"study: intra-observer {entry['case']} / {entry['observer']} ({entry['roundA']} -> {entry['roundB']}) "
              f"failed: {entry['error']}", file=sys.stderr)
    if intraErrors:
        print(f"study: WARNING: {len(intraErrors)} intra-observer comparison(s) failed; see study.json "
              "(intraObserver)", file=sys.stderr)
    if study.failures:
        print(f"study: WARNING: {len(study.failures)} failure(s) skipped ({len(study.results)} case round(s) "
              f"analysed, {len(study.cases)} case folder(s)); see study.json and report.html", file=sys.stderr)
    for comparison in study.roundsComparison["comparisons"]:
        print(f"study: {comparison['roundA']} vs {comparison['roundB']}: {comparison['conclusion']}", file=sys.stderr)
    return PARTIAL_FAILURE_EXIT_CODE if study.failures or intraErrors else 0
