"""``lmsfa export-onnx``: write the re-parameterised model as ONNX for ONNX Runtime."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "export an LMSF-A checkpoint to ONNX (re-parameterised, opset 17 or later)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="LMSF-A checkpoint (.pt)")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="ONNX file to write (default: the checkpoint path with .onnx)")
    parser.add_argument("--imgsz", type=int, nargs="+", default=None, metavar="PIXELS",
                        help="input size: one value (square) or height and width, multiples of 32 "
                             "(default: the checkpoint's input size)")
    parser.add_argument("--dynamic", action="store_true",
                        help="make batch, height and width dynamic (any multiple of 32 at run time)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version, 17 or later (default: 17)")
    parser.add_argument("--sha256", default=None, help="expected SHA-256 of the checkpoint; a mismatch is an error")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def run(args: argparse.Namespace) -> int:
    from ..cli import image_size
    from ..errors import InputError
    from ..model import export_onnx, load_checkpoint, sha256_file

    output = args.output or args.checkpoint.with_suffix(".onnx")
    size = image_size(args.imgsz) if args.imgsz else None
    if output.exists() and not args.overwrite:
        raise InputError(f"{output} already exists; pass --overwrite to replace it or choose another -o path")
    model, meta = load_checkpoint(args.checkpoint, expected_sha256=args.sha256)
    size = size or meta.input_size
    try:
        export_onnx(model, output, size, dynamic=args.dynamic, opset=args.opset, class_table=meta.class_table,
                    metadata={"checkpoint_sha256": meta.sha256, "provenance": meta.provenance})
    except ValueError as error:
        raise InputError(str(error)) from error
    print(f"wrote {output} (SHA-256 {sha256_file(output)})")
    return 0
