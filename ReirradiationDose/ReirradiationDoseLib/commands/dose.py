"""``reirradiation dose CASE.json --output DIR``: the composite EQD2 workflow without a GUI."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

NAME = "dose"
HELP = "composite EQD2 of all courses of a case file: maps, DVH, constraints, RTDOSE, pictures, report"

logger = logging.getLogger(__name__)


def addArguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("case", help="case file (JSON; schema in the README)")
    parser.add_argument("--output", "-o", required=True, help="output folder (written atomically)")
    parser.add_argument("--no-pictures", action="store_true", help="skip the slice renderings and the MRML scene")
    parser.add_argument("--include-identity", action="store_true",
                        help="put the patient's name and ID in the report and summary (omitted by default)")
    parser.add_argument("--anonymize", action="store_true",
                        help="write de-identified outputs (RTDOSE with new UIDs, no patient name/ID)")


def run(args: argparse.Namespace) -> int:
    from ..core.atomic import checkOutputDir
    from ..core.casefile import parseCaseFile
    from ..core.doseoutputs import writeDoseOutputs
    from ..core.pipeline import runDoseWorkflow
    from ..core.progress import TextProgressBar, subProgress

    checkOutputDir(args.output)  # at once, not after minutes of registration
    case = parseCaseFile(args.case)
    bar = TextProgressBar()
    result = runDoseWorkflow(case, progress=subProgress(bar, 0.0, 0.8))
    written = writeDoseOutputs(result, args.output, pictures=not args.no_pictures,
                               includeIdentity=args.include_identity and not args.anonymize,
                               anonymize=args.anonymize, progress=subProgress(bar, 0.8, 1.0))
    bar.finish()
    summary = json.loads((Path(args.output) / "summary.json").read_text())
    from ..core.dosereport import failureSentence, scalingSentence

    currentName = next((c.get("name") for c in summary.get("courses", []) if c.get("current")), None)
    logger.info("Composite EQD2 max %.2f Gy; %s; outputs in %s (%d files)", summary["composite"]["maxGy"] or 0.0,
                failureSentence(summary["constraints"], currentName), args.output, len(written))
    sentence = scalingSentence(summary.get("currentCourseScaling"))
    if sentence:
        logger.info("%s", sentence[0].upper() + sentence[1:])
    # the summary's warnings: the run's and the writing's (RTDOSE lower bound, pictures skipped), which the writing
    # no longer adds to the result
    for message in summary["warnings"]:
        logger.warning("warning: %s", message)
    return 0
