"""Turn training samples into batches of tensors for the model and the loss.

A sample is any object with the fields of ``lmsfa.training.datasets.Sample``: ``image``
(H, W, 3) uint8 RGB, ``masks`` (N, H, W) bool, ``classes`` (N,) int64, ``boxes`` (N, 4)
float32 xyxy pixels, ``image_id`` and ``path``. Samples in one batch must already have the
model's input size (letterboxed), which must be a multiple of 32.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError

MASK_RATIO = 4  # input pixels per prototype pixel along each axis


def collate_samples(samples: Sequence) -> dict:
    """Stack samples into one batch.

    Returns a dict with:
        ``images``: (B, 3, H, W) float32 RGB in 0..1.
        ``batch_idx``: (T,) int64, the image of each of the T instances, grouped by image.
        ``classes``: (T,) int64 class indices.
        ``boxes``: (T, 4) float32 xyxy in input pixels.
        ``masks``: (T, H/4, W/4) float32, the fraction of each prototype pixel that the
            instance covers (area average of the full-resolution mask).
        ``image_ids``, ``paths``: lists of length B.
    """
    if not samples:
        raise InputError("cannot build a batch from zero samples")
    height, width = samples[0].image.shape[:2]
    for sample in samples:
        if sample.image.shape != (height, width, 3):
            raise InputError(
                f"sample {sample.path}: image shape {sample.image.shape} differs from {(height, width, 3)}; "
                "letterbox every sample to the model input size before batching"
            )
    if height % 32 or width % 32:
        raise InputError(f"input size {(height, width)} must be a multiple of 32 in both axes")

    # NOTE: a sample's ``ignore_mask`` (COCO iscrowd regions) is not batched, so the loss
    # trains anchors inside crowd regions as background.
    images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float() / 255.0
    batch_idx, classes, boxes, masks = [], [], [], []
    for index, sample in enumerate(samples):
        count = len(sample.classes)
        if count == 0:
            continue
        batch_idx.append(torch.full((count,), index, dtype=torch.long))
        classes.append(torch.as_tensor(np.asarray(sample.classes), dtype=torch.long))
        boxes.append(torch.as_tensor(np.asarray(sample.boxes), dtype=torch.float32).reshape(count, 4))
        full = torch.from_numpy(np.ascontiguousarray(sample.masks)).float()[:, None]  # (N, 1, H, W)
        masks.append(F.avg_pool2d(full, MASK_RATIO)[:, 0])

    mask_shape = (height // MASK_RATIO, width // MASK_RATIO)
    return {
        "images": images.contiguous(),
        "batch_idx": torch.cat(batch_idx) if batch_idx else torch.zeros(0, dtype=torch.long),
        "classes": torch.cat(classes) if classes else torch.zeros(0, dtype=torch.long),
        "boxes": torch.cat(boxes) if boxes else torch.zeros((0, 4), dtype=torch.float32),
        "masks": torch.cat(masks) if masks else torch.zeros((0, *mask_shape), dtype=torch.float32),
        "image_ids": [s.image_id for s in samples],
        "paths": [s.path for s in samples],
    }


class TransformedDataset(torch.utils.data.Dataset):
    """Apply ``transform(sample, rng) -> sample`` to each item of a map-style data set.

    ``rng`` is a ``numpy.random.Generator`` seeded from ``(seed, epoch, index)``, so that an
    epoch's augmentations are the same whether training runs straight or resumes.
    ``loader(dataset, index, rng) -> sample``, when given, replaces ``dataset[index]``, for
    augmentations that combine several images such as a mosaic. Call :meth:`set_epoch`
    before each epoch.
    """

    def __init__(self, dataset, transform: Optional[Callable] = None, seed: int = 0,
                 loader: Optional[Callable] = None):
        self.dataset = dataset
        self.transform = transform
        self.loader = loader
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.loader is not None:
            sample = self.loader(self.dataset, index, rng)
        else:
            sample = self.dataset[index]
        if self.transform is None:
            return sample
        return self.transform(sample, rng)
