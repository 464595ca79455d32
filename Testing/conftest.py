"""Shared pytest fixtures: paths to the real test data beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LMSFA_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# Two-core CI machines: keep torch from oversubscribing when tests run in one process.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public data sets (``../shared/data`` or ``$LMSFA_SHARED_DATA``); missing data fails the run."""
    if not (SHARED_DATA / "vocalfolds").is_dir():
        pytest.fail(
            f"test data not found at {SHARED_DATA}: check out the shared data beside the repository "
            "or set LMSFA_SHARED_DATA to its folder"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def vocalfolds(shared_data: Path) -> Path:
    return shared_data / "vocalfolds"
