"""A tiny training recipe (ResNet-18, 32 FPN channels, 64-96 px synthetic shapes) for loop tests."""

from __future__ import annotations

from pathlib import Path

from retinacli.recipe import Recipe, load_recipe

REPO = Path(__file__).resolve().parents[2]


def tiny_overrides(tmp_path: Path, *extra: str) -> list[str]:
    cache = tmp_path / "cache"
    shapes = "{{kind: shapes, split: {split}, num_images: {n}, seed: 0, image_size: [64, 96], cache_dir: '{cache}'}}"
    return [
        "model.fpn.out_channels=32",
        "model.head.num_convs=1",
        f"data.train.dataset={shapes.format(split='train', n=8, cache=cache)}",
        f"data.test.dataset={shapes.format(split='test', n=2, cache=cache)}",
        "data.train.resize.short_sizes=[64, 80]",
        "data.train.resize.max_size=96",
        "data.test.resize.short_sizes=[64]",
        "data.test.resize.max_size=96",
        "data.train.images_per_batch=2",
        "data.num_workers=0",
        "solver.max_iter=6",
        "solver.checkpoint_period=3",
        "solver.warmup_iters=2",
        "log_period=2",
        "eval_period=0",
        f"output_dir={tmp_path / 'run'}",
        *extra,
    ]


def tiny_recipe(tmp_path: Path, *extra: str) -> Recipe:
    return load_recipe(REPO / "recipes" / "shapes.yaml", tiny_overrides(tmp_path, *extra))
