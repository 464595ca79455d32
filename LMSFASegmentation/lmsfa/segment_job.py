"""The main job: segment a recording into a Slicer scene and save it as a ``.mrb`` bundle.

Used by ``lmsfa segment``; the same steps run in the Slicer module, on its own threads.
"""

from __future__ import annotations

import collections
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .errors import Cancelled, InputError
from .progress import Progress

logger = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial.mrb"


@dataclass
class SegmentSummary:
    """Output path, frame and instance counts and stage times of one segmentation run."""

    output: Path
    frames: int = 0
    missing_frames: int = 0
    instances_per_class: collections.Counter = field(default_factory=collections.Counter)
    stage_seconds: dict = field(default_factory=dict)
    wall_seconds: float = 0.0
    partial: bool = False


def output_path_for(input_path: Path, output_folder: Path) -> Path:
    """``OUTDIR/<input name>.mrb``: the video's stem, or the folder's name."""
    input_path = Path(input_path)
    name = input_path.name if input_path.is_dir() else input_path.stem
    return Path(output_folder) / f"{name}.mrb"


def check_output_folder(folder: Path) -> None:
    """Check that ``folder`` can be created or written, without creating it.

    The folder itself is created only when the result is saved, so a run that fails
    before that leaves no empty folder behind.
    """
    folder = Path(folder).absolute()
    if folder.exists() and not folder.is_dir():
        raise InputError(f"output path {folder} is a file; give a folder with -o")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"cannot create the output folder {folder}: {existing} is a file; choose another -o")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".lmsfa-write-test-"):
            pass
    except OSError as error:
        raise InputError(f"cannot write to {existing}: {error.strerror or error}; choose a writable folder "
                         "with -o") from error


def segment_recording(
    source,
    predictor,
    output: Path,
    model_name: str,
    overwrite: bool = False,
    batch_size: int = 1,
    progress: Optional[Progress] = None,
    sequence_name: Optional[str] = None,
    context=None,
) -> SegmentSummary:
    """Run ``predictor`` over an open frame ``source`` and save the scene to ``output`` (.mrb).

    ``model_name`` goes into every segment's model tag (file name and SHA-256, say).
    ``context`` is an empty :class:`lmsfa.scene.SceneContext`; a headless one by default.

    On cancel (``progress.cancel()``, or Ctrl+C in the CLI) the frames finished so far are
    saved to ``<output stem>.partial.mrb`` and :class:`Cancelled` is raised with that path.
    The complete-run file name is never written by a partial run, and an earlier partial
    file is kept (the new one gets a numbered name). Files are written
    atomically, so no half-written bundle is left behind.
    """
    from .scene import SceneContext, SequenceWriter, save_scene_mrb

    output = Path(output)
    if output.exists() and not overwrite:
        raise InputError(f"{output} already exists; pass --overwrite to replace it or choose another -o folder")
    progress = progress or Progress()
    info = source.info
    name = sequence_name or output.name[: -len(".mrb")]
    context = context or SceneContext.headless()
    # Sources give (row, column) spacing; the scene writer takes (column, row).
    spacing = None if info.spacing_mm is None else (info.spacing_mm[1], info.spacing_mm[0])
    writer = SequenceWriter(context, name, predictor.class_table, model_name=model_name, spacing_mm=spacing)

    summary = SegmentSummary(output=output)
    predictor.reset_stage_times()
    scene_seconds = 0.0
    start = time.perf_counter()
    frames_by_index = {}

    def remember(frames):
        # The predictor consumes frames on its decode thread; keep each image until its result
        # arrives, so the scene gets the exact pixels that were segmented.
        for frame in frames:
            frames_by_index[frame.index] = frame
            yield frame

    try:
        for result in predictor.predict_stream(remember(source), batch_size=batch_size, progress=progress):
            frame = frames_by_index.pop(result.index)
            tick = time.perf_counter()
            writer.add_frame(result.index, result.timestamp_s, frame.image, result.instances)
            scene_seconds += time.perf_counter() - tick
            summary.frames += 1
            summary.missing_frames += int(frame.missing)
            summary.instances_per_class.update(inst.class_name for inst in result.instances)
    except (Cancelled, KeyboardInterrupt) as interruption:
        summary.partial = True
        summary.output = unused_path(output.with_name(output.name[: -len(".mrb")] + PARTIAL_SUFFIX))
        if summary.frames:
            output.parent.mkdir(parents=True, exist_ok=True)
            save_scene_mrb(context, summary.output)
            message = (f"cancelled after {summary.frames} of {len(source)} frames; the finished frames are in "
                       f"{summary.output} (a partial result)")
        else:
            message = "cancelled before the first frame finished; nothing was written"
        # The caller shows the message (CLI error line, Slicer status), so it is logged at info level.
        logger.info(message)
        raise Cancelled(message) from interruption

    writer.finish()
    output.parent.mkdir(parents=True, exist_ok=True)
    tick = time.perf_counter()
    save_scene_mrb(context, output, overwrite=overwrite)
    summary.stage_seconds = dict(predictor.stage_times)
    summary.stage_seconds["scene"] = scene_seconds
    summary.stage_seconds["save"] = time.perf_counter() - tick
    summary.wall_seconds = time.perf_counter() - start
    return summary


def unused_path(path: Path) -> Path:
    """``path``, or ``name-2.suffix``, ``name-3.suffix``... for the first name not taken."""
    if not path.exists():
        return path
    stem, suffix = path.name.split(".", 1)
    number = 2
    while (candidate := path.with_name(f"{stem}-{number}.{suffix}")).exists():
        number += 1
    return candidate
