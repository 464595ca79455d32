"""Training from corrected frames as the Slicer module runs it, and COCO image folders.

The scene is real: three vocalfolds frames (patient1/seq4, scaled to 128x128) written by
the scene writer, with one instance per class present in each frame's label map. The
module's steps run headless: commit the proxy edits, export COCO, then run
``lmsfa train --progress-json`` in a child process, as the module's TrainingJob does.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from lmsfa.classes import ClassInfo, ClassTable, SnomedCode
from lmsfa.cli import main
from lmsfa.commands.train import parse_progress_line, progress_json_line, training_command
from lmsfa.exports import SceneInput, export, find_sequences
from lmsfa.model import LMSFA, load_checkpoint, save_checkpoint
from lmsfa.results import Instance
from lmsfa.scene import SceneContext, SequenceWriter, commit_edits

CLASSES = ClassTable.from_names(
    ["vocal folds", "other tissue", "glottal space", "pathology", "surgical tool", "intubation"]
)
# The starting checkpoint's table: the same names with a colour and a terminology code that
# a COCO file cannot carry, so the trained checkpoint can only have them from the start.
INITIAL_CLASSES = ClassTable(
    [ClassInfo("vocal folds", (1, 2, 3), SnomedCode("91723000", "Anatomical structure"), SnomedCode("46105003", "Vocal cord"))]
    + CLASSES.classes[1:]
)
SIZE = 128
STEMS = ["0001_l", "0002_l", "0003_l"]
PROCESS_TIMEOUT_S = 300


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _instances(labels: np.ndarray) -> list[Instance]:
    """One instance per label value 1..6 present in the label map (0 is void)."""
    instances = []
    for value in range(1, len(CLASSES) + 1):
        mask = labels == value
        if mask.sum() >= 16:
            instances.append(Instance(value - 1, CLASSES[value - 1].name, 1.0, np.zeros(4, np.float32), mask))
    return instances


@pytest.fixture(scope="module")
def coco_export(vocalfolds: Path, tmp_path_factory) -> Path:
    """The COCO folder exported from a scene, as the module's exportTrainingData writes it."""
    context = SceneContext.headless()
    writer = SequenceWriter(context, "seq4", CLASSES, "test-model")
    for index, stem in enumerate(STEMS):
        bgr = cv2.imread(str(vocalfolds / "images" / "patient1" / "seq4" / f"{stem}.jpg"), cv2.IMREAD_COLOR)
        labels = cv2.imread(str(vocalfolds / "labels" / "patient1" / "seq4" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        rgb = cv2.cvtColor(cv2.resize(bgr, (SIZE, SIZE), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        labels = cv2.resize(labels, (SIZE, SIZE), interpolation=cv2.INTER_NEAREST)
        writer.add_frame(index, index / 5.0, rgb, _instances(labels))
    writer.finish()

    commit_edits(context, writer.browser_node)
    segmentations, frames = find_sequences(context, writer.browser_node.GetName())
    folder = tmp_path_factory.mktemp("export") / "corrected_frames_coco"
    report = export("coco", SceneInput(segmentations, frames), folder)
    assert report.frame_indices == [0, 1, 2]
    assert report.instances > 0
    return folder


@pytest.fixture(scope="module")
def initial_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "initial.pt"
    save_checkpoint(path, LMSFA(len(CLASSES)), INITIAL_CLASSES, (64, 64))
    return path


def _run_training(command: list[str], log_folder: Path, stop_after_done: int | None = None):
    """Run a training command; return (exit status, progress events, stderr text).

    With ``stop_after_done``, SIGTERM is sent once a progress event reports that many batches.
    stderr goes to a file, so that a full stderr pipe cannot block the child.
    """
    events = []
    stderr_path = log_folder / "stderr.txt"
    with open(stderr_path, "w", encoding="utf-8") as stderr_file, subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=stderr_file, stdin=subprocess.DEVNULL, text=True,
    ) as process:
        try:
            for line in process.stdout:
                event = parse_progress_line(line)
                if event is None:
                    continue
                events.append(event)
                if stop_after_done is not None and event["event"] == "progress" and event["done"] >= stop_after_done:
                    process.send_signal(signal.SIGTERM)
                    stop_after_done = None
            status = process.wait(timeout=PROCESS_TIMEOUT_S)
        except BaseException:
            process.kill()
            raise
    return status, events, stderr_path.read_text(encoding="utf-8")


def test_progress_line_round_trip():
    line = progress_json_line("progress", done=3, total=9, message="epoch 1/3")
    assert "\n" not in line
    assert parse_progress_line(line + "\n") == {"event": "progress", "done": 3, "total": 9, "message": "epoch 1/3"}


def test_progress_line_ignores_other_output():
    assert parse_progress_line("best checkpoint: run/best.pt") is None
    assert parse_progress_line("{not json") is None
    assert parse_progress_line('{"event": "unknown"}') is None
    assert parse_progress_line("[1, 2]") is None


def test_training_command_options_exist(capsys):
    command = training_command("python", Path("a.json"), Path("run"), Path("w.pt"), 2, 96, 3, "cpu")
    assert command[:4] == ["python", "-m", "lmsfa.cli", "train"]
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    for option in (argument for argument in command[5:] if argument.startswith("--")):
        assert option in help_text, f"{option} is not an option of lmsfa train"


def test_scene_export_trains_with_progress_json(coco_export, initial_weights, tmp_path):
    run_dir = tmp_path / "run"
    command = training_command(
        sys.executable, coco_export / "annotations.json", run_dir, initial_weights,
        epochs=1, image_size=64, batch_size=2, device="cpu",
    )
    status, events, stderr = _run_training(command, tmp_path)
    assert status == 0, stderr

    progress = [event for event in events if event["event"] == "progress"]
    finished = [event for event in events if event["event"] == "finished"]
    # Three images at batch 2: two batches in the one epoch.
    assert [event["done"] for event in progress] == [1, 2]
    assert all(event["total"] == 2 for event in progress)
    assert progress[0]["message"].startswith("epoch 1/1")
    assert len(finished) == 1
    assert finished[0]["best_checkpoint"] == str(run_dir / "best.pt")
    assert finished[0]["log"] == str(run_dir / "log.csv")

    model, checkpoint = load_checkpoint(run_dir / "best.pt")
    assert checkpoint.class_table.names == CLASSES.names
    assert checkpoint.class_table[0] == INITIAL_CLASSES[0]
    assert tuple(checkpoint.input_size) == (64, 64)
    assert checkpoint.provenance["initial_weights"] == str(initial_weights)


def _log_epochs(run_dir: Path) -> list[str]:
    with open(run_dir / "log.csv", newline="", encoding="utf-8") as file:
        return [row["epoch"] for row in csv.DictReader(file)]


def test_sigterm_keeps_last_finished_epoch(coco_export, initial_weights, tmp_path):
    run_dir = tmp_path / "run"
    command = training_command(
        sys.executable, coco_export / "annotations.json", run_dir, initial_weights,
        epochs=3, image_size=64, batch_size=1, device="cpu",
    )
    # Three batches per epoch: SIGTERM goes out during the second epoch. A slow machine may
    # finish that epoch before the signal arrives, so the stop lands in epoch 2 or 3.
    status, events, stderr = _run_training(command, tmp_path, stop_after_done=4)
    assert status == 130, stderr
    assert "--resume" in stderr
    assert not [event for event in events if event["event"] == "finished"]
    finished_epochs = len(_log_epochs(run_dir))
    assert 1 <= finished_epochs < 3
    _, checkpoint = load_checkpoint(run_dir / "last.pt")
    assert checkpoint.provenance["epoch"] == finished_epochs

    code = main(["train", "--resume", "--output", str(run_dir), "--progress-json"])
    assert code == 0
    _, checkpoint = load_checkpoint(run_dir / "last.pt")
    assert checkpoint.provenance["epoch"] == 3
    assert _log_epochs(run_dir) == ["1", "2", "3"]


@pytest.fixture()
def moved_json(coco_export, tmp_path) -> Path:
    """The annotation file copied into a folder without its images."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    shutil.copy(coco_export / "annotations.json", folder / "annotations.json")
    return folder / "annotations.json"


def test_train_rejects_moved_json_before_training(moved_json, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["train", str(moved_json), "--output", str(run_dir), "--epochs", "1", "--imgsz", "64", "--device", "cpu"])
    assert code == 1
    message = capsys.readouterr().err
    first_image = json.loads(moved_json.read_text())["images"][0]["file_name"]
    assert str(moved_json.parent / first_image) in message
    assert "--images" in message
    assert not run_dir.exists()


def test_train_and_evaluate_with_images_option(moved_json, coco_export, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main([
        "train", str(moved_json), "--images", str(coco_export / "images"), "--output", str(run_dir),
        "--epochs", "1", "--batch", "3", "--imgsz", "64", "--warmup-epochs", "0", "--device", "cpu",
    ])
    assert code == 0
    expected_mode = 0o666 & ~_current_umask()
    assert stat.S_IMODE((run_dir / "log.csv").stat().st_mode) == expected_mode

    code = main(["evaluate", str(run_dir / "best.pt"), str(moved_json), "--device", "cpu", "--max-det", "5"])
    assert code == 1
    assert "--images" in capsys.readouterr().err

    metrics_path = tmp_path / "metrics.json"
    code = main([
        "evaluate", str(run_dir / "best.pt"), str(moved_json), "--images", str(coco_export / "images"),
        "--device", "cpu", "--max-det", "5", "--output", str(metrics_path),
    ])
    assert code == 0
    assert json.loads(metrics_path.read_text())["images"] == 3
    assert stat.S_IMODE(metrics_path.stat().st_mode) == expected_mode


def test_images_option_rejects_missing_folder(moved_json, tmp_path, capsys):
    missing = tmp_path / "no-such-folder"
    code = main(["train", str(moved_json), "--images", str(missing), "--output", str(tmp_path / "run"), "--device", "cpu"])
    assert code == 1
    message = capsys.readouterr().err
    assert str(missing) in message
    assert "not found" in message


def test_separate_val_json_with_val_images(moved_json, coco_export, tmp_path, capsys):
    run_dir = tmp_path / "run"
    base = ["train", str(moved_json), "--images", str(coco_export / "images"), "--val", str(moved_json),
            "--epochs", "1", "--batch", "3", "--imgsz", "64", "--warmup-epochs", "0", "--device", "cpu"]
    assert main(base + ["--output", str(run_dir)]) == 1
    assert "--val-images" in capsys.readouterr().err
    assert not run_dir.exists()

    assert main(base + ["--val-images", str(coco_export / "images"), "--output", str(run_dir)]) == 0
    with open(run_dir / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[-1]["val_mask_AP"] != ""
