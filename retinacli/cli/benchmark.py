"""`retina benchmark`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from retinacli.cli.app import DeviceOption, SetOption, app, console, error_console


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
    set_: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Parameters, FLOPs, inference and training speed and peak memory of a detector here."""
    import torch
    from rich.table import Table

    from retinacli.commands.benchmark import benchmark

    if threads is not None:
        torch.set_num_threads(threads)
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
