"""``lmsfa info``: parameters, GFLOPs and metadata of the network or of a model file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "print parameters, GFLOPs and the class table of LMSF-A or of a model file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", nargs="?", type=Path,
        help="an LMSF-A checkpoint (.pt) or ONNX file; without it, a new network is described",
    )
    parser.add_argument("--classes", type=int, default=4, help="number of classes of a new network (default: 4)")
    parser.add_argument(
        "--imgsz", type=int, nargs="+", default=None, metavar="PIXELS",
        help="input size for the FLOP count: one value (square) or height and width, multiples of 32 "
             "(default: the model's input size, or 640)",
    )
    parser.add_argument("--sha256", default=None, help="expected SHA-256 of the model file; a mismatch is an error")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def run(args: argparse.Namespace) -> int:
    from ..cli import image_size
    from ..errors import CheckpointError, InputError
    from ..model import LMSFA, load_checkpoint, read_onnx_metadata, verify_sha256
    from ..model.profile import model_summary

    info: dict = {}
    model = None
    input_size = None
    if args.model is None:
        if args.sha256:
            raise InputError("--sha256 checks a model file: give the file too (lmsfa info MODEL --sha256 HASH)")
        model = LMSFA(args.classes)
    elif args.model.suffix.lower() == ".onnx":
        if not args.model.is_file():
            raise InputError(f"model file not found: {args.model}")
        info["file"] = str(args.model)
        info["sha256"] = verify_sha256(args.model, args.sha256)
        try:
            info["onnx_metadata"] = read_onnx_metadata(args.model)
        except Exception as error:  # onnx raises protobuf DecodeError and others for a bad file
            raise CheckpointError(f"{args.model} is not a readable ONNX model: {error}") from error
    else:
        model, meta = load_checkpoint(args.model, expected_sha256=args.sha256)
        input_size = meta.input_size
        info.update(
            file=str(args.model),
            sha256=meta.sha256,
            classes_table=meta.class_table.to_dict()["classes"],
            trained_input_size=list(meta.input_size),
            provenance=meta.provenance,
        )

    if model is not None:
        if args.imgsz:
            input_size = image_size(args.imgsz)
        input_size = input_size or (640, 640)
        info.update(model_summary(model, input_size))

    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        if key == "classes_table":
            _print_class_table(value)
        elif isinstance(value, dict):
            # Provenance and ONNX metadata print one line per entry, with nested values as JSON.
            print(f"{key}:")
            for sub_key, sub_value in value.items():
                if sub_key == "class_table" and isinstance(sub_value, dict) and "classes" in sub_value:
                    _print_class_table(sub_value["classes"], indent="  ")
                    continue
                # Fractions such as metrics keep four significant digits.
                text = f"{sub_value:.4g}" if isinstance(sub_value, float) else _format_value(sub_value)
                print(f"  {sub_key}: {text}")
        else:
            print(f"{key}: {_format_value(value)}")
    return 0


def _print_class_table(classes: list, indent: str = "") -> None:
    print(f"{indent}class table:")
    for index, entry in enumerate(classes):
        print(f"{indent}  {index}: {entry['name']}  RGB {tuple(entry['color'])}")


def _format_value(value) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)
