"""The ``lmsfa`` command line.

Each subcommand lives in ``lmsfa/commands/<name>.py`` and defines ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Subcommand modules import heavy
packages (torch, vtk) inside ``run`` so that ``lmsfa --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import Cancelled, LmsfaError

# Subcommand name -> module under lmsfa.commands. A module that does not exist yet is skipped.
COMMANDS = {
    "info": "info",
    "export-onnx": "export_onnx",
    "segment": "segment",
    "export": "export",
    "train": "train",
    "evaluate": "evaluate",
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="lmsfa",
        description="LMSF-A instance segmentation of endoscopic video.",
    )
    parser.add_argument("--version", action="version", version=f"lmsfa {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(f"lmsfa.commands.{module_name}")
        except ModuleNotFoundError as error:
            if error.name == f"lmsfa.commands.{module_name}":
                continue
            raise
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except Cancelled as error:
        print(f"lmsfa {args.command}: {error}", file=sys.stderr)
        return 130
    except LmsfaError as error:
        print(f"lmsfa {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
