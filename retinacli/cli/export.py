"""`retina export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from retinacli.cli.app import ModelArg, OverwriteFileOption, SetOption, app, console, shown


@app.command("export")
def export_command(
    model: ModelArg,
    export_format: Annotated[
        Literal["onnx", "openvino", "torchscript"],
        typer.Option(
            "--format",
            help="onnx (runs with onnxruntime alone), openvino (an OpenVINO IR: NAME.xml and NAME.bin) or "
            "torchscript (torch + torchvision).",
        ),
    ] = "onnx",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="The file to write \\[default: beside MODEL, .onnx, .xml or .ts, .int8.* with --int8]; an existing "
            "file is replaced only with --overwrite.",
            show_default=False,
        ),
    ] = None,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (18 or newer).")] = 18,
    network_only: Annotated[
        bool,
        typer.Option("--network-only", help="Only the network: per-level logits, box deltas and anchors, no postprocessing."),
    ] = False,
    verify: Annotated[
        bool,
        typer.Option("--verify/--no-verify", help="Run the file on a few images and compare with the PyTorch model."),
    ] = True,
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="Quantize the network to INT8 (onnx or openvino), calibrated on --dataset, and check its COCO AP "
            "against the float file; refused above --max-ap-drop.",
        ),
    ] = False,
    dataset: Annotated[
        Path | None,
        typer.Option(
            "--dataset",
            help="COCO json of the calibration images (with --images) \\[default: the recipe's data.train.dataset].",
            show_default=False,
        ),
    ] = None,
    images: Annotated[
        Path | None, typer.Option("--images", help="Folder the --dataset json's file_names are relative to.", show_default=False)
    ] = None,
    calibration_images: Annotated[
        int, typer.Option("--calibration-images", min=1, max=10000, help="Images to calibrate on, spread over --dataset.")
    ] = 32,
    check_dataset: Annotated[
        Path | None,
        typer.Option(
            "--check-dataset",
            help="COCO json on which the float and INT8 files' AP are compared (with --check-images) \\[default: --dataset].",
            show_default=False,
        ),
    ] = None,
    check_images: Annotated[
        Path | None,
        typer.Option("--check-images", help="Folder the --check-dataset json's file_names are relative to.", show_default=False),
    ] = None,
    max_ap_drop: Annotated[
        float,
        typer.Option("--max-ap-drop", min=0.0, max=1.0, help="Largest relative AP drop of the INT8 file (0.01: 1 %)."),
    ] = 0.01,
    force: Annotated[bool, typer.Option("--force", help="Keep the INT8 file even when it fails the AP check.")] = False,
    keep_float: Annotated[
        str | None,
        typer.Option(
            "--keep-float",
            help="With --int8: modules of the network to keep float, comma-separated, e.g. head.cls_score,head.bbox_pred.",
            show_default=False,
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option("--threads", min=1, help="CPU threads of the runtimes during the AP check \\[default: the runtime's].", show_default=False),
    ] = None,
    set_: SetOption = None,
    overwrite: OverwriteFileOption = False,
) -> None:
    """Export a model file to ONNX, OpenVINO or TorchScript: uint8 image in, boxes, scores and
    classes out; --int8 quantizes it and checks its AP."""
    from retinacli.commands.export import DatasetFiles, export
    from retinacli.errors import UsageError

    pairs = {"--dataset/--images": (dataset, images), "--check-dataset/--check-images": (check_dataset, check_images)}
    for flags, (json_file, folder) in pairs.items():
        if (json_file is None) != (folder is None):
            raise UsageError(f"{flags} go together: pass the COCO json and its image folder")
    with console.status("exporting") as status:
        result = export(
            model,
            export_format=export_format,
            out=out,
            opset=opset,
            network_only=network_only,
            verify=verify,
            overrides=set_ or [],
            overwrite=overwrite,
            int8=int8,
            calibration=DatasetFiles(dataset, images) if dataset is not None and images is not None else None,
            calibration_images=calibration_images,
            check=DatasetFiles(check_dataset, check_images) if check_dataset is not None and check_images is not None else None,
            max_ap_drop=max_ap_drop,
            force=force,
            keep_float=tuple(part.strip() for part in (keep_float or "").split(",") if part.strip()),
            threads=threads,
            progress=lambda text: status.update(text),
        )
    size = sum(path.stat().st_size for path in result.files) / 2**20
    kind = {"onnx": f"onnx, opset {opset}", "openvino": "OpenVINO IR", "torchscript": "torchscript"}[export_format]
    kind += ", INT8" if int8 else ""
    what = "network only" if network_only else "whole detector"
    written = " and ".join(shown(path) for path in result.files)
    console.print(f"wrote {written} ({kind}, {what}, {size:.1f} MiB) in {result.seconds:.1f} s", highlight=False, soft_wrap=True)
    meta = result.metadata
    console.print(
        f"input: (3, H, W) uint8 {meta.input_format}, resized to short side {meta.short_size} (long side at most "
        f"{meta.max_size}); classes: {shown(', '.join(meta.class_names))}",
        highlight=False,
        soft_wrap=True,
    )
    parity = result.parity
    record = result.quantization
    if parity is None:
        console.print("[yellow]not checked[/] (--no-verify)")
    elif network_only:
        console.print(
            f"checked on {shown(result.check_images)}: outputs equal (largest differences: score "
            f"{parity.max_score_difference:.2g}, anchor {parity.max_box_difference:.2g} px)",
            highlight=False,
            soft_wrap=True,
        )
    else:
        which = "the float file before quantizing" if int8 else "the file"
        console.print(
            f"checked {which} on {shown(result.check_images)}: {parity.detections} detections equal to the model's "
            f"(largest differences: box {parity.max_box_difference:.2g} px, score {parity.max_score_difference:.2g})",
            highlight=False,
            soft_wrap=True,
        )
    if record is not None:
        drop = record.relative_ap_drop
        change = f"relative drop {100 * drop:.2f} %" if drop >= 0 else f"INT8 {100 * -drop:.2f} % higher"
        console.print(
            f"INT8 ({record.runtime}), calibrated on {record.calibration_images} images of {shown(record.calibration_source)}; "
            f"on {record.check_images} images of {shown(record.check_source)}: AP {record.float_ap:.2f} float, "
            f"{record.int8_ap:.2f} INT8 ({change}); INT8 time "
            f"{record.speed_ratio:.2f}x the float file's",
            highlight=False,
            soft_wrap=True,
        )
    if result.kept_despite is not None:
        console.print(f"[yellow]kept with --force[/] although {shown(result.kept_despite)}", highlight=False, soft_wrap=True)
