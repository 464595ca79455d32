"""open_source: choice of source and the errors for inputs it cannot use."""

from __future__ import annotations

import shutil

import pytest

from lmsfa.errors import InputError
from lmsfa.sources import open_source
from sources_fixtures import SEQ4


def test_missing_path(tmp_path):
    missing = tmp_path / "recording.mp4"
    with pytest.raises(InputError, match="input not found") as raised:
        open_source(missing)
    assert str(missing) in str(raised.value)


def test_empty_file(tmp_path):
    empty = tmp_path / "recording.mp4"
    empty.touch()
    with pytest.raises(InputError, match=r"is empty \(0 bytes\)") as raised:
        open_source(empty)
    assert str(empty) in str(raised.value)
    assert empty.exists()


def test_folder_named_like_a_video(tmp_path):
    folder = tmp_path / "recording.mp4"
    folder.mkdir()
    with pytest.raises(InputError, match="is a folder") as raised:
        open_source(folder)
    assert "give the file itself" in str(raised.value)


def test_single_image_names_its_folder(tmp_path, vocalfolds):
    image = tmp_path / "0001_l.jpg"
    shutil.copy(next((vocalfolds / SEQ4).glob("*.jpg")), image)
    with pytest.raises(InputError, match="is a single image") as raised:
        open_source(image)
    assert str(tmp_path) in str(raised.value)


@pytest.mark.parametrize("window", [(5, 5), (10, 2), ("low", 3), (1,), (0, float("nan"))])
def test_invalid_window(vocalfolds, window):
    with pytest.raises(InputError, match="invalid window"):
        open_source(vocalfolds / SEQ4, window=window)


def test_kind_by_input(vocalfolds):
    with open_source(vocalfolds / "seq4_5fps.mp4", last=0) as video:
        assert video.info.kind == "video"
    with open_source(str(vocalfolds / SEQ4), last=0) as folder:
        assert folder.info.kind == "folder"
