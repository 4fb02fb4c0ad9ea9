"""Two CPU processes under torchrun (gloo): identical weights, and the same first update as one
process computes from the same two shards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from retinacli.build import build_dataset, build_model, build_solver, build_train_augmentation
from retinacli.data.loader import build_train_loader
from retinacli.training.rng import seed_everything
from tests.training.tiny import REPO, tiny_overrides, tiny_recipe

WORKER = REPO / "tests" / "training" / "ddp_worker.py"


def _torchrun(tmp_path, overrides: list[str], out_file) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(WORKER), str(REPO / "recipes" / "shapes.yaml"), str(out_file), json.dumps(overrides),
    ]
    _run_group(command, env)


def _run_group(command: list[str], env: dict[str, str], timeout: float = 300) -> str:
    """Run `command` in its own process group; on timeout kill the whole group (no orphans)."""
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"timed out after {timeout} s:\n{stdout[-2000:]}{stderr[-2000:]}")
    assert process.returncode == 0, stdout[-3000:] + stderr[-3000:]
    return stdout


def test_two_processes_keep_identical_weights(tmp_path):
    overrides = tiny_overrides(tmp_path, "solver.max_iter=3", "solver.checkpoint_period=3")
    _torchrun(tmp_path, overrides, tmp_path / "w")
    rank0 = torch.load(tmp_path / "w.rank0", weights_only=True)
    rank1 = torch.load(tmp_path / "w.rank1", weights_only=True)
    for key in rank0:
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0, msg=key)
    assert (tmp_path / "run" / "model_final.pth").exists()  # rank 0 wrote the checkpoints


def test_first_update_equals_the_single_process_update_over_the_same_shards(tmp_path):
    extra = ("solver.max_iter=1", "solver.optimizer=SGD", "solver.base_lr=0.01", "solver.warmup_iters=0",
             "solver.clip_gradients.enabled=false", "data.train.aspect_ratio_grouping=false")
    _torchrun(tmp_path, tiny_overrides(tmp_path, *extra), tmp_path / "w")
    distributed = torch.load(tmp_path / "w.rank0", weights_only=True)

    recipe = tiny_recipe(tmp_path, *extra)
    torch.set_num_threads(1)
    seed_everything(recipe.seed)
    dataset, _ = build_dataset(recipe.data.train.dataset, key="train", filter_empty=True, fix_bad_boxes=True)
    model = build_model(recipe.model)
    optimizer, scheduler = build_solver(recipe.solver, model)
    model.train()
    initial = {name: p.detach().clone() for name, p in model.named_parameters()}
    grads = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for rank in range(2):
        batch = next(iter(build_train_loader(
            dataset=dataset, augmentation=build_train_augmentation(recipe.data.train),
            input_format=recipe.model.input_format, images_per_batch=1, seed=recipe.seed, num_workers=0,
            aspect_ratio_grouping=False, rank=rank, world_size=2,
        )))
        model.loss_normalizer = 100.0  # each process starts with a fresh normaliser
        model.zero_grad()
        losses = model(batch.images, batch.targets)
        (losses["loss_cls"] + losses["loss_box_reg"]).backward()
        for name, p in model.named_parameters():
            if p.grad is not None:
                grads[name] += p.grad / 2  # DistributedDataParallel averages over processes
    for name, p in model.named_parameters():
        p.grad = grads[name] if p.requires_grad else None
    optimizer.step()
    scheduler.step()
    changed = 0
    for name, p in model.named_parameters():
        torch.testing.assert_close(distributed[name], p.detach(), rtol=1e-5, atol=1e-6, msg=name)
        changed += int(not torch.equal(p.detach(), initial[name]))
    assert changed > 0  # the update did something, and the distributed run did the same


@pytest.mark.skipif(sys.platform != "linux", reason="local multi-process launch is tested on Linux")
@pytest.mark.slow  # about 11 s: starts two training processes through the CLI
def test_num_processes_option_launches_local_processes(tmp_path):
    args = ["-m", "retinacli", "train", str(REPO / "recipes" / "shapes.yaml"), "--num-processes", "2"]
    for override in tiny_overrides(tmp_path, "solver.max_iter=2", "solver.checkpoint_period=2"):
        args += ["--set", override]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    stdout = _run_group([sys.executable, *args], env)
    assert "(2 processes)" in stdout
    assert (tmp_path / "run" / "model_final.pth").exists()
