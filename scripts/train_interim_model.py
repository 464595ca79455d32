"""Train the interim bundled model on the vocalfolds train split (a short CPU run).

    python scripts/train_interim_model.py --data ../shared/data/vocalfolds --out runs/interim

This is not the recorded accuracy protocol (input 512, 40 epochs, batch 8 with the
recipe's accumulation to 64). It trains at 256x256 by default (``--imgsz``), with AdamW and
an optimizer step per batch, so that a from-scratch model becomes usable in well under an
hour on an otherwise idle 2-core CPU.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from lmsfa.training.augment import AugmentConfig, Augmenter
from lmsfa.training.datasets import open_dataset
from lmsfa.training.trainer import TrainConfig, Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the vocalfolds folder")
    parser.add_argument("--out", type=Path, required=True, help="run folder for checkpoints and the log")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--imgsz", type=int, default=256, help="square input size in pixels")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    train = open_dataset(args.data / "instances_train.json")
    val = open_dataset(args.data / "instances_val.json")
    config = TrainConfig(
        epochs=args.epochs, batch_size=8, input_size=(args.imgsz, args.imgsz), optimizer="adamw", lr0=0.002,
        schedule="cosine", accumulate=1, warmup_epochs=1.0, val_interval=5, val_max_det=100,
        data=str(args.data / "instances_train.json"), val_data=str(args.data / "instances_val.json"),
    )
    augmenter = Augmenter(AugmentConfig(), flip_map=train.flip_map, side_specific=train.side_specific)
    trainer = Trainer(config, train, args.out, val_set=val, augment=augmenter.transform, resume=args.resume)
    result = trainer.fit()
    logging.info("best checkpoint %s (val mask AP %.4f)", result.best_checkpoint, result.best_fitness)


if __name__ == "__main__":
    main()
