"""Train LMSF-A on instance-segmentation samples, with resume and validation by mask mAP.

The recipe follows YOLOv8's defaults, which the LMSF-A authors kept: SGD with Nesterov
momentum 0.937 over three parameter groups (weights with decay, norm weights and scalars
without, biases without), learning rate 0.01 decaying linearly to 1 % over training, a
3-epoch warm-up (momentum 0.8 -> 0.937, bias learning rate 0.1 -> lr0), weight decay 5e-4
scaled to a nominal batch of 64 images, gradient accumulation up to that nominal batch,
gradient-norm clipping at 10, and an exponential moving average (EMA) of the weights that is
validated and saved. AdamW and a cosine decay are options.

Files written to the output folder after every epoch:

- ``last.pt``: the EMA weights as an LMSF-A checkpoint (:func:`lmsfa.model.save_checkpoint`);
- ``best.pt``: the EMA weights of the epoch with the highest validation mask AP (IoU
  0.50:0.95). Without a validation set, the epoch with the lowest training loss wins;
- ``last.state.pt``: everything :class:`Trainer` needs to resume (raw and EMA weights,
  optimizer, gradient scaler, history), plain tensors only;
- ``log.csv``: one row per epoch with learning rate, losses, metrics and duration.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import logging
import math
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from ..classes import ClassTable
from ..errors import CheckpointError, InputError, LmsfaError
from ..fileio import make_shareable
from ..model import LMSFA
from ..model.checkpoint import atomic_torch_save, read_checkpoint_file, save_checkpoint
from ..progress import NULL_PROGRESS, Progress
from .collate import TransformedDataset, collate_samples
from .evaluate import evaluate_model
from .loss import LOSS_NAMES, SegmentationLoss

logger = logging.getLogger(__name__)

STATE_FORMAT = "lmsfa-training-state"
STATE_FILE = "last.state.pt"
LAST_FILE = "last.pt"
BEST_FILE = "best.pt"
LOG_FILE = "log.csv"

DEFAULT_LR = {"sgd": 0.01, "adamw": 0.001}


@dataclass
class TrainConfig:
    """Training options. Sizes are (height, width) in pixels; learning rates are per step."""

    epochs: int = 100
    batch_size: int = 8
    input_size: tuple[int, int] = (640, 640)
    optimizer: str = "sgd"  # "sgd" or "adamw"
    lr0: Optional[float] = None  # initial learning rate; None: 0.01 for SGD, 0.001 for AdamW
    lrf: float = 0.01  # final learning rate as a fraction of lr0
    schedule: str = "linear"  # "linear" or "cosine" decay per epoch
    momentum: float = 0.937  # SGD momentum, or AdamW beta1
    weight_decay: float = 5e-4  # at the nominal batch; scaled by batch * accumulate / nominal
    warmup_epochs: float = 3.0
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    nominal_batch_size: int = 64  # images per optimizer step that the recipe assumes
    accumulate: Optional[int] = None  # batches per optimizer step; None: nominal / batch size
    ema_decay: float = 0.9999
    ema_ramp_updates: float = 2000.0  # the EMA decay rises as 1 - exp(-updates / ramp)
    grad_clip_norm: float = 10.0
    amp: bool = True  # mixed precision; used only on CUDA devices
    seed: int = 0
    deterministic: bool = True
    workers: int = 0
    device: str = "cpu"
    val_interval: int = 1  # validate every this many epochs (and after the last)
    val_conf: float = 0.001
    val_iou: float = 0.7
    val_max_det: int = 300
    val_batch_size: int = 4
    data: str = ""  # the training data set, recorded in checkpoints and used by resume
    images: str = ""  # image folder of COCO data when not the default, used by resume
    val_images: str = ""  # the same for separate COCO validation data
    split: str = "train"
    val_data: str = ""
    val_split: str = "val"
    augment: str = "default"  # augmentation preset name, recorded for resume
    mosaic: float = 0.0  # mosaic probability, recorded for resume
    initial_weights: str = ""  # checkpoint the run started from, if any

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["input_size"] = list(self.input_size)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "input_size" in values:
            values["input_size"] = tuple(int(v) for v in values["input_size"])
        return cls(**values)

    def validate(self) -> None:
        """Raise :class:`InputError` for an option outside its valid range."""
        checks = [
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}"),
            (self.optimizer in DEFAULT_LR, f"optimizer must be one of {sorted(DEFAULT_LR)}, got {self.optimizer!r}"),
            (self.schedule in ("linear", "cosine"), f"schedule must be linear or cosine, got {self.schedule!r}"),
            (len(self.input_size) == 2 and all(v >= 64 and v % 32 == 0 for v in self.input_size),
             f"input size must be two multiples of 32 of at least 64 pixels, got {self.input_size}"),
            (self.lr0 is None or self.lr0 > 0, f"lr0 must be positive, got {self.lr0}"),
            (0 < self.lrf <= 1, f"lrf must be in (0, 1], got {self.lrf}"),
            (self.accumulate is None or self.accumulate >= 1, f"accumulate must be at least 1, got {self.accumulate}"),
            (self.warmup_epochs >= 0, f"warm-up epochs must not be negative, got {self.warmup_epochs}"),
            (0 <= self.ema_decay < 1, f"EMA decay must be in [0, 1), got {self.ema_decay}"),
            (self.val_interval >= 1, f"validation interval must be at least 1 epoch, got {self.val_interval}"),
            (self.workers >= 0, f"workers must not be negative, got {self.workers}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)

    @property
    def learning_rate(self) -> float:
        return self.lr0 if self.lr0 is not None else DEFAULT_LR[self.optimizer]

    @property
    def accumulate_steps(self) -> int:
        if self.accumulate is not None:
            return self.accumulate
        return max(round(self.nominal_batch_size / self.batch_size), 1)


@dataclass
class TrainResult:
    """Checkpoint paths and measured history of a finished run."""

    output_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    best_fitness: float
    history: list[dict] = field(default_factory=list)


class ModelEMA:
    """Exponential moving average of a model's floating-point weights and buffers.

    After ``n`` updates the decay is ``decay * (1 - exp(-n / ramp_updates))``, so early
    averages follow the model closely. Integer buffers (BatchNorm batch counters) are copied.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, ramp_updates: float = 2000.0, updates: int = 0):
        self.ema = copy.deepcopy(model).eval()
        for parameter in self.ema.parameters():
            parameter.requires_grad_(False)
        self.decay = decay
        self.ramp_updates = ramp_updates
        self.updates = updates

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = self.decay * (1 - math.exp(-self.updates / self.ramp_updates))
        source = model.state_dict()
        for name, value in self.ema.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(decay).add_(source[name].detach().to(value.dtype), alpha=1 - decay)
            else:
                value.copy_(source[name])


def seed_everything(seed: int, deterministic: bool = True, device_type: str = "cpu") -> None:
    """Seed Python, NumPy and torch; on CUDA, also ask torch for deterministic kernels.

    CPU kernels give the same results run to run at a fixed thread count already. On the
    CPU, ``torch.use_deterministic_algorithms`` made a training step of this network about
    20 times slower (torch 2.13, 2-core machine), so it is only enabled for CUDA.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic and device_type == "cuda":
        # cuBLAS needs this workspace setting for deterministic matrix products on CUDA.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def build_optimizer(model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float):
    """Build SGD (Nesterov) or AdamW with three parameter groups.

    Group 0: weights of convolutions and linear layers, with weight decay. Group 1: weights
    of normalisation layers and scalar parameters (such as the head's per-level scales),
    without decay. Group 2: biases, without decay. Frozen parameters are left out.
    """
    norm_types = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    decay, no_decay, biases = [], [], []
    for module in model.modules():
        for parameter_name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad:
                continue
            if parameter_name == "bias":
                biases.append(parameter)
            elif isinstance(module, norm_types) or parameter.ndim <= 1:
                no_decay.append(parameter)
            else:
                decay.append(parameter)

    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
        {"params": biases, "weight_decay": 0.0},
    ]
    if name == "sgd":
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    elif name == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    else:
        raise InputError(f"unknown optimizer {name!r}; use sgd or adamw")
    return optimizer


def lr_factor(schedule: str, epoch: float, epochs: int, lrf: float) -> float:
    """Return the learning-rate multiplier at ``epoch`` (0-based): 1 at the start, ``lrf`` at the end."""
    progress = min(max(epoch / epochs, 0.0), 1.0)
    if schedule == "cosine":
        return lrf + (1 - lrf) * (1 + math.cos(math.pi * progress)) / 2
    return 1 - (1 - lrf) * progress


def load_initial_weights(model: LMSFA, path: str | os.PathLike, class_table: ClassTable) -> dict:
    """Copy the weights of an LMSF-A checkpoint into ``model`` for fine-tuning.

    Every tensor whose name and shape match is copied. The class predictor is copied only
    when the checkpoint's class names equal ``class_table``'s, in the same order. Otherwise
    it keeps its fresh initialisation, so that no class inherits another class's weights.
    Returns a summary with the ``copied`` and ``skipped`` tensor names.
    """
    payload, digest = read_checkpoint_file(path)
    config = payload.get("config") or {}
    if config.get("reparameterized"):
        raise CheckpointError(
            f"{path} contains re-parameterised (fused) weights, which cannot be trained; fine-tune from the "
            "checkpoint that training wrote (last.pt or best.pt)"
        )
    try:
        source_table = ClassTable.from_dict(payload["class_table"])
        state_dict = payload["state_dict"]
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{path} is an incomplete LMSF-A checkpoint: {error!r}") from error

    same_classes = source_table.names == class_table.names
    target = model.state_dict()
    copied, skipped = [], []
    for name, tensor in state_dict.items():
        is_class_conv = name.startswith("head.cls_conv.")
        if name in target and tuple(target[name].shape) == tuple(tensor.shape) and (same_classes or not is_class_conv):
            target[name] = tensor.to(target[name].dtype)
            copied.append(name)
        else:
            skipped.append(name)
    if not copied:
        raise CheckpointError(f"no weight of {path} fits the LMSF-A network; is it an LMSF-A checkpoint?")
    model.load_state_dict(target)
    if not same_classes:
        logger.info(
            "fine-tuning %s: class table changed from %s to %s, so the class predictor starts fresh",
            path, source_table.names, class_table.names,
        )
    logger.info("copied %d of %d tensors from %s (SHA-256 %s)", len(copied), len(state_dict), path, digest)
    return {"copied": copied, "skipped": skipped, "sha256": digest, "class_table": source_table}


class Trainer:
    """Train an LMSF-A model.

    ``train_set`` and ``val_set`` are map-style data sets of samples (see
    :mod:`lmsfa.training.collate`) with a ``class_table``. ``augment(sample, rng) -> sample``
    transforms a training sample (``rng`` is a seeded ``numpy.random.Generator``).
    ``sample_loader(dataset, index, rng) -> sample`` replaces ``dataset[index]`` where an
    augmentation reads several images (a mosaic). Samples
    that are not at the input size yet are letterboxed with
    :func:`lmsfa.training.augment.letterbox_sample`. ``initial_weights`` is a checkpoint to
    fine-tune from. With ``resume=True`` the run continues from ``output_dir/last.state.pt``
    and the saved configuration replaces ``config``.
    """

    def __init__(
        self,
        config: TrainConfig,
        train_set,
        output_dir: str | os.PathLike,
        val_set=None,
        augment: Optional[Callable] = None,
        sample_loader: Optional[Callable] = None,
        initial_weights: Optional[str | os.PathLike] = None,
        resume: bool = False,
        progress: Progress = NULL_PROGRESS,
    ):
        self.output_dir = Path(output_dir)
        self.progress = progress
        state = self._read_state() if resume else None
        if state is not None:
            config = TrainConfig.from_dict(state["config"])
        elif initial_weights:
            config = dataclasses.replace(config, initial_weights=str(initial_weights))
        config.validate()
        self.config = config
        self._check_output_dir(resume)

        self.class_table = train_set.class_table
        if len(train_set) == 0:
            raise InputError(f"the training data set {config.data or ''} has no images")
        if val_set is not None and list(val_set.class_table.names) != list(self.class_table.names):
            raise InputError(
                f"validation classes {val_set.class_table.names} differ from training classes "
                f"{self.class_table.names}; both sets must use the same class table"
            )
        if state is not None and ClassTable.from_dict(state["class_table"]).names != self.class_table.names:
            raise InputError(
                f"cannot resume {self.output_dir}: it was trained on classes "
                f"{ClassTable.from_dict(state['class_table']).names}, the data set has {self.class_table.names}"
            )
        self.train_set = train_set
        self.val_set = val_set
        self.augment = augment
        self.sample_loader = sample_loader

        self.device = torch.device(config.device)
        self.use_amp = bool(config.amp and self.device.type == "cuda")
        seed_everything(config.seed, config.deterministic, self.device.type)

        self.model = LMSFA(len(self.class_table)).to(self.device)
        if state is None and config.initial_weights:
            initial = load_initial_weights(self.model, config.initial_weights, self.class_table)
            if initial["class_table"].names == self.class_table.names:
                # Data sets such as COCO files store only class names, so the colours and
                # terminology codes of the fine-tuned model come from its starting checkpoint.
                self.class_table = initial["class_table"]
        elif state is not None:
            self.class_table = ClassTable.from_dict(state["class_table"])
        self.model.to(self.device)
        self.loss = SegmentationLoss(len(self.class_table), strides=self.model.stride.tolist())

        batches_per_epoch = math.ceil(len(train_set) / config.batch_size)
        weight_decay = config.weight_decay * config.batch_size * config.accumulate_steps / config.nominal_batch_size
        self.optimizer = build_optimizer(
            self.model, config.optimizer, config.learning_rate, config.momentum, weight_decay
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.use_amp)
        self.ema = ModelEMA(self.model, config.ema_decay, config.ema_ramp_updates)
        self.batches_per_epoch = batches_per_epoch
        self.warmup_iterations = round(config.warmup_epochs * batches_per_epoch)
        optimizer_steps = config.epochs * math.ceil(batches_per_epoch / config.accumulate_steps)
        if optimizer_steps < 50:
            logger.warning(
                "this run makes only %d optimizer steps (%d epochs of %d batches, %d batches per step), "
                "so the weights will barely change: train more epochs or lower --accumulate",
                optimizer_steps, config.epochs, batches_per_epoch, config.accumulate_steps,
            )

        self.start_epoch = 0
        self.best_fitness = -math.inf
        self.history: list[dict] = []
        if state is not None:
            self._restore(state)

    # ----- set-up and persistence -----

    def _read_state(self) -> dict:
        path = self.output_dir / STATE_FILE
        if not path.is_file():
            raise InputError(f"cannot resume: {path} not found; start a new run without resume")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises several types for damaged or foreign files
            raise CheckpointError(f"cannot resume from {path}: {error}") from error
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{path} is not an lmsfa training state file")
        return state

    def _check_output_dir(self, resume: bool) -> None:
        if resume:
            return
        existing = [name for name in (STATE_FILE, LAST_FILE, BEST_FILE) if (self.output_dir / name).exists()]
        if existing:
            raise InputError(
                f"{self.output_dir} already contains a training run ({', '.join(existing)}); resume it, or choose "
                "a new output folder so that its checkpoints are not overwritten"
            )

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.ema.load_state_dict(state["ema"])
        self.ema.updates = int(state["ema_updates"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = int(state["epoch"])
        self.best_fitness = float(state["best_fitness"])
        self.history = list(state.get("history", []))
        logger.info("resuming %s after epoch %d of %d", self.output_dir, self.start_epoch, self.config.epochs)

    def _save(self, epoch: int, metrics: dict, is_best: bool) -> None:
        """Write last.pt, best.pt (when ``is_best``), the resume state and the log."""
        provenance = {
            "trainer": "lmsfa train",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "epoch": epoch + 1,
            "epochs": self.config.epochs,
            "data": self.config.data,
            "val_data": self.config.val_data,
            "initial_weights": self.config.initial_weights,
            "seed": self.config.seed,
            "metrics": metrics,
        }
        input_size = tuple(self.config.input_size)
        save_checkpoint(self.output_dir / LAST_FILE, self.ema.ema, self.class_table, input_size, provenance)
        if is_best:
            save_checkpoint(self.output_dir / BEST_FILE, self.ema.ema, self.class_table, input_size, provenance)
        state = {
            "format": STATE_FORMAT,
            "epoch": epoch + 1,
            "config": self.config.to_dict(),
            "class_table": self.class_table.to_dict(),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "ema": {k: v.detach().cpu() for k, v in self.ema.ema.state_dict().items()},
            "ema_updates": self.ema.updates,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.use_amp else {},
            "best_fitness": self.best_fitness,
            "history": self.history,
        }
        atomic_torch_save(state, self.output_dir / STATE_FILE)
        write_log(self.history, self.output_dir / LOG_FILE)

    # ----- the training loop -----

    def fit(self) -> TrainResult:
        """Train the remaining epochs; returns where the checkpoints are.

        Raises :class:`lmsfa.errors.Cancelled` when the progress object is cancelled; the
        checkpoints of the last finished epoch stay in place.
        """
        config = self.config
        self.output_dir.mkdir(parents=True, exist_ok=True)
        total_iterations = config.epochs * self.batches_per_epoch
        logger.info(
            "training %d images, %d classes, input %dx%d, batch %d x %d accumulated, %s lr %.4g, %d epochs, device %s",
            len(self.train_set), len(self.class_table), config.input_size[1], config.input_size[0],
            config.batch_size, config.accumulate_steps, config.optimizer, config.learning_rate,
            config.epochs, self.device,
        )
        for epoch in range(self.start_epoch, config.epochs):
            started = time.monotonic()
            losses = self._train_epoch(epoch, total_iterations)
            row = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
            row.update({f"train_{name}": value for name, value in losses.items()})

            metrics = {}
            last_epoch = epoch + 1 == config.epochs
            if self.val_set is not None and ((epoch + 1) % config.val_interval == 0 or last_epoch):
                metrics = self.validate()
                row.update(_flat_metrics(metrics))
                fitness = metrics["segm"]["AP"]
            elif self.val_set is not None:
                fitness = None  # not validated this epoch
            else:
                fitness = -losses["total"]
            row["seconds"] = round(time.monotonic() - started, 2)
            self.history.append(row)

            is_best = fitness is not None and fitness > self.best_fitness
            if is_best:
                self.best_fitness = fitness
            self._save(epoch, _summary_metrics(metrics), is_best)
            logger.info("epoch %d/%d: %s", epoch + 1, config.epochs, _format_row(row))

        return TrainResult(
            output_dir=self.output_dir,
            best_checkpoint=self.output_dir / BEST_FILE,
            last_checkpoint=self.output_dir / LAST_FILE,
            best_fitness=self.best_fitness,
            history=self.history,
        )

    def validate(self) -> dict:
        """Return COCO metrics of the EMA weights on the validation set."""
        config = self.config
        done = len(self.history) * self.batches_per_epoch + self.batches_per_epoch
        total = config.epochs * self.batches_per_epoch

        def report(images_done, images_total, message):
            # Keep the training counts, so that a progress bar does not jump to the image count.
            self.progress.update(done, total, f"validating {images_done}/{images_total} images")

        return evaluate_model(
            self.ema.ema, self.val_set, config.input_size, self.class_table,
            batch_size=config.val_batch_size, conf=config.val_conf, iou=config.val_iou,
            max_det=config.val_max_det, device=self.device, progress=_NestedProgress(self.progress, report),
        )

    def _loader(self, epoch: int):
        config = self.config
        dataset = TransformedDataset(self.train_set, self._transform, seed=config.seed, loader=self.sample_loader)
        dataset.set_epoch(epoch)
        # The order depends only on (seed, epoch), so a resumed run gets the same batches.
        generator = torch.Generator().manual_seed(config.seed * 100003 + epoch)
        order = torch.randperm(len(self.train_set), generator=generator).tolist()
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=config.batch_size,
            sampler=order,
            collate_fn=collate_samples,
            num_workers=config.workers,
            pin_memory=self.device.type == "cuda",
            drop_last=False,
        )

    def _transform(self, sample, rng):
        if self.augment is not None:
            sample = self.augment(sample, rng)
        if tuple(sample.image.shape[:2]) != tuple(self.config.input_size):
            from .augment import letterbox_sample

            sample = letterbox_sample(sample, tuple(self.config.input_size))
        return sample

    def _train_epoch(self, epoch: int, total_iterations: int) -> dict:
        config = self.config
        torch.manual_seed(config.seed * 100003 + epoch)
        self.model.train()
        sums = torch.zeros(len(LOSS_NAMES))
        images_seen = 0
        skipped = 0
        pending = 0  # batches whose gradients wait for the next optimizer step
        self.optimizer.zero_grad(set_to_none=True)

        for index, batch in enumerate(self._loader(epoch)):
            self.progress.check_cancelled()
            iteration = index + epoch * self.batches_per_epoch
            self._set_learning_rates(epoch, iteration)

            images = batch["images"].to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, enabled=self.use_amp):
                outputs = self.model(images)
            loss, items = self.loss(_to_float(outputs), batch)

            if not torch.isfinite(loss):
                skipped += 1
                logger.warning("epoch %d batch %d: non-finite loss %s (%s), batch skipped",
                               epoch + 1, index, items.tolist(), batch["paths"])
                continue
            self.scaler.scale(loss).backward()
            pending += 1
            sums += items.cpu() * len(batch["paths"])
            images_seen += len(batch["paths"])

            if pending >= config.accumulate_steps:
                self._optimizer_step()
                pending = 0
            self.progress.update(
                iteration + 1, total_iterations,
                f"epoch {epoch + 1}/{config.epochs} " + " ".join(
                    f"{name} {value:.3f}" for name, value in zip(LOSS_NAMES, items.tolist())
                ),
            )
        # Step on what is left, so that no gradient carries over into the next epoch.
        if pending:
            self._optimizer_step()

        if images_seen == 0:
            raise LmsfaError(
                f"epoch {epoch + 1}: every batch gave a non-finite loss; lower the learning rate "
                f"(now {config.learning_rate}) or check the data set for broken annotations"
            )
        if skipped:
            logger.warning("epoch %d: skipped %d batches with a non-finite loss", epoch + 1, skipped)
        means = (sums / images_seen).tolist()
        losses = dict(zip(LOSS_NAMES, means))
        losses["total"] = sum(means)
        return losses

    def _optimizer_step(self) -> None:
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=self.config.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.model)

    def _set_learning_rates(self, epoch: int, iteration: int) -> None:
        """Apply the epoch's decayed learning rate, ramped in during the warm-up."""
        config = self.config
        target = config.learning_rate * lr_factor(config.schedule, epoch, config.epochs, config.lrf)
        if iteration >= self.warmup_iterations:
            for group in self.optimizer.param_groups:
                group["lr"] = target
                if config.optimizer == "sgd":
                    group["momentum"] = config.momentum
            return
        fraction = iteration / self.warmup_iterations
        for group_index, group in enumerate(self.optimizer.param_groups):
            # Biases (group 2) start high and fall to the target; the other groups rise from 0.
            start = config.warmup_bias_lr if group_index == 2 else 0.0
            group["lr"] = start + (target - start) * fraction
            momentum = config.warmup_momentum + (config.momentum - config.warmup_momentum) * fraction
            if config.optimizer == "sgd":
                group["momentum"] = momentum
            else:
                group["betas"] = (momentum, group["betas"][1])


class _NestedProgress(Progress):
    """Progress of a sub-task: its own messages, the parent's cancel flag."""

    def __init__(self, parent: Progress, callback):
        super().__init__(callback)
        self._parent = parent

    def check_cancelled(self) -> None:
        self._parent.check_cancelled()


def _to_float(outputs):
    """Cast mixed-precision model outputs to float32 for the loss."""
    raw_maps, coeffs, protos = outputs
    return [m.float() for m in raw_maps], coeffs.float(), protos.float()


def _flat_metrics(metrics: dict) -> dict:
    row = {}
    for kind, prefix in (("bbox", "box"), ("segm", "mask")):
        for name in ("AP", "AP50", "AP75"):
            row[f"val_{prefix}_{name}"] = metrics[kind][name]
    return row


def _summary_metrics(metrics: dict) -> dict:
    return _flat_metrics(metrics) if metrics else {}


def _format_row(row: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())


def write_log(history: list[dict], path: Path) -> None:
    """Write the per-epoch history as CSV, atomically; columns are the union of all rows' keys."""
    columns: list[str] = []
    for row in history:
        columns.extend(key for key in row if key not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(buffer.getvalue())
        make_shareable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
