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
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    logger.info("demo: nothing to run yet; output folder %s", output)
    return 0
