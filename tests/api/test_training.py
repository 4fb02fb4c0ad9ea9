"""`retinacli.train`: the public name is the function, and it runs `retina train`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import retinacli
from tests.training.tiny import REPO, tiny_overrides


def test_public_names_do_not_import_torch_and_train_stays_the_function() -> None:
    # `retinacli.train` must stay the function even after the training code is imported.
    code = (
        "import sys, retinacli; assert 'torch' not in sys.modules, 'import retinacli loaded torch'; "
        "import retinacli.commands.train, retinacli.training.loop; "
        "from retinacli import Detector, Result, train; "
        "assert callable(train) and train.__module__ == 'retinacli.api.training', train; "
        "assert retinacli.train is train"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr


def test_train_runs_a_recipe_with_overrides(tmp_path: Path) -> None:
    overrides = dict(item.split("=", 1) for item in tiny_overrides(tmp_path, "eval_period=6"))
    output_dir = Path(overrides.pop("output_dir"))
    result = retinacli.train(REPO / "recipes" / "shapes.yaml", overrides=overrides, output_dir=output_dir)
    assert result.output_dir == output_dir
    assert (output_dir / "model_final.pth").is_file()
    config = (output_dir / "config.yaml").read_text(encoding="utf-8")
    assert "max_iter: 6" in config and "out_channels: 32" in config
    assert result.last_metrics is not None and "AP" in result.last_metrics
    evaluated = json.loads((output_dir / "eval" / "5" / "metrics.json").read_text(encoding="utf-8"))
    assert evaluated["AP"] == result.last_metrics["AP"]
