"""``layerwise play RUN_DIR``: the trained agent plays episodes; their returns, and a GIF of one.

The policy is read from the run's model.safetensors (no pickle). Episodes are reset with seeds
``seed``, ``seed + 1``, ... so two calls with the same seed play the same games. Rendering a
classic-control environment to frames needs pygame (in ``layerwise[rl]``); it runs headless
(SDL's dummy video driver), and without pygame the returns are still reported and the GIF is
skipped with a message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from layerwise.train.run import RunDirError, load_model


def load_agent(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """(policy model in eval mode, its task metadata: env_id, max_episode_steps, ...) of an RL run or
    its model.safetensors; RunDirError naming the problem for anything else."""
    path = Path(run_dir)
    if path.is_dir() and not (path / "model.safetensors").is_file():
        if (path / "config.yaml").is_file() and (path / "checkpoints").is_dir():
            raise RunDirError(f"'{path}' has no model.safetensors: its training has not finished. Finish it with "
                              f"`layerwise rl --resume {path}`, then play it.")
        raise RunDirError(f"no saved model at '{path / 'model.safetensors'}'. Give the directory of a finished "
                          f"`layerwise rl` run.")
    model, meta = load_model(path, device)
    task = meta.get("task") or {}
    if task.get("name") != "rl" or not hasattr(model, "policy_and_value"):
        raise RunDirError(f"'{path}' holds a {task.get('name', 'supervised')} model, not a reinforcement-learning "
                          f"agent. `layerwise play` takes a run of `layerwise rl` (e.g. recipes/cartpole.yaml); "
                          f"use `layerwise predict` for this one.")
    return model, task


def play(run_dir: str | Path, episodes: int = 10, seed: int = 0, policy: str = "greedy", gif: str | Path | None = None,
         device: str = "cpu") -> dict[str, Any]:
    """Play ``episodes`` episodes with the run's policy (greedy: argmax of the logits; or sample).

    Returns {env, policy, returns (list, one per episode), mean, std, lengths, gif (path or None),
    gif_note (why there is none)}. ``gif`` renders episode 0 (the one reset with ``seed``) to an
    animated GIF at the environment's frame rate. Raises RunDirError for a run directory without an
    RL model, ConfigError for an environment that cannot be made, DataError for NaN observations."""
    from layerwise.config import ConfigError
    from layerwise.rl.trainer import evaluate_policy

    if episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {episodes}.")
    if seed < 0:
        raise ConfigError(f"--seed must be >= 0 (Gymnasium resets episode i with seed + i), got {seed}.")
    if policy not in ("greedy", "sample"):
        raise ConfigError(f"--policy must be greedy or sample, got '{policy}'.")
    if gif and Path(gif).suffix.lower() != ".gif":
        raise ConfigError(f"--gif {gif}: the animation is written as a GIF; give a path ending in .gif.")
    if gif and not Path(gif).expanduser().parent.is_dir():
        raise ConfigError(f"--gif {gif}: the folder '{Path(gif).expanduser().parent}' does not exist; create it "
                          f"or choose a path in an existing folder.")
    model, task = load_agent(run_dir, device)
    env_id, limit = task["env_id"], int(task.get("max_episode_steps") or 0)
    stats = evaluate_policy(model, env_id, episodes, seed, policy, limit, device, sample_seed=seed)
    out = {"env": env_id, "policy": policy, "episodes": episodes, "mean": stats["mean"], "std": stats["std"],
           "returns": stats["returns"], "length": stats["length"], "gif": None, "gif_note": None}
    if gif:
        out["gif"], out["gif_note"] = write_gif(model, env_id, Path(gif), seed, limit, device)
    return out


def write_gif(model: torch.nn.Module, env_id: str, path: Path, seed: int, max_episode_steps: int = 0,
              device: str | torch.device = "cpu", max_frames: int = 1000) -> tuple[str | None, str | None]:
    """Render one greedy episode (reset with ``seed``) to ``path`` (every other frame, at half the
    environment's resolution, played at its real speed); (path, None), or (None, why not)."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # no display needed
    from layerwise.rl.envs import check_finite, gymnasium, make_env, to_env
    from layerwise.rl.policy import greedy

    gym = gymnasium()
    try:
        env = make_env(env_id, max_episode_steps, render_mode="rgb_array")
        obs, _ = env.reset(seed=seed)
        frames = [env.render()]
    except (gym.error.Error, ImportError, OSError, RuntimeError) as e:  # no pygame; an SDL error (RuntimeError)
        return None, (f"no GIF: rendering {env_id} failed ({type(e).__name__}: {e}). Install pygame "
                      f"(`pip install 'layerwise[rl]'`) to render classic-control environments.")
    from PIL import Image

    try:
        fps = int(env.metadata.get("render_fps") or 50)
        done = False
        with torch.no_grad():
            while not done and len(frames) < max_frames:
                x = np.asarray(obs, dtype=np.float32)[None]
                check_finite(x, env_id, "observation")
                action = to_env(greedy(model, model(torch.from_numpy(x).to(device)))[0].cpu().numpy(),
                                env.action_space)
                obs, _r, term, trunc, _ = env.step(action if action.ndim else int(action))
                done = term or trunc
                frames.append(env.render())
    finally:
        env.close()
    # every other frame at half size, 64 colours: a 500-step CartPole episode in a few hundred KB
    images = [Image.fromarray(f).reduce(2).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
              for f in frames[::2]]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=round(2000 / fps), loop=0)
    os.replace(tmp, path)  # a reader never sees half a GIF
    return str(path), None
