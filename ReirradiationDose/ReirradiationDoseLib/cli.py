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
from .core.progress import INTERRUPT

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
    previousHandlers = _interruptHandlers()
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        # Ctrl-C, or SIGTERM (a job scheduler, a closed terminal): every output is written to a temporary folder or
        # file and put in place whole, so an interrupted run leaves the earlier output as it was and no partial one
        # (an adversarial review: SIGTERM left hidden .partial folders, Ctrl-C printed a traceback)
        return _interrupted(args.command)
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
        if INTERRUPT["signal"] is not None:
            # the interruption arrived inside a library's callback, which wrapped it (SimpleITK: "There was an error
            # executing the Python Callable"): an interruption all the same, not a bug
            return _interrupted(args.command)
        if args.verbose:
            raise
        print(f"reirradiation {args.command}: internal error ({type(error).__name__}: {error}). This is a bug: "
              "please report it with the command and its inputs; run with --verbose for the details",
              file=sys.stderr)
        return 3
    finally:
        for signum, handler in previousHandlers.items():
            signal.signal(signum, handler)
        INTERRUPT["signal"] = None


def _interrupted(command: str) -> int:
    print(f"reirradiation {command}: interrupted: nothing was written (an earlier output is left as it was)",
          file=sys.stderr)
    return 130


def _interruptHandlers() -> dict:
    """Make SIGTERM and SIGINT raise KeyboardInterrupt after noting the signal, so that the outputs' temporary
    folders are removed (the default SIGTERM ends the process at once and leaves them) and an interruption a
    library's callback wrapped in another exception is still told apart from a bug; returns the handlers to restore
    ({} when signals cannot be set here: not the main thread, e.g. inside Slicer)."""
    INTERRUPT["signal"] = None
    if threading.current_thread() is not threading.main_thread():
        return {}

    def interrupt(signum, frame):
        INTERRUPT["signal"] = signum
        if not INTERRUPT["deferred"]:  # inside a library's callback the callback stops it (core.progress)
            raise KeyboardInterrupt

    previous = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[signum] = signal.signal(signum, interrupt)
        except (ValueError, OSError):
            pass
    return previous


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
