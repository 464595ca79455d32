"""``lmsfa export``: write a segmented clip of a Slicer scene bundle in another format."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

HELP = "export the segmentation sequence of a scene bundle (.mrb) as COCO, YOLO-seg, label maps, DICOM SEG or video"

logger = logging.getLogger(__name__)

FORMAT_NAMES = ("coco", "yolo", "png", "nrrd", "nifti", "dicom-seg", "overlay", "contact-sheet")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scene", type=Path, help="a Slicer scene bundle (.mrb) written by lmsfa segment or saved in Slicer")
    parser.add_argument("--format", required=True, choices=FORMAT_NAMES, help="the output format")
    parser.add_argument(
        "-o", "--output", required=True, type=Path,
        help="output folder; for overlay an .mp4 file and for contact-sheet a .png file",
    )
    parser.add_argument("--first", type=int, default=None, help="first frame index to export (default: the first frame)")
    parser.add_argument("--last", type=int, default=None, help="last frame index to export, inclusive (default: the last frame)")
    parser.add_argument("--overwrite", action="store_true", help="replace the output once the new one is complete: the named file, or a folder that an earlier "
                        "lmsfa export wrote (other folders are never replaced)")
    parser.add_argument("--clip", default=None, help="name of the sequence browser to export when the scene has several")
    parser.add_argument(
        "--class-table", type=Path, default=None,
        help="JSON class table ({'classes': [{'name', 'color'}, ...]}, as in classes.json of a PNG export); "
             "default: the classes stored in the scene",
    )
    dicom = parser.add_argument_group("dicom-seg")
    dicom.add_argument("--source-dicom", type=Path, default=None, help="the DICOM file the frames came from; the SEG joins its study")
    dicom.add_argument(
        "--create-references", action="store_true",
        help="without --source-dicom, create Secondary Capture images of the frames in a new study",
    )
    dicom.add_argument("--keep-empty-segments", action="store_true", help="write segments with empty masks instead of skipping them")
    video = parser.add_argument_group("overlay and contact-sheet")
    video.add_argument("--fps", type=float, default=None, help="overlay frame rate in frames per second (default: from the timestamps, else 5)")
    video.add_argument("--max-tiles", type=int, default=16, help="maximum number of frames on the contact sheet (default: 16)")


def _options(args: argparse.Namespace) -> dict:
    if args.format == "dicom-seg":
        return {
            "source_dicom": args.source_dicom,
            "create_references": args.create_references,
            "empty_segments": "keep" if args.keep_empty_segments else "skip",
        }
    if args.format == "overlay":
        return {"fps": args.fps}
    if args.format == "contact-sheet":
        return {"max_tiles": args.max_tiles}
    return {}


def run(args: argparse.Namespace) -> int:
    from ..classes import ClassTable
    from ..errors import InputError
    from ..exports import export, open_scene_bundle
    from ..progress import Progress

    if args.scene.suffix.lower() != ".mrb":
        raise InputError(f"{args.scene}: give a Slicer scene bundle (.mrb)")
    class_table = None
    if args.class_table is not None:
        try:
            class_table = ClassTable.from_dict(json.loads(args.class_table.read_text(encoding="utf-8")))
        except FileNotFoundError as error:
            raise InputError(f"class table not found: {args.class_table}") from error
        except json.JSONDecodeError as error:
            raise InputError(f"{args.class_table} is not valid JSON: {error}") from error

    scene_input = open_scene_bundle(args.scene, clip=args.clip, class_table=class_table)

    def show(done: int, total, message: str) -> None:
        logger.debug("%d/%s %s", done, total if total is not None else "?", message)

    report = export(
        args.format, scene_input, args.output, first=args.first, last=args.last,
        overwrite=args.overwrite, progress=Progress(show), **_options(args),
    )
    print(report.summary())
    return 0
