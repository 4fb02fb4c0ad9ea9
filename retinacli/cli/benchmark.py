"""`retina benchmark`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from retinacli.cli.app import DeviceOption, SetOption, app, console, error_console, shown


def _image_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    from retinacli.errors import UsageError

    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise UsageError(f"--image-size {text}: write it as HEIGHTxWIDTH in pixels, e.g. 480x640")
    return int(parts[0]), int(parts[1])


@app.command("benchmark")
def benchmark_command(
    source: Annotated[Path, typer.Argument(help="A recipe (.yaml) or a model file.", show_default=False)],
    image_size: Annotated[
        str | None,
        typer.Option("--image-size", help="HEIGHTxWIDTH of the inputs \\[default: the recipe's test size].", show_default=False),
    ] = None,
    images_per_batch: Annotated[
        int, typer.Option("--images-per-batch", min=1, help="Images per inference batch and per training iteration.")
    ] = 1,
    device: DeviceOption = None,
    amp: Annotated[bool, typer.Option("--amp", help="Mixed precision (CUDA only).")] = False,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="CPU threads for torch and onnxruntime \\[default: torch's].", show_default=False)
    ] = None,
    onnx: Annotated[bool, typer.Option("--onnx/--no-onnx", help="Also export and time onnxruntime.")] = True,
    training: Annotated[bool, typer.Option("--training/--no-training", help="Also time training iterations.")] = True,
    formats: Annotated[
        str | None,
        typer.Option(
            "--formats",
            help="Compare deploy formats instead, one row each, on the CPU: a comma list of "
            "pytorch,onnx,onnx-int8,openvino,openvino-int8.",
            show_default=False,
        ),
    ] = None,
    dataset: Annotated[
        Path | None, typer.Option("--dataset", help="With --formats: a COCO json to measure each format's AP on.", show_default=False)
    ] = None,
    images: Annotated[
        Path | None, typer.Option("--images", help="The image folder of --dataset.", show_default=False)
    ] = None,
    calibration_images: Annotated[
        int, typer.Option("--calibration-images", min=1, max=10000, help="With --formats: images the INT8 formats calibrate on.")
    ] = 32,
    set_: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Parameters, FLOPs, inference and training speed and peak memory of a detector here;
    with --formats, one row per deploy format: size, AP, latency, memory, share of the CPU's peak."""
    import torch
    from rich.table import Table

    from retinacli.commands.benchmark import benchmark

    if threads is not None:
        torch.set_num_threads(threads)
    if formats is not None:
        _formats(source, formats, dataset, images, calibration_images, image_size, images_per_batch, device, amp, set_ or [], as_json)
        return
    if dataset is not None or images is not None:
        from retinacli.errors import UsageError

        raise UsageError("--dataset/--images measure AP per format: they go with --formats")
    with error_console.status("benchmarking", spinner="dots") as status:
        result = benchmark(
            source,
            image_size=_image_size(image_size),
            images_per_batch=images_per_batch,
            device=device,
            amp=amp,
            onnx=onnx,
            training=training,
            overrides=set_ or [],
            progress=lambda what: status.update(what) if not as_json else None,
        )
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=1))
        return
    h, w = result.image_size
    table = Table("measure", "value", "how", title=f"{source}: {h}x{w}, batch {result.images_per_batch}, {result.device}, {result.threads} threads")
    table.add_row("parameters", f"{result.parameters / 1e6:.2f} M", "")
    table.add_row("FLOPs per image", f"{result.flops_per_image / 1e9:.1f} G", "torch.utils.flop_counter")
    t = result.inference
    table.add_row(
        "inference", f"{result.inference_images_per_second:.2f} images/s", f"median of {t.repeats} after {t.warmup} warm-up, {t.median * 1e3:.1f} ms/batch"
    )
    if result.onnx is not None:
        table.add_row("inference, onnxruntime", f"{result.onnx_images_per_second:.2f} images/s", f"median of {result.onnx.repeats}; {result.onnx_note}")
    else:
        table.add_row("inference, onnxruntime", "—", result.onnx_note)
    table.add_row("peak memory, inference", f"{result.inference_memory.peak_bytes / 2**20:.0f} MiB", result.inference_memory.kind)
    if result.training is not None and result.training_memory is not None:
        tr = result.training
        table.add_row(
            "training",
            f"{1 / tr.median:.2f} it/s, {result.training_images_per_second:.2f} images/s",
            f"median of {tr.repeats} after {tr.warmup} warm-up" + (", AMP" if result.amp else ""),
        )
        table.add_row("peak memory, training", f"{result.training_memory.peak_bytes / 2**20:.0f} MiB", result.training_memory.kind)
    console.print(table)


def _formats(
    source: Path,
    formats: str,
    dataset: Path | None,
    images: Path | None,
    calibration_images: int,
    image_size: str | None,
    images_per_batch: int,
    device: str | None,
    amp: bool,
    overrides: list,
    as_json: bool,
) -> None:
    from rich.table import Column, Table

    from retinacli.commands.benchmark import DatasetFiles, benchmark_formats, parse_formats
    from retinacli.errors import UsageError

    if images_per_batch != 1 or amp or (device is not None and device != "cpu"):
        raise UsageError("--formats measures batch 1 on the CPU: drop --images-per-batch, --amp and --device")
    if (dataset is None) != (images is None):
        raise UsageError("--dataset and --images go together: the json and the folder its file names are relative to")
    with error_console.status("benchmarking formats", spinner="dots") as status:
        result = benchmark_formats(
            source,
            parse_formats(formats),
            dataset=DatasetFiles(dataset, images) if dataset is not None and images is not None else None,
            calibration_images=calibration_images,
            image_size=_image_size(image_size),
            overrides=overrides,
            progress=lambda what: status.update(what) if not as_json else None,
        )
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=1))
        return
    h, w = result.image_size
    table = Table(
        Column("format", no_wrap=True), "size", "AP", "median", "p90", "images/s", "memory", "of peak",
        title=f"{shown(source)}: {h}x{w}, batch 1, CPU, {result.threads} threads",
        caption=(
            f"{result.flops_per_image / 1e9:.1f} GFLOPs per image; this CPU's fp32 peak, measured now "
            f"(the best of {', '.join(f'{name} {rate / 1e9:.0f}' for name, rate in result.peak_kernels.items())}): "
            f"{result.peak_flops_per_second / 1e9:.1f} GFLOP/s"
            + (
                f" (nominal: threads x reported clock x 32 = {result.nominal_peak_flops_per_second / 1e9:.0f})"
                if result.nominal_peak_flops_per_second
                else ""
            )
            + "; memory: what loading the file "
            "and running one image add to the process"
            + (f"; INT8 calibrated on {shown(result.calibration)}" if result.calibration else "")
        ),
    )
    for row in result.rows:
        table.add_row(
            row.format,
            f"{row.file_bytes / 2**20:.1f} MiB",
            "—" if row.ap is None else f"{row.ap:.2f}",
            f"{row.latency.median * 1e3:.1f} ms",
            f"{row.latency.p90 * 1e3:.1f} ms",
            f"{row.images_per_second:.2f}",
            f"{row.memory.peak_bytes / 2**20:.0f} MiB",
            f"{100 * row.peak_fraction:.0f} %",
        )
    console.print(table)
