"""recipes/small_data.yaml against detectron2's recipe at equal training wall time.

For each dataset (raccoon: train.json, measured on val.json; the shapes of recipes/shapes.yaml)
and each seed, sequentially:

1. the detectron2-style arm: the dataset's recipe with detectron2's solver (SGD, momentum 0.9,
   base_lr 0.01 for 16 images scaled linearly to the recipe's batch (detectron2's rule; 0.005 for
   8), weight decay 1e-4, multi-step decay x0.1 at 2/3 and 8/9 of the run, linear warm-up, no
   clipping, no EMA) and its resize + horizontal flip, for `--iters` iterations;
   its training time T is the sum of its iteration times (data loading included; evaluations
   and checkpoints left out, the same for both arms);
2. a short calibration run of the small-data arm (`_base_: [<dataset>.yaml, small_data.yaml]`)
   gives its seconds per iteration s, and the arm then trains for round(T / s) iterations, so
   both arms get the same training time (the table shows both times, to check);
3. both are evaluated every fifth of their run and at the end on the same test set;
4. with `--ablate-augment`, a third arm, small_data.yaml's solver without its augmentations, at
   the same time (so the table separates the solver's share from the augmentations').

It prints a Markdown table (APs per seed, means and differences), writes it with every number
to OUTPUT_DIR/summary.json and OUTPUT_DIR/table.md, and draws the learning curves (test AP and
total loss against training seconds) from each run's metrics.jsonl into
OUTPUT_DIR/curves_<dataset>.png. Finished runs in OUTPUT_DIR are reused, so an interrupted
benchmark can be started again with the same command.

    python benchmarks/small_data_vs_detectron2.py --output-dir bench_small_data
    python benchmarks/small_data_vs_detectron2.py --output-dir /tmp/smoke --datasets shapes \\
        --iters shapes=20 --calibration-iters 20 --seeds 0 \\
        --extra-set "data.train.dataset.num_images=32" --extra-set "data.test.dataset.num_images=8"

Run it on a quiet machine: both arms must see the same CPU. Datasets resolve as the recipes say
($RETINA_DATASETS, default ../shared/data, relative to the repository, where runs start).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
LOG_PERIOD = 10
EVALUATIONS = 5

# Sizes of docs/training.md's raccoon measurements: recipes/raccoon.yaml made short enough for a
# 2-core CPU. Both arms get them.
DATASETS: dict[str, dict[str, Any]] = {
    "raccoon": {
        "recipe": "raccoon.yaml",
        "iters": 600,
        "sets": [
            "data.train.resize.short_sizes=[224, 256]",
            "data.train.resize.max_size=384",
            "data.test.resize.short_sizes=[256]",
            "data.test.resize.max_size=384",
        ],
    },
    "shapes": {"recipe": "shapes.yaml", "iters": 600, "sets": []},
}
ARMS = ("detectron2", "small_data")
NO_AUGMENT = "small_data_no_augment"
# small_data.yaml's solver alone: every augmentation it turns on, off
AUGMENT_OFF = (
    "data.train.augment.color.prob=0",
    "data.train.augment.crop.prob=0",
    "data.train.augment.scale_jitter.prob=0",
    "data.train.augment.expand.prob=0",
    "data.train.augment.mosaic=0",
    "data.train.augment.vertical_flip=0",
)


def detectron2_solver(max_iter: int, images_per_batch: int) -> list[str]:
    """detectron2's RetinaNet solver (defaults.py + Base-RetinaNet.yaml: 0.01 for 16 images,
    scaled linearly to `images_per_batch` as detectron2's REFERENCE_WORLD_SIZE rule does), its 1x
    schedule shape (steps at 60k and 80k of 90k) fitted to `max_iter`."""
    steps = sorted({max(1, round(max_iter * 2 / 3)), max(2, round(max_iter * 8 / 9))})
    steps = [s for s in steps if s < max_iter]
    return [
        "solver.optimizer=SGD",
        f"solver.base_lr={0.01 * images_per_batch / 16:g}",
        "solver.momentum=0.9",
        "solver.nesterov=false",
        "solver.weight_decay=0.0001",
        "solver.weight_decay_norm=0.0",
        "solver.scheduler=WarmupMultiStepLR",
        f"solver.steps={steps}",
        "solver.gamma=0.1",
        "solver.warmup_method=linear",
        "solver.warmup_factor=0.001",
        "solver.clip_gradients.enabled=false",
        "solver.ema.enabled=false",
    ]


def common_sets(*, dataset: str, seed: int, max_iter: int, evaluate: bool, extra: Sequence[str]) -> list[str]:
    """What both arms share: sizes, seed, length, logging, evaluations, warm-up."""
    sets = [
        *DATASETS[dataset]["sets"],
        f"seed={seed}",
        f"solver.max_iter={max_iter}",
        f"solver.checkpoint_period={max_iter}",
        "solver.keep_checkpoints=1",
        f"solver.warmup_iters={min(50, max(1, max_iter // 6))}",
        f"log_period={LOG_PERIOD}",
        # multiples of the log period, so every evaluation follows a training line and its
        # training seconds are exact
        f"eval_period={max(LOG_PERIOD, max_iter // EVALUATIONS // LOG_PERIOD * LOG_PERIOD) if evaluate else 0}",
        "on_nonfinite=rollback",
        *extra,
    ]
    if not evaluate:
        sets.append("data.test.dataset=null")
    return sets


def _images_per_batch(recipe: Path, extra: Sequence[str]) -> int:
    from retinacli.recipe import load_recipe

    return load_recipe(recipe, list(extra)).data.train.images_per_batch


def small_data_recipe(out: Path, dataset: str) -> Path:
    """A recipe file `_base_: [<dataset>.yaml, small_data.yaml]` (absolute paths)."""
    path = out / "recipes" / f"{dataset}_small_data.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    bases = [str(RECIPES / DATASETS[dataset]["recipe"]), str(RECIPES / "small_data.yaml")]
    path.write_text(f"_base_: {json.dumps(bases)}\n", encoding="utf-8")
    return path


def train(recipe: Path, sets: Sequence[str], run_dir: Path) -> float:
    """`retina train` in a subprocess from the repository root; returns its wall seconds."""
    command = [sys.executable, "-m", "retinacli", "train", str(recipe), "--output-dir", str(run_dir)]
    for value in sets:
        command += ["--set", value]
    print("$", " ".join(_quote(c) for c in command), flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        log = run_dir / "log.txt"
        tail = log.read_text(encoding="utf-8").splitlines()[-15:] if log.is_file() else []
        raise SystemExit(f"retina train failed (exit {done.returncode}) in {run_dir}:\n"
                         + "\n".join(tail) + "\n" + done.stderr[-2000:])
    return time.perf_counter() - start


def _quote(text: str) -> str:
    return f"'{text}'" if any(c in text for c in " []{}*$") else text


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _covered(iteration: int, previous: int) -> int:
    """Iterations a training line covers: those since the previous line, or after a rollback
    (the iteration went back) those since the restart, at most one log period."""
    return iteration - previous if iteration > previous else min(LOG_PERIOD, iteration + 1)


def timeline(records: Sequence[Mapping[str, Any]], *, skip_first: bool = False) -> list[tuple[dict[str, Any], float]]:
    """Each record with the training seconds spent up to it, from the logged mean iteration
    times, in the order written (so iterations repeated after a rollback count, as they cost
    time). `skip_first` leaves the first training line out (worker start-up), for speed
    measurements."""
    total, previous, first, out = 0.0, -1, True, []
    for record in records:
        if record.get("time") is not None:
            iteration = int(record["iteration"])
            if not (skip_first and first):
                total += float(record["time"]) * _covered(iteration, previous)
            first = False
            previous = iteration
        out.append((dict(record), total))
    return out


def training_seconds(records: Sequence[Mapping[str, Any]]) -> float:
    line = timeline(records)
    return line[-1][1] if line else 0.0


def seconds_per_iteration(records: Sequence[Mapping[str, Any]]) -> float:
    times = [r for r in records if r.get("time") is not None]
    if len(times) < 2:
        raise SystemExit("calibration: too few logged iterations; raise --calibration-iters")
    seconds = timeline(times, skip_first=True)[-1][1]
    counted = sum(_covered(int(b["iteration"]), int(a["iteration"])) for a, b in zip(times, times[1:], strict=False))
    return seconds / counted


def evaluations(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The test evaluations in order: iteration, AP, AP50 and training seconds so far."""
    return [
        {"iteration": int(r["iteration"]), "AP": r["test/AP"], "AP50": r.get("test/AP50"), "seconds": seconds}
        for r, seconds in timeline(records)
        if "test/AP" in r
    ]


def rollbacks(run_dir: Path) -> int:
    """How often the run rolled back after a non-finite loss (its log says so each time)."""
    log = run_dir / "log.txt"
    return log.read_text(encoding="utf-8").count("rolled back to iteration") if log.is_file() else 0


def finished(run_dir: Path) -> bool:
    return (run_dir / "model_final.pth").is_file() and any("test/AP" in r for r in read_metrics(run_dir))


def equal_time_arm(
    run_dir: Path, recipe: Path, *, seconds: float, dataset: str, seed: int, calibration_iters: int,
    extra: Sequence[str],
) -> dict[str, Any]:
    """Train `recipe` for as many iterations as fit in `seconds` of training (from a calibration
    run of its speed), unless `run_dir` holds that run already; its summary."""
    wall = None
    if not finished(run_dir):
        calibration = run_dir.with_name(run_dir.name + "_calibration")
        shutil.rmtree(calibration, ignore_errors=True)
        train(
            recipe,
            common_sets(dataset=dataset, seed=seed, max_iter=calibration_iters, evaluate=False, extra=extra),
            calibration,
        )
        per_iteration = seconds_per_iteration(read_metrics(calibration))
        iterations = max(LOG_PERIOD, round(seconds / per_iteration / LOG_PERIOD) * LOG_PERIOD)
        print(f"{dataset} seed {seed}: detectron2 trained {seconds:.0f} s; {run_dir.name} runs "
              f"{per_iteration:.3f} s/iteration -> {iterations} iterations", flush=True)
        shutil.rmtree(run_dir, ignore_errors=True)
        wall = train(
            recipe, common_sets(dataset=dataset, seed=seed, max_iter=iterations, evaluate=True, extra=extra), run_dir
        )
    records = read_metrics(run_dir)
    return {
        "iterations": 1 + max(int(r["iteration"]) for r in records if r.get("time") is not None),
        "train_seconds": training_seconds(records),
        "wall_seconds": wall,
        "rollbacks": rollbacks(run_dir),
        "evaluations": evaluations(records),
    }


def run_pair(
    out: Path, dataset: str, seed: int, *, iters: int, calibration_iters: int, extra: Sequence[str], ablate: bool = False
) -> dict[str, Any]:
    """Both arms of one dataset and seed (and, with `ablate`, small_data without its
    augmentations); their summaries by arm."""
    base_recipe = RECIPES / DATASETS[dataset]["recipe"]
    small_recipe = small_data_recipe(out, dataset)
    where = out / dataset / f"seed{seed}"
    result: dict[str, Any] = {}

    d2_dir = where / "detectron2"
    d2_wall = None  # process wall time, evaluations included (None: run reused)
    if not finished(d2_dir):
        shutil.rmtree(d2_dir, ignore_errors=True)
        batch = _images_per_batch(base_recipe, extra)
        sets = [
            *common_sets(dataset=dataset, seed=seed, max_iter=iters, evaluate=True, extra=extra),
            *detectron2_solver(iters, batch),
        ]
        d2_wall = train(base_recipe, sets, d2_dir)
    d2_records = read_metrics(d2_dir)
    d2_seconds = training_seconds(d2_records)
    result["detectron2"] = {
        "iterations": iters, "train_seconds": d2_seconds, "wall_seconds": d2_wall, "rollbacks": rollbacks(d2_dir),
        "evaluations": evaluations(d2_records),
    }

    result["small_data"] = equal_time_arm(
        where / "small_data", small_recipe, seconds=d2_seconds, dataset=dataset, seed=seed,
        calibration_iters=calibration_iters, extra=extra,
    )
    if ablate:
        result[NO_AUGMENT] = equal_time_arm(
            where / NO_AUGMENT, small_recipe, seconds=d2_seconds, dataset=dataset, seed=seed,
            calibration_iters=calibration_iters, extra=[*extra, *AUGMENT_OFF],
        )
    return result


def table(results: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> str:
    """The Markdown table: one row per dataset, seed and arm, then the means per dataset."""
    lines = [
        "| dataset | seed | recipe | iterations | training time (s) | rollbacks | AP | AP50 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    means = []
    for dataset, by_seed in results.items():
        aps: dict[str, list[float]] = {}
        for seed, arms in by_seed.items():
            for arm in arms:
                run = arms[arm]
                final = run["evaluations"][-1] if run["evaluations"] else {"AP": math.nan, "AP50": math.nan}
                aps.setdefault(arm, []).append(float(final["AP"]))
                lines.append(
                    f"| {dataset} | {seed} | {arm} | {run['iterations']} | {run['train_seconds']:.0f} | {run['rollbacks']} | "
                    f"{final['AP']:.1f} | {final['AP50']:.1f} |"
                )
        d2 = statistics.fmean(aps["detectron2"])
        for arm in (a for a in aps if a != "detectron2"):
            mean = statistics.fmean(aps[arm])
            means.append(f"| {dataset} | mean of {len(by_seed)} | {arm} - detectron2 | | | | "
                         f"{mean:.1f} - {d2:.1f} = **{mean - d2:+.1f}** | |")
    return "\n".join([*lines, *means])


def plot(results: Mapping[int, Mapping[str, Any]], out: Path, dataset: str, run_root: Path) -> Path:
    """Test AP and total loss against training seconds, both arms, every seed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ap_axes, loss_axes = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    colours = {"detectron2": "tab:blue", "small_data": "tab:orange", NO_AUGMENT: "tab:green"}
    styles = ["-", "--", ":", "-."]
    for k, (seed, arms) in enumerate(results.items()):
        for arm in arms:
            label = f"{arm}, seed {seed}"
            evals = arms[arm]["evaluations"]
            ap_axes.plot([e["seconds"] for e in evals], [e["AP"] for e in evals], marker="o", markersize=3,
                         color=colours[arm], linestyle=styles[k % len(styles)], label=label)
            records = read_metrics(run_root / f"seed{seed}" / arm)
            losses = [(s, r["total_loss"]) for r, s in timeline(records) if r.get("total_loss") is not None]
            loss_axes.plot([s for s, _ in losses], [v for _, v in losses], color=colours[arm],
                           linestyle=styles[k % len(styles)], linewidth=1, label=label)
    ap_axes.set(title=f"{dataset}: test AP", xlabel="training seconds", ylabel="AP")
    loss_axes.set(title=f"{dataset}: total training loss", xlabel="training seconds", ylabel="loss", yscale="log")
    ap_axes.grid(alpha=0.3)
    loss_axes.grid(alpha=0.3)
    ap_axes.legend(fontsize=7)
    fig.tight_layout()
    path = out / f"curves_{dataset}.png"
    fig.savefig(path)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=["raccoon", "shapes"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--iters", action="append", default=[], metavar="DATASET=N",
                        help="iterations of the detectron2 arm (default raccoon=600, shapes=600)")
    parser.add_argument("--calibration-iters", type=int, default=40,
                        help="iterations of the small-data speed measurement (the first 10 are left out)")
    parser.add_argument("--extra-set", action="append", default=[], metavar="KEY=VALUE",
                        help="one more --set for every run of both arms")
    parser.add_argument("--ablate-augment", action="store_true",
                        help=f"a third arm, {NO_AUGMENT}: small_data.yaml's solver without its augmentations, "
                        "at the same time (half as long again)")
    args = parser.parse_args(argv)
    iters = {name: int(spec["iters"]) for name, spec in DATASETS.items()}
    for item in args.iters:
        name, _, value = item.partition("=")
        if name not in DATASETS or not value.isdigit():
            parser.error(f"--iters {item}: expected DATASET=N with DATASET one of {sorted(DATASETS)}")
        iters[name] = int(value)
    if args.calibration_iters <= LOG_PERIOD:
        parser.error(f"--calibration-iters must be above {LOG_PERIOD}")
    out = args.output_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[int, Any]] = {}
    for dataset in args.datasets:
        results[dataset] = {}
        for seed in args.seeds:
            results[dataset][seed] = run_pair(
                out, dataset, seed, iters=iters[dataset], calibration_iters=args.calibration_iters,
                extra=args.extra_set, ablate=args.ablate_augment,
            )
        print("curves:", plot(results[dataset], out, dataset, out / dataset), flush=True)
    text = table(results)
    (out / "table.md").write_text(text + "\n", encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
