"""End-to-end PPO runs: learning beats a random policy, exact resume, `layerwise play`, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from layerwise.cli import main
from layerwise.config import load_config
from layerwise.rl import RLConfig, train_rl
from layerwise.rl.trainer import TIMING_KEYS, PPOTrainer

pytest.importorskip("gymnasium", reason="reinforcement learning needs gymnasium: pip install 'layerwise[rl]'")

REPO = Path(__file__).resolve().parents[2]


def _overrides(tmp_path: Path, *extra: str) -> list[str]:
    return [f"--run.root={tmp_path / 'runs'}", "--run.tensorboard=false", "--run.plots=false", *extra]


def _records(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # what a resumed run must repeat: everything but the measured costs (seconds, energy)
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS and not k.startswith("energy_")}
            for r in rows if r["kind"] != "resume"]


def test_brief_cartpole_run_beats_random(tmp_path: Path) -> None:
    # the recipe's settings, shortened to 16 updates (8192 steps, a few seconds): ~90 vs ~22
    cfg = load_config(REPO / "recipes" / "cartpole.yaml",
                      _overrides(tmp_path, "--ppo.total_steps=8192", "--eval.episodes=10", "--run.plots=true"),
                      cls=RLConfig)
    s = train_rl(cfg, show_progress=False)
    assert s["env_steps"] == 8192 and s["updates"] == 8192 // cfg.batch_size == 16
    assert 15 < s["random_return_mean"] < 30  # CartPole's random policy: ~22
    assert s["eval_return_mean"] > 2.5 * s["random_return_mean"]
    run = Path(s["run_dir"])
    assert {p.name for p in (run / "plots").iterdir()} >= {"episodic_return.png", "loss.png", "lr.png"}
    rows = [r for r in _records(run) if r["kind"] == "train"]
    assert len(rows) == s["updates"] and rows[-1]["step"] == 8192
    assert rows[-1]["episodic_return"] > rows[0]["episodic_return"]  # it learned while training
    assert all(0 <= r["clip_fraction"] <= 1 and r["approx_kl"] >= 0 for r in rows)
    assert rows[-1]["lr"] < rows[0]["lr"]  # annealed


@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1"])  # a categorical and a Gaussian policy
def test_resume_is_bit_identical(env: str, tmp_path: Path, monkeypatch, capsys) -> None:
    common = _overrides(tmp_path, "--ppo.total_steps=2048", "--ppo.num_steps=64", "--env.num_envs=4",
                        "--env.max_episode_steps=40", "--run.checkpoint_every=3", "--eval.episodes=3",
                        f"--env.id={env}")
    straight = train_rl(load_config(None, common + ["--run.name=straight"], cls=RLConfig), show_progress=False)

    class Stop(Exception):
        pass

    save = PPOTrainer._save_checkpoint

    def save_then_stop(self):  # the process dies right after its first checkpoint (update 3 of 8)
        save(self)
        raise Stop

    monkeypatch.setattr(PPOTrainer, "_save_checkpoint", save_then_stop)
    cfg = load_config(None, common + ["--run.name=stopped"], cls=RLConfig)
    with pytest.raises(Stop):
        train_rl(cfg, show_progress=False)
    monkeypatch.setattr(PPOTrainer, "_save_checkpoint", save)
    run = next((tmp_path / "runs").glob("stopped-*"))
    assert main(["info", str(run)]) == 0  # an unfinished run says how to continue it
    assert "layerwise rl --resume" in capsys.readouterr().out
    torch.manual_seed(12345)  # the process's RNGs are not the stopped run's: the checkpoint restores them
    assert main(["rl", "--resume", str(run), "--quiet"]) == 0
    a, b = load_file(Path(straight["run_dir"]) / "model.safetensors"), load_file(run / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _records(Path(straight["run_dir"])) == _records(run)
    resumed = json.loads((run / "summary.json").read_text())
    assert resumed["eval_return_mean"] == straight["eval_return_mean"]
    assert [r["kind"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())].count("resume") == 1
    capsys.readouterr()
    assert main(["play", str(run), "--episodes", "2", "--json", "--gif", str(tmp_path / "a.gif")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["env"] == env and len(out["returns"]) == 2 and all(math.isfinite(r) for r in out["returns"])


def test_play_cli_reports_returns_and_gif(tmp_path: Path, capsys) -> None:
    import layerwise

    s = layerwise.fit_rl(None, *_overrides(tmp_path, "--ppo.total_steps=512", "--eval.episodes=2"), show_progress=False)
    gif = tmp_path / "episode.gif"
    assert main(["play", s["run_dir"], "--episodes", "3", "--seed", "5", "--json", "--gif", str(gif)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["env"] == "CartPole-v1" and len(out["returns"]) == 3 and all(r >= 8 for r in out["returns"])
    assert out["mean"] == pytest.approx(sum(out["returns"]) / 3)
    if out["gif"]:  # pygame installed: an animated GIF of the first episode
        from PIL import Image
        with Image.open(gif) as im:
            assert im.n_frames >= 4 and im.size == (300, 200)  # CartPole's 600x400 halved
    else:
        assert "pygame" in out["gif_note"]
    assert main(["play", s["run_dir"], "--episodes", "3", "--seed", "5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["returns"] == out["returns"]  # the same seeds, the same games
    for command in (["eval", s["run_dir"]], ["predict", s["run_dir"], str(gif)], ["generate", s["run_dir"]]):
        assert main(command) == 1
        err = capsys.readouterr().err
        assert "layerwise play" in err and "Traceback" not in err
    from layerwise.train.inference import predict
    from layerwise.train.run import RunDirError

    with pytest.raises(RunDirError, match="reinforcement-learning agent"):  # the Python API says it too
        predict(s["run_dir"], [str(gif)])


def test_bad_input_is_a_clear_error(tmp_path: Path, capsys) -> None:
    def error(argv: list[str], code: int) -> str:
        assert main(argv) == code
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return err

    assert "Did you mean 'gamma'" in error(["rl", "--ppo.gama=0.9"], 2)
    assert "'CartPole-v1'" in error(["rl", *_overrides(tmp_path), "--env.id=CartPol-v1"], 2)
    assert "flat Box" in error(["rl", *_overrides(tmp_path), "--env.id=FrozenLake-v1"], 2)
    assert "model.policy=gaussian" in error(["rl", *_overrides(tmp_path), "--env.id=Pendulum-v1",
                                             "--model.policy=categorical"], 2)
    assert not (tmp_path / "runs").exists()  # nothing written before the config was found good
    assert "no saved model" in error(["play", str(tmp_path)], 1)
    # a supervised run's model is not an agent
    sup = tmp_path / "sup"
    assert main(["train", "--run.dir", str(sup), "--train.max_steps=1", "--run.plots=false",
                 "--run.tensorboard=false", "--quiet"]) == 0
    capsys.readouterr()
    assert "not a reinforcement-learning agent" in error(["play", str(sup)], 1)
    assert "layerwise train --resume" in error(["rl", "--resume", str(sup)], 1)
    assert "--episodes must be >= 1" in error(["play", str(sup), "--episodes", "0"], 2)
    assert "--seed must be >= 0" in error(["play", str(sup), "--seed", "-5"], 2)
    assert "`layerwise rl " in error(["train", str(REPO / "recipes" / "cartpole.yaml")], 2)
    assert "`layerwise train " in error(["rl", str(REPO / "recipes" / "burgers.yaml")], 2)
    assert "ending in .gif" in error(["play", str(sup), "--gif", str(tmp_path / "x.png")], 2)
    assert "does not exist" in error(["play", str(sup), "--gif", str(tmp_path / "no" / "x.gif")], 2)
    assert not (tmp_path / "no").exists()
    assert "model.name=actor-critic" in error(["rl", *_overrides(tmp_path), "--model.name=fno"], 2)
    assert "eval.episodes must be >= 1" in error(["rl", *_overrides(tmp_path), "--eval.episodes=0"], 2)


class _NaNAfterThree:
    """A tiny environment whose fourth observation is NaN (a diverged simulator)."""

    def __new__(cls, **kwargs):
        import gymnasium as gym
        import numpy as np

        class Env(gym.Env):
            observation_space = gym.spaces.Box(-1.0, 1.0, (3,), dtype=np.float32)
            action_space = gym.spaces.Discrete(2)

            def reset(self, *, seed=None, options=None):
                super().reset(seed=seed)
                self.t = 0
                return np.zeros(3, dtype=np.float32), {}

            def step(self, action):
                self.t += 1
                obs = np.full(3, np.nan if self.t > 3 else 0.1, dtype=np.float32)
                return obs, 1.0, False, False, {}

        return Env()


def test_nan_observation_stops_with_a_clear_error(tmp_path: Path, capsys) -> None:
    import gymnasium as gym

    if "LayerwiseNaN-v0" not in gym.envs.registry:
        gym.register(id="LayerwiseNaN-v0", entry_point=_NaNAfterThree, max_episode_steps=50)
    assert main(["rl", *_overrides(tmp_path), "--env.id=LayerwiseNaN-v0", "--ppo.total_steps=64",
                 "--ppo.num_steps=16", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "non-finite observation" in err and "LayerwiseNaN-v0" in err and "Traceback" not in err
    run = next((tmp_path / "runs").iterdir())
    assert (run / "config.yaml").is_file() and not (run / "model.safetensors").exists()


def test_reused_run_dir_names_the_right_command(tmp_path: Path) -> None:
    # a new run into an RL run's directory: the fix is `layerwise rl --resume` while it is unfinished,
    # a new --run.dir once it finished (there is nothing to continue); the earlier run is left alone
    from layerwise.train.run import RunDirError

    run = tmp_path / "agent"
    cfg = load_config(REPO / "recipes" / "cartpole.yaml",
                      _overrides(tmp_path, "--ppo.total_steps=512", "--eval.episodes=1"), cls=RLConfig)
    train_rl(cfg, run, show_progress=False)
    model = (run / "model.safetensors").read_bytes()
    with pytest.raises(RunDirError, match="that run finished") as e:
        train_rl(cfg, run, show_progress=False)
    assert "train --resume" not in str(e.value) and (run / "model.safetensors").read_bytes() == model
    (run / "summary.json").unlink()  # as if it stopped before the end
    with pytest.raises(RunDirError, match=f"`layerwise rl --resume {run}`"):
        train_rl(cfg, run, show_progress=False)
