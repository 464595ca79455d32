"""``lmsfa info`` and ``lmsfa export-onnx`` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import onnxruntime as ort
import pytest
import torch

from lmsfa.classes import ClassTable
from lmsfa.cli import main
from lmsfa.default_model import default_model
from lmsfa.model import LMSFA, read_onnx_metadata, save_checkpoint

SPEC_PARAMS = 1_829_623
SPEC_GFLOPS = 8.99


def test_info_new_network_matches_reference_counts(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params_training"] == SPEC_PARAMS
    assert abs(info["gflops_training"] - SPEC_GFLOPS) / SPEC_GFLOPS < 0.03
    assert info["params_reparameterized"] < info["params_training"]
    assert info["flop_counter"].startswith("thop 0.1.1")


def test_info_checkpoint_prints_classes_and_sha(tmp_path, capsys):
    path = tmp_path / "m.pt"
    digest = save_checkpoint(path, LMSFA(2), ClassTable.from_names(["nerve", "bone"]), (320, 320))
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert digest in out
    assert "0: nerve" in out
    assert "1: bone" in out


def test_info_rejects_odd_size(capsys):
    assert main(["info", "--imgsz", "500"]) == 1
    assert "multiples of 32" in capsys.readouterr().err


def test_export_onnx_command(tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, LMSFA(3), ClassTable.from_names(["a", "b", "c"]), (256, 256))
    out = tmp_path / "m.onnx"
    assert main(["export-onnx", str(ckpt), "-o", str(out), "--dynamic"]) == 0
    meta = read_onnx_metadata(out)
    assert ClassTable.from_dict(meta["class_table"]).names == ["a", "b", "c"]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    pred, protos = session.run(None, {"images": torch.rand(1, 3, 128, 96).numpy()})
    assert pred.shape == (1, 4 + 3 + 32, 16 * 12 + 8 * 6 + 4 * 3)
    assert protos.shape == (1, 32, 32, 24)


def test_export_onnx_keeps_existing_file(tmp_path, capsys):
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, LMSFA(1), ClassTable.from_names(["a"]), (256, 256))
    out = tmp_path / "m.onnx"
    out.write_bytes(b"user file")
    assert main(["export-onnx", str(ckpt), "-o", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"user file"


@pytest.mark.parametrize("values", [["320", "320", "320"], ["64", "48"], ["0"]])
def test_imgsz_checked(values, capsys):
    assert main(["info", "--imgsz", *values]) == 1
    assert "--imgsz" in capsys.readouterr().err


def test_info_rejects_non_onnx_file(tmp_path, capsys):
    fake = tmp_path / "fake.onnx"
    fake.write_text("not a model")
    assert main(["info", str(fake)]) == 1
    assert "not a readable ONNX model" in capsys.readouterr().err


def test_info_sha256_needs_model(capsys):
    assert main(["info", "--sha256", "0" * 64]) == 1
    assert "give the file too" in capsys.readouterr().err


def test_info_closed_pipe_exits_quietly():
    # `lmsfa info --json | head -1`: the reader may exit before lmsfa writes.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "lmsfa.cli", "info", str(default_model("onnx")[0]), "--json"],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 141


def test_info_text_lists_metadata_entries(capsys):
    assert main(["info", str(default_model("onnx")[0])]) == 0
    out = capsys.readouterr().out
    assert "onnx_metadata:\n" in out
    assert "\n  nc: 6\n" in out
    assert "\n  class table:\n    0: vocal folds  RGB (230, 80, 80)\n" in out
    # Nested values come out as JSON, not as Python reprs.
    assert "{'" not in out
    assert "True" not in out
