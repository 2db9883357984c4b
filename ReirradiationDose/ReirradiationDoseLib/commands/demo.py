"""``reirradiation demo``: run every pipeline that exists on the built-in demo case."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

NAME = "demo"
HELP = "generate the built-in demo case (if absent) and run the main job on it"

logger = logging.getLogger(__name__)


def addArguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", default="demo-output", help="output folder (default: demo-output)")
    parser.add_argument("--size", choices=["small", "clinical"], default="small", help="demo case size")


def run(args: argparse.Namespace) -> int:
    from ..core.democase.generate import ensureDemoCase

    output = Path(args.output)
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
    logger.info("demo: outputs in %s — open %s and %s", output, output / "dose" / "report.html",
                output / "study" / "report.html")
    if failed:
        logger.error("demo: failed: %s", "; ".join(failed))
        return 1
    return 0
