"""Tests of the training augmentation: geometry, flips with flip maps, tiny instances, mosaic."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lmsfa.errors import InputError
from lmsfa.inference.letterbox import PAD_VALUE, Letterbox
from lmsfa.training.augment import (
    AugmentConfig,
    Augmenter,
    estimate_fov_center,
    letterbox_sample,
    mosaic,
    warp_masks,
)
from lmsfa.training.datasets import Sample, boxes_from_masks, open_dataset

# Everything off: each test switches on only what it checks.
NOTHING = dict(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, translate=0.0, scale=0.0, fliplr=0.0)


def make_sample(image: np.ndarray, masks: list[np.ndarray], classes: list[int]) -> Sample:
    stacked = np.stack(masks) if masks else np.zeros((0,) + image.shape[:2], bool)
    return Sample(image, stacked, np.array(classes, np.int64), boxes_from_masks(stacked), "synthetic", None)


def endoscope_frame(height: int, width: int, center: tuple[float, float], radius: float) -> np.ndarray:
    """A dark frame with a bright textured disc, like the circular view of an endoscope."""
    rng = np.random.default_rng(3)
    image = np.zeros((height, width, 3), np.uint8)
    texture = rng.integers(90, 230, (height, width, 3), dtype=np.uint8)
    disc = np.zeros((height, width), np.uint8)
    cv2.circle(disc, (round(center[0]), round(center[1])), round(radius), 1, -1)
    image[disc > 0] = texture[disc > 0]
    return image


@pytest.fixture(scope="module")
def teeth(shared_data):
    return open_dataset(shared_data / "ufba425_teeth" / "val.json", flip_map="fdi")


def test_default_config_is_training_recipe():
    config = AugmentConfig()
    assert (config.hsv_h, config.hsv_s, config.hsv_v) == (0.015, 0.7, 0.4)
    assert (config.translate, config.scale, config.fliplr) == (0.1, 0.5, 0.5)
    assert (config.degrees, config.flipud, config.mosaic) == (0.0, 0.0, 0.0)
    endoscopy = AugmentConfig.endoscopy()
    assert endoscopy.degrees == 180.0
    assert endoscopy.flipud == 0.5


@pytest.mark.parametrize(
    "settings, message",
    [({"fliplr": 1.5}, "fliplr"), ({"scale": 1.0}, "scale"), ({"degrees": -5}, "degrees"), ({"hsv_s": 2}, "hsv_s")],
)
def test_config_rejects_out_of_range(settings, message):
    with pytest.raises(InputError, match=message):
        AugmentConfig(**settings)


def test_horizontal_flip_swaps_mirror_teeth(teeth):
    sample = teeth[0]
    augmenter = Augmenter.for_dataset(AugmentConfig(**{**NOTHING, "fliplr": 1.0}), teeth)
    flipped, report = augmenter(sample, np.random.default_rng(0))
    names = teeth.class_table.names
    assert report.flipped_lr
    assert report.relabelled == len(sample)
    assert np.array_equal(flipped.image, sample.image[:, ::-1])
    assert np.array_equal(flipped.masks, sample.masks[:, :, ::-1])
    for before, after in zip(sample.classes, flipped.classes):
        quadrant, tooth = names[before][-2], names[before][-1]
        mirror_quadrant = {"1": "2", "2": "1", "3": "4", "4": "3"}[quadrant]
        assert names[after] == f"tooth {mirror_quadrant}{tooth}"
    # Upper right central incisor: left of the upper left one in a panoramic X-ray, and
    # still left of its partner after the flip relabels both.
    centre_x = {names[c]: (b[0] + b[2]) / 2 for c, b in zip(flipped.classes, flipped.boxes)}
    assert centre_x["tooth 11"] < centre_x["tooth 21"]


def test_vertical_flip_swaps_and_double_flip_keeps(teeth):
    sample = teeth[0]
    mirror = teeth.flip_map
    vertical = Augmenter.for_dataset(AugmentConfig(**{**NOTHING, "flipud": 1.0}), teeth)
    flipped, report = vertical(sample, np.random.default_rng(0))
    assert report.flipped_ud and not report.flipped_lr
    assert flipped.classes.tolist() == [mirror[c] for c in sample.classes.tolist()]
    assert np.array_equal(flipped.masks, sample.masks[:, ::-1])

    both = Augmenter.for_dataset(AugmentConfig(**{**NOTHING, "fliplr": 1.0, "flipud": 1.0}), teeth)
    turned, report = both(sample, np.random.default_rng(0))
    assert report.flipped_lr and report.flipped_ud
    assert turned.classes.tolist() == sample.classes.tolist(), "a half turn keeps every side"


def test_side_specific_without_map_never_flips(teeth):
    sample = teeth[0]
    augmenter = Augmenter(AugmentConfig(**{**NOTHING, "fliplr": 1.0, "flipud": 1.0}), flip_map=None, side_specific=True)
    out, report = augmenter(sample, np.random.default_rng(0))
    assert report.flips_disabled
    assert not report.flipped_lr
    assert np.array_equal(out.image, sample.image)
    assert out.classes.tolist() == sample.classes.tolist()


def test_label_blind_flip_when_not_side_specific(vocalfolds):
    dataset = open_dataset(vocalfolds / "instances_val.json")
    sample = dataset[0]
    augmenter = Augmenter.for_dataset(AugmentConfig(**{**NOTHING, "fliplr": 1.0}), dataset)
    out, report = augmenter(sample, np.random.default_rng(0))
    assert report.flipped_lr
    assert out.classes.tolist() == sample.classes.tolist()


def test_fov_center_of_off_centre_disc():
    image = endoscope_frame(240, 320, center=(140.0, 130.0), radius=90)
    x, y = estimate_fov_center(image)
    assert abs(x - 140) < 2
    assert abs(y - 130) < 2


def test_fov_center_of_disc_cut_by_edges():
    # The usual wide-screen endoscope frame: the circle is taller than the frame.
    image = endoscope_frame(200, 360, center=(170.0, 100.0), radius=130)
    x, y = estimate_fov_center(image)
    assert abs(x - 170) < 2
    assert abs(y - 100) < 2


def test_fov_center_of_cropped_frame(vocalfolds):
    image = cv2.imread(str(vocalfolds / "images" / "patient1" / "seq1" / "0001.jpg"))
    assert estimate_fov_center(image) == (255.5, 255.5)


def test_rotation_turns_about_fov_centre():
    center = (140.0, 100.0)
    image = endoscope_frame(200, 300, center=center, radius=80)
    at_center = np.zeros((200, 300), bool)
    at_center[98:103, 138:143] = True
    arm = np.zeros((200, 300), bool)
    arm[98:103, 160:180] = True  # 20..40 px right of the centre
    sample = make_sample(image, [at_center, arm], [0, 1])
    augmenter = Augmenter(AugmentConfig(**{**NOTHING, "degrees": 180.0}))
    for seed in range(5):
        out, report = augmenter(sample, np.random.default_rng(seed))
        assert abs(report.center[0] - center[0]) < 2
        assert abs(report.center[1] - center[1]) < 2
        assert np.abs(out.boxes[0] - sample.boxes[0]).max() <= 2, "the pixels at the centre stay there"
        # The arm keeps its distance from the centre whatever the angle.
        rows, cols = np.nonzero(out.masks[1])
        distance = np.hypot(cols.mean() - center[0], rows.mean() - center[1])
        assert abs(distance - 29.5) < 2.5
        angle = np.degrees(np.arctan2(-(rows.mean() - center[1]), cols.mean() - center[0]))
        assert abs((angle - report.angle_deg + 180) % 360 - 180) < 6, "OpenCV angles turn counter-clockwise on screen"


def test_masks_follow_image():
    image = np.zeros((120, 160, 3), np.uint8)
    mask = np.zeros((120, 160), bool)
    mask[30:70, 50:110] = True
    image[mask] = (255, 0, 0)
    sample = make_sample(image, [mask], [0])
    augmenter = Augmenter(AugmentConfig(**{**NOTHING, "degrees": 40.0, "scale": 0.4, "translate": 0.1}))
    for seed in range(4):
        out, report = augmenter(sample, np.random.default_rng(seed))
        red = (out.image[:, :, 0] > 128) & (out.image[:, :, 1] < 60)
        overlap = (red & out.masks[0]).sum() / (red | out.masks[0]).sum()
        assert overlap > 0.9, f"seed {seed}: mask and image moved apart (IoU {overlap:.2f})"
        assert out.boxes.tolist() == boxes_from_masks(out.masks).tolist()


def test_tiny_instance_kept_or_reported():
    image = np.full((64, 64, 3), 100, np.uint8)
    speck = np.zeros((64, 64), bool)
    speck[5, 60] = True  # one pixel near the top right corner
    big = np.zeros((64, 64), bool)
    big[20:40, 20:40] = True
    sample = make_sample(image, [big, speck], [0, 1])
    augmenter = Augmenter(AugmentConfig(**{**NOTHING, "scale": 0.9, "translate": 0.3, "degrees": 30.0}))
    dropped = kept = 0
    for seed in range(40):
        out, report = augmenter(sample, np.random.default_rng(seed))
        assert sorted(report.kept + report.dropped) == [0, 1]
        assert len(out) == len(report.kept)
        assert all(out.masks[i].any() for i in range(len(out))), "every kept instance has at least one pixel"
        assert out.classes.tolist() == [sample.classes[i] for i in report.kept]
        if 1 in report.dropped:
            dropped += 1
        else:
            kept += 1
    assert dropped > 0, "some seeds should move the corner pixel out of the image"
    assert kept > 0, "some seeds should keep the corner pixel"


def test_warp_masks_rescues_vanishing_pixel():
    mask = np.zeros((1, 100, 100), bool)
    mask[0, 51, 51] = True
    shrink = np.array([[0.1, 0.0, 0.0], [0.0, 0.1, 0.0]])
    warped, rescued, empty = warp_masks(mask, shrink, (10, 10))
    assert rescued == [0]
    assert empty == []
    assert np.argwhere(warped[0]).tolist() == [[5, 5]]
    away = np.array([[1.0, 0.0, 500.0], [0.0, 1.0, 0.0]])
    warped, rescued, empty = warp_masks(mask, away, (100, 100))
    assert empty == [0]
    assert not warped.any()


def test_letterbox_sample_geometry():
    image = np.full((100, 200, 3), 50, np.uint8)
    full = np.ones((100, 200), bool)
    speck = np.zeros((100, 200), bool)
    speck[10, 10] = True
    out = letterbox_sample(make_sample(image, [full, speck], [0, 1]), (64, 64))
    geometry = Letterbox.fit((100, 200), (64, 64))
    assert geometry.resized_hw == (32, 64)
    assert out.image.shape == (64, 64, 3)
    assert out.masks.shape == (2, 64, 64)
    assert out.boxes[0].tolist() == [0, 16, 64, 48]
    assert out.masks[1].sum() >= 1, "a pixel that shrinks below one pixel is kept"
    assert (out.image[0, 0] == PAD_VALUE).all()
    assert (out.image[63, 63] == PAD_VALUE).all()
    assert (out.image[32, 32] == 50).all()


def test_letterbox_matches_inference_input(vocalfolds):
    sample = open_dataset(vocalfolds / "instances_val.json")[0]
    out = letterbox_sample(sample, (320, 384))
    network_input = Letterbox.fit(sample.hw, (320, 384)).apply(sample.image)
    assert np.abs(out.image.transpose(2, 0, 1) / 255.0 - network_input).max() < 1e-6


def test_photometric_changes_only_image(vocalfolds):
    sample = open_dataset(vocalfolds / "instances_val.json")[0]
    config = AugmentConfig(**{**NOTHING, "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "blur": 1.0, "specular": 1.0, "smoke": 1.0})
    out, report = Augmenter(config)(sample, np.random.default_rng(1))
    assert report.blur_sigma is not None
    assert 1 <= report.specular_spots <= 4
    assert report.smoke > 0
    assert not np.array_equal(out.image, sample.image)
    assert out.image.dtype == np.uint8
    assert np.array_equal(out.masks, sample.masks)
    assert np.array_equal(out.boxes, sample.boxes)


def test_nothing_enabled_is_identity(vocalfolds):
    sample = open_dataset(vocalfolds / "instances_val.json")[0]
    out, report = Augmenter(AugmentConfig(**NOTHING))(sample, np.random.default_rng(0))
    assert np.array_equal(out.image, sample.image)
    assert np.array_equal(out.masks, sample.masks)
    assert report.kept == list(range(len(sample)))


def test_same_seed_same_result(teeth):
    augmenter = Augmenter.for_dataset(AugmentConfig.endoscopy(mosaic=0.5), teeth)
    first, first_report = augmenter.load(teeth, 3, np.random.default_rng(7), (256, 256))
    second, second_report = augmenter.load(teeth, 3, np.random.default_rng(7), (256, 256))
    assert np.array_equal(first.image, second.image)
    assert np.array_equal(first.masks, second.masks)
    assert first_report == second_report


def test_mosaic_combines_four_samples(teeth):
    samples = [teeth[i] for i in range(4)]
    combined, kept, dropped = mosaic(samples, (320, 320), np.random.default_rng(2))
    total = sum(len(s) for s in samples)
    assert combined.image.shape == (320, 320, 3)
    assert sorted(kept + dropped) == list(range(total))
    all_classes = np.concatenate([s.classes for s in samples])
    assert combined.classes.tolist() == all_classes[kept].tolist()
    assert all(mask.any() for mask in combined.masks)
    assert combined.boxes.tolist() == boxes_from_masks(combined.masks).tolist()


def test_load_output_size_and_consistency(teeth):
    augmenter = Augmenter.for_dataset(AugmentConfig.endoscopy(mosaic=0.5), teeth)
    rng = np.random.default_rng(0)
    seen_mosaic = seen_single = False
    for index in range(6):
        sample, report = augmenter.load(teeth, index, rng, (256, 320))
        seen_mosaic |= report.mosaic
        seen_single |= not report.mosaic
        assert sample.image.shape == (256, 320, 3)
        assert sample.masks.shape[1:] == (256, 320)
        assert len(sample) == len(report.kept)
        assert sample.boxes.tolist() == boxes_from_masks(sample.masks).tolist()
        assert all(mask.any() for mask in sample.masks)
        assert sample.classes.min(initial=0) >= 0
        assert sample.classes.max(initial=0) < 32
    assert seen_mosaic
    assert seen_single


def test_rng_type_checked(teeth):
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        Augmenter()(teeth[0], 3)


def test_transform_returns_sample_only(teeth):
    augmenter = Augmenter.for_dataset(AugmentConfig(), teeth)
    sample = teeth[0]
    out = augmenter.transform(sample, np.random.default_rng(5))
    expected, _ = augmenter(sample, np.random.default_rng(5))
    assert np.array_equal(out.image, expected.image)
    assert np.array_equal(out.masks, expected.masks)


def test_augmenter_and_datasets_pickle(teeth, tmp_path):
    import pickle

    import slicerio

    segmentation = slicerio.create_segmentation((10, 10, 1), np.eye(4))
    mask = np.zeros((10, 10, 1), bool)
    mask[1:4, 1:4] = True
    slicerio.add_segment(segmentation, mask, {"name": "tool"})
    slicerio.write_segmentation(str(tmp_path / "f.seg.nrrd"), segmentation)
    cv2.imwrite(str(tmp_path / "f.png"), np.zeros((10, 10, 3), np.uint8))
    seg_dataset = open_dataset(tmp_path / "f.seg.nrrd")

    # Data loader worker processes receive the data set and the augmenter by pickling.
    for original in (teeth, seg_dataset):
        copy = pickle.loads(pickle.dumps(original))
        assert np.array_equal(copy[0].masks, original[0].masks)
    augmenter = Augmenter.for_dataset(AugmentConfig.endoscopy(), teeth)
    assert pickle.loads(pickle.dumps(augmenter)).flip_map == augmenter.flip_map
