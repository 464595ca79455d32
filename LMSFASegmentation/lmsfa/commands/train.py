"""``lmsfa train``: train or fine-tune LMSF-A on an instance-segmentation data set."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import signal
import threading
from pathlib import Path
from typing import Optional

HELP = "train or fine-tune LMSF-A on an instance-segmentation data set"

logger = logging.getLogger(__name__)

AUGMENT_PRESETS = ("none", "default", "endoscopy")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument(
        "data", type=Path, nargs="?",
        help="training data: a COCO instance JSON, a YOLO-seg data.yaml or its folder, a data set "
             "description YAML, a label-map folder with a class table, .seg.nrrd files or a corrected Slicer scene (.mrb) "
             "(not needed with --resume)",
    )
    data.add_argument(
        "--images", type=Path, default=None, metavar="DIR",
        help="image folder that the file names of a COCO JSON in DATA are relative to, also for its validation "
             "split (default: the folder images/ beside the JSON file when it exists, else the JSON file's own "
             "folder); use it when the JSON file was copied away from its images",
    )
    data.add_argument("--split", default="train", help="split of DATA to train on, where DATA has splits (default: train)")
    data.add_argument(
        "--val", type=Path, default=None, metavar="PATH",
        help="validation data in any of the DATA formats (default: the 'val' split of DATA where it has "
             "one, otherwise no validation)",
    )
    data.add_argument(
        "--val-images", type=Path, default=None, metavar="DIR",
        help="image folder of a separate COCO JSON given with --val (default: the folder images/ beside that "
             "JSON file when it exists, else its own folder)",
    )
    data.add_argument("--val-split", default="val", help="split of the validation data (default: val)")
    data.add_argument("--no-val", action="store_true", help="train without validation; best.pt is then the epoch with the lowest training loss")
    data.add_argument("--output", "-o", type=Path, required=True, metavar="DIR",
                      help="run folder for last.pt, best.pt, last.state.pt and log.csv; must not contain a previous run unless --resume")
    data.add_argument("--weights", type=Path, default=None, metavar="CHECKPOINT",
                      help="LMSF-A checkpoint (.pt) to fine-tune from; its class predictor is kept only if its class names match the data's")
    data.add_argument("--resume", action="store_true", help="continue the interrupted run in --output with its saved options")

    schedule = parser.add_argument_group("schedule")
    schedule.add_argument("--epochs", type=int, default=100, help="number of passes over the training data (default: 100)")
    schedule.add_argument("--batch", type=int, default=8, help="images per batch; 1 is supported (default: 8)")
    schedule.add_argument(
        "--imgsz", type=int, nargs="+", default=[640], metavar="PIXELS",
        help="network input size in pixels: one value (square) or height and width, multiples of 32 (default: 640)",
    )
    schedule.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd", help="SGD with Nesterov momentum, or AdamW (default: sgd)")
    schedule.add_argument("--lr0", type=float, default=None, help="initial learning rate per optimizer step (default: 0.01 for SGD, 0.001 for AdamW)")
    schedule.add_argument("--lrf", type=float, default=0.01, help="final learning rate as a fraction of --lr0 (default: 0.01)")
    schedule.add_argument("--schedule", choices=("linear", "cosine"), default="linear", help="learning-rate decay over the epochs (default: linear)")
    schedule.add_argument("--momentum", type=float, default=0.937, help="SGD momentum, or AdamW beta1 (default: 0.937)")
    schedule.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay at the nominal batch size, unitless (default: 0.0005)")
    schedule.add_argument("--warmup-epochs", type=float, default=3.0, help="warm-up length in epochs, fractions allowed; 0 disables it (default: 3)")
    schedule.add_argument("--nominal-batch", type=int, default=64, help="images per optimizer step that the recipe assumes (default: 64)")
    schedule.add_argument("--accumulate", type=int, default=None, help="batches per optimizer step (default: nominal batch / --batch, at least 1)")
    schedule.add_argument("--ema-decay", type=float, default=0.9999, help="decay of the weight moving average per optimizer step, 0..1 (default: 0.9999)")
    schedule.add_argument("--seed", type=int, default=0, help="random seed for initialisation, batch order and augmentation (default: 0)")

    augment = parser.add_argument_group("augmentation")
    augment.add_argument(
        "--augment", choices=AUGMENT_PRESETS, default="default",
        help="'default': flips, scale, translation and colour jitter; 'endoscopy': also rotation about the "
             "field-of-view centre, vertical flips, blur, specular highlights and smoke; 'none' (default: default)",
    )
    augment.add_argument("--mosaic", type=float, default=0.0, help="probability 0..1 of a four-image mosaic (default: 0)")

    machine = parser.add_argument_group("machine")
    machine.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N' (default: auto)")
    machine.add_argument("--no-amp", action="store_true", help="train in float32 on CUDA instead of mixed precision")
    machine.add_argument("--workers", type=int, default=0, help="data-loading worker processes; 0 loads in the main process (default: 0)")
    machine.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    machine.add_argument(
        "--progress-json", action="store_true",
        help="print progress as JSON lines on stdout instead of a progress bar, for programs that run "
             "lmsfa train (see lmsfa.commands.train.parse_progress_line for the fields)",
    )

    validation = parser.add_argument_group("validation")
    validation.add_argument("--val-interval", type=int, default=1, help="validate every this many epochs, and after the last (default: 1)")
    validation.add_argument("--val-conf", type=float, default=0.001, help="minimum class probability 0..1 of a validation detection (default: 0.001)")
    validation.add_argument("--val-max-det", type=int, default=300, help="maximum detections per validation image (default: 300)")


def _input_size(values: list[int]) -> tuple[int, int]:
    from ..errors import InputError

    if len(values) not in (1, 2):
        raise InputError(f"--imgsz takes one or two values (pixels), got {values}")
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def _open_validation(args, train_path: Path):
    """Open the validation set: --val, else DATA's val split where DATA has splits, else none.

    Returns the data set (or None) and the path to record for resume ("" for none).
    """
    from ..errors import InputError
    from ..training.datasets import open_dataset

    if args.no_val:
        return None, ""
    if args.val is not None:
        if args.val_images is not None and not args.val_images.is_dir():
            raise InputError(f"--val-images {args.val_images}: folder not found; give the folder that contains "
                             "the validation images")
        dataset = open_dataset(args.val, args.val_split, image_root=args.val_images)
        check_images_option(dataset, args.val_images, args.val)
        check_first_image(dataset, "the validation data", option="--val-images")
        return dataset, str(args.val)
    if not _has_split(train_path, args.val_split):
        logger.warning("no --val given and %s has no %r split: training without validation", train_path, args.val_split)
        return None, ""
    dataset = open_dataset(train_path, args.val_split, image_root=args.images)
    check_first_image(dataset, "the validation split")
    return dataset, str(train_path)


def check_first_image(dataset, role: str = "the data set", option: str = "--images") -> None:
    """Raise :class:`InputError` when the first image of a COCO data set is not on disk.

    A COCO file that was copied away from its images opens without error, because the
    reader reads images only when a sample is loaded. Checking one image here turns a
    failure during the first epoch into an error before training starts. Readers of the
    other formats list the image files that exist, so they need no check.
    """
    from ..errors import InputError
    from ..training.readers.coco import CocoDataset

    if not isinstance(dataset, CocoDataset) or not dataset.images:
        return
    path = dataset.image_root / dataset.images[0]["file_name"]
    if not path.is_file():
        raise InputError(
            f"image not found: {path}, the first image of {role} {dataset.json_path}. Its file names are "
            f"read relative to {dataset.image_root}; give the folder that contains them with {option} DIR"
        )


def check_images_option(dataset, images: Optional[Path], data: Path) -> None:
    """Raise :class:`InputError` when ``--images`` is given for data that is not a COCO JSON file."""
    from ..errors import InputError
    from ..training.readers.coco import CocoDataset

    if images is not None and not isinstance(dataset, CocoDataset):
        raise InputError(
            f"--images sets the image folder of COCO JSON data, but {data} is {type(dataset).__name__} data, "
            "whose reader finds its images itself; leave out --images"
        )


def _has_split(path: Path, split: str) -> bool:
    """Return whether ``path`` is a source with named splits that include ``split``.

    Sources with splits are YAML descriptions (YOLO-seg ``data.yaml`` and data set
    descriptions) and folders with ``<split>.json`` or ``instances_<split>.json``. Other
    sources return all their images for every split, so they have none.
    """
    import yaml

    if path.is_dir():
        if any((path / f"{prefix}{split}.json").is_file() for prefix in ("", "instances_")):
            return True
        for name in ("data.yaml", "data.yml", "dataset.yaml"):
            if (path / name).is_file():
                return _has_split(path / name, split)
        return False
    if path.suffix.lower() not in (".yaml", ".yml"):
        return False
    try:
        description = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(description, dict) and bool(description.get(split))


class _AugmentLoader:
    """Picklable ``loader(dataset, index, rng)`` that runs :meth:`Augmenter.load` (mosaic included)."""

    def __init__(self, augmenter, input_hw):
        self.augmenter = augmenter
        self.input_hw = input_hw

    def __call__(self, dataset, index, rng):
        sample, _ = self.augmenter.load(dataset, index, rng, self.input_hw)
        return sample


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _build_config(args, train_path: Path, val_path: str):
    from ..training.trainer import TrainConfig

    return TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch,
        input_size=_input_size(args.imgsz),
        optimizer=args.optimizer,
        lr0=args.lr0,
        lrf=args.lrf,
        schedule=args.schedule,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        nominal_batch_size=args.nominal_batch,
        accumulate=args.accumulate,
        ema_decay=args.ema_decay,
        amp=not args.no_amp,
        seed=args.seed,
        workers=args.workers,
        device=_device(args.device),
        val_interval=args.val_interval,
        val_conf=args.val_conf,
        val_max_det=args.val_max_det,
        data=str(train_path),
        images=str(args.images) if args.images is not None else "",
        val_images=str(args.val_images) if args.val_images is not None and args.val is not None else "",
        split=args.split,
        val_data=val_path,
        val_split=args.val_split,
        augment=args.augment,
        mosaic=args.mosaic,
    )


def _sample_loader(config, train_set):
    """Return the augmenting sample loader for the configured preset, or None for no augmentation."""
    from ..training.augment import AugmentConfig, Augmenter

    if config.augment == "none" and config.mosaic <= 0:
        return None
    if config.augment == "endoscopy":
        augment_config = AugmentConfig.endoscopy(mosaic=config.mosaic)
    elif config.augment == "default":
        augment_config = AugmentConfig(mosaic=config.mosaic)
    else:  # mosaic only
        augment_config = AugmentConfig(hsv_h=0, hsv_s=0, hsv_v=0, translate=0, scale=0, fliplr=0, mosaic=config.mosaic)
    augmenter = Augmenter.for_dataset(augment_config, train_set)
    return _AugmentLoader(augmenter, tuple(config.input_size))


def progress_json_line(event: str, **fields) -> str:
    """Return one ``--progress-json`` line: a JSON object with ``event`` and ``fields``, no newline."""
    return json.dumps({"event": event, **fields}, ensure_ascii=True)


def parse_progress_line(line: str) -> Optional[dict]:
    """Parse one stdout line of ``lmsfa train --progress-json``, or return None for any other line.

    Events and their fields:

    - ``progress``: ``done`` (training batches finished over all epochs, int), ``total``
      (batches of the whole run, int or null) and ``message`` (epoch and losses, or the
      validation step, str). Validation keeps ``done`` at the end of its epoch.
    - ``finished``: ``best_checkpoint`` and ``last_checkpoint`` (paths, str),
      ``best_fitness`` (validation mask AP 0..1, or minus the training loss without
      validation) and ``log`` (path of log.csv, str).

    Errors and cancellation print no event: the process exits with status 1 (error) or
    130 (cancelled) and writes the reason on stderr.
    """
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    if not isinstance(value, dict) or value.get("event") not in ("progress", "finished"):
        return None
    return value


def _open_training_data(args):
    """Open the training and validation sets and build the configuration, new or resumed."""
    import torch

    from ..errors import InputError
    from ..training.datasets import open_dataset
    from ..training.trainer import STATE_FILE, TrainConfig

    if args.resume:
        state_path = args.output / STATE_FILE
        if not state_path.is_file():
            raise InputError(f"cannot resume: {state_path} not found; start a new run without --resume")
        config = TrainConfig.from_dict(torch.load(state_path, map_location="cpu", weights_only=True)["config"])
        # --images given with --resume replaces the recorded folder, for images that were moved.
        image_root = args.images or (Path(config.images) if config.images else None)
        train_set = open_dataset(config.data, config.split, image_root=image_root)
        check_first_image(train_set, "the training data")
        val_set = None
        if config.val_data:
            # The image folder applies to the validation split of the training data only.
            if config.val_data == config.data:
                val_root = image_root
            else:
                val_root = Path(config.val_images) if config.val_images else None
            val_set = open_dataset(config.val_data, config.val_split, image_root=val_root)
            check_first_image(val_set, "the validation data")
        return config, train_set, val_set

    if args.data is None:
        raise InputError("missing training data: give a COCO JSON, data.yaml, folder, .seg.nrrd files or .mrb scene, or use --resume")
    if args.images is not None and not args.images.is_dir():
        raise InputError(f"--images {args.images}: folder not found; give the folder that contains the COCO images")
    train_set = open_dataset(args.data, args.split, image_root=args.images)
    check_images_option(train_set, args.images, args.data)
    check_first_image(train_set, "the training data")
    val_set, val_path = _open_validation(args, args.data)
    config = _build_config(args, args.data, val_path)
    return config, train_set, val_set


def run(args: argparse.Namespace) -> int:
    import torch

    from ..errors import Cancelled
    from ..progress import Progress
    from ..training.trainer import LOG_FILE, Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    config, train_set, val_set = _open_training_data(args)

    bar = None

    def show(done, total, message):
        nonlocal bar
        if args.progress_json:
            print(progress_json_line("progress", done=done, total=total, message=message), flush=True)
            return
        if bar is None:
            from tqdm import tqdm

            # Created at the first batch, after the trainer has checked its inputs and logged
            # its settings. So no empty bar appears before an error or that log line.
            bar = tqdm(total=total, unit="batch", dynamic_ncols=True, leave=True)
        if total is not None and bar.total != total:
            bar.total = total
        bar.n = done
        bar.set_description(message[:60], refresh=False)
        bar.refresh()

    progress = Progress(show)
    trainer = Trainer(
        config, train_set, args.output, val_set=val_set, sample_loader=_sample_loader(config, train_set),
        initial_weights=None if args.resume else args.weights, resume=args.resume, progress=progress,
    )
    resume_hint = (
        f"the checkpoints of the last finished epoch are in {args.output}. "
        f"Continue with: lmsfa train --resume --output {args.output}"
    )
    try:
        with _cancel_on_sigterm(progress):
            result = trainer.fit()
    except KeyboardInterrupt as error:
        raise Cancelled(f"interrupted; {resume_hint}") from error
    except Cancelled as error:
        raise Cancelled(f"stopped by a termination request; {resume_hint}") from error
    finally:
        if bar is not None:
            bar.close()

    log_path = args.output / LOG_FILE
    if args.progress_json:
        print(progress_json_line(
            "finished", best_checkpoint=str(result.best_checkpoint), last_checkpoint=str(result.last_checkpoint),
            best_fitness=result.best_fitness if math.isfinite(result.best_fitness) else None, log=str(log_path),
        ), flush=True)
        return 0
    print(f"best checkpoint: {result.best_checkpoint}")
    print(f"last checkpoint: {result.last_checkpoint}")
    if val_set is not None:
        print(f"best validation mask AP (IoU 0.50:0.95): {100 * result.best_fitness:.1f}")
    print(f"log: {log_path}")
    return 0


@contextlib.contextmanager
def _cancel_on_sigterm(progress):
    """Turn SIGTERM into a cancel request, so that training stops after the current batch.

    Programs that run ``lmsfa train`` (the Slicer module) stop it this way. Without the
    handler, SIGTERM would end the process at once. The checkpoints are safe either way,
    because every file is written to a temporary name and renamed, but a stop between
    batches also leaves no temporary file behind. Only the main thread can set signal
    handlers. On Windows, ``Popen.terminate`` ends the process without a signal, so the
    handler is installed only on POSIX systems.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM") or os.name == "nt":
        yield
        return

    def request_cancel(signum, frame):
        logger.info("termination requested: stopping after the current batch")
        progress.cancel()

    previous = signal.signal(signal.SIGTERM, request_cancel)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def training_command(
    python: str,
    annotations: Path,
    output: Path,
    weights: Optional[Path],
    epochs: int,
    image_size: int,
    batch_size: int,
    device: str = "auto",
) -> list[str]:
    """Return the argument list that runs ``lmsfa train`` with ``--progress-json`` in another process.

    ``python`` is the interpreter to run (``PythonSlicer`` in Slicer), ``annotations`` a
    COCO JSON file with its ``images/`` folder beside it, ``image_size`` the square input
    size in pixels. The run has no validation set, so ``best.pt`` is the epoch with the
    lowest training loss.
    """
    command = [
        str(python), "-m", "lmsfa.cli", "train", str(annotations),
        "--output", str(output),
        "--epochs", str(int(epochs)),
        "--imgsz", str(int(image_size)),
        "--batch", str(int(batch_size)),
        "--device", device,
        # A few corrected frames give a few batches per epoch: step the optimizer every batch
        # and keep the warm-up short, or the run ends before the weights move.
        "--accumulate", "1",
        "--warmup-epochs", "0.5",
        "--no-val",
        "--progress-json",
    ]
    if weights is not None:
        command += ["--weights", str(weights)]
    return command
