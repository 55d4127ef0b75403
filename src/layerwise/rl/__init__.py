"""Reinforcement learning: PPO on Gymnasium environments, with the supervised runs' machinery.

    layerwise rl recipes/cartpole.yaml            train (a run directory as `layerwise train` writes)
    layerwise rl --resume RUN_DIR                  continue exactly where it stopped
    layerwise play RUN_DIR --episodes 10           the trained agent's returns (and a GIF)

gymnasium is optional (``pip install 'layerwise[rl]'``); it is imported when an environment is made.
"""

from layerwise.rl.config import RLConfig
from layerwise.rl.play import play
from layerwise.rl.trainer import PPOTrainer, evaluate_policy, random_policy, resume_rl, train_rl

__all__ = ["PPOTrainer", "RLConfig", "evaluate_policy", "play", "random_policy", "resume_rl", "train_rl"]
