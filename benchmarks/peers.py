"""layerwise side by side with a plain PyTorch loop, Lightning, Keras 3 and fastai on the CPU (issue 14).

The same model (the MLP 784-512-512-10, or the small CNN of benchmarks/peers/_common.py), the same
initial weights (every child reports a checksum of them), the same MNIST arrays from the data
root, SGD with momentum at a constant learning rate, the same batch size, epochs and seed, trained
by each contestant in a fresh process, the contestants interleaved over --rounds rounds (their
order rotating each round), so that a drift of a shared machine hits all of them alike:

  plain               a hand-written loop over tensors in memory (the baseline)
  layerwise           layerwise's Trainer set up to match: no evaluation, checkpoint or plots in the loop
  layerwise-defaults  what `layerwise train` does by default: an evaluation and a checkpoint each
                      epoch, the progress display, plots, TensorBoard (what the defaults cost)
  lightning           PyTorch Lightning's Trainer, lean (no logger, checkpoint, progress bar, validation)
  keras               Keras 3 on the torch backend, model.fit on NumPy arrays
  fastai              fastai's Learner on the same tensors (no torchvision: see run_fastai.py)

The peers run in their own environments under .bench-venvs/ (`make bench`), plain and layerwise
in this Python. Every child times itself by one rule (benchmarks/peers/_common.py: EpochClock):
the imports, the set-up (data, model, framework objects) and the fit apart; each epoch from the
previous epoch's end to the framework's own epoch-end hook, with the test accuracy measured there
outside the clock; wall and process CPU time (CPU time is the steadier figure on a shared machine);
peak memory (ru_maxrss). Reported: the median over rounds with the min-max spread, and each ratio
against the plain loop of the same round. A contestant that cannot run is listed with the reason.

    PYTHONPATH=src python benchmarks/peers.py --quick        # MLP, plain vs layerwise, < 3 min
    PYTHONPATH=src python benchmarks/peers.py [--cases mlp cnn] [--peers plain layerwise ...]
        [--rounds 5] [--epochs 3] [--threads 2] [--data-root DIR] [--out FILE.json]

--quick ends with the line ``overhead_ratio=<median over rounds of layerwise / plain steady-state
epoch time>``. The JSON goes to --out, else benchmarks/results/peers_<date>.json (a new name if
that exists).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _child import (
    ChildError,
    child_env,
    load_average,
    round_ratios,
    run_child,
    summarize,
)

REPO = Path(__file__).resolve().parents[1]
PEERS_DIR = Path(__file__).parent / "peers"
# contestant: (environment: "main" = this Python, else .bench-venvs/<name>; child script; extra settings)
CONTESTANTS = {
    "plain": ("main", "run_plain.py", {}),
    "layerwise": ("main", "run_layerwise.py", {"variant": "lean"}),
    "layerwise-defaults": ("main", "run_layerwise.py", {"variant": "defaults"}),
    "lightning": ("lightning", "run_lightning.py", {}),
    "keras": ("keras", "run_keras.py", {}),
    "fastai": ("fastai", "run_fastai.py", {}),
}
TARGETS = {"mlp": 0.97, "cnn": 0.98}  # test accuracy for "time to target", per case
METRICS = ("steady_epoch_s", "steady_epoch_cpu_s", "import_s", "setup_s", "fit_s", "fit_cpu_s", "time_to_target_s",
           "time_to_target_cpu_s", "peak_rss_mb", "test_accuracy", "process_s")
RATIO_METRICS = ("steady_epoch_s", "steady_epoch_cpu_s", "fit_s", "fit_cpu_s", "time_to_target_s", "peak_rss_mb")


def python_for(env_name: str, venvs: Path) -> Path:
    """The interpreter of a contestant's environment: this one, or ``venvs/<name>/bin/python``."""
    return Path(sys.executable) if env_name == "main" else venvs / env_name / "bin" / "python"


def environment_for(env_name: str, threads: int) -> dict[str, str]:
    """The environment of a child run in ``env_name``: thread pools at ``threads``; layerwise
    from this checkout's src/ (in "main"); Keras on the torch backend."""
    env = child_env(threads)
    if env_name == "main":
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p)
    if env_name == "keras":
        env["KERAS_BACKEND"] = "torch"
    return env


def unavailable_reason(env_name: str, venvs: Path) -> str | None:
    """Why a child of environment ``env_name`` cannot run here (it is missing), else None."""
    python = python_for(env_name, venvs)
    if not python.exists():
        return f"no environment at {python.parent.parent}: create it with `make bench`"
    return None


def run_contestant(env_name: str, script: str, settings: dict, venvs: Path, threads: int, timeout: float) -> dict:
    """One child: ``benchmarks/peers/<script>`` in ``env_name``'s Python with ``settings`` as its
    argument; its result dict (ChildError when it fails)."""
    argv = [str(python_for(env_name, venvs)), str(PEERS_DIR / script), json.dumps(settings)]
    return run_child(argv, env=environment_for(env_name, threads), timeout=timeout, cwd=REPO)


def summarize_case(runs: list[dict], names: list[str], baseline: str = "plain", metrics: tuple = METRICS,
                   ratio_metrics: tuple = RATIO_METRICS) -> dict:
    """Per contestant: each of ``metrics``' median/min/max over rounds, and under
    ``ratio_to_<baseline>`` the same of each round's value / the baseline's value in that round
    for ``ratio_metrics`` (rounds where either is missing are left out). ``runs``: the child
    results of one case, each with "round" and "contestant"."""
    rounds = sorted({r["round"] for r in runs})
    by = {(r["contestant"], r["round"]): r for r in runs}

    def series(name: str, metric: str) -> list[float | None]:
        return [by[(name, i)].get(metric) if (name, i) in by else None for i in rounds]

    out = {}
    for name in names:
        if not any((name, i) in by for i in rounds):
            continue
        s = {m: summarize(series(name, m)) for m in metrics}
        if name != baseline and any((baseline, i) in by for i in rounds):
            s[f"ratio_to_{baseline}"] = {m: summarize(round_ratios(series(name, m), series(baseline, m)))
                                         for m in ratio_metrics}
        out[name] = s
    return out


def _cell(stat: dict | None, fmt: str = "{:.2f}", spread: bool = True) -> str:
    if stat is None:
        return "-"
    text = fmt.format(stat["median"])
    return f"{text} [{fmt.format(stat['min'])}-{fmt.format(stat['max'])}]" if spread and stat["n"] > 1 else text


def _ratio(stats: dict, metric: str) -> str:
    r = stats.get("ratio_to_plain", {}).get(metric)
    return f"{r['median']:.3f}x" if r else ("1x" if "ratio_to_plain" not in stats else "-")


def format_table(summary: dict, targets: dict[str, float]) -> str:
    """One table: a row per case and contestant, medians [min-max] and ratios to the plain loop."""
    head = (f"{'case':<5}{'contestant':<20}{'epoch s':>20}{'x plain':>9}{'epoch CPU s':>20}{'x plain':>9}"
            f"{'import s':>10}{'set-up s':>10}{'fit s':>10}{'x plain':>9}{'to target s':>13}{'x plain':>9}"
            f"{'peak MB':>9}{'test acc':>10}")
    lines = [head, "-" * len(head)]
    for case, rows in summary.items():
        for name, s in rows.items():
            target = f"{_cell(s['time_to_target_s'], '{:.1f}', False)}" if s["time_to_target_s"] else "not reached"
            lines.append(
                f"{case:<5}{name:<20}{_cell(s['steady_epoch_s']):>20}{_ratio(s, 'steady_epoch_s'):>9}"
                f"{_cell(s['steady_epoch_cpu_s']):>20}{_ratio(s, 'steady_epoch_cpu_s'):>9}"
                f"{_cell(s['import_s'], spread=False):>10}{_cell(s['setup_s'], spread=False):>10}"
                f"{_cell(s['fit_s'], spread=False):>10}{_ratio(s, 'fit_s'):>9}{target:>13}"
                f"{_ratio(s, 'time_to_target_s'):>9}{_cell(s['peak_rss_mb'], '{:.0f}', False):>9}"
                f"{_cell(s['test_accuracy'], '{:.4f}', False):>10}")
        lines.append(f"      (target: {targets[case]:.0%} test accuracy)")
    return "\n".join(lines)


def checksum_notes(runs: list[dict]) -> list[str]:
    """A line for each case whose contestants did not all start from the same weights."""
    notes = []
    for case in sorted({r["case"] for r in runs}):
        sums = {r["contestant"]: r.get("init_checksum") for r in runs if r["case"] == case}
        if len(set(sums.values())) > 1:
            notes.append(f"warning: {case}: the initial weights differ between contestants (checksums {sums})")
    return notes


def public_json(result: dict, data_root: str, venvs: str | None = None) -> str:
    """``result`` as indented JSON with this machine's paths taken out: the checkout becomes ".",
    the data root "<data-root>", the peers' environments "<venvs>" (results are shared; paths of
    one machine mean nothing elsewhere)."""
    text = json.dumps(result, indent=2) + "\n"
    swaps = [(str(Path(data_root).resolve()), "<data-root>"), (data_root, "<data-root>")]
    if venvs:
        swaps += [(str(Path(venvs).resolve()), "<venvs>"), (venvs, "<venvs>")]
    for path, shown in [*swaps, (str(REPO), ".")]:
        text = text.replace(json.dumps(path)[1:-1], shown)
    return text


def default_out(name: str = "peers") -> Path:
    """benchmarks/results/<name>_<date>.json, or _2, _3, ... when that exists (never overwritten)."""
    base = REPO / "benchmarks" / "results" / f"{name}_{time.strftime('%Y-%m-%d')}"
    path, n = base.with_suffix(".json"), 2
    while path.exists():
        path, n = Path(f"{base}_{n}.json"), n + 1
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from layerwise.config import default_data_root

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the MLP case, plain and layerwise only (< 3 minutes)")
    ap.add_argument("--cases", nargs="+", choices=sorted(TARGETS), default=["mlp", "cnn"])
    ap.add_argument("--peers", nargs="+", choices=list(CONTESTANTS), default=list(CONTESTANTS),
                    help="contestants (plain is always added: it is the baseline of every ratio)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch threads of every child")
    ap.add_argument("--data-root", default=default_data_root(),
                    help="folder holding mnist/mnist_{train,test}.npz (default: $LAYERWISE_DATA)")
    ap.add_argument("--venvs", default=str(REPO / ".bench-venvs"), help="where `make bench` put the peers")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds one child may run")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if a.quick:
        a.cases, a.peers = ["mlp"], ["plain", "layerwise"]
    a.peers = ["plain", *[p for p in a.peers if p != "plain"]]
    if a.rounds < 1 or a.epochs < 1:
        ap.error("--rounds and --epochs must be at least 1")
    missing = [f for f in ("mnist/mnist_train.npz", "mnist/mnist_test.npz") if not (Path(a.data_root) / f).is_file()]
    if missing:
        ap.error(f"MNIST not found under --data-root {a.data_root} (missing {', '.join(missing)}): pass --data-root or "
                 f"set LAYERWISE_DATA to a folder holding mnist/mnist_train.npz and mnist/mnist_test.npz")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    venvs = Path(a.venvs)
    unavailable = {name: r for name in a.peers if (r := unavailable_reason(CONTESTANTS[name][0], venvs))}
    names = [n for n in a.peers if n not in unavailable]
    if "plain" not in names:
        print(f"the plain loop cannot run: {unavailable['plain']}", file=sys.stderr)
        return 1
    settings = {"epochs": a.epochs, "batch_size": a.batch_size, "lr": a.lr, "momentum": a.momentum, "seed": a.seed,
                "threads": a.threads, "data_root": str(Path(a.data_root).resolve())}
    load_start = load_average()
    print(f"load average at start: {load_start}", file=sys.stderr)
    runs: list[dict] = []
    for rnd in range(a.rounds):
        order = names[rnd % len(names):] + names[:rnd % len(names)]  # rotate: no contestant always goes first
        for case in a.cases:
            for name in order:
                if (case, name) in unavailable or name in unavailable:
                    continue
                env_name, script, extra = CONTESTANTS[name]
                s = settings | extra | {"case": case, "target": TARGETS[case]}
                try:
                    r = run_contestant(env_name, script, s, venvs, a.threads, a.timeout)
                except ChildError as e:
                    unavailable[(case, name)] = str(e)
                    print(f"round {rnd + 1} {case} {name}: failed, left out from now on: {e}", file=sys.stderr)
                    continue
                r |= {"round": rnd, "case": case, "contestant": name}
                runs.append(r)
                print(f"round {rnd + 1}/{a.rounds} {case} {name:<19} epoch {r['steady_epoch_s']:.3f} s "
                      f"(CPU {r['steady_epoch_cpu_s']:.3f} s), fit {r['fit_s']:.2f} s, acc {r['test_accuracy']:.4f}",
                      file=sys.stderr, flush=True)
    load_end = load_average()
    summary = {case: summarize_case([r for r in runs if r["case"] == case], names) for case in a.cases}
    targets = {c: TARGETS[c] for c in a.cases}
    print(format_table(summary, targets))
    for note in checksum_notes(runs):
        print(note)
    for key, reason in unavailable.items():
        print(f"unavailable: {' '.join(key) if isinstance(key, tuple) else key}: {reason}")
    print(f"{a.rounds} rounds, {a.epochs} epochs, batch {a.batch_size}, SGD lr {a.lr} momentum {a.momentum}, "
          f"{a.threads} threads; load average {load_start} at start, {load_end} at the end")
    ratio = summary.get("mlp", {}).get("layerwise", {}).get("ratio_to_plain", {}).get("steady_epoch_s")

    from _env import environment

    versions = {r["contestant"]: r.get("version") for r in runs}
    result = {"benchmark": "benchmarks/peers.py", "command": ["benchmarks/peers.py", *(argv or sys.argv[1:])],
              "env": environment(), "settings": settings | {"rounds": a.rounds, "cases": a.cases, "targets": targets},
              "load_average": {"start": load_start, "end": load_end}, "versions": versions,
              "unavailable": {(" ".join(k) if isinstance(k, tuple) else k): v for k, v in unavailable.items()},
              "summary": summary, "overhead_ratio": ratio["median"] if ratio else None, "runs": runs}
    path = Path(a.out) if a.out else default_out()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(public_json(result, a.data_root, a.venvs))
    print(f"wrote {path}")
    if ratio:
        print(f"overhead_ratio={ratio['median']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
