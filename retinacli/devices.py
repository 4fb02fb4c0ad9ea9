"""Which torch device a run uses: `auto` is CUDA when available, else the CPU."""

from __future__ import annotations

import torch

from retinacli.errors import UsageError


def resolve_device(kind: str, *, local_rank: int = 0, source: str = "device") -> torch.device:
    """The device for `kind` ("auto", "cpu" or "cuda"); `source` names the setting in errors
    (e.g. "--device" or "device"). With several GPUs, process `local_rank` takes GPU
    local_rank % count."""
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"{source} cuda: no CUDA device is available here; use {source} cpu (or auto)"
            )
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if kind != "cpu":
        raise UsageError(f"{source} {kind}: expected auto, cpu or cuda")
    return torch.device("cpu")
