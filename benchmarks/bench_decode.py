"""Decode throughput and peak memory of lmsfa.sources against a plain cv2.VideoCapture loop.

Throughput: the real 512x512 MPEG-4 Part 2 clip (vocalfolds seq4_5fps.mp4), and 512x512 and
1920x1080 H.264 clips encoded here from the same frames, are decoded by both readers in
alternating runs. The ratio is OpenCV time / lmsfa time (above 1: lmsfa is faster), from
the best runs, the median runs and the least process CPU time. Both times include opening
the file. For lmsfa, opening is the demux pass that builds the timeline plus one decoded
frame, also listed on its own as "open_source ms". OpenCV's frames are BGR, lmsfa's are
upright RGB.

Memory: the peak resident set size of a child process that streams an H.264 clip of
N frames through ``open_source``, and of one that streams 10 x N frames. A streaming reader
keeps the two equal.

Usage: python benchmarks/bench_decode.py [--data ../shared/data] [--frames 60] [--repeats 7]
                                        [--long-frames 0]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "LMSFASegmentation"))

from lmsfa.sources import open_source  # noqa: E402


def seq4_frames(data: Path) -> list[np.ndarray]:
    files = sorted((data / "vocalfolds" / "images" / "patient1" / "seq4").glob("*.jpg"))
    return [cv2.imread(str(file))[:, :, ::-1].copy() for file in files]


def encode_h264(path: Path, frames: list[np.ndarray], size: tuple[int, int], count: int) -> None:
    """Encode ``count`` frames (cycling through ``frames``) resized to ``size`` (H, W)."""
    height, width = size
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=25, options={"preset": "veryfast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for position in range(count):
            image = cv2.resize(frames[position % len(frames)], (width, height),
                               interpolation=cv2.INTER_LINEAR)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = position
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def time_opencv(path: Path) -> tuple[float, float, int]:
    """Return (wall seconds, CPU seconds, frames) of opening and reading all frames."""
    wall, cpu = time.perf_counter(), time.process_time()
    capture = cv2.VideoCapture(str(path))
    count = 0
    while True:
        ok, _ = capture.read()
        if not ok:
            break
        count += 1
    capture.release()
    return time.perf_counter() - wall, time.process_time() - cpu, count


def time_lmsfa(path: Path) -> tuple[float, float, int]:
    """Return (wall seconds, CPU seconds, frames) of open_source and iterating all frames."""
    wall, cpu = time.perf_counter(), time.process_time()
    count = 0
    with open_source(path) as source:
        for _ in source:
            count += 1
    return time.perf_counter() - wall, time.process_time() - cpu, count


def encode_noise_h264(path: Path, count: int) -> None:
    """Encode ``count`` 256x256 frames of scrolling noise (large packets, like real video)."""
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 256, 256, "yuv420p"
        for position in range(count):
            frame = av.VideoFrame.from_ndarray(np.roll(noise, position, axis=1), format="rgb24")
            frame.pts = position
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def time_open(path: Path) -> float:
    """Return the wall seconds of open_source alone (timeline scan and first frame)."""
    wall = time.perf_counter()
    open_source(path).close()
    return time.perf_counter() - wall


def compare_throughput(path: Path, repeats: int) -> dict:
    """Time both readers in alternating runs; return best and median figures."""
    runs = {"opencv": [], "lmsfa": []}
    counts = set()
    for _ in range(repeats):
        for name, reader in (("opencv", time_opencv), ("lmsfa", time_lmsfa)):
            wall, cpu, count = reader(path)
            runs[name].append((wall, cpu))
            counts.add(count)
    if len(counts) != 1:
        raise RuntimeError(f"the readers disagree on the frame count of {path}: {sorted(counts)}")
    frames = counts.pop()
    best = {name: min(wall for wall, _ in values) for name, values in runs.items()}
    median = {name: statistics.median(wall for wall, _ in values) for name, values in runs.items()}
    cpu = {name: min(cpu for _, cpu in values) for name, values in runs.items()}
    return {
        "frames": frames,
        "opencv_fps": frames / best["opencv"],
        "lmsfa_fps": frames / best["lmsfa"],
        "ratio_best": best["opencv"] / best["lmsfa"],
        "ratio_median": median["opencv"] / median["lmsfa"],
        "ratio_cpu": cpu["opencv"] / cpu["lmsfa"],
        "open_ms": 1000 * min(time_open(path) for _ in range(repeats)),
    }


def child_peak_rss_mib(path: Path) -> dict:
    """Stream ``path`` in a fresh process; return its peak RSS in MiB before and after."""
    output = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def peak_rss_mib() -> float:
    """Peak RSS of this process image in MiB (Linux VmHWM).

    getrusage's ru_maxrss is not used because Linux keeps it across execve, so a child
    would report its parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not found in /proc/self/status: this measurement needs Linux")


def memory_child(path: Path) -> None:
    after_imports = peak_rss_mib()
    count = 0
    with open_source(path) as source:
        for _ in source:
            count += 1
    print(json.dumps({"frames": count, "after_imports": after_imports, "peak": peak_rss_mib()}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data",
                        help="folder of the shared data sets (default: ../shared/data)")
    parser.add_argument("--frames", type=int, default=60,
                        help="frames N of the 1920x1080 clip and the short memory clip; "
                             "the 512x512 H.264 clip has 5 x N")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per reader and clip")
    parser.add_argument("--long-frames", type=int, default=0,
                        help="also time open_source on a 256x256 H.264 clip of this many "
                             "frames (0: skip)")
    parser.add_argument("--memory-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child is not None:
        memory_child(args.memory_child)
        return 0

    print(f"machine: {platform.processor() or platform.machine()}, {platform.system()}, "
          f"Python {platform.python_version()}, OpenCV {cv2.__version__}, PyAV {av.__version__}")
    frames = seq4_frames(args.data)
    with tempfile.TemporaryDirectory() as workdir:
        clip_512 = Path(workdir) / "clip512.mp4"
        encode_h264(clip_512, frames, (512, 512), 5 * args.frames)
        clip_1080 = Path(workdir) / "clip1080.mp4"
        encode_h264(clip_1080, frames, (1080, 1920), args.frames)
        clips = {"512x512 MPEG-4 Part 2 (seq4_5fps.mp4)": args.data / "vocalfolds" / "seq4_5fps.mp4",
                 "512x512 H.264": clip_512,
                 "1920x1080 H.264": clip_1080}
        print("| clip | frames | OpenCV fps | lmsfa fps | ratio (best) | ratio (median) "
              "| ratio (CPU time) | open_source ms |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, path in clips.items():
            result = compare_throughput(path, args.repeats)
            print(f"| {name} | {result['frames']} | {result['opencv_fps']:.0f} "
                  f"| {result['lmsfa_fps']:.0f} | {result['ratio_best']:.2f} "
                  f"| {result['ratio_median']:.2f} | {result['ratio_cpu']:.2f} "
                  f"| {result['open_ms']:.1f} |")

        for count in (args.frames, 10 * args.frames):
            path = Path(workdir) / f"memory{count}.mp4"
            encode_h264(path, frames, (512, 512), count)
            memory = child_peak_rss_mib(path)
            print(f"512x512 H.264, {memory['frames']} frames: peak RSS {memory['peak']:.1f} MiB "
                  f"({memory['after_imports']:.1f} MiB after imports)")

        if args.long_frames:
            path = Path(workdir) / "long.mp4"
            encode_noise_h264(path, args.long_frames)
            open_ms = 1000 * min(time_open(path) for _ in range(args.repeats))
            print(f"256x256 H.264, {args.long_frames} frames, {path.stat().st_size / 1e6:.0f} MB: "
                  f"open_source {open_ms:.0f} ms (file in the page cache)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
