"""Reinforcement learning: PPO on Gymnasium environments, with the supervised runs' machinery.

    layerwise rl recipes/cartpole.yaml            train (a run directory as `layerwise train` writes)
    layerwise rl --resume RUN_DIR                  continue exactly where it stopped
    layerwise play RUN_DIR --episodes 10           the trained agent's returns (and a GIF)

gymnasium is optional (``pip install 'layerwise[rl]'``); it is imported when an environment is made.
"""

from __future__ import annotations

import importlib
from typing import Any

from layerwise.rl.config import RLConfig

# The trainer and player import torch (~2 s): they load on first use, so that reading an RL config
# (`layerwise train --help`, recipe detection) costs no torch import (issue 14, start-up time).
_LAZY = {"PPOTrainer": "trainer", "evaluate_policy": "trainer", "random_policy": "trainer", "resume_rl": "trainer",
         "train_rl": "trainer", "play": "play"}

__all__ = ["PPOTrainer", "RLConfig", "evaluate_policy", "play", "random_policy", "resume_rl", "train_rl"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"layerwise.rl.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'layerwise.rl' has no attribute {name!r}")
