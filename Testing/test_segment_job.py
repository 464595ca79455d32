"""``lmsfa segment`` end to end on the real vocalfolds clip, with a small deterministic model."""

from __future__ import annotations

import pytest
import torch

from lmsfa.classes import ClassTable
from lmsfa.cli import main
from lmsfa.errors import Cancelled
from lmsfa.inference import Predictor
from lmsfa.model import LMSFA, save_checkpoint
from lmsfa.progress import Progress
from lmsfa.scene import SceneContext, load_scene_mrb
from lmsfa.segment_job import segment_recording
from lmsfa.sources import open_source

VOCALFOLDS_CLASSES = ["vocal folds", "other tissue", "glottal space", "pathology", "surgical tool", "intubation"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A random-weight checkpoint whose class prior makes some instances fire."""
    torch.manual_seed(0)
    model = LMSFA(6)
    with torch.no_grad():
        model.head.cls_conv.bias.fill_(0.0)
    path = tmp_path_factory.mktemp("model") / "random6.pt"
    save_checkpoint(path, model, ClassTable.from_names(VOCALFOLDS_CLASSES), (256, 256))
    return path


@pytest.fixture()
def clip(vocalfolds):
    return vocalfolds / "seq4_5fps.mp4"


def segment_args(clip, out, model_file, *extra):
    return ["segment", str(clip), "-o", str(out), "--model", str(model_file), "--last", "2",
            "--conf", "0.5", "--max-det", "4", "--no-progress", *extra]


def test_segment_writes_scene(clip, model_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(segment_args(clip, out, model_file)) == 0
    mrb = out / "seq4_5fps.mrb"
    assert mrb.is_file()
    printed = capsys.readouterr().out
    assert "frames: 3 (0 could not be decoded)" in printed
    assert "time per stage" in printed

    context = SceneContext.headless()
    browsers = load_scene_mrb(context, mrb)
    assert len(browsers) == 1
    assert browsers[0].GetAttribute("LMSFA.Complete") == "true"
    frames = context.scene.GetFirstNodeByName("seq4_5fps frames")
    assert frames.GetNumberOfDataNodes() == 3
    segmentation = context.scene.GetFirstNodeByName("seq4_5fps segmentation")
    assert segmentation.GetNumberOfDataNodes() == 3
    # No stray temporary files beside the result.
    assert sorted(p.name for p in out.iterdir()) == ["seq4_5fps.mrb"]


def test_existing_output_kept(clip, model_file, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    existing = out / "seq4_5fps.mrb"
    existing.write_bytes(b"earlier result")
    assert main(segment_args(clip, out, model_file)) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert existing.read_bytes() == b"earlier result"


def test_missing_input_fails_before_work(model_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(segment_args(tmp_path / "missing.mp4", out, model_file)) == 1
    assert "missing.mp4" in capsys.readouterr().err
    assert not out.exists()


def test_output_folder_that_is_a_file(clip, model_file, tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("a file")
    assert main(segment_args(clip, out, model_file)) == 1
    assert "is a file" in capsys.readouterr().err
    assert out.read_text() == "a file"


def test_wrong_sha256_fails(clip, model_file, tmp_path, capsys):
    assert main(segment_args(clip, tmp_path / "out", model_file, "--sha256", "f" * 64)) == 1
    assert "SHA-256" in capsys.readouterr().err


def test_cancel_keeps_partial_result(clip, model_file, tmp_path):
    output = tmp_path / "clip.mrb"
    progress = Progress(lambda done, total, message: progress.cancel() if done >= 1 else None)
    predictor = Predictor(model_file, conf=0.5, max_det=4)
    with open_source(clip, last=5) as source, pytest.raises(Cancelled, match="partial"):
        segment_recording(source, predictor, output, model_name="random6", progress=progress)
    assert not output.exists()
    partial = tmp_path / "clip.partial.mrb"
    assert partial.is_file()
    context = SceneContext.headless()
    browsers = load_scene_mrb(context, partial)
    assert browsers[0].GetAttribute("LMSFA.Complete") == "false"
    assert context.scene.GetFirstNodeByName("clip frames").GetNumberOfDataNodes() == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.partial.mrb"]


def test_scene_names_all_model_classes(clip, model_file, tmp_path):
    """Exports read the class table from the scene, also for classes with no instance."""
    from lmsfa.exports import open_scene_bundle

    out = tmp_path / "out"
    assert main(segment_args(clip, out, model_file)) == 0
    export_input = open_scene_bundle(out / "seq4_5fps.mrb")
    assert export_input.class_table.names == VOCALFOLDS_CLASSES


def test_relative_paths(clip, model_file, tmp_path, monkeypatch):
    """Paths relative to the working folder work for segmenting and for loading the result."""
    from lmsfa.exports import open_scene_bundle

    monkeypatch.chdir(tmp_path)
    assert main(segment_args(clip, "out", model_file)) == 0
    export_input = open_scene_bundle("out/seq4_5fps.mrb")
    assert export_input.class_table.names == VOCALFOLDS_CLASSES


def test_failed_start_leaves_no_folder(clip, model_file, tmp_path, capsys):
    out = tmp_path / "new" / "out"
    assert main(segment_args(clip, out, model_file, "--conf", "2")) == 1
    assert "conf" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_invalid_sha256_format(clip, model_file, tmp_path, capsys):
    assert main(segment_args(clip, tmp_path / "out", model_file, "--sha256", "abc")) == 1
    assert "invalid expected SHA-256 'abc'" in capsys.readouterr().err


def test_interrupt_deferred_until_block_ends():
    import os
    import signal

    from lmsfa.cli import deferred_interrupt

    finished = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            finished.append(True)
    assert finished == [True]
