"""Run by torchrun in tests/training/test_distributed_elastic.py: `retina train ARGS...` as
`python -m retinacli` runs it, with two test hooks set through the environment:

- RETINA_TEST_KILL_AT_STEP=k: in the first attempt (TORCHELASTIC_RESTART_COUNT 0), the rank-1
  worker kills itself with SIGKILL during its k-th training step, as a crashed machine would;
- RETINA_TEST_RECORD=PATH: every rank appends what its own steps computed (the losses, its loss
  normaliser) to PATH.rank<r>, one JSON line per iteration.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import torch

from retinacli.training import loop

if __name__ == "__main__":
    torch.set_num_threads(1)
    rank = os.environ.get("RANK", "0")
    real_step = loop.Trainer._step
    calls = {"n": 0}
    kill_at = int(os.environ.get("RETINA_TEST_KILL_AT_STEP", "0"))
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    record = os.environ.get("RETINA_TEST_RECORD")

    def step(self, batch):
        calls["n"] += 1
        if kill_at and rank == "1" and first_attempt and calls["n"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        values = real_step(self, batch)
        if record and values is not None:
            with open(f"{record}.rank{rank}", "a", encoding="utf-8") as handle:
                line = {"iteration": self._iteration, **values, "loss_normalizer": self.model.loss_normalizer}
                handle.write(json.dumps(line) + "\n")
        return values

    loop.Trainer._step = step
    sys.argv = ["retina", *sys.argv[1:]]
    from retinacli.cli import main

    main()
