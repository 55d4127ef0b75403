"""Time to 99% MNIST test accuracy on the CPU: layerwise's best recipe against each peer's own (issue 14).

Each contestant trains its documented recipe (model, optimizer, schedule, batch size, epochs) in
a fresh process, in its own environment (`make bench`), interleaved over --rounds rounds:

  layerwise  --recipe (default recipes/mnist-fast.yaml) through the Trainer
  lightning  Lightning's MNIST image-classifier example (PyTorch's MNIST convnet, Adadelta, StepLR)
  keras      the Keras example "Simple MNIST convnet" (Adam, batch 128, 15 epochs)
  fastai     the fastai book's chapter-13 MNIST convnet (BatchNorm, fit_one_cycle(5, 0.1), batch 512)

(benchmarks/peers/recipe_*.py cite each source and say what was kept and left out.) The harness
measures the test accuracy at every epoch end with the same code for all, outside the clock, and
a run stops at the first epoch end at or above --target. Reported per contestant: the training
time to the target (the epochs' wall and CPU seconds up to that epoch end; a framework's own
per-epoch validation is part of its recipe and counts), the same from the process's start
(imports and set-up included), the epochs it took, the medians over rounds with min-max, and the
ratio of the fastest peer's median to layerwise's (the issue's target: at least 3x).

    PYTHONPATH=src python benchmarks/recipes.py [--rounds 3] [--peers layerwise lightning keras fastai]
        [--recipe recipes/mnist-fast.yaml] [--target 0.99] [--threads 2] [--data-root DIR] [--out FILE.json]

The JSON goes to --out, else benchmarks/results/recipes_<date>.json (a new name if that exists).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _child import ChildError, load_average
from peers import (
    REPO,
    default_out,
    public_json,
    run_contestant,
    summarize_case,
    unavailable_reason,
)

# contestant: (environment, child script)
CONTESTANTS = {"layerwise": ("main", "run_layerwise.py"), "lightning": ("lightning", "recipe_lightning.py"),
               "keras": ("keras", "recipe_keras.py"), "fastai": ("fastai", "recipe_fastai.py")}
METRICS = ("time_to_target_s", "time_to_target_cpu_s", "to_target_total_s", "epochs_to_target", "import_s",
           "setup_s", "test_accuracy", "peak_rss_mb")


def with_totals(result: dict) -> dict:
    """``result`` plus ``to_target_total_s``: import + set-up + training time to the target, the
    time from the process's start (None when the target was not reached)."""
    t = result.get("time_to_target_s")
    total = None if t is None else result["import_s"] + result["setup_s"] + t
    return result | {"to_target_total_s": total}


def fastest_peer(summary: dict, metric: str = "time_to_target_s") -> tuple[str, float] | None:
    """(name, median) of the peer (not layerwise) with the smallest median ``metric``; None if no
    peer reached the target."""
    peers = [(n, s[metric]["median"]) for n, s in summary.items() if n != "layerwise" and s.get(metric)]
    return min(peers, key=lambda p: p[1]) if peers else None


def format_table(summary: dict, target: float) -> str:
    head = (f"{'contestant':<12}{f'train s to {target:.0%}':>22}{'CPU s':>20}{'from start s':>20}{'epochs':>8}"
            f"{'final acc':>11}{'peak MB':>9}")
    lines = [head, "-" * len(head)]
    def cell(s: dict, metric: str, fmt: str = "{:.1f}") -> str:
        st = s.get(metric)
        if st is None:
            return "not reached"
        text = fmt.format(st["median"])
        return f"{text} [{fmt.format(st['min'])}-{fmt.format(st['max'])}]" if st["n"] > 1 else text

    for name, s in summary.items():
        acc = s["test_accuracy"]["median"] if s.get("test_accuracy") else float("nan")
        rss = s["peak_rss_mb"]["median"] if s.get("peak_rss_mb") else float("nan")
        lines.append(f"{name:<12}{cell(s, 'time_to_target_s'):>22}{cell(s, 'time_to_target_cpu_s'):>20}"
                     f"{cell(s, 'to_target_total_s'):>20}{cell(s, 'epochs_to_target', '{:.0f}'):>8}{acc:>11.4f}"
                     f"{rss:>9.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from layerwise.config import default_data_root

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", nargs="+", choices=list(CONTESTANTS), default=list(CONTESTANTS))
    ap.add_argument("--recipe", default=str(REPO / "recipes" / "mnist-fast.yaml"), help="layerwise's recipe")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--target", type=float, default=0.99)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--data-root", default=default_data_root())
    ap.add_argument("--venvs", default=str(REPO / ".bench-venvs"))
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds one child may run")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if not Path(a.recipe).is_file():
        ap.error(f"--recipe {a.recipe} is not a file: give a layerwise recipe YAML (e.g. recipes/mnist-fast.yaml)")
    if not all((Path(a.data_root) / "mnist" / f"mnist_{s}.npz").is_file() for s in ("train", "test")):
        ap.error(f"MNIST not found under --data-root {a.data_root}: pass --data-root or set LAYERWISE_DATA to a "
                 f"folder holding mnist/mnist_train.npz and mnist/mnist_test.npz")
    venvs = Path(a.venvs)
    unavailable = {n: r for n in a.peers if (r := unavailable_reason(CONTESTANTS[n][0], venvs))}
    names = [n for n in a.peers if n not in unavailable]
    settings = {"data_root": str(Path(a.data_root).resolve()), "threads": a.threads, "seed": a.seed,
                "target": a.target, "stop_at_target": True}
    load_start = load_average()
    runs: list[dict] = []
    for rnd in range(a.rounds):
        for name in names[rnd % len(names):] + names[:rnd % len(names)]:
            if name in unavailable:
                continue
            env_name, script = CONTESTANTS[name]
            s = settings | ({"recipe": str(Path(a.recipe).resolve())} if name == "layerwise" else {})
            try:
                r = with_totals(run_contestant(env_name, script, s, venvs, a.threads, a.timeout))
            except ChildError as e:
                unavailable[name] = str(e)
                print(f"round {rnd + 1} {name}: failed, left out from now on: {e}", file=sys.stderr)
                continue
            runs.append(r | {"round": rnd, "contestant": name})
            print(f"round {rnd + 1}/{a.rounds} {name:<10} to {a.target:.0%}: "
                  + (f"{r['time_to_target_s']:.1f} s (epoch {r['epochs_to_target']})" if r["time_to_target_s"]
                     else f"not reached (best {max(r['test_accuracy_per_epoch'] or [0]):.4f})"),
                  file=sys.stderr, flush=True)
    load_end = load_average()
    summary = summarize_case(runs, names, baseline="layerwise", metrics=METRICS,
                             ratio_metrics=("time_to_target_s", "time_to_target_cpu_s", "to_target_total_s"))
    print(format_table(summary, a.target))
    best = fastest_peer(summary)
    lw = summary.get("layerwise", {}).get("time_to_target_s")
    speedup = best[1] / lw["median"] if best and lw else None
    if speedup:
        print(f"fastest peer: {best[0]} ({best[1]:.1f} s); fastest peer / layerwise = {speedup:.2f}x (target >= 3x)")
    for name, reason in unavailable.items():
        print(f"unavailable: {name}: {reason}")
    print(f"{a.rounds} rounds, {a.threads} threads; load average {load_start} at start, {load_end} at the end")

    from _env import environment

    result = {"benchmark": "benchmarks/recipes.py", "command": ["benchmarks/recipes.py", *(argv or sys.argv[1:])],
              "env": environment(), "settings": settings | {"rounds": a.rounds, "recipe": a.recipe},
              "load_average": {"start": load_start, "end": load_end},
              "versions": {r["contestant"]: r.get("version") for r in runs}, "unavailable": unavailable,
              "summary": summary, "fastest_peer": best[0] if best else None,
              "fastest_peer_over_layerwise": speedup, "runs": runs,
              "sources": {r["contestant"]: r.get("recipe") for r in runs}}
    path = Path(a.out) if a.out else default_out("recipes")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(public_json(result, a.data_root, a.venvs))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
