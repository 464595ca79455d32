"""Predictor end to end on real vocalfolds frames: PyTorch, ONNX Runtime, streaming, classes.

The network is randomly initialised with a fixed seed. Its class-conv weights are scaled
so that a few dozen anchors score above 0.1 with distinct scores, which gives instances of
every shape without a trained model.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lmsfa.classes import ClassTable
from lmsfa.errors import Cancelled, CheckpointError, InputError
from lmsfa.inference import Predictor
from lmsfa.model import LMSFA, export_onnx, save_checkpoint
from lmsfa.progress import Progress
from lmsfa.sources import Frame, open_source

CLASS_NAMES = ["vocal folds", "other tissue", "glottal space", "surgical tool"]
CONF = 0.1


def _read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def frames(vocalfolds) -> list[np.ndarray]:
    paths = sorted((vocalfolds / "images" / "patient1" / "seq4").glob("*.jpg"))
    return [_read_rgb(paths[0]), _read_rgb(paths[30])]


@pytest.fixture(scope="module")
def full_hd_frames(frames) -> list[np.ndarray]:
    return [cv2.resize(frame, (1920, 1080), interpolation=cv2.INTER_LINEAR) for frame in frames]


@pytest.fixture(scope="module")
def network() -> LMSFA:
    torch.manual_seed(0)
    model = LMSFA(len(CLASS_NAMES)).eval()
    with torch.no_grad():
        model.head.cls_conv.weight.mul_(6.0)
    return model


@pytest.fixture(scope="module")
def model_files(network, tmp_path_factory) -> dict:
    """Checkpoints at input 640 (backend agreement) and 320 (everything else, faster)."""
    folder = tmp_path_factory.mktemp("models")
    table = ClassTable.from_names(CLASS_NAMES)
    checkpoint = folder / "lmsfa.pt"
    save_checkpoint(checkpoint, network, table, (640, 640), provenance={"test": "random weights"})
    small = folder / "small.pt"
    save_checkpoint(small, network, table, (320, 320))
    fixed = export_onnx(network, folder / "fixed.onnx", (320, 320), dynamic=False, class_table=table)
    return {"checkpoint": checkpoint, "small": small, "fixed": fixed}


@pytest.fixture(scope="module")
def torch_predictor(model_files) -> Predictor:
    return Predictor(model_files["checkpoint"], device="cpu", backend="torch", conf=CONF)


@pytest.fixture(scope="module")
def onnx_predictor(model_files) -> Predictor:
    """ONNX Runtime on the checkpoint, exported to a temporary file with dynamic input size."""
    return Predictor(model_files["checkpoint"], device="cpu", backend="onnx", conf=CONF)


@pytest.fixture(scope="module")
def dynamic_onnx(onnx_predictor) -> Path:
    return onnx_predictor.runner.path


@pytest.fixture(scope="module")
def small_predictor(model_files) -> Predictor:
    return Predictor(model_files["small"], device="cpu", conf=CONF)


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _assert_same_instances(expected, actual, min_iou=0.99):
    """Pair instances by mask IoU (equal scores may come in either order) and compare them."""
    assert len(actual) == len(expected)
    unmatched = list(actual)
    for reference in expected:
        best = max(unmatched, key=lambda other: _mask_iou(reference.mask, other.mask))
        unmatched.remove(best)
        assert best.class_name == reference.class_name
        assert best.score == pytest.approx(reference.score, abs=1e-4)
        np.testing.assert_allclose(best.box, reference.box, atol=0.05)
        assert _mask_iou(reference.mask, best.mask) >= min_iou


@pytest.mark.parametrize("size", ["square", "full-hd"])
def test_torch_and_onnx_agree(size, frames, full_hd_frames, torch_predictor, onnx_predictor):
    images = frames if size == "square" else full_hd_frames
    assert onnx_predictor.backend == "onnx"
    torch_results = torch_predictor.predict(images)
    onnx_results = onnx_predictor.predict(images)
    for image, expected, actual in zip(images, torch_results, onnx_results):
        assert len(expected) >= 3, "the test model should yield several instances"
        assert expected[0].mask.shape == image.shape[:2]
        _assert_same_instances(expected, actual)


def test_fixed_size_onnx_agrees_with_square_torch(full_hd_frames, model_files):
    fixed = Predictor(model_files["fixed"], device="cpu", conf=CONF)
    assert fixed.backend == "onnx"
    assert fixed.input_size == (320, 320)
    assert fixed.fit_letterbox((1080, 1920)).input_hw == (320, 320)
    square_torch = Predictor(model_files["small"], device="cpu", conf=CONF, rectangular=False)
    [expected] = square_torch.predict(full_hd_frames[:1])
    [actual] = fixed.predict(full_hd_frames[:1])
    assert len(expected) >= 3
    _assert_same_instances(expected, actual)


def test_module_input_is_not_modified(network, frames):
    before = {k: v.clone() for k, v in network.state_dict().items()}
    predictor = Predictor(network, device="cpu", conf=CONF, class_table=CLASS_NAMES, input_size=(320, 320))
    predictor.predict(frames[:1])
    after = network.state_dict()
    assert not network.reparameterized
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_batch_matches_single_frames(frames, full_hd_frames, small_predictor):
    mixed = [frames[0], full_hd_frames[1], frames[1]]
    batched = small_predictor.predict(mixed)
    for image, instances in zip(mixed, batched):
        [single] = small_predictor.predict([image])
        _assert_same_instances(single, instances)


def test_instance_fields(frames, small_predictor):
    [instances] = small_predictor.predict(frames[:1])
    scores = [i.score for i in instances]
    assert scores == sorted(scores, reverse=True)
    for instance in instances:
        assert instance.class_name == CLASS_NAMES[instance.class_id]
        assert instance.score > CONF
        assert instance.mask.dtype == bool
        assert instance.mask.any()
        x1, y1, x2, y2 = instance.box
        assert 0 <= x1 < x2 <= 512
        assert 0 <= y1 < y2 <= 512
        rows, cols = np.nonzero(instance.mask)
        assert cols.min() >= np.floor(x1)
        assert cols.max() < np.ceil(x2)
        assert rows.min() >= np.floor(y1)
        assert rows.max() < np.ceil(y2)


def test_max_det_limits_instances(frames, model_files):
    predictor = Predictor(model_files["small"], device="cpu", conf=CONF, max_det=2)
    [instances] = predictor.predict(frames[:1])
    assert len(instances) == 2


def test_checkpoint_supplies_classes_and_size(model_files):
    predictor = Predictor(model_files["small"], device="cpu")
    assert predictor.class_table.names == CLASS_NAMES
    assert predictor.input_size == (320, 320)
    assert predictor.fit_letterbox((1080, 1920)).input_hw == (192, 320)


def test_checkpoint_hash_is_checked(model_files):
    with pytest.raises(CheckpointError, match="SHA-256"):
        Predictor(model_files["checkpoint"], device="cpu", expected_sha256="0" * 64)


def test_matching_data_yaml_is_accepted(dynamic_onnx, tmp_path):
    data_yaml = tmp_path / "data.yaml"
    data_yaml.write_text("names:\n  0: Vocal Folds\n  1: other tissue\n  2: glottal space\n  3: surgical tool\n")
    predictor = Predictor(dynamic_onnx, device="cpu", class_table=data_yaml)
    assert predictor.class_table.names == ["Vocal Folds", "other tissue", "glottal space", "surgical tool"]


def test_renamed_class_is_rejected_showing_both(model_files, tmp_path):
    data_yaml = tmp_path / "data.yaml"
    data_yaml.write_text("names: [vocal folds, other tissue, pathology, surgical tool]\n")
    with pytest.raises(InputError) as raised:
        Predictor(model_files["checkpoint"], device="cpu", class_table=data_yaml)
    message = str(raised.value)
    assert "'glottal space'" in message
    assert "'pathology'" in message


def test_class_count_mismatch_is_rejected(dynamic_onnx):
    with pytest.raises(InputError, match="(?s)4 classes.*3 classes"):
        Predictor(dynamic_onnx, device="cpu", class_table=["vocal folds", "other tissue", "tool"])


def test_module_without_classes_needs_table(network):
    with pytest.raises(InputError, match="class_table"):
        Predictor(network, device="cpu")


def test_cuda_request_without_cuda_names_installed(monkeypatch, model_files, dynamic_onnx):
    import onnxruntime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(InputError) as raised:
        Predictor(model_files["checkpoint"], device="cuda")
    message = str(raised.value)
    assert f"torch {torch.__version__}" in message
    assert "CPUExecutionProvider" in message
    with pytest.raises(InputError, match="onnxruntime-gpu"):
        Predictor(dynamic_onnx, device="cuda")


def test_auto_device_without_cuda_is_cpu(monkeypatch, model_files):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert Predictor(model_files["checkpoint"], device="auto").device == "cpu"


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"device": "gpu"}, "invalid device"),
        ({"backend": "tensorrt"}, "invalid backend"),
        ({"conf": 1.5}, "invalid conf"),
        ({"iou": 0.0}, "invalid iou"),
        ({"max_det": 0}, "invalid max_det"),
        ({"device": "cpu", "half": True}, "half=True"),
    ],
)
def test_invalid_options_are_rejected(kwargs, fragment, model_files):
    with pytest.raises(InputError, match=fragment):
        Predictor(model_files["checkpoint"], **kwargs)


def test_onnx_file_with_torch_backend_is_rejected(dynamic_onnx):
    with pytest.raises(InputError, match="ONNX file"):
        Predictor(dynamic_onnx, backend="torch")


def test_grey_frame_is_rejected(small_predictor):
    with pytest.raises(InputError, match="frame 0"):
        small_predictor.predict([np.zeros((64, 64), dtype=np.uint8)])


def test_stream_matches_predict_on_video(vocalfolds, small_predictor):
    with open_source(vocalfolds / "seq4_5fps.mp4", last=2) as source:
        images = [frame.image for frame in source]
    small_predictor.reset_stage_times()
    with open_source(vocalfolds / "seq4_5fps.mp4", last=2) as source:
        results = list(small_predictor.predict_stream(source, batch_size=2))
    assert [r.index for r in results] == [0, 1, 2]
    assert results[1].timestamp_s == pytest.approx(0.2, abs=1e-3)
    assert all(r.frame_shape == (512, 512) for r in results)
    times = small_predictor.stage_times
    assert set(times) == {"decode", "preprocess", "inference", "postprocess"}
    assert all(times[stage] > 0 for stage in times)

    expected = small_predictor.predict(images)
    for result, instances in zip(results, expected):
        _assert_same_instances(instances, result.instances)


def test_stream_missing_frame_has_no_instances(frames, small_predictor):
    stream = [
        Frame(0, 0.0, frames[0]),
        Frame(1, 0.2, np.zeros_like(frames[0]), missing=True),
        Frame(2, 0.4, frames[1]),
    ]
    results = list(small_predictor.predict_stream(stream, batch_size=4))
    assert [r.index for r in results] == [0, 1, 2]
    assert results[1].instances == []
    assert results[1].frame_shape == (512, 512)
    assert len(results[0].instances) >= 3
    assert len(results[2].instances) >= 3


def test_stream_decodes_on_another_thread(frames, small_predictor):
    decoding_threads = []

    def stream():
        for index in range(3):
            decoding_threads.append(threading.current_thread())
            yield Frame(index, None, frames[index % 2])

    results = list(small_predictor.predict_stream(stream()))
    assert len(results) == 3
    assert all(t is not threading.current_thread() for t in decoding_threads)
    assert not any(t.is_alive() for t in decoding_threads)


def test_stream_cancel_stops_after_current_batch(frames, small_predictor):
    progress = Progress(lambda done, total, message: progress.cancel() if done >= 2 else None)
    stream = [Frame(i, None, frames[i % 2]) for i in range(6)]
    received = []
    with pytest.raises(Cancelled):
        for result in small_predictor.predict_stream(stream, batch_size=1, progress=progress):
            received.append(result.index)
    assert received == [0, 1]
    assert not any(t.name == "lmsfa-decode" for t in threading.enumerate())


def test_stream_reports_progress_with_total(frames, small_predictor):
    updates = []
    stream = [Frame(i, None, frames[0]) for i in range(3)]
    list(small_predictor.predict_stream(stream, batch_size=2, progress=Progress(lambda *a: updates.append(a[:2]))))
    assert updates == [(2, 3), (3, 3)]


def test_stream_decode_error_reaches_caller(frames, small_predictor):
    def broken():
        yield Frame(0, None, frames[0])
        raise InputError("frame 1 of clip.mp4 could not be decoded")

    with pytest.raises(InputError, match="could not be decoded"):
        list(small_predictor.predict_stream(broken()))


def test_stream_rejects_bad_batch_size(small_predictor):
    with pytest.raises(InputError, match="batch_size"):
        list(small_predictor.predict_stream([], batch_size=0))
