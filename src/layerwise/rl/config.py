"""The config of a reinforcement-learning run (``layerwise rl RECIPE``): typed sections, as supervised runs.

A recipe has the sections env, ppo, model, optim, train, eval and run; loading, ``--section.key=value``
overrides, refusal of unknown keys (naming the closest valid one) and the help text are
:mod:`layerwise.config`'s machinery, applied to :class:`RLConfig`. The optim section is the supervised
one (:class:`layerwise.config.OptimConfig`) with PPO's defaults, the run section the supervised one with
checkpoints counted in PPO updates. Defaults follow CleanRL's ``ppo.py`` (Huang et al. 2022, "CleanRL:
High-quality Single-file Implementations of Deep Reinforcement Learning Algorithms", JMLR 23(274)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerwise.config import (ConfigError, ModelConfig, OptimConfig, RunConfig, _f, energy_checks, load_yaml,
                              optim_checks, sections_to_dict)


@dataclass
class EnvConfig:
    id: str = _f("CartPole-v1", "Gymnasium environment id with flat observations and discrete actions (CartPole-v1, "
                 "Acrobot-v1, MountainCar-v0) or bounded continuous ones (Pendulum-v1; a Gaussian policy)")
    num_envs: int = _f(4, "environments stepped side by side (gymnasium's SyncVectorEnv)")
    max_episode_steps: int = _f(0, "cut episodes at this many steps (truncation; 0 = the environment's own limit)")


@dataclass
class PPOConfig:
    total_steps: int = _f(500_000, "environment steps of training, over all environments (rounded down to whole "
                          "rollouts of env.num_envs x ppo.num_steps)")
    num_steps: int = _f(128, "steps per environment in each rollout")
    gamma: float = _f(0.99, "discount factor per step")
    gae_lambda: float = _f(0.95, "lambda of generalized advantage estimation (Schulman et al. 2016)")
    update_epochs: int = _f(4, "passes over each rollout")
    num_minibatches: int = _f(4, "minibatches per pass (each num_envs x num_steps / num_minibatches samples)")
    clip_coef: float = _f(0.2, "epsilon of the clipped surrogate objective: the ratio is clipped to [1-eps, 1+eps]")
    clip_vloss: bool = _f(True, "clip the value update around the rollout's values by clip_coef as well")
    vf_coef: float = _f(0.5, "weight of the value loss")
    ent_coef: float = _f(0.01, "weight of the entropy bonus")
    norm_adv: bool = _f(True, "normalize advantages per minibatch (mean 0, std 1)")
    target_kl: float = _f(0.0, "stop an update's passes early once the approximate KL exceeds this (0 = off)")


@dataclass
class RLTrainConfig:
    seed: int = _f(0, "seed for weights, environments, action sampling and minibatch order")
    device: str = _f("cpu", "cpu (fastest for small policies: acting is one step at a time), auto, cuda, cuda:N")
    threads: int = _f(1, "CPU threads for torch (0 = torch's default); tiny networks, so 1 by default")
    log_every: int = _f(1, "log metrics every N PPO updates")


@dataclass
class EvalConfig:
    episodes: int = _f(100, "evaluation episodes at the end of training (and for the random policy)")
    policy: str = _f("greedy", "greedy (the most likely action) or sample (draw from the policy)")
    seed: int = _f(1_000_000, "episode i is reset with seed eval.seed + i (the same episodes for every run "
                   "and for the random policy)")
    random_baseline: bool = _f(True, "also measure a uniformly random policy on the same episodes")


@dataclass
class RLRunConfig(RunConfig):
    checkpoint_every: int = _f(0, "write a resumable checkpoint every N PPO updates (0 = every tenth of the run)")
    plots: bool = _f(True, "write PNG plots of the episodic return, losses and learning rate")


def _rl_model() -> ModelConfig:
    return ModelConfig(name="actor-critic", args={})


def _rl_optim() -> OptimConfig:
    # CleanRL ppo.py: Adam lr 2.5e-4 with eps 1e-5, annealed linearly to 0, no weight decay, clip 0.5
    return OptimConfig(lr=2.5e-4, eps=1e-5, weight_decay=0.0, schedule="linear", clip_grad_norm=0.5)


@dataclass
class RLConfig:
    env: EnvConfig = field(default_factory=EnvConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    model: ModelConfig = field(default_factory=_rl_model)
    optim: OptimConfig = field(default_factory=_rl_optim)
    train: RLTrainConfig = field(default_factory=RLTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RLRunConfig = field(default_factory=RLRunConfig)

    def to_dict(self) -> dict[str, Any]:
        return sections_to_dict(self)

    @property
    def batch_size(self) -> int:
        """Samples per rollout: env.num_envs x ppo.num_steps."""
        return self.env.num_envs * self.ppo.num_steps

    @property
    def num_updates(self) -> int:
        """PPO updates (rollout, then update_epochs passes) of the whole run."""
        return self.ppo.total_steps // self.batch_size

    def checks(self) -> list[tuple[bool, str]]:
        """(condition, message) pairs: value checks that the types alone cannot express."""
        p, e = self.ppo, self.env
        return optim_checks(self.optim) + energy_checks(self.run) + [
            (not self.model.init_from and self.optim.body_lr_scale == 1,
             ("model.init_from and optim.body_lr_scale fine-tune a supervised model (`layerwise finetune`); "
              "`layerwise rl` starts its agent from random weights. Leave them out")),
            (e.num_envs >= 1, f"env.num_envs must be >= 1, got {e.num_envs}"),
            (e.max_episode_steps >= 0, "env.max_episode_steps must be >= 0 (0 = the environment's own limit)"),
            (p.num_steps >= 1, f"ppo.num_steps must be >= 1, got {p.num_steps}"),
            (p.total_steps >= self.batch_size,
             (f"ppo.total_steps={p.total_steps} is less than one rollout of env.num_envs x ppo.num_steps = "
              f"{self.batch_size} steps; raise it or shorten the rollout")),
            (0 <= p.gamma <= 1, f"ppo.gamma must be in [0, 1], got {p.gamma}"),
            (0 <= p.gae_lambda <= 1, f"ppo.gae_lambda must be in [0, 1], got {p.gae_lambda}"),
            (p.update_epochs >= 1, "ppo.update_epochs must be >= 1"),
            (p.num_minibatches >= 1 and self.batch_size % p.num_minibatches == 0,
             (f"ppo.num_minibatches={p.num_minibatches} must be >= 1 and divide the rollout of env.num_envs x "
              f"ppo.num_steps = {self.batch_size} samples into equal minibatches")),
            (p.clip_coef > 0, f"ppo.clip_coef must be > 0, got {p.clip_coef}"),
            (p.vf_coef >= 0 and p.ent_coef >= 0, "ppo.vf_coef and ppo.ent_coef must be >= 0"),
            (p.target_kl >= 0, "ppo.target_kl must be >= 0 (0 = off)"),
            (self.train.log_every >= 1, "train.log_every must be >= 1"),
            (self.train.threads >= 0, "train.threads must be >= 0 (0 = torch's default)"),
            (self.eval.episodes >= 1, f"eval.episodes must be >= 1 (the run's headline, eval_return_mean, is the "
                                      f"mean return over them), got {self.eval.episodes}"),
            (self.train.seed >= 0, f"train.seed must be >= 0 (Gymnasium seeds its environments with it), got "
                                   f"{self.train.seed}"),
            (self.eval.seed >= 0, f"eval.seed must be >= 0 (Gymnasium resets episode i with eval.seed + i), got "
                                  f"{self.eval.seed}"),
            (self.eval.policy in ("greedy", "sample"), f"eval.policy must be greedy or sample, got '{self.eval.policy}'"),
            (self.run.keep_checkpoints >= 1, "run.keep_checkpoints must be >= 1"),
            (self.run.checkpoint_every >= 0, "run.checkpoint_every must be >= 0"),
            (self.model.args.get("ensemble", 1) == 1,
             "model.ensemble must be 1 in reinforcement learning: PPO trains one policy"),
        ]


# Keys that do not change what a run learns: a resumed run may change them (the rest are refused).
RL_RESUMABLE_KEYS = ("run.*", "train.device", "train.threads", "train.log_every", "eval.*")


def is_rl_recipe(path: str | Path) -> bool:
    """Whether a recipe (or a run's config.yaml) is a reinforcement-learning one: it has an env or a ppo
    section, which supervised configs lack. False for a file that cannot be read."""
    try:
        raw = load_yaml(path)
    except ConfigError:
        return False
    return isinstance(raw, dict) and ("env" in raw or "ppo" in raw)


def refuse_supervised_recipe(path: str | Path | None) -> None:
    """ConfigError pointing at `layerwise train` / layerwise.fit for a recipe with data or task sections
    and no env or ppo section (a supervised one), instead of 'unknown config section data'."""
    if path is None:
        return
    try:
        raw = load_yaml(path)
    except ConfigError:
        return  # load_config says what is wrong with the file
    if isinstance(raw, dict) and not ("env" in raw or "ppo" in raw) and ("data" in raw or "task" in raw):
        raise ConfigError(f"'{path}' is a supervised recipe (it has a data/task section and no env/ppo): train it "
                          f"with `layerwise train {path}` (Python: layerwise.fit); `layerwise rl` takes a "
                          f"reinforcement-learning recipe such as recipes/cartpole.yaml.")


def is_rl_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a reinforcement-learning run (see :func:`is_rl_recipe`)."""
    return is_rl_recipe(Path(run_dir) / "config.yaml")
