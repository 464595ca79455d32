"""Training augmentation for endoscopic images, with masks and boxes transformed together.

The defaults of :class:`AugmentConfig` are the training recipe of the published LMSF-A
code, which keeps the Ultralytics 8.2.50 defaults. They are HSV jitter h 0.015, s 0.7,
v 0.4, translation up to 10 % of the image size, a scale gain of 0.5 to 1.5 and a
horizontal flip with probability 0.5, without rotation or vertical flip. :meth:`AugmentConfig.endoscopy` adds what suits a rotating endoscope:
rotation about the centre of the circular field of view, vertical flips, blur,
specular highlights and smoke.

Geometry works in OpenCV pixel coordinates, with pixel centres at integers. The boxes of
the returned samples are recomputed from the transformed masks, in the ``lmsfa.results``
box convention. Raster masks are the master copy: a transform never rebuilds a mask from a
polygon or a box, so holes and separate parts survive. An instance whose mask would
vanish (smaller than a pixel after down-scaling) keeps the pixel where its pixels land.
An instance moved entirely out of the image is dropped and listed in the report.

A horizontal or vertical flip produces a mirror image, so each side-specific class becomes
its mirror class through the data set's flip map. A vertical flip is a horizontal flip
followed by a half turn, and a rotation changes no side, so one flip map serves both
flips. A data set that declares side-specific classes without a flip map is never flipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields, replace
from typing import Optional, Sequence

import cv2
import numpy as np

from ..errors import InputError
from ..inference.letterbox import PAD_VALUE, Letterbox
from .readers.base import Sample, boxes_from_masks

logger = logging.getLogger(__name__)


# A pixel is inside the circular field of view when its brightest channel exceeds this.
FOV_DARK_THRESHOLD = 20


@dataclass
class AugmentConfig:
    """Augmentation settings; each probability is in 0..1.

    ``hsv_h`` is the maximum hue shift as a fraction of the hue circle; ``hsv_s`` and
    ``hsv_v`` give saturation and value gains drawn from ``1 +- x``. ``degrees`` is the
    maximum rotation in degrees about the field-of-view centre. ``translate`` is the
    maximum shift as a fraction of the image width and height. ``scale`` gives a zoom gain
    drawn from ``1 +- scale``. ``fliplr`` and ``flipud`` are flip probabilities. ``blur`` is
    the probability of a Gaussian blur with sigma up to ``blur_sigma`` pixels.
    ``specular`` is the probability of adding 1 to 4 saturated highlights, and ``smoke``
    the probability of a haze of strength up to ``smoke_strength`` (0..1 blend weight).
    ``mosaic`` is the probability that :meth:`Augmenter.load` combines four images.
    """

    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    degrees: float = 0.0
    translate: float = 0.1
    scale: float = 0.5
    fliplr: float = 0.5
    flipud: float = 0.0
    blur: float = 0.0
    blur_sigma: float = 2.0
    specular: float = 0.0
    smoke: float = 0.0
    smoke_strength: float = 0.4
    mosaic: float = 0.0

    @classmethod
    def endoscopy(cls, **changes) -> "AugmentConfig":
        """Return the default recipe plus endoscope rotation, vertical flips, blur, highlights and smoke."""
        settings = dict(degrees=180.0, flipud=0.5, blur=0.2, specular=0.2, smoke=0.1)
        settings.update(changes)
        return cls(**settings)

    def __post_init__(self) -> None:
        probabilities = ("fliplr", "flipud", "blur", "specular", "smoke", "mosaic")
        for name in probabilities:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"augmentation {name} is a probability in 0..1, got {value}")
        limits = {"hsv_h": 0.5, "hsv_s": 1.0, "hsv_v": 1.0, "translate": 0.5, "smoke_strength": 1.0}
        for name, limit in limits.items():
            value = getattr(self, name)
            if not 0.0 <= value <= limit:
                raise InputError(f"augmentation {name} must be in 0..{limit}, got {value}")
        if not 0.0 <= self.scale < 1.0:
            raise InputError(f"augmentation scale must be in 0..1 (gain 1 - scale to 1 + scale), got {self.scale}")
        if not 0.0 <= self.degrees <= 180.0:
            raise InputError(f"augmentation degrees must be in 0..180, got {self.degrees}")
        if self.blur_sigma <= 0.0:
            raise InputError(f"augmentation blur_sigma must be positive (pixels), got {self.blur_sigma}")

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class AugmentReport:
    """Record of the random choices and instance changes of one :class:`Augmenter` call.

    ``kept`` lists, for each output instance, the index of its input instance (for a
    mosaic: the index in the concatenated instances of the four samples). ``dropped``
    lists the input instances that left the image. ``rescued`` lists the input instances
    whose mask would have vanished and was kept as the pixels where it lands.
    ``relabelled`` counts instances whose class a flip changed. ``angle_deg`` is
    counter-clockwise. ``center`` is the rotation and scale centre (x, y) in input pixels.
    """

    flipped_lr: bool = False
    flipped_ud: bool = False
    flips_disabled: bool = False
    angle_deg: float = 0.0
    scale: float = 1.0
    translate_px: tuple[float, float] = (0.0, 0.0)
    center: tuple[float, float] = (0.0, 0.0)
    hsv_gains: tuple[float, float, float] = (0.0, 1.0, 1.0)
    blur_sigma: Optional[float] = None
    specular_spots: int = 0
    smoke: float = 0.0
    mosaic: bool = False
    relabelled: int = 0
    kept: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    rescued: list[int] = field(default_factory=list)


def estimate_fov_center(image: np.ndarray) -> tuple[float, float]:
    """Estimate the centre (x, y) in pixels of the circular field of view of an endoscope frame.

    The field of view is the largest bright region. A circle is fitted by least squares to
    the points of its outline that do not touch the image border, so that a circle cut off
    by the image edges is still found. Returns the image centre when the frame has no dark
    surround (a cropped frame) or the fit fails.
    """
    height, width = image.shape[:2]
    image_center = ((width - 1) / 2.0, (height - 1) / 2.0)
    factor = min(1.0, 160.0 / max(height, width))
    small = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA) if factor < 1.0 else image
    bright = (small.max(axis=2) > FOV_DARK_THRESHOLD).astype(np.uint8)
    bright = cv2.morphologyEx(bright, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, components, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=8)
    if count < 2:
        return image_center
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = (components == largest).astype(np.uint8)
    if region.mean() > 0.97:
        return image_center
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    points = np.concatenate([contour.reshape(-1, 2) for contour in contours]).astype(np.float64)
    small_h, small_w = region.shape
    inner = (points[:, 0] > 1) & (points[:, 0] < small_w - 2) & (points[:, 1] > 1) & (points[:, 1] < small_h - 2)
    points = points[inner]
    if len(points) < 20:
        return image_center
    # Algebraic circle fit: x^2 + y^2 + D x + E y + F = 0, solved by least squares.
    system = np.column_stack([points[:, 0], points[:, 1], np.ones(len(points))])
    target = -(points[:, 0] ** 2 + points[:, 1] ** 2)
    (d, e, _), *_ = np.linalg.lstsq(system, target, rcond=None)
    center_x, center_y = -d / 2.0 / factor, -e / 2.0 / factor
    if not (0 <= center_x < width and 0 <= center_y < height):
        return image_center
    return float(center_x), float(center_y)


def _warp_nearest(masks: np.ndarray, matrix: np.ndarray, output_hw: tuple[int, int]) -> np.ndarray:
    """Warp (N, H, W) bool masks with nearest-neighbour sampling, each only within its box.

    Each mask is cut to its box plus one pixel and warped into the box of the transformed
    corners, so the cost follows the instance's area rather than the image's.
    """
    height, width = output_hw
    warped = np.zeros((masks.shape[0], height, width), dtype=bool)
    linear = matrix[:, :2]
    for index, box in enumerate(boxes_from_masks(masks)):
        if box[2] <= box[0]:
            continue
        src_x0, src_y0 = max(int(box[0]) - 1, 0), max(int(box[1]) - 1, 0)
        src_x1, src_y1 = min(int(box[2]) + 1, masks.shape[2]), min(int(box[3]) + 1, masks.shape[1])
        corners = np.array([[src_x0, src_y0], [src_x1, src_y0], [src_x0, src_y1], [src_x1, src_y1]], dtype=np.float64) - 0.5
        mapped = corners @ linear.T + matrix[:, 2]
        dst_x0 = max(int(np.floor(mapped[:, 0].min())) - 1, 0)
        dst_y0 = max(int(np.floor(mapped[:, 1].min())) - 1, 0)
        dst_x1 = min(int(np.ceil(mapped[:, 0].max())) + 2, width)
        dst_y1 = min(int(np.ceil(mapped[:, 1].max())) + 2, height)
        if dst_x1 <= dst_x0 or dst_y1 <= dst_y0:
            continue
        # The same transform, expressed from crop coordinates to region coordinates.
        local = matrix.copy()
        local[:, 2] = matrix[:, 2] + linear @ (src_x0, src_y0) - (dst_x0, dst_y0)
        crop = np.ascontiguousarray(masks[index, src_y0:src_y1, src_x0:src_x1]).view(np.uint8)
        out = cv2.warpAffine(
            crop, local, (dst_x1 - dst_x0, dst_y1 - dst_y0), flags=cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        )
        warped[index, dst_y0:dst_y1, dst_x0:dst_x1] = out.view(bool)
    return warped


def warp_masks(
    masks: np.ndarray, matrix: np.ndarray, output_hw: tuple[int, int]
) -> tuple[np.ndarray, list[int], list[int]]:
    """Warp (N, H, W) bool masks with a 2x3 affine matrix (OpenCV pixel coordinates).

    Nearest-neighbour sampling keeps masks binary. A mask that comes out empty is rebuilt
    from its input pixel centres mapped forward, so an instance smaller than a pixel keeps
    at least one pixel while it stays in the image. Returns the warped (N, H', W') masks,
    the indices of the masks rebuilt this way and the indices of masks now empty.
    """
    height, width = output_hw
    warped = _warp_nearest(masks, matrix, output_hw)
    rescued, empty = [], []
    boxes = boxes_from_masks(masks).astype(np.int64)
    for index in np.flatnonzero(~warped.reshape(len(warped), -1).any(axis=1)).tolist():
        x0, y0, x1, y1 = boxes[index]
        rows, cols = np.nonzero(masks[index, y0:y1, x0:x1])
        rows, cols = rows + y0, cols + x0
        if rows.size:
            x = np.round(matrix[0, 0] * cols + matrix[0, 1] * rows + matrix[0, 2]).astype(np.int64)
            y = np.round(matrix[1, 0] * cols + matrix[1, 1] * rows + matrix[1, 2]).astype(np.int64)
            inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
            if inside.any():
                warped[index, y[inside], x[inside]] = True
                rescued.append(index)
                continue
        empty.append(index)
    return warped, rescued, empty


def _subset(sample: Sample, keep: Sequence[int]) -> Sample:
    keep = np.asarray(keep, dtype=np.int64)
    masks = sample.masks[keep]
    return replace(sample, masks=masks, classes=sample.classes[keep], boxes=boxes_from_masks(masks))


def affine_sample(
    sample: Sample, matrix: np.ndarray, output_hw: tuple[int, int], image: Optional[np.ndarray] = None
) -> tuple[Sample, list[int], list[int], list[int]]:
    """Apply a 2x3 affine matrix to a sample's masks and ignore mask, and to its image unless one is given.

    Returns the new sample without empty instances, the kept input indices, the rescued
    input indices and the dropped input indices.
    """
    height, width = output_hw
    if image is None:
        image = cv2.warpAffine(
            sample.image, matrix, (width, height), flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT, borderValue=(PAD_VALUE,) * 3,
        )
    masks, rescued, dropped = warp_masks(sample.masks, matrix, output_hw)
    ignore = None
    if sample.ignore_mask is not None:
        ignore = cv2.warpAffine(sample.ignore_mask.view(np.uint8), matrix, (width, height), flags=cv2.INTER_NEAREST) > 0
    dropped_set = set(dropped)
    kept = [index for index in range(len(sample)) if index not in dropped_set]
    moved = Sample(
        image=image,
        masks=masks[kept],
        classes=sample.classes[kept],
        boxes=boxes_from_masks(masks[kept]),
        image_id=sample.image_id,
        path=sample.path,
        ignore_mask=ignore,
    )
    return moved, kept, rescued, dropped


def letterbox_matrix(source_hw: tuple[int, int], input_hw: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Return the 2x3 letterbox matrix (OpenCV pixel coordinates) and the geometry inference uses.

    The geometry is :meth:`lmsfa.inference.letterbox.Letterbox.fit`, so training inputs are
    scaled and padded exactly as frames are at inference time.
    """
    geometry = Letterbox.fit(source_hw, input_hw)
    scale_x, scale_y = geometry.scale_x, geometry.scale_y
    # A continuous frame point x maps to x * scale + pad; with pixel centres at integers
    # that is x_out = x_in * scale + 0.5 * scale - 0.5 + pad.
    matrix = np.array(
        [
            [scale_x, 0.0, 0.5 * scale_x - 0.5 + geometry.pad_left],
            [0.0, scale_y, 0.5 * scale_y - 0.5 + geometry.pad_top],
        ],
        dtype=np.float64,
    )
    return matrix, geometry


def letterbox_sample(sample: Sample, input_hw: tuple[int, int]) -> Sample:
    """Resize a sample to fit ``input_hw`` (height, width) keeping its aspect ratio, then pad with grey.

    The geometry and the padding value (``PAD_VALUE``) are those of inference. The
    padding value also fills what a geometric augmentation uncovers.

    Masks and the ignore mask follow the image; boxes are recomputed from the masks. An
    instance smaller than a pixel after down-scaling keeps one pixel (see :func:`warp_masks`).
    """
    matrix, geometry = letterbox_matrix(sample.hw, input_hw)
    if geometry.frame_hw == geometry.input_hw:
        return sample
    input_h, input_w = geometry.input_hw
    resized_h, resized_w = geometry.resized_hw
    top, left = geometry.pad_top, geometry.pad_left
    shrinking = resized_h < sample.hw[0] or resized_w < sample.hw[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    resized = cv2.resize(sample.image, (resized_w, resized_h), interpolation=interpolation)
    image = cv2.copyMakeBorder(
        resized, top, input_h - resized_h - top, left, input_w - resized_w - left,
        cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3,
    )
    moved, _, _, _ = affine_sample(sample, matrix, (input_h, input_w), image=image)
    return moved


def mosaic(samples: Sequence[Sample], output_hw: tuple[int, int], rng: np.random.Generator) -> tuple[Sample, list[int], list[int]]:
    """Combine four samples around a random point into one (output_hw) sample.

    Each sample is scaled to fit the output, as by the letterbox, and placed in its
    quadrant with one corner at the split point. The split point lies in the middle half
    of the output in each direction, and what reaches past the output border is cut off.
    Returns the
    sample, the kept indices and the dropped indices, both counted over the instances of
    the four samples in order.
    """
    if len(samples) != 4:
        raise InputError(f"a mosaic needs 4 samples, got {len(samples)}")
    height, width = int(output_hw[0]), int(output_hw[1])
    split_x = float(rng.uniform(0.25, 0.75) * width)
    split_y = float(rng.uniform(0.25, 0.75) * height)
    canvas = np.full((height, width, 3), PAD_VALUE, dtype=np.uint8)
    masks, classes, kept, dropped = [], [], [], []
    ignore = None
    offset = 0
    for quadrant, sample in enumerate(samples):
        source_h, source_w = sample.hw
        ratio = min(height / source_h, width / source_w)
        placed_w, placed_h = source_w * ratio, source_h * ratio
        left = split_x - placed_w if quadrant in (0, 2) else split_x
        top = split_y - placed_h if quadrant in (0, 1) else split_y
        left, top = round(left), round(top)
        matrix = np.array([[ratio, 0.0, 0.5 * ratio - 0.5 + left], [0.0, ratio, 0.5 * ratio - 0.5 + top]])
        moved, kept_here, _, dropped_here = affine_sample(sample, matrix, (height, width))
        rows = slice(0, round(split_y)) if quadrant in (0, 1) else slice(round(split_y), height)
        cols = slice(0, round(split_x)) if quadrant in (0, 2) else slice(round(split_x), width)
        canvas[rows, cols] = moved.image[rows, cols]
        masks.extend(moved.masks)
        classes.extend(moved.classes.tolist())
        kept.extend(offset + index for index in kept_here)
        dropped.extend(offset + index for index in dropped_here)
        if moved.ignore_mask is not None:
            ignore = moved.ignore_mask if ignore is None else ignore | moved.ignore_mask
        offset += len(sample)
    stacked = np.stack(masks) if masks else np.zeros((0, height, width), dtype=bool)
    combined = Sample(
        image=canvas,
        masks=stacked,
        classes=np.asarray(classes, dtype=np.int64),
        boxes=boxes_from_masks(stacked),
        image_id="mosaic:" + ",".join(str(sample.image_id) for sample in samples),
        path=None,
        ignore_mask=ignore,
    )
    return combined, kept, dropped


class Augmenter:
    """Random augmentation of :class:`Sample` objects; all randomness comes from the caller's generator.

    ``flip_map`` and ``side_specific`` come from the data set (``dataset.flip_map``,
    ``dataset.side_specific``). When ``side_specific`` is true and there is no flip map,
    flips are switched off, because a flipped image would teach the mirror class's label.
    """

    def __init__(
        self,
        config: Optional[AugmentConfig] = None,
        flip_map: Optional[dict[int, int]] = None,
        side_specific: bool = False,
    ):
        self.config = config or AugmentConfig()
        self.flip_map = dict(flip_map) if flip_map else {}
        for source, target in self.flip_map.items():
            if self.flip_map.get(target) != source:
                raise InputError(f"flip map must be symmetric: class {source} -> {target} but {target} -> {self.flip_map.get(target)}")
        self.flips_disabled = bool(side_specific) and not self.flip_map
        if self.flips_disabled and (self.config.fliplr > 0 or self.config.flipud > 0):
            logger.warning(
                "side-specific classes without a flip map: horizontal and vertical flips are switched off "
                "(fliplr=%s, flipud=%s requested)", self.config.fliplr, self.config.flipud,
            )

    @classmethod
    def for_dataset(cls, config: Optional[AugmentConfig], dataset) -> "Augmenter":
        """Build an augmenter with the flip map and side-specific flag of ``dataset``."""
        return cls(config, flip_map=dataset.flip_map, side_specific=dataset.side_specific)

    def __call__(
        self, sample: Sample, rng: np.random.Generator, center: Optional[tuple[float, float]] = None
    ) -> tuple[Sample, AugmentReport]:
        """Return an augmented copy of ``sample`` (same size) and the report of what was applied.

        ``center`` (x, y) in pixels overrides the estimated field-of-view centre used for
        rotation and scaling. The input sample is not modified.
        """
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        report = AugmentReport(flips_disabled=self.flips_disabled)
        sample = self._flip(sample, rng, report)
        sample = self._geometric(sample, rng, report, center)
        image = self._photometric(sample.image, rng, report)
        return replace(sample, image=image), report

    def transform(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """Return only the augmented sample of :meth:`__call__`, for callers that take ``f(sample, rng) -> sample``."""
        augmented, report = self(sample, rng)
        if report.dropped:
            logger.debug("image %s: augmentation dropped instances %s", sample.image_id, report.dropped)
        return augmented

    def load(self, dataset, index: int, rng: np.random.Generator, input_hw: tuple[int, int]) -> tuple[Sample, AugmentReport]:
        """Read ``dataset[index]``, augment it and letterbox it to ``input_hw`` (height, width).

        With probability ``config.mosaic`` three more random samples of the data set join
        it in a mosaic; rotation and scaling then turn about the mosaic's centre.
        """
        config = self.config
        if config.mosaic > 0 and len(dataset) > 1 and rng.random() < config.mosaic:
            others = rng.integers(0, len(dataset), size=3)
            samples = [dataset[index]] + [dataset[int(other)] for other in others]
            combined, kept_mosaic, dropped_mosaic = mosaic(samples, input_hw, rng)
            height, width = combined.hw
            augmented, report = self(combined, rng, center=((width - 1) / 2.0, (height - 1) / 2.0))
            report.mosaic = True
            report.dropped = dropped_mosaic + [kept_mosaic[i] for i in report.dropped]
            report.rescued = [kept_mosaic[i] for i in report.rescued]
            report.kept = [kept_mosaic[i] for i in report.kept]
            return augmented, report
        augmented, report = self(dataset[index], rng)
        return letterbox_sample(augmented, input_hw), report

    def _flip(self, sample: Sample, rng: np.random.Generator, report: AugmentReport) -> Sample:
        config = self.config
        report.kept = list(range(len(sample)))
        flip_lr = rng.random() < config.fliplr
        flip_ud = rng.random() < config.flipud
        if self.flips_disabled or not (flip_lr or flip_ud):
            return sample
        image, masks, ignore = sample.image, sample.masks, sample.ignore_mask
        if flip_lr:
            image, masks = image[:, ::-1], masks[:, :, ::-1]
            ignore = ignore[:, ::-1] if ignore is not None else None
        if flip_ud:
            image, masks = image[::-1], masks[:, ::-1]
            ignore = ignore[::-1] if ignore is not None else None
        classes = sample.classes
        # Two flips make a half turn, which keeps every side, so only one flip relabels.
        if flip_lr != flip_ud and self.flip_map:
            classes = np.array([self.flip_map.get(int(c), int(c)) for c in classes], dtype=np.int64)
            report.relabelled = int((classes != sample.classes).sum())
        report.flipped_lr, report.flipped_ud = bool(flip_lr), bool(flip_ud)
        masks = np.ascontiguousarray(masks)
        return replace(
            sample,
            image=np.ascontiguousarray(image),
            masks=masks,
            classes=classes,
            boxes=boxes_from_masks(masks),
            ignore_mask=np.ascontiguousarray(ignore) if ignore is not None else None,
        )

    def _geometric(
        self, sample: Sample, rng: np.random.Generator, report: AugmentReport, center: Optional[tuple[float, float]]
    ) -> Sample:
        config = self.config
        angle = float(rng.uniform(-config.degrees, config.degrees)) if config.degrees > 0 else 0.0
        scale = float(rng.uniform(1 - config.scale, 1 + config.scale)) if config.scale > 0 else 1.0
        height, width = sample.hw
        shift = (
            float(rng.uniform(-config.translate, config.translate) * width),
            float(rng.uniform(-config.translate, config.translate) * height),
        ) if config.translate > 0 else (0.0, 0.0)
        if angle == 0.0 and scale == 1.0 and shift == (0.0, 0.0):
            return sample
        if center is None:
            center = estimate_fov_center(sample.image) if angle != 0.0 else ((width - 1) / 2.0, (height - 1) / 2.0)
        matrix = cv2.getRotationMatrix2D((float(center[0]), float(center[1])), angle, scale)
        matrix[:, 2] += shift
        moved, kept, rescued, dropped = affine_sample(sample, matrix, (height, width))
        report.angle_deg, report.scale, report.translate_px = angle, scale, shift
        report.center = (float(center[0]), float(center[1]))
        before = report.kept
        report.kept = [before[i] for i in kept]
        report.rescued = [before[i] for i in rescued]
        report.dropped = [before[i] for i in dropped]
        if dropped:
            logger.debug("augmentation moved instances %s of image %s out of the frame", dropped, sample.image_id)
        return moved

    def _photometric(self, image: np.ndarray, rng: np.random.Generator, report: AugmentReport) -> np.ndarray:
        config = self.config
        if config.hsv_h or config.hsv_s or config.hsv_v:
            image = self._hsv(image, rng, report)
        if config.specular > 0 and rng.random() < config.specular:
            image = self._specular(image, rng, report)
        if config.smoke > 0 and rng.random() < config.smoke:
            image = self._smoke(image, rng, report)
        if config.blur > 0 and rng.random() < config.blur:
            sigma = float(rng.uniform(0.3, max(0.3, config.blur_sigma)))
            image = cv2.GaussianBlur(image, (0, 0), sigma)
            report.blur_sigma = sigma
        return image

    def _hsv(self, image: np.ndarray, rng: np.random.Generator, report: AugmentReport) -> np.ndarray:
        config = self.config
        hue_shift = float(rng.uniform(-config.hsv_h, config.hsv_h))
        saturation = float(rng.uniform(1 - config.hsv_s, 1 + config.hsv_s))
        value = float(rng.uniform(1 - config.hsv_v, 1 + config.hsv_v))
        report.hsv_gains = (hue_shift, saturation, value)
        levels = np.arange(256, dtype=np.float64)
        # OpenCV stores 8-bit hue as 0..179 (degrees / 2).
        hue_lut = np.mod(levels + hue_shift * 180.0, 180.0).astype(np.uint8)
        saturation_lut = np.clip(levels * saturation, 0, 255).astype(np.uint8)
        value_lut = np.clip(levels * value, 0, 255).astype(np.uint8)
        hsv = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2HSV)
        hsv = cv2.merge((cv2.LUT(hsv[:, :, 0], hue_lut), cv2.LUT(hsv[:, :, 1], saturation_lut), cv2.LUT(hsv[:, :, 2], value_lut)))
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)

    @staticmethod
    def _specular(image: np.ndarray, rng: np.random.Generator, report: AugmentReport) -> np.ndarray:
        """Add soft-edged saturated ellipses, like light reflected by wet tissue."""
        height, width = image.shape[:2]
        weight = np.zeros((height, width), dtype=np.float32)
        spots = int(rng.integers(1, 5))
        size = min(height, width)
        for _ in range(spots):
            center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            axes = (max(1, int(rng.uniform(0.005, 0.03) * size)), max(1, int(rng.uniform(0.005, 0.03) * size)))
            cv2.ellipse(weight, center, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        weight = cv2.GaussianBlur(weight, (0, 0), max(1.0, 0.004 * size))[:, :, None]
        report.specular_spots = spots
        return np.clip(image * (1.0 - weight) + 255.0 * weight, 0, 255).astype(np.uint8)

    def _smoke(self, image: np.ndarray, rng: np.random.Generator, report: AugmentReport) -> np.ndarray:
        """Blend a smooth light-grey haze of random density over the image, like surgical smoke."""
        height, width = image.shape[:2]
        strength = float(rng.uniform(0.1, 1.0) * self.config.smoke_strength)
        coarse = rng.random((4, 4)).astype(np.float32)
        density = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        density = np.clip(density, 0.0, 1.0)[:, :, None] * strength
        grey = float(rng.uniform(180, 230))
        report.smoke = strength
        return np.clip(image * (1.0 - density) + grey * density, 0, 255).astype(np.uint8)


__all__ = [
    "AugmentConfig",
    "AugmentReport",
    "Augmenter",
    "estimate_fov_center",
    "letterbox_matrix",
    "letterbox_sample",
    "mosaic",
    "warp_masks",
    "PAD_VALUE",
]
