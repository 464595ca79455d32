"""The ``lmsfa`` command line.

Each subcommand lives in ``lmsfa/commands/<name>.py`` and defines ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Subcommand modules import heavy
packages (torch, vtk) inside ``run`` so that ``lmsfa --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading

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


@contextlib.contextmanager
def deferred_interrupt():
    """Hold back Ctrl+C until the block ends, then raise :class:`KeyboardInterrupt`.

    For start-up steps that load native libraries (VTK, ONNX Runtime, torch): an interrupt
    inside such an import can leave them half-initialised and crash the process.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def image_size(values: list[int], option: str = "--imgsz") -> tuple[int, int]:
    """(height, width) from one value (square) or two; sides must be positive multiples of 32."""
    from .errors import InputError

    if len(values) not in (1, 2):
        raise InputError(f"{option} takes one value (square) or two (height width), got {len(values)}: {values}")
    size = (values[0], values[0]) if len(values) == 1 else (values[0], values[1])
    if any(v < 32 or v % 32 for v in size):
        raise InputError(f"{option} {' '.join(map(str, values))}: sides must be multiples of 32 of at least 32 pixels")
    return size


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
        status = int(args.run(args) or 0)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        # The program reading stdout has exited (as in `lmsfa info --json | head -1`), so stop
        # quietly as other command-line tools do. Pointing stdout at the null device keeps the
        # flush at interpreter exit from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, the status a shell reports for this case
    except Cancelled as error:
        print(f"lmsfa {args.command}: {error}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"lmsfa {args.command}: interrupted; nothing was written", file=sys.stderr)
        return 130
    except LmsfaError as error:
        print(f"lmsfa {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
