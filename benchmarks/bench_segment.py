"""The whole headless main job (``lmsfa segment``) against the pure model time, in one run.

    python benchmarks/bench_segment.py --output benchmarks/SEGMENT.md [--model M] [--backend onnx]

"Pure model" is the network alone on the clip's letterboxed frames (the runner's ``run``).
It is timed in the same process right before and after the whole job (decode, letterbox,
network, post-processing, scene writing and saving the ``.mrb``). The lower of the two model
times is used, so machine drift does not flatter the ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_model import machine_description  # noqa: E402

from lmsfa.default_model import default_model  # noqa: E402
from lmsfa.inference import Predictor  # noqa: E402
from lmsfa.segment_job import segment_recording  # noqa: E402
from lmsfa.sources import open_source  # noqa: E402

SAMPLE = REPO / "Resources" / "Sample" / "vocalfolds_seq4.mp4"


def pure_model_seconds(predictor: Predictor, images: list[np.ndarray]) -> float:
    tensors = [predictor.fit_letterbox(image.shape[:2]).apply(image) for image in images]
    predictor.runner.run(np.stack(tensors[:1]))  # warm-up
    start = time.perf_counter()
    for tensor in tensors:
        predictor.runner.run(tensor[None])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=SAMPLE, help="clip to segment (default: the sample clip)")
    parser.add_argument("--model", type=Path, default=None, help="model file (default: the bundled model)")
    parser.add_argument("--backend", default="onnx", choices=["torch", "onnx"], help="inference runtime (default: onnx)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default: 2)")
    parser.add_argument("--output", type=Path, default=None, help="markdown file to write the results to")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model = args.model or default_model("pt")[0]
    predictor = Predictor(model, backend=args.backend, device="cpu", num_threads=args.threads)
    with open_source(args.input) as source:
        images = [frame.image for frame in source]

    before = pure_model_seconds(predictor, images)
    with tempfile.TemporaryDirectory() as tmp, open_source(args.input) as source:
        start = time.perf_counter()
        summary = segment_recording(source, predictor, Path(tmp) / "clip.mrb", model_name=Path(model).name)
        job_seconds = time.perf_counter() - start
    after = pure_model_seconds(predictor, images)
    model_seconds = min(before, after)

    frames = len(images)
    lines = [
        "# Headless main job against the pure model",
        "",
        f"Machine: {machine_description()}.",
        f"Command: `python benchmarks/bench_segment.py --backend {args.backend} --threads {args.threads}` "
        f"({time.strftime('%Y-%m-%d')}), model `{Path(model).name}`, input `{args.input.name}` "
        f"({frames} frames, {images[0].shape[1]}x{images[0].shape[0]}).",
        "",
        "| measure | seconds | frames/s |",
        "| --- | ---: | ---: |",
        f"| pure model (network only, batch 1) | {model_seconds:.2f} | {frames / model_seconds:.2f} |",
        f"| whole job (decode to saved .mrb) | {job_seconds:.2f} | {frames / job_seconds:.2f} |",
        "",
        f"Whole job throughput / pure model throughput: {model_seconds / job_seconds:.2f}.",
        "",
        "Time per stage inside the job (seconds, summed; decoding overlaps inference on its own thread):",
        "",
        "| stage | seconds |",
        "| --- | ---: |",
    ]
    lines += [f"| {stage} | {seconds:.2f} |" for stage, seconds in summary.stage_seconds.items()]
    lines += ["", f"Instances written: {sum(summary.instances_per_class.values())}."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
