"""Model size, FLOPs and latency of LMSF-A beside peer YOLO segmentation models.

Runs every variant round-robin in one process (one timed call of each per round), so that
drifting machine speed affects all of them alike. Compare the ratios, not absolute times.

    python benchmarks/bench_model.py --runs 60 --threads 2 --output benchmarks/MODEL.md

Variants: LMSF-A in PyTorch (training form and re-parameterised, default and channels_last
memory format) and in ONNX Runtime, and the peer ONNX graphs in ``../shared/peers``. Per-block
time comes from ONNX Runtime's profiler, grouped by the top-level LMSF-A module of each node.
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from lmsfa.model import LMSFA, export_onnx
from lmsfa.model.profile import model_summary

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_description as describe_machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO.parent / "shared" / "peers"
PEER_FILES = {
    "YOLOv8n-seg (ONNX Runtime)": "yolov8n-seg-nc6-640.onnx",
    "YOLO11n-seg (ONNX Runtime)": "yolo11n-seg-nc6-640.onnx",
    "YOLO26n-seg (ONNX Runtime)": "yolo26n-seg-nc6-640.onnx",
}
BLOCK_NAMES = {
    "b0": "stem CBS", "b1": "CBS s2", "b2": "C2f-Pro P2", "b3": "CBS s2", "b4": "C2f-Pro P3",
    "b5": "CBS s2", "b6": "C2f-Pro P4", "b7": "CBS s2", "b8": "C2f-Pro P5", "b9": "SPPF",
    "n13": "C2f-Pro neck P4", "n17": "C2f-Pro neck P3", "n20": "C2f-Pro out P4", "n23": "C2f-Pro out P5",
    "n24": "SSFF", "head": "LMSH head",
}


def machine_description() -> str:
    return describe_machine(torch=torch.__version__, onnxruntime=ort.__version__)


def ort_session(path: Path, threads: int, profile: bool = False) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_profiling = profile
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def build_variants(model: LMSFA, onnx_path: Path, threads: int, size: int) -> dict:
    image = torch.rand(1, 3, size, size)
    image_cl = image.contiguous(memory_format=torch.channels_last)
    deployed = copy.deepcopy(model).reparameterize()
    train_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    deployed_cl = copy.deepcopy(deployed).to(memory_format=torch.channels_last)

    def torch_call(net, x):
        def call():
            with torch.inference_mode():
                net(x)
        return call

    def onnx_call(session):
        feed = {session.get_inputs()[0].name: image.numpy()}
        return lambda: session.run(None, feed)

    variants = {
        "LMSF-A PyTorch, training form": torch_call(model, image),
        "LMSF-A PyTorch, training form, channels_last": torch_call(train_cl, image_cl),
        "LMSF-A PyTorch, re-parameterised": torch_call(deployed, image),
        "LMSF-A PyTorch, re-parameterised, channels_last": torch_call(deployed_cl, image_cl),
        "LMSF-A (ONNX Runtime)": onnx_call(ort_session(onnx_path, threads)),
    }
    for name, file in PEER_FILES.items():
        if not (PEERS / file).is_file():
            sys.exit(f"peer model not found: {PEERS / file}; check out the shared folder beside the repository")
        variants[name] = onnx_call(ort_session(PEERS / file, threads))
    return variants


def time_round_robin(variants: dict, runs: int, warmup: int) -> dict:
    for _ in range(warmup):
        for call in variants.values():
            call()
    times = collections.defaultdict(list)
    for _ in range(runs):
        for name, call in variants.items():
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1000.0)
    return times


def per_block_times(onnx_path: Path, threads: int, size: int, runs: int) -> list[tuple[str, float]]:
    """Median-free mean per-run time (ms) of each top-level LMSF-A module under ONNX Runtime."""
    session = ort_session(onnx_path, threads, profile=True)
    feed = {"images": np.random.rand(1, 3, size, size).astype(np.float32)}
    for _ in range(runs):
        session.run(None, feed)
    profile_file = session.end_profiling()
    events = json.loads(Path(profile_file).read_text())
    Path(profile_file).unlink(missing_ok=True)
    totals: dict[str, float] = collections.defaultdict(float)
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        node = event["name"][: -len("_kernel_time")]
        parts = node.strip("/").split("/")
        block = parts[1] if len(parts) > 2 and parts[0] == "model" else "other"
        totals[block] += event["dur"] / 1000.0
    return sorted(((block, total / runs) for block, total in totals.items()), key=lambda item: -item[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=60, help="timed runs per variant (default: 60)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs per variant first (default: 5)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for torch and ONNX Runtime")
    parser.add_argument("--size", type=int, default=640, help="square input size in pixels (default: 640)")
    parser.add_argument("--classes", type=int, default=6, help="classes (default: 6, as the peer graphs)")
    parser.add_argument("--output", type=Path, default=None, help="markdown file to write the results to")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = LMSFA(args.classes).eval()
    summary = model_summary(model, (args.size, args.size))
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(model, Path(tmp) / "lmsfa.onnx", (args.size, args.size))
        variants = build_variants(model, onnx_path, args.threads, args.size)
        times = time_round_robin(variants, args.runs, args.warmup)
        blocks = per_block_times(onnx_path, args.threads, args.size, runs=20)

    reference = statistics.median(times["YOLOv8n-seg (ONNX Runtime)"])
    lines = [
        "# LMSF-A model benchmark",
        "",
        f"Machine: {machine_description()}.",
        f"Command: `python benchmarks/bench_model.py --runs {args.runs} --threads {args.threads} "
        f"--size {args.size}` ({time.strftime('%Y-%m-%d')}).",
        "",
        f"## Size ({args.classes} classes, {args.size}x{args.size})",
        "",
        "| form | parameters | GFLOPs |",
        "| --- | ---: | ---: |",
        f"| training | {summary['params_training']:,} | {summary['gflops_training']:.2f} |",
        f"| re-parameterised | {summary['params_reparameterized']:,} | {summary['gflops_reparameterized']:.2f} |",
        "",
        f"Counter: {summary['flop_counter']}.",
        "",
        f"## Latency (batch 1, {args.threads} threads, {args.runs} interleaved runs after {args.warmup} warm-up)",
        "",
        "| variant | median ms | p90 ms | median / YOLOv8n-seg ONNX |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, values in times.items():
        median = statistics.median(values)
        p90 = float(np.percentile(values, 90))
        lines.append(f"| {name} | {median:.1f} | {p90:.1f} | {median / reference:.2f} |")
    lines += [
        "",
        "## Where LMSF-A's ONNX Runtime time goes (mean ms per run, 20 profiled runs)",
        "",
        "| module | block | ms |",
        "| --- | --- | ---: |",
    ]
    for block, ms in blocks:
        lines.append(f"| {block} | {BLOCK_NAMES.get(block, '')} | {ms:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
