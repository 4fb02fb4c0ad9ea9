"""Several machines and restarts, on this machine (CPU, gloo):

- two "nodes" (two torchrun invocations, --nnodes 2 --nproc-per-node 1, rendezvous on
  127.0.0.1) reach the weights of one node's two processes on the same shards;
- under torchrun --max-restarts 1, one worker killed (SIGKILL) mid-run: the group restarts, and
  `--auto-resume` continues from the last checkpoint to the uninterrupted run's weights;
- the logged losses are the mean over processes, the timings the slowest process's, and every
  process's loss normaliser is checkpointed.

Each launch starts Python and torch in every process, hence the `slow` marker."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from retinacli.training.checkpoints import load_checkpoint
from tests.training.tiny import REPO, tiny_overrides

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="torchrun groups are tested on Linux"),
]

WORKER = REPO / "tests" / "training" / "elastic_worker.py"
RECIPE = REPO / "recipes" / "shapes.yaml"
# 8 iterations of 2 images (one per process), checkpoints after iterations 3 and 7
EXTRA = ("solver.max_iter=8", "solver.checkpoint_period=4", "log_period=1")


def _last_state(model_final):
    run = Path(model_final).parent
    return load_checkpoint(run / (run / "last_checkpoint").read_text())


def _args(tmp_path, out) -> list[str]:
    args = [str(RECIPE)]
    for override in tiny_overrides(tmp_path, *EXTRA, f"output_dir={out}"):
        args += ["--set", override]
    return ["train", *args]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "COLUMNS": "200", **extra}


def _torchrun(options: list[str], args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *options, str(WORKER), *args]


def _wait(processes: list[subprocess.Popen], timeout: float = 300) -> list[str]:
    """Wait for every process (each in its own session); on timeout kill them all (no orphans)."""
    outputs = []
    try:
        for process in processes:
            stdout, _ = process.communicate(timeout=timeout)
            outputs.append(stdout)
    except subprocess.TimeoutExpired:
        for process in processes:
            os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"timed out after {timeout} s")
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-4000:]
    return outputs


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _same_weights(a_path, b_path) -> None:
    # the run's last checkpoint (model_final.pth beside it holds the same weights, no optimizer)
    a, b = _last_state(a_path), _last_state(b_path)
    assert a["iteration"] == b["iteration"] == 7
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=key)
    assert a["loss_normalizer_per_rank"] == b["loss_normalizer_per_rank"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One node, two processes, uninterrupted; each rank records its own steps."""
    tmp = tmp_path_factory.mktemp("reference")
    out = tmp / "run"
    record = tmp / "steps"
    command = _torchrun(["--standalone", "--nproc-per-node", "2"], _args(tmp, out))
    _wait([_start(command, _env(RETINA_TEST_RECORD=str(record)))])
    return out, record


def test_logged_losses_are_the_mean_over_processes_and_normalisers_are_kept_per_process(reference):
    out, record = reference
    ranks = [
        {line["iteration"]: line for line in map(json.loads, Path(f"{record}.rank{r}").read_text().splitlines())}
        for r in (0, 1)
    ]
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [line for line in logged if "loss_cls" in line]
    assert [line["iteration"] for line in logged] == list(range(8))
    for line in logged:
        own = [ranks[r][line["iteration"]] for r in (0, 1)]
        for key in ("loss_cls", "loss_box_reg", "total_loss", "num_pos_anchors"):
            assert line[key] == (own[0][key] + own[1][key]) / 2, (key, line, own)
        assert own[0]["loss_cls"] != own[1]["loss_cls"]  # two shards: the mean is not rank 0's
    final = _last_state(out / "model_final.pth")
    assert final["loss_normalizer_per_rank"] == [ranks[r][7]["loss_normalizer"] for r in (0, 1)]
    assert final["loss_normalizer_per_rank"][0] != final["loss_normalizer_per_rank"][1]


def test_two_nodes_reach_the_weights_of_one_node_with_two_processes(tmp_path, reference):
    out = tmp_path / "run"
    port = _free_port()
    nodes = [
        _start(
            _torchrun(
                ["--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank),
                 "--master-addr", "127.0.0.1", "--master-port", str(port)],
                _args(tmp_path, out),
            ),
            _env(),
        )
        for rank in (0, 1)
    ]
    outputs = _wait(nodes)
    assert "(2 processes)" in outputs[0]
    _same_weights(reference[0] / "model_final.pth", out / "model_final.pth")


def test_a_killed_worker_restarts_the_group_and_training_resumes(tmp_path, reference):
    out = tmp_path / "run"
    command = _torchrun(
        ["--standalone", "--nproc-per-node", "2", "--max-restarts", "1"], [*_args(tmp_path, out), "--auto-resume"]
    )
    # rank 1 dies during its 6th step (iteration 5), after the checkpoint of iteration 3
    (output,) = _wait([_start(command, _env(RETINA_TEST_KILL_AT_STEP="6"))])
    log = (out / "log.txt").read_text()
    assert f"--auto-resume: {out} holds no run yet: starting a new one" in log
    assert f"--auto-resume: {out} holds a run of this recipe: continuing it" in log
    assert f"resuming from {out / 'model_0000003.pth'} at iteration 4 of 8" in log
    _same_weights(reference[0] / "model_final.pth", out / "model_final.pth")


def test_ctrl_c_of_a_num_processes_run_checkpoints_and_resume_matches(tmp_path, reference):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "retinacli", *_args(tmp_path, out), "--num-processes", "2"]
    parent = _start(command, _env())
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics.is_file() and metrics.read_text().count("loss_cls") >= 1):
        assert parent.poll() is None, parent.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no training line in time"
        time.sleep(0.02)
    parent.send_signal(signal.SIGINT)  # what a Ctrl-C at the terminal sends to `retina train`
    output, _ = parent.communicate(timeout=240)
    assert parent.returncode == 130, output[-3000:]
    assert "interrupted by SIGINT after iteration " in output and "Resume with:" in output
    assert "--resume --num-processes 2" in output
    stopped_at = load_checkpoint(out / (out / "last_checkpoint").read_text())["iteration"]
    assert stopped_at < 7  # stopped early, with a checkpoint of the iteration it stopped after

    resumed = _start([*command, "--resume"], _env())
    (output,) = _wait([resumed])
    assert f"resuming from {out / (f'model_{stopped_at:07d}.pth')} at iteration {stopped_at + 1} of 8" in output
    _same_weights(reference[0] / "model_final.pth", out / "model_final.pth")
