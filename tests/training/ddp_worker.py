"""Run under torchrun by tests/training/test_distributed.py: train, then save this rank's weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from retinacli.commands.train import train_from_recipe
from retinacli.recipe import load_recipe

if __name__ == "__main__":
    recipe_path, out_file, overrides = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    torch.set_num_threads(1)
    result = train_from_recipe(load_recipe(recipe_path, overrides))
    import os

    rank = int(os.environ["RANK"])
    torch.save({k: v.detach().cpu() for k, v in result.model.named_parameters()}, f"{out_file}.rank{rank}")
