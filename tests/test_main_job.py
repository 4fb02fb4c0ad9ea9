"""The main job, as README's quickstart runs it: `retina train recipes/shapes.yaml`.

Slow (about 10 minutes on 2 CPU cores): run with `pytest -m slow`; CI runs it in its bounded
slow step. Its wall time is reported in docs/training.md, not asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_shapes_recipe_reaches_ap_50(tmp_path):
    env = {**os.environ, "RETINA_CACHE": str(tmp_path / "cache"), "COLUMNS": "120"}
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "retinacli", "train", str(REPO / "recipes" / "shapes.yaml"), "--output-dir", str(out)],
        env=env, capture_output=True, text=True, timeout=2400,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    final = max((p for p in (out / "eval").iterdir()), key=lambda p: int(p.name))
    metrics = json.loads((final / "metrics.json").read_text())
    assert metrics["AP"] >= 50.0, metrics
    assert set(metrics["per_category"]) == {"circle", "square", "triangle"}
