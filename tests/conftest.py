"""Shared fixtures. `shared_dir` locates ../shared (the project's shared data) for every test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]

pytest_plugins = ["tests.raccoon_fixtures", "tests.fuzzing", "tests.weights_server"]


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


REPORT_VAL = "data.val.dataset={kind: shapes, split: test, num_images: 3, seed: 5, image_size: [64, 96], cache_dir: '%s'}"


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 6-iteration tiny run, evaluated on data.val after iterations 1, 3 and 5 and on
    data.test at the end (with diagnostics), with a score threshold low enough that the
    untrained model's detections are kept. Treat it as read-only."""
    import torch

    from retinacli.commands.train import train_from_recipe
    from tests.training.tiny import tiny_recipe

    tmp = tmp_path_factory.mktemp("report_run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        recipe = tiny_recipe(
            tmp, REPORT_VAL % (tmp / "cache"), "eval_period=2", "model.test.score_thresh=0.005"
        )
        train_from_recipe(recipe)
    finally:
        torch.set_num_threads(threads)
    return tmp / "run"


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium executable for browser tests ($RETINA_CHROMIUM, else `chromium` on PATH), with
    playwright to drive it. Missing: the test skips with the reason, except under CI=true."""
    import shutil

    executable = os.environ.get("RETINA_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    problem = None
    if not executable:
        problem = "Chromium not found: apt-get install chromium (or set RETINA_CHROMIUM)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "playwright is not installed: pip install -e '.[dev]'"
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    return executable


@pytest.fixture
def one_thread():
    """torch at one intra-op thread for the test (tiny training runs: threads only add noise and
    spin-waits on a shared 2-core machine); the previous count is restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
