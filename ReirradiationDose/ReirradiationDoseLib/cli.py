"""The ``reirradiation`` command line: headless access to the same core the Slicer modules use.

Each subcommand lives in its own module under ``ReirradiationDoseLib/commands/`` and exposes
``NAME``, ``HELP``, ``addArguments(parser)`` and ``run(args) -> int``. Register it in ``COMMANDS`` below.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading

from .core import __version__
from .core.errors import InputError, ProcessingCancelled

logger = logging.getLogger(__name__)

# Subcommand modules (in ReirradiationDoseLib.commands), in the order `--help` lists them.
COMMANDS = [
    "demo",
    "dose",
    "iov",
    "study",
    "eqd2",
    "dvh",
]


def _loadCommands():
    return [importlib.import_module(f"{__package__}.commands.{name}") for name in COMMANDS]


def buildParser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reirradiation",
        description="Re-irradiation dose accumulation (EQD2) and delineation review, headless.",
    )
    parser.add_argument("--version", action="version", version=f"reirradiation {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _loadCommands():
        # the list's help is %-formatted by argparse (a percent sign written %%), the description is printed as it is
        commandParser = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP.replace("%%", "%"))
        module.addArguments(commandParser)
        commandParser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = buildParser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    previousTerm = _terminateAsInterrupt()
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        # Ctrl-C, or SIGTERM (a job scheduler, a closed terminal): every output is written to a temporary folder or
        # file and put in place whole, so an interrupted run leaves the earlier output as it was and no partial one
        # (an adversarial review: SIGTERM left hidden .partial folders, Ctrl-C printed a traceback)
        print(f"reirradiation {args.command}: interrupted: nothing was written (an earlier output is left as it was)",
              file=sys.stderr)
        return 130
    except InputError as error:
        print(f"reirradiation {args.command}: error: {error}", file=sys.stderr)
        return 2
    except ProcessingCancelled:
        print(f"reirradiation {args.command}: cancelled", file=sys.stderr)
        return 130
    except OSError as error:  # a file or folder that cannot be read or written: name it, no traceback
        where = f"{error.filename}: " if error.filename else ""
        print(f"reirradiation {args.command}: error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
    except Exception as error:  # a bug: say so plainly; the traceback with --verbose
        if args.verbose:
            raise
        print(f"reirradiation {args.command}: internal error ({type(error).__name__}: {error}). This is a bug: "
              "please report it with the command and its inputs; run with --verbose for the details",
              file=sys.stderr)
        return 3
    finally:
        if previousTerm is not None:
            signal.signal(signal.SIGTERM, previousTerm)


def _terminateAsInterrupt():
    """Make SIGTERM raise KeyboardInterrupt, so that the outputs' temporary folders are removed as on Ctrl-C (the
    default SIGTERM ends the process at once and leaves them); returns the handler to restore, or None when signals
    cannot be set here (not the main thread, e.g. inside Slicer)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, interrupt)
    except (ValueError, OSError):
        return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
