"""Benchmark the inference pipeline: post-processing alone, then the whole pipeline on a clip.

1. Post-processing: ``postprocess`` on one network output that contains exactly K detections
   (well-separated boxes of 24 to 160 input pixels, so NMS keeps all of them) with real
   prototypes from the network, frame size equal to the input size. Cases: 10 instances at
   640 and 30 instances at 512.
2. Pipeline: ``Predictor.predict_stream`` on a real video (vocalfolds ``seq4_5fps.mp4``,
   512x512), with decoding in the background thread, for the PyTorch and ONNX Runtime
   backends. The pure model throughput is the runner alone on already letterboxed inputs,
   measured in the same run. The network has random weights with a fixed seed; its class
   convolution is scaled so that a realistic number of instances pass the threshold.

Usage::

    python benchmarks/bench_pipeline.py --threads 1 2 --frames 30 --output benchmarks/PIPELINE.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_description as describe_machine  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "LMSFASegmentation"))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("LMSFA_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")),
                        help="folder of the shared data sets (default: ../shared/data or $LMSFA_SHARED_DATA)")
    parser.add_argument("--threads", type=int, nargs="+", default=[2],
                        help="CPU thread counts for PyTorch and ONNX Runtime, one pipeline run each")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating model-alone and pipeline runs per backend; the fastest of each counts")
    parser.add_argument("--frames", type=int, default=30, help="frames of the clip to run (from the start)")
    parser.add_argument("--input-size", type=int, default=512, help="network input side in pixels (multiple of 32)")
    parser.add_argument("--batch-size", type=int, default=1, help="frames per network call in the pipeline")
    parser.add_argument("--repeats", type=int, default=50, help="timed repetitions of each post-processing case")
    parser.add_argument("--conf", type=float, default=0.15, help="confidence threshold for the pipeline runs")
    parser.add_argument("--output", type=Path, help="write the results as Markdown to this file")
    return parser.parse_args()


def build_network(nc: int = 4):
    import torch

    from lmsfa.model import LMSFA

    torch.manual_seed(0)
    network = LMSFA(nc).eval()
    with torch.no_grad():
        network.head.cls_conv.weight.mul_(6.0)
    return network


def synthetic_output(network, size: int, count: int, rng: np.random.Generator):
    """Return (pred, protos) for one size x size input with ``count`` separated detections."""
    import torch

    with torch.inference_mode():
        pred, (_, _, protos) = network.eval()(torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1)))
    pred = pred.numpy().copy()
    protos = protos.numpy()
    nc = pred.shape[1] - 4 - 32
    pred[:, 4 : 4 + nc] = 0.01  # every anchor below the threshold ...

    side = int(np.ceil(np.sqrt(count)))
    cell = size / side
    anchors = rng.choice(pred.shape[2], size=count, replace=False)
    for k, anchor in enumerate(anchors):  # ... except ``count`` of them, one per grid cell
        row, col = divmod(k, side)
        w, h = rng.uniform(24, min(160, cell * 0.9), size=2)
        pred[0, 0:4, anchor] = ((col + 0.5) * cell, (row + 0.5) * cell, w, h)
        pred[0, 4 + k % nc, anchor] = rng.uniform(0.5, 0.95)
        # Random coefficients, shifted so that the mask logit at the box centre is 3.
        coefficients = rng.normal(0.0, 1.0, size=32)
        grid_row = min(int((row + 0.5) * cell / 4), protos.shape[2] - 1)
        grid_col = min(int((col + 0.5) * cell / 4), protos.shape[3] - 1)
        centre = protos[0, :, grid_row, grid_col]
        coefficients += (3.0 - coefficients @ centre) * centre / (centre @ centre)
        pred[0, 4 + nc :, anchor] = coefficients
    return pred, protos


def bench_postprocess(network, repeats: int) -> list[dict]:
    from lmsfa.classes import ClassTable
    from lmsfa.inference import Letterbox, postprocess

    table = ClassTable.from_names(["a", "b", "c", "d"])
    rng = np.random.default_rng(0)
    rows = []
    for size, count, target_ms in ((640, 10, 5.0), (512, 30, 10.0)):
        pred, protos = synthetic_output(network, size, count, rng)
        geometry = Letterbox.fit((size, size), (size, size))
        counts: dict = {}
        [instances] = postprocess(pred, protos, [geometry], table, conf=0.25, counts=counts)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            postprocess(pred, protos, [geometry], table, conf=0.25)
            times.append((time.perf_counter() - start) * 1000)
        rows.append({
            "case": f"{count} detections, {size}x{size} frame and input",
            "instances": len(instances),
            "empty": counts.get("empty_mask", 0),
            "median": statistics.median(times),
            "min": min(times),
            "p90": float(np.percentile(times, 90)),
            "target": target_ms,
        })
    return rows


def bench_backend(predictor, clip: Path, frames: int, batch_size: int, rounds: int) -> dict:
    import torch

    from lmsfa.sources import open_source

    with open_source(clip, last=frames - 1) as source:
        images = [frame.image for frame in source]
    geometry = predictor.fit_letterbox(images[0].shape[:2])
    inputs = [np.stack([geometry.apply(image) for image in images[i : i + batch_size]])
              for i in range(0, len(images), batch_size)]

    predictor.runner.run(inputs[0])  # warm-up: first-call allocations and kernel choices
    model_times, pipeline_times = [], []
    for _ in range(rounds):  # alternate the two, so load from other processes hits both alike
        start = time.perf_counter()
        for batch in inputs:
            predictor.runner.run(batch)
        model_times.append(time.perf_counter() - start)

        predictor.reset_stage_times()
        predictor.counts.clear()
        start = time.perf_counter()
        with open_source(clip, last=frames - 1) as source:
            results = list(predictor.predict_stream(source, batch_size=batch_size))
        pipeline_times.append(time.perf_counter() - start)
    model_fps = len(images) / min(model_times)
    pipeline_fps = len(results) / min(pipeline_times)
    return {
        "backend": predictor.backend,
        "threads": torch.get_num_threads() if predictor.backend == "torch" else predictor.runner.num_threads,
        "frames": len(results),
        "input": geometry.input_hw,
        "instances": sum(len(r.instances) for r in results) / len(results),
        "stage_ms": {k: 1000 * v / len(results) for k, v in predictor.stage_times.items()},
        "model_fps": model_fps,
        "pipeline_fps": pipeline_fps,
        "ratio": pipeline_fps / model_fps,
    }


def machine_description() -> str:
    import cv2
    import onnxruntime
    import torch

    return describe_machine(torch=torch.__version__, onnxruntime=onnxruntime.__version__, OpenCV=cv2.__version__)


def format_report(args, post_rows, backend_rows, load_before, load_after) -> str:
    lines = [
        "# Inference pipeline benchmark",
        "",
        f"Machine: {machine_description()}.",
        f"Load average (1, 5, 15 min) before and after the run: {', '.join(f'{v:.1f}' for v in load_before)} / "
        f"{', '.join(f'{v:.1f}' for v in load_after)}.",
        "",
        "Command: `python benchmarks/bench_pipeline.py " + " ".join(sys.argv[1:]) + "`",
        "",
        "## Post-processing",
        "",
        f"`postprocess` on one image, {args.repeats} repetitions, in milliseconds:",
        "",
        "| case | instances out | empty masks dropped | median | min | 90th percentile | target |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in post_rows:
        lines.append(
            f"| {row['case']} | {row['instances']} | {row['empty']} | {row['median']:.2f} | {row['min']:.2f} | {row['p90']:.2f} | "
            f"< {row['target']:.0f} |"
        )
    lines += [
        "",
        "## Whole pipeline on a real clip",
        "",
        f"vocalfolds `seq4_5fps.mp4` (512x512 MPEG-4 Part 2), first {args.frames} frames, input "
        f"{args.input_size}, batch size {args.batch_size}, conf {args.conf}, fastest of {args.rounds} "
        "alternating rounds. Stage times are per frame (ms) in the last round; decode and preprocess "
        "run in the background thread, overlapped with inference.",
        "",
        "| backend | threads | network input (HxW) | instances per frame | decode | preprocess | inference | postprocess "
        "| model alone (FPS) | pipeline (FPS) | pipeline / model |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in backend_rows:
        stage = row["stage_ms"]
        lines.append(
            f"| {row['backend']} | {row['threads']} | {row['input'][0]}x{row['input'][1]} | {row['instances']:.1f} | "
            f"{stage['decode']:.1f} | {stage['preprocess']:.1f} | {stage['inference']:.1f} | "
            f"{stage['postprocess']:.1f} | {row['model_fps']:.2f} | {row['pipeline_fps']:.2f} | "
            f"{100 * row['ratio']:.0f} % |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse_args()
    import torch

    from lmsfa.classes import ClassTable
    from lmsfa.inference import Predictor
    from lmsfa.model import save_checkpoint

    clip = args.data / "vocalfolds" / "seq4_5fps.mp4"
    if not clip.is_file():
        print(f"clip not found: {clip}; set --data to the shared data folder", file=sys.stderr)
        return 2
    load_before = os.getloadavg()

    torch.set_num_threads(1)
    network = build_network()
    post_rows = bench_postprocess(network, args.repeats)

    backend_rows = []
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "random.pt"
        save_checkpoint(checkpoint, network, ClassTable.from_names(["a", "b", "c", "d"]),
                        (args.input_size, args.input_size))
        for threads in args.threads:
            torch.set_num_threads(threads)
            for backend in ("torch", "onnx"):
                predictor = Predictor(checkpoint, device="cpu", backend=backend, conf=args.conf,
                                      num_threads=threads)
                backend_rows.append(bench_backend(predictor, clip, args.frames, args.batch_size, args.rounds))

    report = format_report(args, post_rows, backend_rows, load_before, os.getloadavg())
    print(report)
    if args.output:
        args.output.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
