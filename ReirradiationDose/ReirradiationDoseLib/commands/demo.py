"""``reirradiation demo``: run every pipeline that exists on the built-in demo case."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..core.errors import InputError

NAME = "demo"
HELP = "generate the built-in demo case (if absent) and run the main job on it"

logger = logging.getLogger(__name__)


def addArguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", default="demo-output", help="output folder (default: demo-output)")
    parser.add_argument("--size", choices=["small", "clinical"], default="small", help="demo case size")


# what a demo output folder holds: the case, the two runs' outputs and the overview picture
DEMO_ENTRIES = {"case", "dose", "study", "overview_axial.png"}


def run(args: argparse.Namespace) -> int:
    from ..core.atomic import fileBrowserFile
    from ..core.democase.generate import ensureDemoCase

    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise InputError("the demo's output must be a folder; this is a file", output)
    others = sorted(p.name for p in output.iterdir() if p.name not in DEMO_ENTRIES
                    and not p.name.startswith(".") and not fileBrowserFile(p.name)) if output.is_dir() else []
    if others:
        # an adversarial review: the demo wrote its folders among a user's files (nothing was deleted, but a later
        # run replaces dose/ and study/ as a whole)
        raise InputError(f"the folder holds other files ({', '.join(others[:5])}{', ...' if len(others) > 5 else ''}): "
                         "give a new or empty folder, or an earlier demo output", output)
    output.mkdir(parents=True, exist_ok=True)
    caseFile = ensureDemoCase(output / "case", size=args.size)  # the built-in demo case (generated once)
    logger.info("demo case: %s", caseFile)
    from ..cli import main

    steps = [
        ("cumulative dose (composite EQD2, DVH, constraints, report)",
         ["dose", str(caseFile), "--output", str(output / "dose")]),
        ("delineation study of the demo observers (round 1 vs round 2, radiologist marks)",
         ["study", str(output / "case"), "--output", str(output / "study")]),
    ]
    failed = []
    for title, argv in steps:
        logger.info("demo: %s", title)
        if main(argv) != 0:
            failed.append(title)
        elif argv[0] == "dose":
            # the radiologist's marks were made on the MRI: give the study the MRI registration of this run
            import shutil

            for registration in (output / "dose").glob("registration_mri.*"):
                shutil.copy(registration, output / "case" / "marks" / f"registration{registration.suffix}")
    if not failed:
        try:
            logger.info("demo: overview picture %s", renderOverview(output))
        except ImportError as error:  # slicer-core absent: the picture is optional
            logger.info("demo: no overview picture (%s)", error)
    logger.info("demo: outputs in %s — open %s and %s", output, output / "dose" / "report.html",
                output / "study" / "report.html")
    if failed:
        logger.error("demo: failed: %s", "; ".join(failed))
        return 1
    return 0


def renderOverview(output: Path, sizePx=(720, 720)) -> Path:
    """One axial slice of the current CT through the GTV: organs at risk, the round-1 observers' GTVs and the
    composite EQD2 isodose lines, rendered with Slicer's slice view (the README's picture)."""
    import json

    import numpy as np
    import SimpleITK as sitk

    from ..core.dicomimage import readImageSeries
    from ..core.geometry import ImageGeometry, arrayFromImage, lpsToRas
    from ..core.segio import readSegmentationWithGeometry
    from ..mrml.isodose import createIsodoseModels, defaultIsodoseColors, isodoseLegend
    from ..mrml.nodes import segmentationNodeFromMasks, volumeNodeFromArray
    from ..mrml.render import renderSliceView
    from ..mrml.scene import closeScene, createScene

    case = output / "case"
    image, _ = readImageSeries(case / "current" / "CT")
    ctArray, geometry = arrayFromImage(image)
    structures, _, colors = readSegmentationWithGeometry(case / "current" / "RTSTRUCT.dcm", geometry)
    shown = [n for n in ("Rectum", "SacralPlexus", "Sacrum") if n in structures]
    observers = {}
    for path in sorted((case / "observers" / "round1").glob("*.dcm")):
        masks, _, _ = readSegmentationWithGeometry(path, geometry)
        observers[path.stem] = next(iter(masks.values()))
    compositeImage = sitk.ReadImage(str(output / "dose" / "composite_eqd2.nrrd"))
    composite = np.nan_to_num(sitk.GetArrayFromImage(compositeImage), nan=0.0)
    levels = [v for v in json.loads((case / "case.json").read_text()).get("isodoseLevelsGy", [])
              if v < float(composite.max())]
    scene = createScene()
    try:
        ct = volumeNodeFromArray(scene, ctArray, geometry, "Current CT")
        organs = segmentationNodeFromMasks(scene, {n: structures[n] for n in shown}, geometry,
                                           colors={n: colors[n] for n in shown if n in colors}, name="Organs")
        palette = [(0.9, 0.1, 0.1), (1.0, 0.55, 0.0), (0.2, 0.8, 0.2), (0.1, 0.6, 1.0), (1.0, 0.6, 0.8),
                   (1.0, 1.0, 0.3)]
        observerColors = {n: palette[i % len(palette)] for i, n in enumerate(observers)}
        observerNode = segmentationNodeFromMasks(scene, observers, geometry, colors=observerColors,
                                                 name="Observers")
        isodoseColors = [(0.25, 0.5, 1.0), (1.0, 1.0, 1.0), (0.0, 1.0, 1.0), (1.0, 0.0, 1.0)][: len(levels)]
        models = createIsodoseModels(scene, (composite, ImageGeometry.fromImage(compositeImage)), levels,
                                     colors=isodoseColors or None, name="Composite EQD2", lineThicknessPx=3)
        gtv = structures.get("GTV")
        k, j, i = np.nonzero(gtv) if gtv is not None and gtv.any() else (np.array([0]),) * 3
        centre = lpsToRas(geometry.indexToLps([i.mean(), j.mean(), k.mean()]))
        legend = ([(f"{label} EQD2", c) for label, c in isodoseLegend(levels, isodoseColors or
                                                                      defaultIsodoseColors(levels))]
                  + [(f"GTV {n}", observerColors[n]) for n in observers]
                  + [(n, tuple(colors[n][:3])) for n in shown if n in colors])
        return renderSliceView(scene, output / "overview_axial.png", "Axial", positionRas=centre, background=ct,
                               segmentations=[organs, observerNode], models=models, legend=legend, sizePx=sizePx,
                               fieldOfViewMm=260)
    finally:
        closeScene(scene)
