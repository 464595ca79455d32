"""Predictor: RGB frames in, instances per frame out, on PyTorch or ONNX Runtime.

Example::

    predictor = Predictor("lmsfa.pt", device="auto")
    with open_source("clip.mp4") as source:
        for result in predictor.predict_stream(source, batch_size=4):
            ...  # result.instances: class name, score, box and mask in frame pixels
"""

from __future__ import annotations

import logging
import os
import queue
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np

from ..classes import ClassTable
from ..errors import InputError
from ..progress import NULL_PROGRESS, Progress
from ..results import FrameResult, Instance
from .class_tables import ClassTableLike, read_class_table, reconcile_class_tables
from .letterbox import Letterbox
from .postprocess import postprocess
from .runners import OnnxRunner, TorchRunner, resolve_device

logger = logging.getLogger(__name__)

STAGES = ("decode", "preprocess", "inference", "postprocess")
DEFAULT_INPUT_SIZE = (640, 640)
PREDICT_CHUNK = 16
"""Frames per network call in :meth:`Predictor.predict`, to bound memory for long lists."""

_END = object()


class Predictor:
    """LMSF-A inference on frames: letterbox, network, post-processing.

    ``model`` is an LMSF-A checkpoint (``.pt``), an exported ``.onnx`` file or an
    ``LMSFA`` module (a re-parameterised copy runs, the module itself is not changed).
    ``device`` is ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. ``backend`` is
    ``"auto"`` (ONNX Runtime for ``.onnx`` files, PyTorch otherwise), ``"torch"`` or
    ``"onnx"``. A checkpoint given with ``backend="onnx"`` is exported to a temporary ONNX
    file with dynamic input size first.

    ``conf`` is the class-probability threshold, ``iou`` the NMS overlap threshold and
    ``max_det`` the maximum number of instances per frame. ``class_table`` (a
    :class:`ClassTable`, a list of names, a ``data.yaml`` or a class-table ``.json``) must
    agree with the model's classes. It is required only for a module or ONNX file that
    carries no class names. ``rectangular`` shrinks the input to the frame's aspect ratio
    (stride 32) where the network accepts any size; ONNX graphs with a fixed size always
    use the full square. ``half`` runs PyTorch in fp16, which needs CUDA (``None``: fp16
    on CUDA, fp32 on the CPU). ``input_size`` (H, W) overrides the size stored in the
    model. ``num_threads`` sets the ONNX Runtime CPU threads (PyTorch uses
    ``torch.set_num_threads``).
    """

    def __init__(
        self,
        model,
        device: str = "auto",
        backend: str = "auto",
        conf: float = 0.25,
        iou: float = 0.7,
        max_det: int = 300,
        class_table: Optional[ClassTableLike] = None,
        rectangular: bool = True,
        half: Optional[bool] = None,
        *,
        input_size: Optional[Sequence[int]] = None,
        expected_sha256: Optional[str] = None,
        num_threads: Optional[int] = None,
    ):
        _check_thresholds(conf, iou, max_det)
        self.conf = float(conf)
        self.iou = float(iou)
        self.max_det = int(max_det)
        self.rectangular = bool(rectangular)
        self.counts: dict = {}
        self.stage_times = {stage: 0.0 for stage in STAGES}
        self._temporary_folder: Optional[tempfile.TemporaryDirectory] = None

        backend = _resolve_backend(model, backend)
        self.device = resolve_device(device, backend)
        if half is None:
            half = backend == "torch" and self.device.startswith("cuda")
        if half and backend == "onnx":
            raise InputError("half=True is for the torch backend; ONNX models run in the precision they were exported in")

        model_table, model_input_size, source = self._build_runner(model, backend, half, expected_sha256, num_threads)
        user_table = read_class_table(class_table) if class_table is not None else None
        self._class_table = reconcile_class_tables(model_table, user_table, source, nc=self.runner.nc)
        self._input_size = self._choose_input_size(input_size, model_input_size)
        logger.info(
            "predictor ready: %s on %s (%s), input %dx%d (HxW), %d classes %s",
            source, self.device, backend, *self._input_size, len(self._class_table), self._class_table.names,
        )

    # Construction ---------------------------------------------------------------------

    def _build_runner(self, model, backend, half, expected_sha256, num_threads):
        """Create ``self.runner``; returns (model class table, model input size, description)."""
        from torch import nn

        if isinstance(model, nn.Module):
            self.runner = TorchRunner(model, self.device, half=bool(half))
            table = getattr(model, "class_table", None)
            return table, None, f"{type(model).__name__} module"

        path = Path(model)
        if path.suffix.lower() == ".onnx":
            self.runner = OnnxRunner(path, self.device, num_threads=num_threads)
            metadata = self.runner.metadata
            table = ClassTable.from_dict(metadata["class_table"]) if "class_table" in metadata else None
            size = metadata.get("input_size")
            size = tuple(int(v) for v in size) if isinstance(size, list) and len(size) == 2 else None
            return table, size, str(path)

        from ..model import export_onnx, load_checkpoint

        network, checkpoint = load_checkpoint(path, expected_sha256=expected_sha256)
        if backend == "torch":
            self.runner = TorchRunner(network, self.device, half=bool(half), copy_model=False)
        else:
            self._temporary_folder = tempfile.TemporaryDirectory(prefix="lmsfa-onnx-")
            onnx_path = Path(self._temporary_folder.name) / f"{path.stem}.onnx"
            export_onnx(network, onnx_path, input_size=checkpoint.input_size, dynamic=True,
                        class_table=checkpoint.class_table)
            self.runner = OnnxRunner(onnx_path, self.device, num_threads=num_threads)
        return checkpoint.class_table, tuple(checkpoint.input_size), str(path)

    def _choose_input_size(self, requested, from_model) -> tuple[int, int]:
        fixed = getattr(self.runner, "fixed_input_hw", None)
        if requested is not None:
            size = tuple(int(v) for v in requested)
            if len(size) != 2 or min(size) < 32 or size[0] % 32 or size[1] % 32:
                raise InputError(f"invalid input_size {requested!r}: use (height, width), multiples of 32")
            if fixed is not None and size != tuple(fixed):
                raise InputError(f"input_size {size} differs from the ONNX graph's fixed input {tuple(fixed)}; "
                                 "leave input_size out or export the model with a dynamic size")
            return size
        if fixed is not None:
            return tuple(fixed)
        return tuple(from_model) if from_model is not None else DEFAULT_INPUT_SIZE

    # Properties ------------------------------------------------------------------------

    @property
    def class_table(self) -> ClassTable:
        """Class names, colours and terminology that results are labelled with."""
        return self._class_table

    @property
    def input_size(self) -> tuple[int, int]:
        """Nominal network input (H, W) in pixels; the rectangular mode may use less."""
        return self._input_size

    @property
    def backend(self) -> str:
        return self.runner.backend

    def reset_stage_times(self) -> None:
        """Set the per-stage times (seconds, summed over calls) back to zero."""
        self.stage_times = {stage: 0.0 for stage in STAGES}

    def fit_letterbox(self, frame_hw: Sequence[int]) -> Letterbox:
        """Return the letterbox geometry this predictor uses for a frame size."""
        rectangular = self.rectangular and getattr(self.runner, "fixed_input_hw", None) is None
        return Letterbox.fit(frame_hw, self._input_size, rectangular=rectangular, stride=32)

    # Inference -------------------------------------------------------------------------

    def predict(self, frames: Sequence[np.ndarray]) -> list[list[Instance]]:
        """Segment a list of (H, W, 3) uint8 RGB frames; returns the instances of each frame.

        Frames of one input shape run together in batches of up to 16; frames may differ in
        size.
        """
        geometries = []
        for position, image in enumerate(frames):
            _check_frame(image, position)
            geometries.append(self.fit_letterbox(image.shape[:2]))

        results: list[Optional[list[Instance]]] = [None] * len(geometries)
        by_shape: dict = {}
        for position, geometry in enumerate(geometries):
            by_shape.setdefault(geometry.input_hw, []).append(position)
        for positions in by_shape.values():
            for start in range(0, len(positions), PREDICT_CHUNK):
                chunk = positions[start : start + PREDICT_CHUNK]
                begin = time.perf_counter()
                tensors = [geometries[p].apply(frames[p]) for p in chunk]
                self.stage_times["preprocess"] += time.perf_counter() - begin
                outputs = self._run_batch(tensors, [geometries[p] for p in chunk])
                for position, instances in zip(chunk, outputs):
                    results[position] = instances
        return results

    def _run_batch(self, tensors: list[np.ndarray], geometries: list[Letterbox]) -> list[list[Instance]]:
        start = time.perf_counter()
        batch = np.stack(tensors)
        pred, protos = self.runner.run(batch)
        middle = time.perf_counter()
        instances = postprocess(pred, protos, geometries, self._class_table, self.conf, self.iou,
                                self.max_det, counts=self.counts)
        self.stage_times["inference"] += middle - start
        self.stage_times["postprocess"] += time.perf_counter() - middle
        return instances

    def predict_stream(
        self,
        frames: Iterable,
        batch_size: int = 1,
        progress: Optional[Progress] = None,
    ) -> Iterator[FrameResult]:
        """Segment a stream of :class:`lmsfa.sources.Frame` objects, yielding results in order.

        A background thread pulls frames from ``frames`` (decoding them) and letterboxes them
        while the calling thread runs the network and post-processing, so decoding overlaps
        inference. Frames marked ``missing`` yield a result with no instances. Between
        batches ``progress.check_cancelled()`` is called, so a cancel raises
        :class:`lmsfa.errors.Cancelled` after the results already yielded.
        ``stage_times`` adds up each stage's own time, so with the overlap the sum can
        exceed the wall time.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"invalid batch_size {batch_size!r}: use a whole number of 1 or more")
        progress = progress or NULL_PROGRESS
        total = len(frames) if hasattr(frames, "__len__") else None
        items: queue.Queue = queue.Queue(maxsize=2 * batch_size + 2)
        stop = threading.Event()
        worker = threading.Thread(target=self._decode_worker, args=(frames, items, stop),
                                  name="lmsfa-decode", daemon=True)
        worker.start()
        done = 0
        pending: list = []

        def flush() -> Iterator[FrameResult]:
            nonlocal done, pending
            progress.check_cancelled()
            batch, pending = pending, []
            yield from self._flush(batch)
            done += len(batch)
            progress.update(done, total, f"segmented {done} frames")

        try:
            while True:
                item = self._next_item(items, progress)
                if item is _END:
                    if pending:
                        yield from flush()
                    return
                _, geometry, tensor = item
                if tensor is not None and _shape_of(pending) not in (None, geometry.input_hw):
                    yield from flush()  # frames of another size cannot share the batch
                pending.append(item)
                if sum(1 for p in pending if p[2] is not None) >= batch_size:
                    yield from flush()
        finally:
            stop.set()
            _drain(items)
            worker.join(timeout=10)
            if worker.is_alive():
                logger.warning("the frame decoding thread did not stop within 10 s")

    def _decode_worker(self, frames: Iterable, items: queue.Queue, stop: threading.Event) -> None:
        """Decode and letterbox frames into ``items``; ends with ``_END`` or the exception."""
        try:
            iterator = iter(frames)
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    frame = next(iterator)
                except StopIteration:
                    break
                decoded = time.perf_counter()
                self.stage_times["decode"] += decoded - start
                if frame.missing:
                    item = (frame, None, None)
                else:
                    _check_frame(frame.image, frame.index)
                    geometry = self.fit_letterbox(frame.image.shape[:2])
                    item = (frame, geometry, geometry.apply(frame.image))
                    self.stage_times["preprocess"] += time.perf_counter() - decoded
                if not _put(items, item, stop):
                    return
            _put(items, _END, stop)
        except BaseException as error:  # handed to the consumer thread, which re-raises it
            _put(items, error, stop)

    @staticmethod
    def _next_item(items: queue.Queue, progress: Progress):
        while True:
            progress.check_cancelled()
            try:
                item = items.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                raise item
            return item

    def _flush(self, pending: list) -> Iterator[FrameResult]:
        """Run the network on the pending frames and yield their results in order."""
        ready = [(frame, geometry, tensor) for frame, geometry, tensor in pending if tensor is not None]
        outputs = iter(self._run_batch([t for _, _, t in ready], [g for _, g, _ in ready])) if ready else iter(())
        for frame, _, tensor in pending:
            instances = next(outputs) if tensor is not None else []
            yield FrameResult(
                index=frame.index,
                timestamp_s=frame.timestamp_s,
                frame_shape=tuple(frame.image.shape[:2]) if frame.image is not None else (0, 0),
                instances=instances,
            )


def _resolve_backend(model, backend: str) -> str:
    from torch import nn

    name = str(backend).strip().lower()
    if name not in ("auto", "torch", "onnx"):
        raise InputError(f"invalid backend {backend!r}: use 'auto', 'torch' or 'onnx'")
    if isinstance(model, nn.Module):
        if name == "onnx":
            raise InputError("backend 'onnx' needs a model file; export the module with lmsfa.model.export_onnx first")
        return "torch"
    if not isinstance(model, (str, os.PathLike)):
        raise InputError(f"invalid model {model!r}: give a checkpoint (.pt), an .onnx file or an LMSFA module")
    is_onnx = Path(model).suffix.lower() == ".onnx"
    if is_onnx and name == "torch":
        raise InputError(f"{model} is an ONNX file; use backend 'onnx' or 'auto', or give the .pt checkpoint")
    if name == "auto":
        return "onnx" if is_onnx else "torch"
    return name


def _check_thresholds(conf: float, iou: float, max_det: int) -> None:
    if not 0.0 <= float(conf) < 1.0:
        raise InputError(f"invalid conf {conf!r}: use a probability in [0, 1)")
    if not 0.0 < float(iou) <= 1.0:
        raise InputError(f"invalid iou {iou!r}: use an overlap in (0, 1]")
    if isinstance(max_det, bool) or int(max_det) != max_det or max_det < 1:
        raise InputError(f"invalid max_det {max_det!r}: use a whole number of 1 or more")


def _check_frame(image, position) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise InputError(f"frame {position}: expected an (H, W, 3) uint8 RGB image, got shape {shape} dtype {dtype}")


def _shape_of(pending: list):
    for _, geometry, tensor in pending:
        if tensor is not None:
            return geometry.input_hw
    return None


def _put(items: queue.Queue, item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            items.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _drain(items: queue.Queue) -> None:
    while True:
        try:
            items.get_nowait()
        except queue.Empty:
            return
