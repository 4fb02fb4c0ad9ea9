"""The `retina` command: parses options, calls one function per command, renders with Rich.

Heavy modules (torch, the engine) are imported inside commands so `retina --help` is instant.
Every user-reachable problem raises a `RetinaError`; `main` turns it into one clear screen and
its exit code (2 for usage and recipe errors). `--debug` shows the traceback instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console

from retinacli import __version__
from retinacli.errors import RecipeError, RetinaError

app = typer.Typer(
    name="retina",
    help="Train, evaluate and inspect RetinaNet object detectors from typed YAML recipes.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console()
error_console = Console(stderr=True)
_state = {"debug": False}

RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML file.", show_default=False)]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override a recipe key: --set solver.base_lr=0.02 (repeatable; parsed by the key's type).",
        show_default=False,
    ),
]


def _version(value: bool) -> None:
    if value:
        console.print(f"retina {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
) -> None:
    _state["debug"] = debug


def _ap_text(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _metrics_table(metrics: dict[str, Any], *, title: str) -> Any:
    """COCO AP (percent) as Rich tables: the summary row, then one row per category."""
    from rich.console import Group
    from rich.table import Table

    from retinacli.evaluation.coco_eval import METRIC_NAMES

    overall = Table(*METRIC_NAMES, title=title)
    overall.add_row(*(_ap_text(metrics.get(name)) for name in METRIC_NAMES))
    per_category = Table("category", "AP")
    for name, value in (metrics.get("per_category") or {}).items():
        per_category.add_row(str(name), _ap_text(value))
    return Group(overall, per_category)


@app.command("train")
def train(
    recipe: RecipeArg,
    set_: SetOption = None,
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", help="Where the run goes (default: the recipe's output_dir).", show_default=False),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in the output dir from its last checkpoint.")
    ] = False,
    num_processes: Annotated[
        int, typer.Option("--num-processes", min=1, help="Start this many local training processes (torch.distributed).")
    ] = 1,
) -> None:
    """Train a detector from a recipe: progress, TensorBoard, checkpoints, resume, COCO eval."""
    from retinacli.recipe import load_recipe
    from retinacli.train.distributed import launch_local
    from retinacli.train.progress import ConsoleReporter
    from retinacli.train.run import train_from_recipe

    overrides = list(set_ or [])
    if output_dir is not None:
        overrides.append(f"output_dir={output_dir}")
    resolved = load_recipe(recipe, overrides)
    if num_processes > 1:
        argv = ["train", str(recipe), *[a for o in overrides for a in ("--set", o)]]
        code = launch_local(num_processes, [*argv, *(["--resume"] if resume else [])])
        raise typer.Exit(code)
    result = train_from_recipe(
        resolved,
        resume=resume,
        reporter=ConsoleReporter(console),
        show_eval=lambda iteration, metrics: console.print(_metrics_table(metrics, title=f"COCO AP after iteration {iteration}")),
    )
    console.print(
        f"done: {result.iterations_run} iterations in this run; outputs in {result.output_dir}"
        + (f"; final model {result.final_checkpoint}" if result.final_checkpoint else ""),
        highlight=False,
    )


@app.command("eval")
def eval_command(
    checkpoint: Annotated[
        Path, typer.Argument(help="Model file or training checkpoint.", show_default=False)
    ],
    dataset: Annotated[
        Path | None,
        typer.Option(
            "--dataset",
            help="COCO json to evaluate on instead of the recipe's data.test.dataset (with --images).",
            show_default=False,
        ),
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option("--images", help="Folder the --dataset json's file_names are relative to.", show_default=False),
    ] = None,
    set_: SetOption = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            help="Folder for coco_results.json and metrics.json [default: <checkpoint dir>/eval_<checkpoint stem>].",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            min=1,
            help="Images per inference batch [default: data.test.images_per_batch, 1]. More is "
            "faster but changes detections near image borders.",
            show_default=False,
        ),
    ] = None,
    device: DeviceOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics.json instead of tables.")] = False,
) -> None:
    """COCO box AP of a model file on its recipe's test set (or --dataset/--images)."""
    import warnings

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from retinacli.devices import resolve_device
    from retinacli.errors import UsageError
    from retinacli.evaluation import coco_eval
    from retinacli.evaluation.datasets import eval_resize, load_test_dataset, match_classes
    from retinacli.model_files import load_detector
    from retinacli.recipe.schema import CocoDataset

    if (dataset is None) != (images is None):
        raise UsageError("--dataset and --images go together: pass the COCO json and its image folder")
    loaded = load_detector(checkpoint, set_ or [])
    recipe = loaded.recipe
    if dataset is not None and images is not None:
        source = CocoDataset(annotations=str(dataset), images=str(images))
    elif recipe.data.test.dataset is not None:
        source = recipe.data.test.dataset
    else:
        raise UsageError(
            f"{checkpoint}: its recipe has no data.test.dataset; pass --dataset JSON --images DIR"
        )
    short_size, max_size = eval_resize(recipe.data.test.resize)
    test_set = load_test_dataset(source)
    match = match_classes(loaded.classes, test_set, model_path=checkpoint)
    if output is None:
        suffix = f"_{Path(dataset).stem}" if dataset is not None else ""
        output = checkpoint.parent / f"eval_{checkpoint.stem}{suffix}"
    model = loaded.model.to(resolve_device(device or recipe.device, source="--device" if device else "device"))
    if match.note and not as_json:
        console.print(f"[cyan]note[/] {match.note}", highlight=False)
    with (
        Progress(
            TextColumn("evaluating"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=error_console,
            transient=True,
            disable=as_json,
        ) as bar,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", coco_eval.EmptyResultsWarning)
        task = bar.add_task("eval", total=len(test_set))
        metrics = coco_eval.evaluate_detector(
            model,
            test_set,
            output,
            short_size=short_size,
            max_size=max_size,
            input_format=recipe.model.input_format,
            images_per_batch=batch_size or recipe.data.test.images_per_batch,
            num_workers=recipe.data.num_workers,
            class_dataset_ids=match.dataset_ids,
            progress=lambda done, total: bar.update(task, completed=done),
        )
    if as_json:
        typer.echo(json.dumps(metrics, indent=1))
        return
    console.print(_metrics_table(metrics, title=f"COCO box AP, {metrics['num_images']} images"))
    for note in metrics["notes"]:
        console.print(f"[yellow]note[/] {note}", highlight=False)
    console.print(
        f"{metrics['num_detections']} detections, {metrics['images_per_second']:.2f} images/s\n"
        f"wrote {output / coco_eval.RESULTS_NAME}\nwrote {output / coco_eval.METRICS_NAME}",
        highlight=False,
    )


@app.command("predict")
def predict_command(
    checkpoint: Annotated[
        Path, typer.Argument(help="Model file or training checkpoint.", show_default=False)
    ],
    inputs: Annotated[
        list[Path],
        typer.Argument(help="Image files or folders (walked recursively, sorted).", show_default=False),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the drawn pictures and predictions.json.")
    ] = Path("predictions"),
    score_thresh: Annotated[
        float,
        typer.Option("--score-thresh", min=0.0, max=1.0, help="Keep detections scoring above this."),
    ] = 0.5,
    set_: SetOption = None,
    device: DeviceOption = None,
) -> None:
    """Detect objects in images: pictures with boxes drawn, and predictions.json."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    from retinacli.devices import resolve_device
    from retinacli.errors import DatasetError
    from retinacli.evaluation.datasets import eval_resize
    from retinacli.evaluation.predict import find_images, predict_images
    from retinacli.model_files import load_detector

    found = find_images(inputs, out_dir=out)
    loaded = load_detector(checkpoint, [*(set_ or []), f"model.test.score_thresh={score_thresh}"])
    recipe = loaded.recipe
    short_size, max_size = eval_resize(recipe.data.test.resize)
    model = loaded.model.to(resolve_device(device or recipe.device, source="--device" if device else "device"))
    with Progress(
        TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), console=error_console, transient=True
    ) as bar:
        task = bar.add_task("predict", total=len(found))
        report = predict_images(
            model,
            found,
            out_dir=out,
            class_names=loaded.classes.names,
            class_dataset_ids=loaded.classes.dataset_ids,
            input_format=recipe.model.input_format,
            short_size=short_size,
            max_size=max_size,
            model_name=str(checkpoint),
            progress=lambda done, total: bar.update(task, completed=done),
        )
    table = Table("image", "detections", "best")
    for entry in report.images:
        dets = entry["detections"]
        best = max(dets, key=lambda d: d["score"]) if dets else None
        table.add_row(
            entry["file"], str(len(dets)), f"{best['class_name']} {best['score']:.2f}" if best else "—"
        )
    console.print(table)
    for skipped in report.skipped:
        console.print(f"[yellow]skipped[/] {skipped['file']}: {skipped['reason']}", highlight=False)
    console.print(
        f"{len(report.images)} images, {report.num_detections} detections above {score_thresh:g}; "
        f"wrote {out}/ and {report.json_path}",
        highlight=False,
    )
    if not report.images:
        raise DatasetError(
            f"none of the {len(report.skipped)} images could be read (see above); pass image files "
            "Pillow can open"
        )


@app.command("inspect-config")
def inspect_config(
    recipe: RecipeArg,
    set_: SetOption = None,
    diff: Annotated[bool, typer.Option("--diff", help="Show only what differs from the defaults.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Print the fully resolved, validated recipe (YAML that loads back to the same recipe)."""
    from retinacli.recipe import diff_from_defaults, dump_recipe, load_recipe, recipe_to_dict

    resolved = load_recipe(recipe, set_ or [])
    data: dict[str, Any] = diff_from_defaults(resolved) if diff else recipe_to_dict(resolved)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    elif diff and not data:
        console.print("# the recipe equals the defaults")
    else:
        typer.echo(dump_recipe(data), nl=False)


@app.command("lr-plot")
def lr_plot(
    recipe: RecipeArg,
    set_: SetOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Also save the curve as a PNG here.", show_default=False)
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help='Print [{"iteration": i, "lr": x}, ...] for every iteration.')
    ] = False,
) -> None:
    """Show the recipe's learning-rate curve: warmup, steps or cosine (no dataset needed)."""
    from rich.table import Table

    from retinacli.build import build_schedule
    from retinacli.recipe import load_recipe
    from retinacli.train import lr_plot as plot

    solver = load_recipe(recipe, set_ or []).solver
    try:
        schedule = build_schedule(solver)
    except ValueError as exc:
        raise RecipeError(f"{recipe}: solver: {exc}") from None
    curve = plot.lr_curve(schedule)
    if as_json:
        typer.echo(json.dumps(plot.curve_json(curve)))
        return
    points = plot.key_points(schedule)
    marks = plot.chart_marks(points)
    width = max(20, min(100, console.width - 14))
    console.print(
        f"[bold]{solver.scheduler}[/], base_lr {solver.base_lr:g}, {solver.max_iter} iterations",
        highlight=False,
    )
    console.print(plot.render_terminal_chart(curve, width=width, height=10, marks=marks), highlight=False)
    table = Table("point", "iteration", "lr")
    for point in points:
        table.add_row(point.label, str(point.iteration), f"{point.lr:.6g}")
    console.print(table)
    if out is not None:
        path = plot.save_png(curve, out, marks, title=f"{recipe.name}: {solver.scheduler}")
        console.print(f"saved {path}")


@app.command("anchors")
def anchors_command(
    recipe: Annotated[
        Path | None,
        typer.Argument(help="Recipe YAML file; without it, the flags describe the anchors.", show_default=False),
    ] = None,
    set_: SetOption = None,
    sizes: Annotated[
        str | None,
        typer.Option("--sizes", help="Anchor sizes: '32..512', '32,64,128,256,512' or [[32, 40.3], ...].", show_default=False),
    ] = None,
    scales: Annotated[
        int | None, typer.Option("--scales", help="Sizes per level for the compact forms (default 3 with the default sizes).", show_default=False)
    ] = None,
    ratios: Annotated[
        str | None, typer.Option("--ratios", help="Aspect ratios h/w shared by all levels (default 0.5,1,2).", show_default=False)
    ] = None,
    offset: Annotated[
        float | None, typer.Option("--offset", help="Anchor centre offset in strides, [0, 1) (default 0.0).", show_default=False)
    ] = None,
    strides: Annotated[
        str | None, typer.Option("--strides", help="Level strides (default 8,16,32,... one per size level).", show_default=False)
    ] = None,
    image_size: Annotated[
        str | None,
        typer.Option("--image-size", help="Input HxW (default: the recipe's test short side x max size, or 800x1333).", show_default=False),
    ] = None,
    image: Annotated[
        Path | None, typer.Option("--image", help="Draw the anchors over this picture (test-resized).", show_default=False)
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="PNG of the cell anchors to scale; with --coverage a folder for the IoU histogram.", show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    coverage: Annotated[
        bool, typer.Option("--coverage", help="Best anchor IoU of every training box: positive, low-quality only or none.")
    ] = False,
    suggest: Annotated[
        bool, typer.Option("--suggest", help="Also propose sizes and ratios that raise coverage (implies --coverage).")
    ] = False,
    worst: Annotated[int, typer.Option("--worst", help="Worst-covered boxes to list.")] = 10,
) -> None:
    """Show the anchors of every pyramid level; with --coverage, whether the training boxes will ever match them."""
    from retinacli.anchors_tool.command import render, result_json, run_anchors

    result = run_anchors(
        recipe=recipe,
        overrides=set_ or [],
        sizes=sizes,
        scales=scales,
        ratios=ratios,
        offset=offset,
        strides=strides,
        image_size=image_size,
        image=image,
        out=out,
        coverage=coverage,
        suggest=suggest,
        worst=worst,
    )
    if as_json:
        typer.echo(json.dumps(result_json(result)))
    else:
        render(result, console)


@app.command("import-detectron2")
def import_detectron2_command(
    config: Annotated[Path, typer.Argument(help="detectron2 config YAML (with _BASE_ chains).", show_default=False)],
    weights: Annotated[
        Path, typer.Option("--weights", help="detectron2 weights: .pth or model-zoo .pkl.", show_default=False)
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for recipe.yaml and model.pth.", show_default=False)],
    classes: Annotated[
        str | None,
        typer.Option("--classes", help="Comma-separated class names, in the model's class order.", show_default=False),
    ] = None,
) -> None:
    """Turn a detectron2 RetinaNet config + weights into a recipe and a model file."""
    from retinacli.detectron2_import import import_detectron2

    names = [n.strip() for n in classes.split(",")] if classes else None
    result = import_detectron2(config, weights, out, class_names=names)
    console.print(f"wrote {result.recipe_path}\nwrote {result.model_path}", highlight=False)
    for key in result.ignored_config_keys:
        console.print(f"[yellow]ignored config key[/] {key} (not used by RetinaNet here)", highlight=False)
    for key in result.unused_weight_keys:
        console.print(f"[yellow]unused weight[/] {key}", highlight=False)
    for note in result.notes:
        console.print(f"[cyan]note[/] {note}", highlight=False)


DeviceOption = Annotated[
    Literal["auto", "cpu", "cuda"] | None,
    typer.Option("--device", help="auto|cpu|cuda [default: the recipe's device].", show_default=False),
]


data_app = typer.Typer(
    help="Check, look at and make datasets.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(data_app, name="data")


@data_app.command("check")
def data_check(
    recipe: RecipeArg,
    set_: SetOption = None,
    split: Annotated[
        str, typer.Option("--split", help="Which dataset: train, test or both.")
    ] = "both",
    decode: Annotated[
        bool, typer.Option("--decode", help="Also decode every image (finds truncated files; slower).")
    ] = False,
) -> None:
    """Validate the recipe's datasets and summarise them; exit code 2 when there are errors."""
    from rich.table import Table

    from retinacli.build import dataset_files
    from retinacli.data.checks import check_coco
    from retinacli.errors import UsageError
    from retinacli.recipe import load_recipe

    if split not in ("train", "test", "both"):
        raise UsageError(f"--split {split}: use train, test or both")
    resolved = load_recipe(recipe, set_ or [])
    sections = [("train", resolved.data.train.dataset), ("test", resolved.data.test.dataset)]
    chosen = [(name, cfg) for name, cfg in sections if split in (name, "both")]
    if all(cfg is None for _, cfg in chosen):
        raise RecipeError(f"{recipe}: no dataset to check (data.{split}.dataset is not set)")
    errors = 0
    for name, cfg in chosen:
        if cfg is None:
            console.print(f"data.{name}.dataset: not set", highlight=False)
            continue
        annotations, images = dataset_files(cfg)
        _, report = check_coco(
            annotations=annotations, images=images, fix_bad_boxes=resolved.data.fix_bad_boxes, decode_images=decode
        )
        summary = Table(title=f"data.{name}.dataset: {annotations}", show_header=False)
        summary.add_row("images", f"{report.num_images} ({report.num_images_without_boxes} without boxes)")
        summary.add_row("boxes", f"{report.num_boxes} (+{report.num_crowd_boxes} crowd, ignored in training)")
        for size, count in report.size_counts.items():
            summary.add_row(f"  {size}", str(count))
        for class_name, count in report.boxes_per_class.items():
            summary.add_row(f"  class {class_name}", str(count))
        summary.add_row("problems", f"{len(report.errors)} errors, {len(report.fixed)} fixed")
        console.print(summary)
        if report.problems:
            problems = Table("severity", "problem", title="problems")
            for problem in report.problems[:50]:
                problems.add_row(problem.severity, problem.message)
            if len(report.problems) > 50:
                problems.add_row("...", f"{len(report.problems) - 50} more")
            console.print(problems)
        errors += len(report.errors)
    if errors:
        error_console.print(
            f"[bold red]error:[/] {errors} problem(s) must be fixed before training "
            "(or set data.fix_bad_boxes: true for fixable box problems)"
        )
        raise typer.Exit(2)


@data_app.command("show")
def data_show(
    recipe: RecipeArg,
    out: Annotated[Path, typer.Option("--out", help="Folder for the pictures.", show_default=False)],
    set_: SetOption = None,
    n: Annotated[int, typer.Option("--n", min=1, help="How many images.")] = 16,
    augmented: Annotated[
        bool, typer.Option("--augmented", help="Show them as training augments them (resize, flip).")
    ] = False,
    split: Annotated[str, typer.Option("--split", help="train or test.")] = "train",
) -> None:
    """Write pictures of images with their boxes and class names, optionally augmented."""
    from retinacli.build import build_augmentation, build_dataset
    from retinacli.data.visualize import show_dataset
    from retinacli.errors import UsageError
    from retinacli.recipe import load_recipe

    if split not in ("train", "test"):
        raise UsageError(f"--split {split}: use train or test")
    resolved = load_recipe(recipe, set_ or [])
    section = resolved.data.train if split == "train" else resolved.data.test
    dataset, _ = build_dataset(
        section.dataset, key=f"data.{split}.dataset", filter_empty=False, fix_bad_boxes=resolved.data.fix_bad_boxes
    )
    augmentation = None
    if augmented:
        flip = resolved.data.train.flip if split == "train" else "none"
        augmentation = build_augmentation(section.resize, flip=flip)
    written = show_dataset(dataset=dataset, out_dir=out, num_images=n, augmentation=augmentation, seed=resolved.seed)
    for path in written:
        console.print(str(path), highlight=False)


@data_app.command("make-shapes")
def data_make_shapes(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the dataset into.", show_default=False)],
    images: Annotated[int, typer.Option("--images", min=1, help="Training images (the test split gets a quarter).")] = 256,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same images and boxes.")] = 0,
) -> None:
    """Write the synthetic shapes dataset (images + COCO json, train and test splits)."""
    from retinacli.data.shapes import make_shapes

    for split, count in (("train", images), ("test", max(1, images // 4))):
        written = make_shapes(out_dir, num_images=count, seed=seed, split=split)
        console.print(f"{split}: {written.num_images} images, annotations {written.annotations}, images {written.images}", highlight=False)


def main() -> None:
    """Entry point of the `retina` console script."""
    try:
        app()  # standalone: usage errors print their own message and exit with 2
    except RetinaError as exc:
        if _state["debug"]:
            raise
        _print_error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        error_console.print("Interrupted.")
        sys.exit(130)


def _print_error(message: str) -> None:
    from rich.markup import escape

    error_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
