"""Gymnasium environments: checked creation, a vectorized set whose state can be saved, evaluation episodes.

Actions are discrete (``Discrete(n)``: a categorical policy) or a bounded vector (a 1-D ``Box``: a
Gaussian policy, its draws clipped to the bounds before they reach the environment, as CleanRL's
``ClipAction``; the log-probability is of the unclipped draw).

gymnasium is an optional dependency (``pip install 'layerwise[rl]'``), imported on first use. The
vector environment is gymnasium's ``SyncVectorEnv`` in same-step autoreset mode: the step that ends an
episode returns the next episode's first observation, and the last observation of the ended one in
``infos["final_obs"]`` (needed to bootstrap the value of a truncated episode).

Exact resume needs each environment's whole state: the simulator's variables (the unwrapped env's plain
attributes: CartPole's ``state`` and ``steps_beyond_terminated``, Acrobot's ``state``, ...), its random
generator (``np_random``), the step counter of the ``TimeLimit`` wrapper and the vector env's autoreset
flags. :func:`env_state` / :func:`load_env_state` save and restore them as plain values (no pickle).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from typing import Any

import numpy as np

from layerwise.config import ConfigError
from layerwise.data import DataError


def gymnasium():
    """The gymnasium module; ConfigError saying how to install it when it is missing."""
    try:
        import gymnasium
    except ImportError:
        raise ConfigError("reinforcement learning needs gymnasium, which is not installed. Install it with "
                          "`pip install 'layerwise[rl]'` (or `pip install gymnasium`).") from None
    return gymnasium


def check_env_id(env_id: str) -> None:
    """ConfigError naming close matches when ``env_id`` is not a registered Gymnasium environment."""
    gym = gymnasium()
    if env_id in gym.envs.registry:
        return
    ids = list(gym.envs.registry)
    close = difflib.get_close_matches(env_id, ids, n=3, cutoff=0.5)
    close = close or [i for i in ids if env_id.lower().split("-")[0] in i.lower()][:3]
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(f"env.id '{env_id}' is not a registered Gymnasium environment.{hint} Classic control: "
                      f"CartPole-v1, Acrobot-v1, MountainCar-v0 (discrete actions), Pendulum-v1 (continuous).")


def make_env(env_id: str, max_episode_steps: int = 0, render_mode: str | None = None):
    """One environment (TimeLimit-wrapped), checked to have discrete or bounded 1-D continuous actions
    and flat observations."""
    gym = gymnasium()
    check_env_id(env_id)
    kwargs = {"max_episode_steps": max_episode_steps} if max_episode_steps else {}
    try:
        env = gym.make(env_id, render_mode=render_mode, disable_env_checker=True, **kwargs)
    except gym.error.DependencyNotInstalled as e:
        raise ConfigError(f"env.id '{env_id}' needs a package that is not installed ({e}).") from None
    act, obs = env.action_space, env.observation_space
    box = isinstance(act, gym.spaces.Box) and len(act.shape) == 1
    if not (isinstance(act, gym.spaces.Discrete) or (box and np.isfinite(act.low).all() and np.isfinite(act.high).all())):
        env.close()
        raise ConfigError(f"env.id '{env_id}' has {type(act).__name__} actions {act}; PPO here supports Discrete "
                          f"actions (a categorical policy) and a bounded 1-D Box of continuous actions (a Gaussian "
                          f"policy). Choose such an environment, e.g. CartPole-v1, Acrobot-v1 or Pendulum-v1.")
    if not (isinstance(obs, gym.spaces.Box) and len(obs.shape) == 1):
        env.close()
        raise ConfigError(f"env.id '{env_id}' has observations {obs}; the actor-critic MLP takes a flat Box "
                          f"of numbers (obs_dim,). Choose a classic-control environment.")
    return env


def spaces_of(env_id: str, max_episode_steps: int = 0) -> tuple[int, int, bool]:
    """(observation size, number of actions or the action vector's size, whether actions are continuous)
    of a checked environment."""
    env = make_env(env_id, max_episode_steps)
    try:
        act = env.action_space
        continuous = not hasattr(act, "n")
        return int(env.observation_space.shape[0]), int(act.shape[0] if continuous else act.n), continuous
    finally:
        env.close()


def to_env(actions: np.ndarray, space) -> np.ndarray:
    """Policy actions as the environment takes them: continuous ones clipped to the Box's bounds."""
    return np.clip(actions, space.low, space.high) if hasattr(space, "low") else actions


def make_vector_env(env_id: str, num_envs: int, max_episode_steps: int = 0):
    """gymnasium's SyncVectorEnv of ``num_envs`` copies, same-step autoreset, observations not copied."""
    gym = gymnasium()
    make_env(env_id, max_episode_steps).close()  # check once, with the clear errors
    return gym.vector.SyncVectorEnv([lambda: make_env(env_id, max_episode_steps) for _ in range(num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, copy=False)


def check_finite(obs: np.ndarray, env_id: str, what: str) -> None:
    """DataError when an environment returns NaN or an infinity (a broken simulator or wrapper)."""
    if not np.isfinite(obs).all():
        raise DataError(f"environment '{env_id}' returned a non-finite {what} ({obs.tolist()}): the simulator "
                        f"diverged or a wrapper is broken. Check the environment (its version and settings); "
                        f"the run's checkpoints are kept.")


# ------------------------------------------------------------------ saving and restoring the state
def _encode(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return {"ndarray": v.tolist(), "dtype": str(v.dtype), "shape": list(v.shape)}
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_encode(x) for x in v]
    return v


def _decode(v: Any) -> Any:
    if isinstance(v, dict) and "ndarray" in v:
        return np.array(v["ndarray"], dtype=v["dtype"]).reshape(v["shape"])
    return v


def _plain(v: Any) -> bool:
    """Whether an attribute is simulator state that saves as plain values (not a pygame surface)."""
    if v is None or isinstance(v, (bool, int, float, str, np.generic)):
        return True
    if isinstance(v, np.ndarray):
        return v.dtype.kind in "biuf"
    if isinstance(v, (list, tuple)):
        return all(isinstance(x, (bool, int, float, np.generic)) for x in v)
    return False


def _time_limit(env):
    from gymnasium.wrappers import TimeLimit

    while env is not None:
        if isinstance(env, TimeLimit):
            return env
        env = getattr(env, "env", None)
    return None


def env_state(vec) -> dict[str, Any]:
    """The vector environment's whole state as plain values (saved in checkpoints)."""
    out = []
    for env in vec.envs:
        u = env.unwrapped
        attrs = {k: _encode(v) for k, v in vars(u).items() if not k.startswith("_") and k != "render_mode"
                 and _plain(v)}
        limit = _time_limit(env)
        # the generator's state holds 128-bit integers: kept as JSON text
        out.append({"attrs": attrs, "np_random": json.dumps(u.np_random.bit_generator.state),
                    "elapsed_steps": None if limit is None else limit._elapsed_steps})
    return {"envs": out, "autoreset": vec._autoreset_envs.tolist()}


def load_env_state(vec, state: dict[str, Any]) -> None:
    """Restore :func:`env_state` into a vector environment of the same id and size."""
    if len(state["envs"]) != len(vec.envs):
        raise ValueError(f"the saved state has {len(state['envs'])} environments, this run {len(vec.envs)}")
    for env, s in zip(vec.envs, state["envs"], strict=True):
        u = env.unwrapped
        for k, v in s["attrs"].items():
            setattr(u, k, _decode(v))
        u.np_random.bit_generator.state = json.loads(s["np_random"])
        limit = _time_limit(env)
        if limit is not None:
            limit._elapsed_steps = s["elapsed_steps"]
    vec._autoreset_envs = np.array(state["autoreset"], dtype=np.bool_)


# ------------------------------------------------------------------ evaluation episodes
def run_episodes(env_id: str, act: Callable[[np.ndarray, list[int]], np.ndarray], episodes: int, seed: int,
                 max_episode_steps: int = 0, batch: int = 32) -> list[tuple[float, int]]:
    """(return, length) of ``episodes`` episodes, episode i reset with seed ``seed + i``.

    ``act(obs (K, obs_dim) float32, episode indices [K]) -> actions (K,)`` chooses the actions of the K
    running episodes at once (up to ``batch`` run side by side). Results are in episode order and do not
    depend on ``batch`` when ``act`` is deterministic per episode (greedy, or seeded per episode)."""
    results: list[tuple[float, int] | None] = [None] * episodes
    envs = [make_env(env_id, max_episode_steps) for _ in range(min(batch, episodes))]
    try:
        slots: list[int | None] = [None] * len(envs)  # the episode each env is running
        obs = [None] * len(envs)
        ret = [0.0] * len(envs)
        length = [0] * len(envs)
        next_episode = 0
        while True:
            for i, env in enumerate(envs):
                if slots[i] is None and next_episode < episodes:
                    slots[i], next_episode = next_episode, next_episode + 1
                    obs[i], _ = env.reset(seed=seed + slots[i])
                    ret[i], length[i] = 0.0, 0
            live = [i for i in range(len(envs)) if slots[i] is not None]
            if not live:
                return results
            x = np.stack([obs[i] for i in live]).astype(np.float32)
            check_finite(x, env_id, "observation")
            actions = to_env(np.asarray(act(x, [slots[i] for i in live])), envs[0].action_space)
            for i, a in zip(live, actions, strict=True):
                obs[i], r, term, trunc, _ = envs[i].step(a if a.ndim else int(a))
                ret[i] += float(r)
                length[i] += 1
                if term or trunc:
                    results[slots[i]] = (ret[i], length[i])
                    slots[i] = None
    finally:
        for env in envs:
            env.close()


def random_actions(space, seed: int) -> Callable[[np.ndarray, list[int]], np.ndarray]:
    """A uniformly random policy (over the actions of a Discrete space, or within a Box's bounds) whose
    draws in episode i come from a generator seeded (seed, i)."""
    rngs: dict[int, np.random.Generator] = {}

    def draw(rng: np.random.Generator):
        return rng.uniform(space.low, space.high) if hasattr(space, "low") else rng.integers(space.n)

    def act(obs: np.ndarray, episodes: list[int]) -> np.ndarray:
        for e in episodes:
            if e not in rngs:
                rngs[e] = np.random.default_rng([seed, e])
        return np.array([draw(rngs[e]) for e in episodes])

    return act
