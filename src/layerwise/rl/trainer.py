"""PPO's loop: collect a rollout from vectorized environments, estimate advantages, update, log, save.

Read :meth:`PPOTrainer._fit` top to bottom: per update, set the learning rate from the schedule, play
``ppo.num_steps`` steps in each of ``env.num_envs`` environments with the current policy, compute GAE,
then ``ppo.update_epochs`` passes of ``ppo.num_minibatches`` minibatches of the clipped objective. The
rest borrows the supervised machinery: the model registry, ``build_optimizer``, the schedules, atomic
checkpoints (with the environments' and RNGs' states, for exact resume), the run directory,
metrics.jsonl, the progress display and the plots.

Acting reads one tensor per step to the host (the actions the environments need); nothing else syncs
per step. Metrics are read once per update.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from layerwise.config import ConfigError, config_changes, load_config, save_config, with_defaults
from layerwise.models import model_args
from layerwise.rl.config import RL_RESUMABLE_KEYS, RLConfig, is_rl_run
from layerwise.rl.envs import (
    check_finite,
    env_state,
    load_env_state,
    make_vector_env,
    random_actions,
    run_episodes,
    spaces_of,
    to_env,
)
from layerwise.rl.policy import greedy, log_prob_entropy, sample
from layerwise.rl.ppo import explained_variance, gae, ppo_loss
from layerwise.train import checkpoint as ckpt
from layerwise.train.metrics import MetricsLog, plot_metrics
from layerwise.train.optim import build_optimizer
from layerwise.train.progress import ProgressDisplay
from layerwise.train.run import RunDirError, check_state_matches, environment, new_run_dir, save_model, write_json
from layerwise.train.schedule import apply_lr, lr_multiplier
from layerwise.train.trainer import TrainingDiverged, build_model, resolve_device, seed_everything

# metric keys that measure time, not learning: they differ between a resumed run and a straight one
TIMING_KEYS = ("sps", "seconds")


class PPOTrainer:
    """Builds environments, actor-critic and optimizer from an :class:`RLConfig` and trains them with PPO.

    ``run_dir`` with ``resume=True`` continues a run from its newest valid checkpoint, bit for bit as
    if it had not stopped (same environments, same RNG draws, same minibatches)."""

    def __init__(self, cfg: RLConfig, run_dir: Path | None = None, resume: bool = False,
                 show_progress: bool = True):
        import dataclasses

        if not cfg.run.name:
            cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name=cfg.env.id.split("/")[-1].lower()))
        self.cfg = cfg
        e, t = cfg.env, cfg.train
        if resume:
            self._resume_changes = check_rl_resume(run_dir, cfg)
        if t.threads:
            torch.set_num_threads(t.threads)
        self.device = resolve_device(t.device)
        seed_everything(t.seed)
        self.obs_dim, self.num_actions, self.continuous = spaces_of(e.id, e.max_episode_steps)
        args = dict(cfg.model.args)
        if "policy" in model_args(cfg.model.name):  # the action space decides the policy's distribution
            want = "gaussian" if self.continuous else "categorical"
            if args.setdefault("policy", want) != want:
                raise ConfigError(f"model.policy={args['policy']} does not fit env.id '{e.id}', whose actions are "
                                  f"{'continuous' if self.continuous else 'discrete'}: use model.policy={want} or "
                                  f"leave it out (it follows the environment).")
        try:
            self.model = build_model(cfg.model.name, (self.obs_dim,), self.num_actions, args, self.device)
        except (ValueError, TypeError) as err:  # a family that cannot take flat observations at all
            if cfg.model.name == "actor-critic":
                raise
            raise ConfigError(f"model.name={cfg.model.name!r} cannot be a PPO agent for env.id '{e.id}' ({err}). "
                              f"PPO needs a policy and a value function on flat observations: use "
                              f"model.name=actor-critic.") from None
        if not hasattr(self.model, "policy_and_value"):
            raise ConfigError(f"model.name={cfg.model.name!r} has no value head; PPO needs a policy and a value "
                              f"function: use model.name=actor-critic.")
        o = cfg.optim
        self.optimizer = build_optimizer(
            self.model, o.name, lr=o.lr, weight_decay=o.weight_decay, momentum=o.momentum, nesterov=o.nesterov,
            betas=tuple(o.betas), eps=o.eps, muon_lr=o.muon_lr, muon_momentum=o.muon_momentum,
            muon_rest=o.muon_rest, muon_normalize=o.muon_normalize, muon_ns_steps=o.muon_ns_steps,
            no_decay_lr_scale=o.no_decay_lr_scale, device_type=self.device.type)
        self.num_updates = cfg.num_updates
        warm = o.warmup_steps or int(o.warmup_fraction * self.num_updates)
        self.schedule = {"total_steps": self.num_updates, "schedule": o.schedule, "warmup_steps": warm,
                         "min_ratio": o.min_lr_ratio, "start_ratio": o.start_lr_ratio}
        try:
            lr_multiplier(0, **self.schedule)  # before any file is written
        except ValueError as err:
            raise ConfigError(f"optim: {err} (the schedule counts PPO updates: {self.num_updates} in this run).") from None

        self.envs = make_vector_env(e.id, e.num_envs, e.max_episode_steps)
        obs, _ = self.envs.reset(seed=t.seed)  # env i: seed + i
        self.next_obs = torch.tensor(obs, dtype=torch.float32)  # (N, obs_dim)
        # loop state (all of it goes into checkpoints)
        self.update = 0
        self.global_step = 0  # environment steps, over all environments
        self.train_seconds = 0.0
        self.episode_return = np.zeros(e.num_envs)  # of the running episodes
        self.episode_length = np.zeros(e.num_envs, dtype=np.int64)
        self.finished: list[tuple[float, int]] = []  # episodes ended since the last log line
        self.sums: dict[str, float] = {}  # diagnostics summed since the last log line
        self.sum_updates = 0
        from layerwise.insight.energy import TrainingEnergy
        self.energy = TrainingEnergy(cfg.run, self.device)  # joules of training and evaluation

        if resume:
            self.run_dir = Path(run_dir)
        else:
            self.run_dir = new_run_dir(cfg.run.root, cfg.run.name, str(run_dir) if run_dir else cfg.run.dir)
            save_config(cfg, self.run_dir / "config.yaml")
            write_json(self.run_dir / "env.json", environment(self.device, t.seed) | {"rl": {
                "env_id": e.id, "gymnasium": _gym_version(), "obs_dim": self.obs_dim, "actions": self.num_actions}})
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.log = MetricsLog(self.run_dir / "metrics.jsonl", cfg.run.tensorboard)
        if resume:
            self._load_checkpoint()
        self.display = ProgressDisplay(self.num_updates * cfg.batch_size, self.global_step, enabled=show_progress)
        if resume:
            self._record_resume()

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, Any]:
        """Train to ``num_updates``, evaluate, save the model; returns the summary."""
        from layerwise.deploy.status import running_marker  # RUN_DIR/running.json: `layerwise runs` says running

        try:
            with running_marker(self.run_dir, "rl"):
                self._fit()
                return self._finish()
        finally:
            self.display.close()
            self.envs.close()
            self.log.close()

    def _fit(self) -> None:
        cfg, p = self.cfg, self.cfg.ppo
        n, steps = cfg.env.num_envs, p.num_steps
        # rollout storage, (T, N, ...)
        obs_buf = torch.zeros(steps, n, self.obs_dim)
        actions = (torch.zeros(steps, n, self.num_actions) if self.continuous else
                   torch.zeros(steps, n, dtype=torch.long))
        space = self.envs.single_action_space
        logprobs, values, rewards = torch.zeros(steps, n), torch.zeros(steps, n), torch.zeros(steps, n)
        terminated, dones = torch.zeros(steps, n, dtype=torch.bool), torch.zeros(steps, n, dtype=torch.bool)
        next_values = torch.zeros(steps, n)
        every = cfg.run.checkpoint_every or max(1, self.num_updates // 10)
        self.energy.start()
        while self.update < self.num_updates:
            start = time.perf_counter()
            lr = apply_lr(self.optimizer, lr_multiplier(self.update, **self.schedule))
            self.model.eval()
            with torch.no_grad():
                trunc_values: list[tuple[int, np.ndarray, torch.Tensor]] = []
                for step in range(steps):
                    obs_buf[step] = self.next_obs
                    head, value = self.model.policy_and_value(self.next_obs.to(self.device))
                    action, logprob = sample(self.model, head)  # (N,) or (N, A)
                    actions[step], values[step], logprobs[step] = action, value, logprob
                    obs, reward, term, trunc, info = self.envs.step(to_env(action.cpu().numpy(), space))
                    check_finite(obs, cfg.env.id, "observation")
                    check_finite(reward, cfg.env.id, "reward")
                    rewards[step] = torch.from_numpy(reward)
                    terminated[step] = torch.from_numpy(term)
                    done = term | trunc
                    dones[step] = torch.from_numpy(done)
                    if trunc.any():  # bootstrap a cut-off episode from V of its final observation
                        idx = np.flatnonzero(trunc)
                        final = np.stack([info["final_obs"][i] for i in idx]).astype(np.float32)
                        check_finite(final, cfg.env.id, "final observation")
                        trunc_values.append((step, idx, self.model.value(torch.from_numpy(final).to(self.device))))
                    self._track_episodes(reward, done)
                    self.next_obs = torch.tensor(obs, dtype=torch.float32)
                last_value = self.model.value(self.next_obs.to(self.device))
                next_values[:-1] = values[1:]
                next_values[-1] = last_value
                for step, idx, v in trunc_values:
                    next_values[step, torch.from_numpy(idx)] = v.float().cpu()
                advantages, returns = gae(rewards, values, next_values, terminated, dones, p.gamma, p.gae_lambda)
            self.global_step += n * steps
            stats = self._learn(obs_buf, actions, logprobs, values, advantages, returns)
            self.update += 1
            self.train_seconds += time.perf_counter() - start
            self._accumulate(stats, lr, n * steps / (time.perf_counter() - start))
            self.display.tick(self.global_step)
            if self.update % cfg.train.log_every == 0 or self.update == self.num_updates:
                self._log()
            if self.update % every == 0 and self.update < self.num_updates:
                self._save_checkpoint()

    def _learn(self, obs_buf, actions, logprobs, values, advantages, returns) -> dict[str, float]:
        """``update_epochs`` passes of minibatch steps of the clipped objective over one rollout."""
        p, dev = self.cfg.ppo, self.device
        b_obs, b_actions = obs_buf.reshape(-1, self.obs_dim).to(dev), actions.flatten(0, 1).to(dev)
        b_logprobs, b_values = logprobs.reshape(-1).to(dev), values.reshape(-1).to(dev)
        b_adv, b_returns = advantages.reshape(-1).to(dev), returns.reshape(-1).to(dev)
        batch = b_obs.shape[0]
        mb = batch // p.num_minibatches
        clip = self.cfg.optim.clip_grad_norm
        self.model.train()
        totals: dict[str, torch.Tensor] = {}
        taken = 0
        for _epoch in range(p.update_epochs):
            order = torch.randperm(batch)
            kl_sum = torch.zeros(())
            for k in range(p.num_minibatches):
                idx = order[k * mb:(k + 1) * mb].to(dev)
                head, new_value = self.model.policy_and_value(b_obs[idx])
                new_logprob, entropy = log_prob_entropy(self.model, head, b_actions[idx])
                loss, stats = ppo_loss(new_logprob, b_logprobs[idx], b_adv[idx], new_value, b_values[idx],
                                       b_returns[idx], entropy, clip_coef=p.clip_coef, vf_coef=p.vf_coef,
                                       ent_coef=p.ent_coef, clip_vloss=p.clip_vloss, norm_adv=p.norm_adv)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if clip:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
                self.optimizer.step()
                stats["loss"] = loss.detach()
                for key, v in stats.items():
                    totals[key] = totals.get(key, 0) + v
                kl_sum = kl_sum + stats["approx_kl"]
                taken += 1
            if p.target_kl and (kl_sum / p.num_minibatches).item() > p.target_kl:
                break
        out = {k: (v / taken).item() for k, v in totals.items()}  # one read per update
        if not all(math.isfinite(v) for v in out.values()):
            raise TrainingDiverged(f"PPO update {self.update + 1} gave a non-finite loss ({out}). Lower optim.lr, "
                                   f"keep optim.clip_grad_norm > 0, or check the environment's rewards; the "
                                   f"checkpoints in '{self.ckpt_dir}' hold the run before this update.")
        with torch.no_grad():
            out["explained_variance"] = explained_variance(b_values, b_returns)
        return out

    # ------------------------------------------------------------------ episodes and metrics
    def _track_episodes(self, reward: np.ndarray, done: np.ndarray) -> None:
        self.episode_return += reward
        self.episode_length += 1
        for i in np.flatnonzero(done):
            self.finished.append((float(self.episode_return[i]), int(self.episode_length[i])))
            self.episode_return[i] = 0.0
            self.episode_length[i] = 0

    def _accumulate(self, stats: dict[str, float], lr: float, sps: float) -> None:
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.sums["lr"] = lr  # the last update's
        self.sums["sps"] = sps
        self.sum_updates += 1

    def _log(self) -> None:
        n = self.sum_updates
        record = {"kind": "train", "step": self.global_step, "update": self.update}
        if self.finished:
            rets = [r for r, _ in self.finished]
            record |= {"episodic_return": sum(rets) / len(rets), "episode_length":
                       sum(length for _, length in self.finished) / len(self.finished), "episodes": len(rets)}
        record |= {k: (v if k in ("lr", "sps") else v / n) for k, v in self.sums.items()}
        record["seconds"] = round(self.train_seconds, 3)
        record |= self.energy.log_fields()
        self.log.write(record)
        ret = record.get("episodic_return")
        self.display.update(self.global_step, None, {"loss": record["loss"], "episodic_return": ret,
                                                     "lr": record["lr"], "examples_per_sec": record["sps"]},
                            headline="episodic_return", unit="steps/s")
        self.finished, self.sums, self.sum_updates = [], {}, 0

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        return {
            "update": self.update, "global_step": self.global_step, "train_seconds": self.train_seconds,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "envs": env_state(self.envs), "next_obs": self.next_obs.clone(),
            "episode_return": self.episode_return.tolist(), "episode_length": self.episode_length.tolist(),
            "finished": [list(f) for f in self.finished], "sums": dict(self.sums), "sum_updates": self.sum_updates,
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                    "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]]},
            "config": self.cfg.to_dict(), "energy": self.energy.state_dict(),
        }

    def _save_checkpoint(self) -> None:
        ckpt.save_checkpoint(self.ckpt_dir, self.update, self.state_dict(), self.cfg.run.keep_checkpoints)

    def _load_checkpoint(self) -> None:
        def load_one(path: Path) -> dict[str, Any]:
            state = ckpt.read_checkpoint(path)
            if state.get("config"):
                refuse_rl_changes(config_changes(with_defaults(state["config"], RLConfig), self.cfg.to_dict()),
                                  f"config.yaml differs from the config checkpoint {path.name} was trained with",
                                  self.run_dir)
            try:
                check_state_matches(state["model"], self.model, path.name)
            except RunDirError as err:
                raise ckpt.CheckpointError(str(err)) from None
            return state

        state, path = ckpt.load_newest(self.ckpt_dir, ckpt.list_checkpoints(self.ckpt_dir), load_one)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        load_env_state(self.envs, state["envs"])
        self.next_obs = state["next_obs"].clone()
        self.update, self.global_step = int(state["update"]), int(state["global_step"])
        self.train_seconds = float(state["train_seconds"])
        self.energy.load_state_dict(state.get("energy"), self.global_step)
        self.episode_return = np.array(state["episode_return"], dtype=np.float64)
        self.episode_length = np.array(state["episode_length"], dtype=np.int64)
        self.finished = [(float(r), int(n)) for r, n in state["finished"]]
        self.sums, self.sum_updates = dict(state["sums"]), int(state["sum_updates"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        random.setstate(_tuples(rng["python"]))
        np_state = rng["numpy"]
        np.random.set_state((np_state[0], np_state[1].numpy(), *np_state[2:]))
        self.log.truncate_after(self.global_step)
        self.resumed_from = path

    def _record_resume(self) -> None:
        changes = self._resume_changes
        if changes:
            save_config(self.cfg, self.run_dir / "config.yaml")
        self.log.write({"kind": "resume", "step": self.global_step, "update": self.update,
                        "from": self.resumed_from.name, "changed": {k: [a, b] for k, (a, b) in changes.items()}})
        self.display.message(f"resumed from {self.resumed_from} at update {self.update}/{self.num_updates}")

    # ------------------------------------------------------------------ the end of a run
    def _finish(self) -> dict[str, Any]:
        cfg, ev = self.cfg, self.cfg.eval
        with self.energy.phase("eval"):
            final = evaluate_policy(self.model, cfg.env.id, ev.episodes, ev.seed, ev.policy,
                                    cfg.env.max_episode_steps, self.device, cfg.train.seed)
            rand = (random_policy(cfg.env.id, self.envs.single_action_space, ev.episodes, ev.seed,
                                  cfg.env.max_episode_steps)
                    if ev.random_baseline and ev.episodes else {})
        tests = {"eval_return_mean": final.get("mean"), "eval_return_std": final.get("std"),
                 "eval_episode_length": final.get("length"),
                 "random_return_mean": rand.get("mean"), "random_return_std": rand.get("std")}
        tests = {k: v for k, v in tests.items() if v is not None}
        self.log.write({"kind": "test", "step": self.global_step, "update": self.update,
                        **({"episodic_return": final["mean"]} if final else {}), **tests})
        meta = {"model": self.model.config, "metrics": tests,
                "task": {"name": "rl", "env_id": cfg.env.id, "max_episode_steps": cfg.env.max_episode_steps,
                         "obs_dim": self.obs_dim, "num_actions": self.num_actions, "continuous": self.continuous}}
        save_model(self.run_dir / "model.safetensors", self.model, meta)
        summary = {
            **tests, "headline": "eval_return_mean", "eval_episodes": ev.episodes, "eval_policy": ev.policy,
            "task": "rl", "env": cfg.env.id, "env_steps": self.global_step, "updates": self.update,
            "train_seconds": round(self.train_seconds, 3),
            "sps": round(self.global_step / self.train_seconds) if self.train_seconds else None,
            "params": self.model.num_params(), "model": cfg.model.name, "device": str(self.device),
            "seed": cfg.train.seed, "run_dir": str(self.run_dir),
            **self.energy.summary_fields(self.global_step),  # per example: per environment step
        }
        write_json(self.run_dir / "summary.json", summary)
        if cfg.run.plots:
            records = self.log.records or _read_records(self.log.path)
            plot_metrics(records, self.run_dir / "plots", "episodic_return", xlabel="environment step",
                         extra=("value_loss", "entropy"))
        if cfg.run.report:  # curves, config, environment, energy (deploy/report.py); never fails the run
            from layerwise.deploy.report import write_report_after_run
            write_report_after_run(self.run_dir)
        return summary


def evaluate_policy(model: torch.nn.Module, env_id: str, episodes: int, seed: int, policy: str = "greedy",
                    max_episode_steps: int = 0, device: torch.device | str = "cpu", sample_seed: int = 0
                    ) -> dict[str, Any]:
    """{mean, std, length, returns} of ``episodes`` episodes (episode i reset with seed + i) played by
    ``model``'s policy: greedy (argmax of the logits, or a Gaussian's mean) or sample (draws from a
    generator seeded by ``sample_seed``). std is the population standard deviation over episodes. {}
    for 0 episodes."""
    if episodes <= 0:
        return {}
    gen = torch.Generator().manual_seed(sample_seed)
    model.eval()

    @torch.no_grad()
    def act(obs: np.ndarray, _episodes: list[int]) -> np.ndarray:
        head = model(torch.from_numpy(obs).to(device)).float().cpu()
        if policy == "greedy":
            return greedy(model, head).numpy()
        return sample(model, head, gen)[0].numpy()

    return _episode_stats(run_episodes(env_id, act, episodes, seed, max_episode_steps))


def random_policy(env_id: str, action_space, episodes: int, seed: int, max_episode_steps: int = 0
                  ) -> dict[str, Any]:
    """:func:`evaluate_policy`'s figures for uniformly random actions (of ``action_space``) on the same
    episodes."""
    if episodes <= 0:
        return {}
    return _episode_stats(run_episodes(env_id, random_actions(action_space, seed), episodes, seed,
                                       max_episode_steps))


def _episode_stats(results: list[tuple[float, int]]) -> dict[str, Any]:
    rets = np.array([r for r, _ in results])
    return {"mean": float(rets.mean()), "std": float(rets.std()),
            "length": float(np.mean([n for _, n in results])), "returns": rets.tolist()}


def _gym_version() -> str:
    import gymnasium
    return gymnasium.__version__


def _tuples(x: Any) -> Any:
    """random.setstate wants tuples where a checkpoint may hold lists."""
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def _read_records(path: Path) -> list[dict[str, Any]]:
    import json
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


# ------------------------------------------------------------------ resuming
def refuse_rl_changes(changes: dict[str, tuple[Any, Any]], what: str, run_dir: Path | str) -> None:
    """ConfigError listing the changes that would alter what a resumed run learns (see RL_RESUMABLE_KEYS)."""
    def allowed(key: str) -> bool:
        return any(key == k or (k.endswith(".*") and key.startswith(k[:-1])) for k in RL_RESUMABLE_KEYS)

    bad = {k: v for k, v in changes.items() if not allowed(k)}
    if bad:
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in bad.items())
        raise ConfigError(f"{what}: {listed}. These change what the run learns, so the run in '{run_dir}' cannot "
                          f"be resumed with them (a resumed run continues exactly the run that was started). Resume "
                          f"without them, or start a new run. These may differ: {', '.join(RL_RESUMABLE_KEYS)}.")


def check_rl_resume(run_dir: str | Path, cfg: RLConfig) -> dict[str, tuple[Any, Any]]:
    """How ``cfg`` differs from the config saved in ``run_dir``; ConfigError for a change that alters learning."""
    saved = load_config(Path(run_dir) / "config.yaml", cls=RLConfig).to_dict()
    changes = config_changes(saved, cfg.to_dict())
    refuse_rl_changes(changes, "the settings given on resume differ from the run's", run_dir)
    return changes


def train_rl(cfg: RLConfig, run_dir: str | Path | None = None, show_progress: bool = True) -> dict[str, Any]:
    """Train ``cfg`` with PPO in a new run directory; returns the summary (see summary.json)."""
    return PPOTrainer(cfg, Path(run_dir) if run_dir else None, show_progress=show_progress).fit()


def resume_rl(run_dir: str | Path, show_progress: bool = True, overrides: list[str] = ()) -> dict[str, Any]:
    """Continue the PPO run in ``run_dir`` from its newest valid checkpoint (bit-identical to an
    uninterrupted run)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"'{run_dir}' is not a layerwise run directory (no config.yaml). Give the directory a "
                          f"`layerwise rl` run wrote.")
    if not is_rl_run(run_dir):
        raise RunDirError(f"'{run_dir}' is a supervised run (its config has no env and ppo sections); resume it with "
                          f"`layerwise train --resume {run_dir}`.")
    if (run_dir / "summary.json").is_file():
        raise RunDirError(f"the run in '{run_dir}' already finished (it has summary.json); there is nothing to "
                          f"resume. Start a new run instead.")
    cfg = load_config(run_dir / "config.yaml", list(overrides), cls=RLConfig)
    return PPOTrainer(cfg, run_dir, resume=True, show_progress=show_progress).fit()
