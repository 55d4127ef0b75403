"""Game-playing agents: PPO (``recipes/cartpole.yaml``, ``recipes/acrobot.yaml``) beside a uniformly random
policy, measured in the same run on the same 100 evaluation episodes (seeds 1,000,000 + i).

Each training run is timed (wall clock, one process at a time, torch on one thread). Targets (issue 18):
CartPole-v1 eval_return_mean >= 475 for each of seeds 0, 1, 2, each run <= 5 minutes on 2 CPU cores
(CleanRL's PPO: 492.4 +- 13.1 after 500k steps); Acrobot-v1 >= -100 (CleanRL: -89.9).

    python benchmarks/rl.py [--cartpole-seeds 0 1 2] [--acrobot-seeds 0] [--out benchmarks/results/rl_<date>.json]
        [--figure benchmarks/rl/return_curve.png] [--key=value ...]
        (--key=value: overrides for every run, e.g. --ppo.total_steps=100000 for a quick look)

The figure shows each run's training return (mean of the episodes finished in each update) against
environment steps, its final 100-episode evaluation, and the random policy's mean.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"CartPole-v1": 475.0, "Acrobot-v1": -100.0}
BUDGET_S = 300.0  # per CartPole run


def run(recipe: str, seed: int, root: str, extra: list[str]) -> dict:
    """Train the recipe with one seed (its own evaluation and random baseline included); its summary."""
    from layerwise.config import load_config
    from layerwise.rl import RLConfig, train_rl

    cfg = load_config(REPO / "recipes" / recipe, [f"--train.seed={seed}", f"--run.root={root}",
                                                  "--run.tensorboard=false", *extra], cls=RLConfig)
    t0 = time.perf_counter()
    s = train_rl(cfg, show_progress=False)
    wall = time.perf_counter() - t0
    return {"env": s["env"], "seed": seed, "eval_return_mean": s["eval_return_mean"],
            "eval_return_std": s["eval_return_std"], "random_return_mean": s["random_return_mean"],
            "random_return_std": s["random_return_std"], "env_steps": s["env_steps"],
            "train_seconds": s["train_seconds"], "wall_seconds": round(wall, 1), "sps": s["sps"],
            "eval_episodes": s["eval_episodes"], "eval_policy": s["eval_policy"], "run_dir": s["run_dir"],
            "curve": _curve(Path(s["run_dir"]))}


def _curve(run_dir: Path) -> list[list[float]]:
    """[env step, training episodic return] per logged update."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [[r["step"], r["episodic_return"]] for r in rows if r["kind"] == "train" and "episodic_return" in r]


def figure(rows: list[dict], path: Path) -> None:
    """One panel per environment: training return curves of every seed, final evaluations, random policy."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(r["env"] for r in rows))
    fig, axes = plt.subplots(1, len(envs), figsize=(5.5 * len(envs), 3.8), squeeze=False)
    for ax, env in zip(axes[0], envs, strict=True):
        for i, r in enumerate(x for x in rows if x["env"] == env):
            c = f"C{i}"
            steps, rets = zip(*r["curve"], strict=True) if r["curve"] else ((), ())
            ax.plot(steps, rets, color=c, lw=1, alpha=0.8, label=f"seed {r['seed']} (training episodes)")
            ax.plot([r["env_steps"]], [r["eval_return_mean"]], "o", color=c, ms=7,
                    label=f"seed {r['seed']}: eval {r['eval_return_mean']:.1f} ({r['wall_seconds']:.0f} s)")
        rand = next(x for x in rows if x["env"] == env)["random_return_mean"]
        ax.axhline(rand, color="gray", ls=":", label=f"random policy {rand:.1f}")
        ax.axhline(TARGETS[env], color="k", ls="--", lw=0.8, label=f"target {TARGETS[env]:g}")
        ax.set_title(f"PPO on {env}")
        ax.set_xlabel("environment step")
        ax.set_ylabel("episodic return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right" if env == "CartPole-v1" else "center right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cartpole-seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--acrobot-seeds", type=int, nargs="*", default=[0])
    ap.add_argument("--runs", default="", help="folder for the run directories (default: a temporary one)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / f"rl_{time.strftime('%Y-%m-%d')}.json"))
    ap.add_argument("--figure", default=str(REPO / "benchmarks" / "rl" / "return_curve.png"))
    args, extra = ap.parse_known_args()
    import torch

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.runs or tmp
        jobs = [("cartpole.yaml", s) for s in args.cartpole_seeds] + [("acrobot.yaml", s) for s in args.acrobot_seeds]
        for recipe, seed in jobs:
            row = run(recipe, seed, root, extra)
            rows.append(row)
            print(f"{row['env']:<12} seed {seed}: eval return {row['eval_return_mean']:8.2f} +- "
                  f"{row['eval_return_std']:6.2f} ({row['eval_episodes']}-episode {row['eval_policy']})  random {row['random_return_mean']:8.2f}  "
                  f"{row['env_steps']} steps in {row['wall_seconds']:.1f} s ({row['sps']} steps/s)", flush=True)
    summary = {}
    for env in dict.fromkeys(r["env"] for r in rows):
        mine = [r for r in rows if r["env"] == env]
        means = [r["eval_return_mean"] for r in mine]
        ok = all(m >= TARGETS[env] for m in means) and (env != "CartPole-v1" or
                                                       all(r["wall_seconds"] <= BUDGET_S for r in mine))
        summary[env] = {"seeds": [r["seed"] for r in mine], "eval_return_mean": statistics.mean(means),
                        "eval_return_min": min(means), "random_return_mean": mine[0]["random_return_mean"],
                        "wall_seconds_max": max(r["wall_seconds"] for r in mine), "target": TARGETS[env],
                        "meets_target": ok}
        print(f"{env}: mean over seeds {summary[env]['eval_return_mean']:.2f} (min {min(means):.2f}; target "
              f">= {TARGETS[env]:g}{' each, <= 300 s each' if env == 'CartPole-v1' else ''}) random "
              f"{summary[env]['random_return_mean']:.2f}, slowest run {summary[env]['wall_seconds_max']:.1f} s: "
              f"{'meets' if ok else 'MISSES'} the target")
    result = {"benchmark": "rl", "environment": environment() | {"gymnasium": _gym()}, "overrides": extra,
              "command": " ".join(["python", "benchmarks/rl.py", *sys.argv[1:]]), "runs": rows, "summary": summary}
    figure(rows, Path(args.figure))
    print(f"wrote {args.figure}")
    for r in result["runs"]:
        r.pop("run_dir")
        r.pop("curve")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def _gym() -> str:
    import gymnasium
    return gymnasium.__version__


if __name__ == "__main__":
    sys.exit(main())
