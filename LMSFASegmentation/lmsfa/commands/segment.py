"""``lmsfa segment``: the main job, a recording in and a Slicer scene (.mrb) out."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "segment a video, frame folder or DICOM video and save the frames and masks as a Slicer scene (.mrb)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="video file (mp4, avi, mov, mkv, webm), frame folder or DICOM file")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="output folder; the scene is written to OUTPUT/<input name>.mrb")
    parser.add_argument("--model", type=Path, default=None,
                        help="LMSF-A checkpoint (.pt) or ONNX file (default: the bundled model, as ONNX "
                             "unless --backend torch)")
    parser.add_argument("--sha256", default=None,
                        help="expected SHA-256 of --model; a mismatch stops before any work")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where the network runs (default: auto, CUDA when available)")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"],
                        help="inference runtime (default: auto, ONNX Runtime for .onnx files, PyTorch otherwise)")
    parser.add_argument("--conf", type=float, default=0.25,
                        help="minimum class probability of an instance, 0 to 1 (default: 0.25)")
    parser.add_argument("--iou", type=float, default=0.7,
                        help="IoU above which non-maximum suppression drops the weaker box, 0 to 1 (default: 0.7)")
    parser.add_argument("--max-det", type=int, default=300, help="maximum instances per frame (default: 300)")
    parser.add_argument("--first", type=int, default=0, help="first frame index, 0-based (default: 0)")
    parser.add_argument("--last", type=int, default=None, help="last frame index, inclusive (default: the last frame)")
    parser.add_argument("--stride", type=int, default=1, help="segment every Nth frame (default: 1)")
    parser.add_argument("--batch", type=int, default=1, help="frames per network call (default: 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output .mrb")
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..cli import deferred_interrupt
    from ..default_model import default_model
    from ..errors import InputError
    from ..inference import Predictor
    from ..model import verify_sha256
    from ..progress import Progress
    from ..scene import SceneContext
    from ..segment_job import check_output_folder, output_path_for, segment_recording
    from ..sources import open_source

    if args.stride < 1:
        raise InputError(f"--stride {args.stride}: use 1 or more")
    if args.batch < 1:
        raise InputError(f"--batch {args.batch}: use 1 or more")
    output = output_path_for(args.input, args.output)
    if output.exists() and not args.overwrite:
        raise InputError(f"{output} already exists; pass --overwrite to replace it or choose another -o folder")

    if args.model is None:
        # ONNX Runtime is the faster CPU runtime; --backend torch picks the checkpoint.
        model_path, expected = default_model("pt" if args.backend == "torch" else "onnx")
        if args.sha256:
            expected = args.sha256
    else:
        model_path, expected = args.model, args.sha256
    if not Path(model_path).is_file():
        raise InputError(f"model file not found: {model_path}")
    digest = verify_sha256(model_path, expected)

    # Every input check runs before the model loads and before any frame is decoded.
    with open_source(args.input, first=args.first, last=args.last, stride=args.stride) as source:
        check_output_folder(args.output)
        with deferred_interrupt():
            predictor = Predictor(model_path, device=args.device, backend=args.backend, conf=args.conf,
                                  iou=args.iou, max_det=args.max_det, expected_sha256=digest)
            context = SceneContext.headless()  # loads VTK and the MRML libraries
        info = source.info
        print(f"input: {info.path} ({info.kind}, {info.frame_count} frames, {info.size[1]}x{info.size[0]}); "
              f"segmenting {len(source)} frames")
        print(f"model: {model_path} (SHA-256 {digest}) on {predictor.device} with {predictor.backend}")

        bar = tqdm(total=len(source), unit="frame", disable=args.no_progress, dynamic_ncols=True)

        def on_progress(done, total, message):
            bar.update(done - bar.n)

        progress = Progress(on_progress)
        try:
            summary = segment_recording(source, predictor, output, model_name=f"{Path(model_path).name} "
                                        f"(SHA-256 {digest})", overwrite=args.overwrite,
                                        batch_size=args.batch, progress=progress, context=context)
        finally:
            bar.close()

    print(f"wrote {summary.output}")
    print(f"frames: {summary.frames} ({summary.missing_frames} could not be decoded)")
    total = sum(summary.instances_per_class.values())
    print(f"instances: {total}")
    for name in predictor.class_table.names:
        if summary.instances_per_class.get(name):
            print(f"  {name}: {summary.instances_per_class[name]}")
    print("time per stage (s): " + ", ".join(f"{k} {v:.2f}" for k, v in summary.stage_seconds.items()))
    print(f"wall time: {summary.wall_seconds:.1f} s ({summary.frames / max(summary.wall_seconds, 1e-9):.1f} frames/s)")
    return 0
