"""Bounded work on any recipe (issue 20): each attack builds its hostile input and checks that the
command ends quickly with exit code 2 and a message naming the file and the limit, without a
traceback, and that no file outside the command's named output changed.

Where the threat is a hang (aliases, a FIFO, an expression bomb), the command runs in a
subprocess under a time limit, so that a regression fails the test instead of hanging the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retinacli.errors import RecipeError
from retinacli.recipe import load_recipe
from retinacli.recipe.loading import (
    MAX_BASE_FILES,
    MAX_RECIPE_BYTES,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
)
from retinacli.recipe.schema import MAX_ITERATIONS
from retinacli.training.lr_plot import MAX_CURVE_POINTS, lr_curve
from tests.cli_helpers import run_cli
from tests.snapshots import changed_outside, snapshot

LIMIT_S = 60  # far above a refusal (about a second), far below a hang
REPO = Path(__file__).resolve().parents[2]

# "Billion laughs": nine lines whose aliases expand to 9**9 strings.
ALIAS_BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
)


def run_retina(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """`retina ARGS` in a fresh process under LIMIT_S (a hang fails the test); with the time it took."""
    start = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "retinacli", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=LIMIT_S,
            env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", "TERM": "dumb"},
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"retina {' '.join(args)} ran past {LIMIT_S} s: unbounded work")
    return result, time.monotonic() - start


def assert_refused(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    for fragment in fragments:
        assert fragment in output, (fragment, output)


# ----------------------------------------------------------------------------- YAML


def test_the_alias_bomb_fails_fast_naming_the_file(tmp_path):
    (tmp_path / "bomb.yaml").write_text(ALIAS_BOMB)
    assert len(ALIAS_BOMB.splitlines()) == 9
    before = snapshot(tmp_path)
    result, took = run_retina(["inspect-config", "bomb.yaml"], tmp_path)
    assert_refused(result, "bomb.yaml line", f"expands to more than {MAX_YAML_NODES} values")
    assert took < LIMIT_S / 2  # no hang: it ends well inside the limit (about a second)
    assert changed_outside(before, tmp_path) == []


def test_an_alias_bomb_inside_a_base_file_is_refused_too(tmp_path, capsys, monkeypatch):
    (tmp_path / "base.yaml").write_text(ALIAS_BOMB)
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\n")
    result = run_cli(["inspect-config", str(tmp_path / "child.yaml")], capsys, monkeypatch)
    assert result.exit_code == 2 and "base.yaml line" in result.stderr and "expands to more than" in result.stderr


def test_an_alias_bomb_in_a_set_value_is_refused(capsys, monkeypatch, tmp_path):
    inner = "[&a [1,1,1,1,1,1,1,1,1], " + ", ".join(
        f"&{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
    ) + "]"
    (tmp_path / "r.yaml").write_text("{}\n")
    result = run_cli(["inspect-config", str(tmp_path / "r.yaml"), "--set", f"solver.steps={inner}"], capsys, monkeypatch)
    assert result.exit_code == 2
    assert "--set solver.steps" in result.stderr and "expands to more than" in result.stderr


def test_a_recursive_alias_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("solver: &s\n  steps: *s\n")
    with pytest.raises(RecipeError, match=r"loop\.yaml line 2, column \d+: the alias \*s is inside the value it names"):
        load_recipe(path)


@pytest.mark.parametrize("style", ["flow", "block"])
def test_deep_nesting_is_refused(tmp_path, style, capsys, monkeypatch):
    depth = 5000 if style == "flow" else 600  # past Python's recursion limit in the YAML composer
    path = tmp_path / "deep.yaml"
    if style == "flow":
        path.write_text("seed: " + "[" * depth + "]" * depth + "\n")
    else:
        path.write_text("".join(f"{'  ' * i}k{i}:\n" for i in range(depth)) + f"{'  ' * depth}1\n")
    before = snapshot(tmp_path)
    result = run_cli(["inspect-config", str(path)], capsys, monkeypatch)
    assert result.exit_code == 2, result.output
    assert "deep.yaml line" in result.stderr and f"nested more than {MAX_YAML_DEPTH} levels" in result.stderr
    assert "Traceback" not in result.output
    assert changed_outside(before, tmp_path) == []


def test_nesting_a_recipe_needs_still_loads(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("data:\n  train:\n    augment:\n      color:\n        prob: 0.5\n")
    assert load_recipe(path).data.train.augment.color.prob == 0.5


def test_a_2_mib_recipe_is_refused_before_parsing(tmp_path, capsys, monkeypatch):
    path = tmp_path / "huge.yaml"
    path.write_text("seed: 1\n" + "# padding\n" * (2 * MAX_RECIPE_BYTES // 10))
    assert path.stat().st_size > 2 * 1024 * 1024 - 100
    result = run_cli(["inspect-config", str(path)], capsys, monkeypatch)
    assert result.exit_code == 2
    assert "huge.yaml: the file is larger than 1 MiB" in result.stderr and "Traceback" not in result.output


def test_a_recipe_just_under_the_size_limit_loads(tmp_path):
    path = tmp_path / "padded.yaml"
    text = "seed: 7\n"
    path.write_text(text + "#" * (MAX_RECIPE_BYTES - len(text) - 1) + "\n")
    assert path.stat().st_size == MAX_RECIPE_BYTES
    assert load_recipe(path).seed == 7


def test_a_50_long_base_chain_is_refused(tmp_path, capsys, monkeypatch):
    for i in range(50):
        (tmp_path / f"r{i}.yaml").write_text(f"_base_: r{i + 1}.yaml\n" if i < 49 else "seed: 1\n")
    before = snapshot(tmp_path)
    result = run_cli(["inspect-config", str(tmp_path / "r0.yaml")], capsys, monkeypatch)
    assert result.exit_code == 2
    assert f"_base_ chain reads more than {MAX_BASE_FILES} files" in result.stderr
    assert "r0.yaml" in result.stderr and "Traceback" not in result.output
    assert changed_outside(before, tmp_path) == []


def test_a_base_chain_that_repeats_a_diamond_is_bounded(tmp_path):
    # each file names the next one twice: 2**20 reads without a bound on files read
    for i in range(20):
        (tmp_path / f"d{i}.yaml").write_text(f"_base_: [d{i + 1}.yaml, d{i + 1}.yaml]\n")
    (tmp_path / "d20.yaml").write_text("seed: 1\n")
    with pytest.raises(RecipeError, match="chain reads more than"):
        load_recipe(tmp_path / "d0.yaml")


def test_a_short_base_chain_and_the_cycle_check_still_work(tmp_path):
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\nseed: 2\n")
    (tmp_path / "b.yaml").write_text("_base_: c.yaml\n")
    (tmp_path / "c.yaml").write_text("log_period: 7\n")
    recipe = load_recipe(tmp_path / "a.yaml")
    assert (recipe.seed, recipe.log_period) == (2, 7)
    (tmp_path / "c.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(RecipeError, match="chain has a cycle"):
        load_recipe(tmp_path / "a.yaml")


# ----------------------------------------------------------------------------- file kinds


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
def test_a_fifo_recipe_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.yaml")
    before = snapshot(tmp_path)
    result, took = run_retina(["inspect-config", "pipe.yaml"], tmp_path)
    assert_refused(result, "pipe.yaml: is a named pipe (FIFO), not a regular file, so it was not read")
    assert took < LIMIT_S / 2
    assert changed_outside(before, tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
def test_a_fifo_base_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "base.yaml")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\n")
    result, _ = run_retina(["lr-plot", "child.yaml"], tmp_path)
    assert_refused(result, "base.yaml: is a named pipe (FIFO)")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
def test_a_fifo_detectron2_config_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "d2.yaml")
    before = snapshot(tmp_path)
    result, _ = run_retina(["import-detectron2", "d2.yaml", "--output-dir", "out"], tmp_path)
    assert_refused(result, "d2.yaml: is a named pipe (FIFO)")
    assert changed_outside(before, tmp_path) == [] and not (tmp_path / "out").exists()


def test_a_folder_as_recipe_or_base_is_refused(tmp_path, capsys, monkeypatch):
    (tmp_path / "folder.yaml").mkdir()
    result = run_cli(["inspect-config", str(tmp_path / "folder.yaml")], capsys, monkeypatch)
    assert result.exit_code == 2 and "folder.yaml: is a folder, not a regular file" in result.stderr
    (tmp_path / "child.yaml").write_text("_base_: folder.yaml\n")
    result = run_cli(["inspect-config", str(tmp_path / "child.yaml")], capsys, monkeypatch)
    assert result.exit_code == 2 and "folder.yaml: is a folder" in result.stderr
    assert "Traceback" not in result.output


def test_a_device_as_recipe_is_refused(capsys, monkeypatch):
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero on this system")
    result = run_cli(["inspect-config", "/dev/zero"], capsys, monkeypatch)  # endless if read
    assert result.exit_code == 2 and "/dev/zero: is a character device" in result.stderr


# ----------------------------------------------------------------------------- expressions


def test_a_nested_comprehension_bomb_in_a_detectron2_config_fails_fast(tmp_path):
    items = "[" + ", ".join(["0"] * 100) + "]"
    bomb = "1"
    for name in "abcde":  # 100**5 = 10**10 values without a global budget
        bomb = f"[{bomb} for {name} in {items}]"
    (tmp_path / "d2.yaml").write_text(
        "MODEL:\n  META_ARCHITECTURE: RetinaNet\n  ANCHOR_GENERATOR:\n"
        f"    SIZES: !!python/object/apply:eval [\"{bomb}\"]\n"
    )
    before = snapshot(tmp_path)
    result, took = run_retina(["import-detectron2", "d2.yaml", "--output-dir", "out"], tmp_path)
    assert_refused(result, "d2.yaml line 4", "apply:eval expression refused", "more than 100000 steps")
    assert took < LIMIT_S / 2
    assert changed_outside(before, tmp_path) == [] and not (tmp_path / "out").exists()


def test_the_eval_bomb_with_range_is_refused(tmp_path, capsys, monkeypatch):
    (tmp_path / "d2.yaml").write_text(
        "MODEL:\n  ANCHOR_GENERATOR:\n    SIZES: !!python/object/apply:eval "
        "[\"[[x for x in range(10**4)] for y in range(10**4)]\"]\n"
    )
    result = run_cli(["import-detectron2", str(tmp_path / "d2.yaml"), "--output-dir", str(tmp_path / "out")],
                     capsys, monkeypatch)
    assert result.exit_code == 2 and "Call is not allowed" in result.stderr
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- numbers


def test_set_max_iter_1e23_on_lr_plot_names_the_key_and_the_bound(tmp_path, capsys, monkeypatch):
    (tmp_path / "r.yaml").write_text("{}\n")
    before = snapshot(tmp_path)
    for value in ("1e23", "1.0e+23", "100000001"):
        result = run_cli(["lr-plot", str(tmp_path / "r.yaml"), "--set", f"solver.max_iter={value}"], capsys, monkeypatch)
        assert result.exit_code == 2, result.output
        assert "solver.max_iter" in result.stderr and f"less than or equal to {MAX_ITERATIONS}" in result.stderr
        assert "Traceback" not in result.output
    assert changed_outside(before, tmp_path) == []


def test_lr_plot_at_the_largest_max_iter_is_bounded(tmp_path, capsys, monkeypatch):
    recipe = load_recipe(None, [f"solver.max_iter={MAX_ITERATIONS}", "solver.steps=[60000000,80000000]"])
    from retinacli.build import build_schedule

    schedule = build_schedule(recipe.solver)
    curve = lr_curve(schedule)
    assert curve.max_iter == MAX_ITERATIONS and not curve.complete
    assert len(curve) <= MAX_CURVE_POINTS + 10  # an even sample plus the key points
    assert list(curve.iterations) == sorted(set(curve.iterations))
    rates = dict(zip(curve.iterations, curve, strict=True))
    for i in (0, 999, 1000, 59_999_999, 60_000_000, 79_999_999, 80_000_000, MAX_ITERATIONS - 1):
        assert rates[i] == schedule.lr_at(i)  # the drops sit at their iterations exactly
    (tmp_path / "r.yaml").write_text(f"solver:\n  max_iter: {MAX_ITERATIONS}\n")
    result = run_cli(["lr-plot", str(tmp_path / "r.yaml")], capsys, monkeypatch)
    assert result.exit_code == 0, result.output
    assert f"{MAX_ITERATIONS} iterations" in result.stdout and str(MAX_ITERATIONS - 1) in result.stdout


def test_a_curve_within_the_limit_holds_every_iteration():
    from retinacli.build import build_schedule

    schedule = build_schedule(load_recipe(None, ["solver.max_iter=1000", "solver.steps=[500]"]).solver)
    curve = lr_curve(schedule)
    assert curve.complete and curve == [schedule.lr_at(i) for i in range(1000)]


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", ".NaN"])
def test_non_finite_floats_are_refused_everywhere(tmp_path, value, capsys, monkeypatch):
    cases = {
        "solver.base_lr": f"solver:\n  base_lr: {value}\n",
        "model.box_coder.scale_clamp": f"model:\n  box_coder:\n    scale_clamp: {value}\n",
        "solver.ema.tau": f"solver:\n  ema:\n    tau: {value}\n",
        "model.pixel_mean.0": f"model:\n  pixel_mean: [{value}, 1, 1]\n",
        "model.box_coder.weights.2": f"model:\n  box_coder:\n    weights: [1, 1, {value}, 1]\n",
    }
    for key, text in cases.items():
        path = tmp_path / "r.yaml"
        path.write_text(text)
        result = run_cli(["inspect-config", str(path)], capsys, monkeypatch)
        assert result.exit_code == 2, (key, result.output)
        assert key in result.stderr and "finite number" in result.stderr, (key, result.stderr)


UPPER_BOUNDS = [
    ("solver.max_iter", MAX_ITERATIONS),
    ("solver.warmup_iters", MAX_ITERATIONS),
    ("solver.checkpoint_period", MAX_ITERATIONS),
    ("eval_period", MAX_ITERATIONS),
    ("log_period", MAX_ITERATIONS),
    ("model.fpn.out_channels", 4096),
    ("model.backbone.stem_out_channels", 4096),
    ("model.backbone.res2_out_channels", 512),
    ("model.head.num_classes", 10_000),
    ("model.head.num_convs", 32),
    ("model.test.detections_per_image", 10_000),
    ("data.train.images_per_batch", 4096),
    ("data.test.images_per_batch", 256),
    ("data.num_workers", 256),
    ("data.train.resize.max_size", 10_000),
    ("seed", 2**32 - 1),
]


@pytest.mark.parametrize(("key", "bound"), UPPER_BOUNDS, ids=[k for k, _ in UPPER_BOUNDS])
def test_each_bound_is_named_in_the_error_and_the_bound_itself_is_accepted(key, bound):
    with pytest.raises(RecipeError, match=rf"{key}\b.*\n.*less than or equal to {bound}"):
        load_recipe(None, [f"{key}={bound + 1}"])
    extra = ["model.backbone.depth=50"] if "res2" in key else []
    load_recipe(None, [*extra, f"{key}={bound}"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("solver.steps=[1000, 100000001]", "steps must be at most 100000000"),
        ("data.train.resize.short_sizes=[800, 10001]", "pixel counts in 1..10000"),
        ("model.anchors.sizes=[[32, 20000]]", "at most 10000 pixels"),
        ("model.anchors.aspect_ratios=[[0.5, 1.0, 1e9]]", "[0.001, 1000]"),
        ("model.anchors.scales=65", "scales 65 is more than 64"),
    ],
)
def test_list_values_are_bounded_too(override, message):
    with pytest.raises(RecipeError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        load_recipe(None, [override])


def test_a_recipe_with_thousands_of_errors_shows_a_bounded_screen(tmp_path):
    path = tmp_path / "many.yaml"
    path.write_text("solver:\n  betas: [" + ", ".join(["x"] * 5000) + "]\n" + "".join(f"k{i}: 1\n" for i in range(3000)))
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    message = str(caught.value)
    assert "... and" in message and "more" in message
    assert len(message.splitlines()) < 60
