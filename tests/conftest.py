"""Shared fixtures. `shared_dir` locates ../shared (the project's shared data) for every test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared data folder: $RETINA_SHARED, default <repo>/../shared.

    Tests that need it skip with the reason when it is missing, except under CI=true, where a
    missing shared folder is a failure (CI always has it).
    """
    path = Path(os.environ.get("RETINA_SHARED", REPO_ROOT.parent / "shared")).resolve()
    if not path.is_dir():
        message = f"shared data not found at {path}; set RETINA_SHARED to the shared/ folder"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def golden_dir(shared_dir: Path) -> Path:
    """The detectron2 golden case d2_retinanet_r18."""
    return shared_dir / "golden" / "d2_retinanet_r18"
