"""The ``appliance`` command line.

Each command group is a module here with a ``register(subparsers)`` function; each command is a thin
function that parses, calls the library, and returns an exit code. A command's docstring is its
``--help`` text (first line: the summary; the rest: the description, with an example). Any
``ApplianceError`` is printed as one line (``appliance: error: …``) with exit code 2; ``--debug``
shows the traceback instead. A closed pipe (``appliance captures | head``) ends the command quietly
with exit code 141, as it would end ``cat``. Command modules import only argparse-level things at
the top; what a command needs (numpy, Flask, the runtime) is imported when it runs, so ``--help``
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import sys

from appliance import __version__
from appliance.errors import ApplianceError

COMMAND_MODULES = ("run", "serve", "config", "models", "classify", "captures", "sync", "offload", "system", "network", "links", "bench", "bench_web",
                   "bench_offload", "bench_links", "bench_upload")


def add_command(subparsers, name, func, **kwargs) -> argparse.ArgumentParser:
    """Add a subcommand whose help and description come from ``func``'s docstring."""
    doc = inspect.cleandoc(func.__doc__ or "")
    summary = doc.splitlines()[0] if doc else ""
    parser = subparsers.add_parser(name, help=summary, description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
    parser.set_defaults(func=func)
    return parser


def positive_int(value: str) -> int:
    """An argparse type: a whole number, 1 or more."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"appliance {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"appliance.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = args.func(args) or 0
        sys.stdout.flush()  # a closed pipe shows here, where it is handled, not at the interpreter's exit
        return code
    except ApplianceError as e:
        if args.debug:
            raise
        print(f"appliance: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`appliance captures | head`): stop quietly, as cat and grep do. Later
        # writes, and the interpreter's own flush at exit, go to /dev/null instead of raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command the pipe stopped
