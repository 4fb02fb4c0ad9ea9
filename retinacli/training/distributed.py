"""Several processes with torch.distributed: torchrun's environment, or `--num-processes N`.

Under `torchrun --nproc_per_node N -m retinacli train RECIPE` (or any launcher that sets the
env:// variables RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT) each process joins
one process group: gloo on CPU, nccl on CUDA. `retina train --num-processes N` starts N local
copies of the same command with exactly that environment, as torchrun would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from retinacli.devices import resolve_device
from retinacli.errors import UsageError


@dataclass(frozen=True)
class ProcessContext:
    """This process's place in the run: rank of world_size, and the device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, writes checkpoints and evaluation results."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_process(device_kind: str) -> ProcessContext:
    """Join the process group the environment describes (nothing to do for one process)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = resolve_device(device_kind, local_rank=local_rank)
    if world_size > 1 and not dist.is_initialized():
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        if missing:
            raise UsageError(
                f"WORLD_SIZE={world_size} but {', '.join(missing)} not set; launch with torchrun "
                "or `retina train --num-processes N`"
            )
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        store = _attempt_store(world_size)
        if store is None:
            dist.init_process_group(backend=backend, init_method="env://")
        else:
            dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world_size)
    return ProcessContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def _attempt_store(world_size: int) -> dist.Store | None:
    """Under torchrun (the agent hosts the store), the agent's store seen under a prefix of this
    restart attempt; None elsewhere (env:// as usual).

    The agent's store outlives a restart: without the prefix, a worker of the restarted group can
    read the address a dead worker of the previous attempt published and fail to connect to it
    (gloo's "connectFullMesh failed ... Connection refused"), depending on which worker gets there
    first."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    from datetime import timedelta

    base = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world_size,
        is_master=False,
        timeout=timedelta(minutes=30),
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"retinacli/attempt_{attempt}", base)


def shutdown_process() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap_for_processes(model: torch.nn.Module, device: torch.device) -> torch.nn.parallel.DistributedDataParallel:
    """`model` in DistributedDataParallel as detectron2 wraps it: `broadcast_buffers=False`, so
    each process keeps its own BatchNorm statistics instead of rank 0's being copied over at every
    forward."""
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device] if device.type == "cuda" else None, broadcast_buffers=False
    )


def broadcast_object(value: object, *, src: int = 0) -> object:
    """`value` from rank `src` on every rank (identity for one process)."""
    if not dist.is_initialized():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_gather_floats(value: float) -> list[float]:
    """`value` of every process, by rank (`[value]` for one process). Collective."""
    if not dist.is_initialized():
        return [float(value)]
    gathered = [torch.zeros(1, dtype=torch.float64) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, torch.tensor([float(value)], dtype=torch.float64))
    return [float(t.item()) for t in gathered]


def any_process(flag: bool) -> bool:
    """True when `flag` is true on at least one process. Collective."""
    if not dist.is_initialized():
        return bool(flag)
    tensor = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def reduce_scalars(
    scalars: dict[str, float], *, mean: Sequence[str], maximum: Sequence[str]
) -> dict[str, float]:
    """The logged scalars over all processes: the names in `mean` averaged, those in `maximum`
    the largest; the others (the learning rate, the epoch: equal everywhere) as given. Every
    process must pass the same names (collective; identity for one process)."""
    if not dist.is_initialized():
        return dict(scalars)
    world_size = dist.get_world_size()
    out = dict(scalars)
    for names, averaged in ((mean, True), (maximum, False)):
        present = [name for name in names if name in scalars]
        if not present:
            continue
        values = torch.tensor([float(scalars[name]) for name in present], dtype=torch.float64)
        dist.all_reduce(values, op=dist.ReduceOp.SUM if averaged else dist.ReduceOp.MAX)
        for name, value in zip(present, values.tolist(), strict=True):
            out[name] = value / world_size if averaged else value
    return out


def launch_local(num_processes: int, argv: Sequence[str]) -> int:
    """Run `python -m retinacli ARGV...` in `num_processes` local processes, torchrun-style.

    Returns the first non-zero exit code (the other processes are then stopped), else 0. The
    processes run in their own session, so a Ctrl-C at the terminal reaches them once, through
    this process: each SIGINT/SIGTERM received here is passed on to every one still running (the
    first makes them checkpoint and stop, a second stops them at once).
    """
    if num_processes < 1:
        raise UsageError(f"--num-processes must be >= 1, got {num_processes}")
    port = _free_port()
    processes: list[subprocess.Popen[bytes]] = []

    def forward(number: int, frame: object) -> None:
        for process in processes:
            if process.poll() is None:
                process.send_signal(number)

    previous = {number: signal.signal(number, forward) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        for rank in range(num_processes):
            env = {
                **os.environ,
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": str(num_processes),
                "LOCAL_WORLD_SIZE": str(num_processes),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // num_processes))),
            }
            processes.append(
                subprocess.Popen([sys.executable, "-m", "retinacli", *argv], env=env, start_new_session=True)
            )
        status = 0
        for process in processes:
            code = process.wait()
            if code < 0:  # ended by a signal: report it as a shell does
                code = 128 - code
            if code != 0 and status == 0:
                status = code
                for other in processes:
                    if other.poll() is None:
                        other.send_signal(signal.SIGTERM)
        return status
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for process in processes:  # an error here (none expected) must not leave them running
            if process.poll() is None:
                process.kill()
                process.wait()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
