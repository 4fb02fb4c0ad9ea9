"""`retina data convert | split | check | show | make-shapes`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Protocol

import typer

from retinacli.cli.app import (
    DeviceOption,
    OverwriteOption,
    RecipeArg,
    SetOption,
    TrustCodeOption,
    app,
    console,
    error_console,
    output_dir_option,
)

data_app = typer.Typer(
    help="Convert, split, check, look at and make datasets.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(data_app, name="data")

_PROBLEMS_SHOWN = 50


def _shown(text: object) -> str:
    """Text from data (a class name, a file name, a problem quoting them) as the terminal shows
    it: control characters escaped (`text.printable`), then Rich markup (`escape`)."""
    from rich.markup import escape

    from retinacli.text import printable

    return escape(printable(text))


@data_app.command("convert")
def data_convert(
    source: Annotated[
        Path, typer.Argument(help="The dataset folder (VOC or YOLO layout).", show_default=False)
    ],
    source_format: Annotated[
        Literal["voc", "yolo"],
        typer.Option("--from", help="The source format: voc or yolo.", show_default=False),
    ],
    output_dir: Annotated[
        Path, output_dir_option("New folder for the COCO json, images and report (never replaced).")
    ],
    classes: Annotated[
        str | None,
        typer.Option(
            "--classes",
            help="a,b,c: the class names and their order (default: VOC: the names found, sorted; "
            "YOLO: data.yaml or classes.txt).",
            show_default=False,
        ),
    ] = None,
    keep_difficult: Annotated[
        bool,
        typer.Option(
            "--keep-difficult", help="VOC: keep difficult objects as boxes (default: iscrowd 1)."
        ),
    ] = False,
) -> None:
    """Convert a Pascal VOC or YOLO dataset to COCO json + images, naming every record dropped or changed."""
    from rich.table import Table

    from retinacli.commands.convert import REASON_TEXT, convert

    result = convert(
        source,
        source_format=source_format,
        output_dir=output_dir,
        classes=classes,
        keep_difficult=keep_difficult,
    )
    if result.problems:
        problems = Table("split", "problem", title=f"problems ({len(result.problems)})")
        for problem in result.problems[:_PROBLEMS_SHOWN]:
            problems.add_row(_shown(problem.split or "-"), _shown(problem.message))
        if len(result.problems) > _PROBLEMS_SHOWN:
            problems.add_row("...", f"{len(result.problems) - _PROBLEMS_SHOWN} more, all in the report")
        console.print(problems)
    if result.problems:
        reasons = Table("reason", "what", "count", title="records dropped or changed")
        for reason, count in result.reason_counts.items():
            if count:
                reasons.add_row(reason, REASON_TEXT[reason], str(count))
        reasons.add_row("total", "", str(len(result.problems)), style="bold")
        console.print(reasons)
    else:
        console.print("no record dropped or changed", highlight=False)
    _print_splits(
        [(split.annotations.name, split) for split in result.splits],
        class_names=result.class_names,
        title=f"{result.format.upper()} {result.source} -> {result.output_dir}",
    )
    console.print(
        _shown(
            f"wrote {result.output_dir} ({result.linked} images hard-linked, {result.copied} "
            f"copied); every problem: {result.report}"
        ),
        highlight=False,
        soft_wrap=True,
    )


@data_app.command("split")
def data_split(
    annotations: Annotated[
        Path, typer.Argument(help="The COCO annotations json to split.", show_default=False)
    ],
    output_dir: Annotated[Path, output_dir_option("Folder for train.json, val.json (and test.json).")],
    val: Annotated[
        float, typer.Option("--val", help="Fraction of the images for val.json.")
    ] = 0.2,
    test: Annotated[
        float, typer.Option("--test", help="Fraction of the images for test.json (0: no test split).")
    ] = 0.0,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same split.")] = 0,
    overwrite: OverwriteOption = False,
) -> None:
    """Split a COCO json by image into train/val(/test), spreading every class over the splits."""
    from retinacli.commands.split import split

    result = split(
        annotations, output_dir=output_dir, val=val, test=test, seed=seed, overwrite=overwrite
    )
    _print_splits(
        [(s.annotations.name, s) for s in result.splits],
        class_names=result.class_names,
        title=f"{result.annotations} -> {result.output_dir} (seed {result.seed})",
    )
    console.print(
        _shown(
            f"wrote {', '.join(str(s.annotations) for s in result.splits)}; the file_names are "
            f"unchanged: use the images folder of {result.annotations.name} with each of them"
        ),
        highlight=False,
        soft_wrap=True,
    )


class _Counts(Protocol):
    """What the split tables show of one written json (convert's and split's summaries)."""

    num_images: int
    num_images_without_boxes: int
    num_boxes: int
    num_crowd_boxes: int
    boxes_per_class: dict[str, int]


def _print_splits(rows: list[tuple[str, _Counts]], *, class_names: tuple[str, ...], title: str) -> None:
    """A table of images and boxes per json written, then one of boxes per class per json."""
    from rich.table import Table

    splits = Table("json", "images", "without boxes", "boxes", "crowd boxes", "classes", title=_shown(title))
    for json_name, counts in rows:
        with_boxes = sum(1 for count in counts.boxes_per_class.values() if count)
        splits.add_row(
            _shown(json_name),
            str(counts.num_images),
            str(counts.num_images_without_boxes),
            str(counts.num_boxes),
            str(counts.num_crowd_boxes),
            f"{with_boxes}/{len(class_names)}",
        )
    console.print(splits)
    per_class = Table(
        "class", *(_shown(name) for name, _ in rows), title="boxes per class", caption="crowd boxes not counted"
    )
    for class_name in class_names:
        per_class.add_row(_shown(class_name), *(str(c.boxes_per_class[class_name]) for _, c in rows))
    console.print(per_class)


@data_app.command("check")
def data_check(
    target: Annotated[
        Path,
        typer.Argument(
            help="A recipe, a COCO json, or a folder of COCO jsons (what `retina data convert` writes).",
            show_default=False,
        ),
    ],
    set_: SetOption = None,
    split: Annotated[
        Literal["train", "val", "test", "all"] | None,
        typer.Option("--split", help="Which dataset of a recipe: train, val, test or all \\[default: all].", show_default=False),
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option(
            "--images",
            help="The image folder of a json (default: images/<json name> or images/ next to it, else its folder).",
            show_default=False,
        ),
    ] = None,
    decode: Annotated[
        bool, typer.Option("--decode", help="Also decode every image (finds truncated files; slower).")
    ] = False,
) -> None:
    """Validate datasets (a recipe's, a COCO json, converted output) and summarise them; exit code 2 when there are errors."""
    from rich.table import Table

    from retinacli.commands.data import check

    splits = None if split is None else ("train", "val", "test") if split == "all" else (split,)
    errors = 0
    for checked in check(target, set_ or [], splits=splits, images=images, decode=decode):
        report = checked.report
        if report is None:
            console.print(f"{checked.key}: not set", highlight=False)
            continue
        title = f"{checked.key}: {checked.annotations}" if checked.key else str(checked.annotations)
        summary = Table(title=_shown(title), show_header=False)
        if checked.key is None:
            summary.add_row("image folder", _shown(str(checked.images)))
        summary.add_row("images", f"{report.num_images} ({report.num_images_without_boxes} without boxes)")
        summary.add_row("boxes", f"{report.num_boxes} (+{report.num_crowd_boxes} crowd, ignored in training)")
        for size, count in report.size_counts.items():
            summary.add_row(f"  {size}", str(count))
        for class_name, count in report.boxes_per_class.items():
            summary.add_row(_shown(f"  class {class_name}"), str(count))
        summary.add_row("problems", f"{len(report.errors)} errors, {len(report.fixed)} fixed")
        console.print(summary)
        if report.problems:
            problems = Table("severity", "problem", title="problems")
            for problem in report.problems[:50]:
                problems.add_row(problem.severity, _shown(problem.message))
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
    output_dir: Annotated[Path, output_dir_option("Folder for the pictures.")],
    set_: SetOption = None,
    num_images: Annotated[int, typer.Option("--num-images", min=1, help="How many images.")] = 16,
    augmented: Annotated[
        bool, typer.Option("--augmented", help="Show them as training augments them (resize, flip, data.train.augment).")
    ] = False,
    split: Annotated[Literal["train", "val", "test"], typer.Option("--split", help="Which dataset of the recipe.")] = "train",
    overwrite: OverwriteOption = False,
) -> None:
    """Write pictures of images with their boxes and class names, optionally augmented."""
    from retinacli.commands.data import show

    written = show(
        recipe, set_ or [], output_dir=output_dir, num_images=num_images, augmented=augmented, split=split, overwrite=overwrite
    )
    for path in written:
        console.print(_shown(path), highlight=False, soft_wrap=True)


@data_app.command("make-shapes")
def data_make_shapes(
    output_dir: Annotated[Path, output_dir_option("Folder to write the dataset into.")],
    num_images: Annotated[
        int, typer.Option("--num-images", min=1, help="Training images (the test split gets a quarter).")
    ] = 256,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same images and boxes.")] = 0,
    layout: Annotated[
        Literal["coco", "voc"],
        typer.Option("--format", help="coco: train.json and test.json; voc: a Pascal VOC folder (to try `data convert`)."),
    ] = "coco",
    overwrite: OverwriteOption = False,
) -> None:
    """Write the synthetic shapes dataset (images + COCO json, or a Pascal VOC folder; train and test splits)."""
    from retinacli.commands.data import write_shapes

    counts = write_shapes(output_dir, num_images=num_images, seed=seed, overwrite=overwrite, layout=layout)
    for name, count in counts.items():
        if layout == "voc":
            where = f"{output_dir}/ImageSets/Main/{name}.txt"
        else:
            where = f"annotations {output_dir / f'{name}.json'}, images {output_dir}"
        console.print(_shown(f"{name}: {count} images, {where}"), highlight=False, soft_wrap=True)


@data_app.command("audit")
def data_audit(
    source: Annotated[
        Path,
        typer.Argument(
            help="A recipe (K-fold: fold models trained on the other folds judge each image), or a model "
            "file or exported file (its own detections judge --dataset).",
            show_default=False,
        ),
    ],
    output_dir: Annotated[
        Path,
        output_dir_option(
            "Folder for issues.json, issues.csv, summary.json, pictures/ and the fold runs "
            "(new or empty; an earlier audit with --resume or --overwrite)."
        ),
    ],
    dataset: Annotated[
        Path | None,
        typer.Option(
            "--dataset",
            help="COCO json to audit \\[default: a recipe's data.train.dataset, a model file's data.test.dataset].",
            show_default=False,
        ),
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option("--images", help="Folder the --dataset json's file_names are relative to.", show_default=False),
    ] = None,
    set_: SetOption = None,
    folds: Annotated[int, typer.Option("--folds", min=2, max=20, help="K of the K-fold cross-fitting (recipe).")] = 4,
    iters: Annotated[
        int | None,
        typer.Option(
            "--iters",
            min=1,
            help="Train each fold model this many iterations, the schedule scaled to it \\[default: the recipe's max_iter].",
            show_default=False,
        ),
    ] = None,
    score_thresh: Annotated[
        float, typer.Option("--score-thresh", min=0.0, max=1.0, help="A detection at or above this score is confident.")
    ] = 0.5,
    match_iou: Annotated[
        float, typer.Option("--match-iou", min=0.0, max=1.0, help="IoU at which a detection covers a label well.")
    ] = 0.5,
    overlap_iou: Annotated[
        float, typer.Option("--overlap-iou", min=0.0, max=1.0, help="IoU at which boxes overlap at all.")
    ] = 0.1,
    duplicate_iou: Annotated[
        float,
        typer.Option("--duplicate-iou", min=0.0, max=1.0, help="IoU at which two labels of one class are one box twice."),
    ] = 0.9,
    pictures: Annotated[int, typer.Option("--pictures", min=0, help="Draw the top N issues.")] = 50,
    write_fixed: Annotated[
        Path | None,
        typer.Option(
            "--write-fixed",
            help="Also write a suggested corrected COCO json here: duplicates removed, confident missing boxes "
            "added (flagged), nothing else changed; never the audited json itself.",
            show_default=False,
        ),
    ] = None,
    fix_score: Annotated[
        float,
        typer.Option("--fix-score", min=0.0, max=1.0, help="--write-fixed adds missing boxes of at least this score."),
    ] = 0.8,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the audit in --output-dir: finished folds are kept, the others trained (same plan "
            "only); other thresholds just rescore.",
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Start afresh in an earlier audit's --output-dir (its fold runs are removed).")
    ] = False,
    cleanlab: Annotated[
        bool,
        typer.Option(
            "--cleanlab",
            help="Also write cleanlab.json: cleanlab's per-image label quality and overlooked/swap/badloc box "
            "scores of the same detections (pip install 'retinacli[audit]').",
        ),
    ] = False,
    device: DeviceOption = None,
    trust_code: TrustCodeOption = False,
    threads: Annotated[
        int | None,
        typer.Option("--threads", min=1, help=r"CPU threads of an exported file's runtime \[default: the runtime's].", show_default=False),
    ] = None,
) -> None:
    """Rank the likely mistakes in a dataset's labels (missing, spurious, wrong_class, poor_box,
    duplicate), judged by models that never saw them."""
    from rich.table import Table

    from retinacli.audit.scoring import KINDS, AuditThresholds
    from retinacli.cli.progress import ConsoleReporter, progress_bar
    from retinacli.commands.audit import audit
    from retinacli.errors import UsageError

    try:
        thresholds = AuditThresholds(
            score_thresh=score_thresh, match_iou=match_iou, overlap_iou=overlap_iou, duplicate_iou=duplicate_iou
        )
    except ValueError as exc:
        raise UsageError(f"thresholds: {exc}") from None
    with progress_bar(error_console, "detecting") as progress:
        result = audit(
            source,
            output_dir=output_dir,
            dataset=dataset,
            images=images,
            overrides=set_ or [],
            folds=folds,
            iters=iters,
            thresholds=thresholds,
            pictures=pictures,
            write_fixed=write_fixed,
            fix_score=fix_score,
            resume=resume,
            overwrite=overwrite,
            cleanlab=cleanlab,
            device=device,
            trust_code=trust_code,
            threads=threads,
            reporter=ConsoleReporter(console),
            progress=progress,
        )
    summary = result.summary
    counts = Table("kind", "issues", *(_shown(name) for name in summary["per_class"]), title="issues per kind and class")
    for kind in KINDS:
        counts.add_row(kind, str(summary["per_kind"][kind]), *(str(c[kind]) for c in summary["per_class"].values()))
    console.print(counts)
    top = Table("rank", "kind", "score", "image", "class", "box (x, y, w, h)", "detection", title="most suspicious")
    for rank, issue in enumerate(result.issues[:15], start=1):
        det = issue.detection
        top.add_row(
            str(rank), issue.kind, f"{issue.score:.3f}", _shown(f"{issue.file_name} ({issue.image_id})"), _shown(issue.category),
            ", ".join(f"{v:.0f}" for v in issue.bbox), _shown(f"{det['category']} {det['score']:.2f}") if det else "-",
        )
    console.print(top)
    console.print(
        f"{summary['num_issues']} issues in {summary['images_with_issues']} of {summary['num_images']} images "
        f"({100 * summary['share_of_images_with_issues']:.1f}%), {summary['num_labels']} labels",
        highlight=False,
    )
    if result.folds_trained or result.folds_reused:
        console.print(f"folds trained now: {result.folds_trained or 'none'}; reused: {result.folds_reused or 'none'}", highlight=False)
    console.print(
        _shown(f"wrote {result.output_dir}/issues.json, issues.csv, summary.json and {len(result.pictures)} pictures"),
        highlight=False,
        soft_wrap=True,
    )
    if result.cleanlab is not None:
        console.print(_shown(f"wrote {result.cleanlab} (cleanlab's scores of the same detections)"), highlight=False, soft_wrap=True)
    if result.fixed is not None:
        removed, added = result.fixed_counts
        console.print(
            _shown(f"wrote {result.fixed}: {removed} duplicate labels removed, {added} missing boxes added (flagged)"),
            highlight=False,
            soft_wrap=True,
        )
