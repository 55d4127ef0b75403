"""How fast `layerwise runs` lists thousands of runs: fake run directories laid out as the Trainer
leaves them (config.yaml of the full default config, env.json, a 50-line metrics.jsonl, a
checkpoint's .pt and .json, summary.json; 90% finished, 5% resumable, 5% crashed; a tenth of them
inside cross-validation folders), listed by ``layerwise.runs`` in four states:

    no index   every run directory read, the index neither read nor written (``use_index=False``)
    cold       no index file yet: every run read, the index written
    warm       the index fresh: one scandir walk and a few stats per run, rows from SQLite
    touched 1% a line appended to the metrics.jsonl of 1% of the runs: those re-read

and the command end to end (a new Python process, `layerwise runs ROOT --json`, warm). CPU seconds
(time.process_time; the child's from getrusage) are the figure to compare on a shared machine;
the files are in the page cache after the first pass (a cold disk adds its reads).

    python benchmarks/runs_index.py [--runs 500,2000,5000] [--repeats 3] [--out FILE.json] [--plot FILE.png]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from layerwise.config import Config  # noqa: E402
from layerwise.deploy.index import INDEX_NAME  # noqa: E402
from layerwise.deploy.listing import list_runs  # noqa: E402


def make_runs(root: Path, n: int) -> list[Path]:
    """``n`` fake run directories under ``root``; returns their paths."""
    config = Config().to_dict()
    paths = []
    for i in range(n):
        group = f"mnist-cv10-{i // 10}" if (i // 10) % 10 == 0 else ""  # a tenth: 10-fold cv folders
        name = f"fold{i % 10}" if group else f"mnist-{i:05d}"
        run = root / group / name if group else root / name
        run.mkdir(parents=True)
        config["optim"]["lr"] = 10 ** (-1 - (i % 4))
        config["data"]["name"] = ("mnist", "cifar10", "digits")[i % 3]
        (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        (run / "env.json").write_text(json.dumps({"layerwise": "0.1.0", "torch": "2.13.0", "seed": i,
                                                  "started": f"2026-12-01T{i % 24:02d}:00:00+0000"}, indent=2))
        (run / "metrics.jsonl").write_text("".join(
            json.dumps({"kind": "train", "step": s * 20, "epoch": s / 10, "loss": 1 / (s + 1), "accuracy": 0.9,
                        "lr": 0.01, "examples_per_sec": 5000.0}) + "\n" for s in range(1, 51)))
        status = "crashed" if i % 20 == 7 else "resumable" if i % 20 == 13 else "finished"
        if status != "crashed":
            (run / "checkpoints").mkdir()
            (run / "checkpoints" / "step_00001000.pt").write_bytes(b"\0" * 256)
            (run / "checkpoints" / "step_00001000.json").write_text(json.dumps({"step": 1000, "bytes": 256}))
        if status == "finished":
            acc = 0.9 + (i % 97) / 1000
            (run / "summary.json").write_text(json.dumps({
                "test_accuracy": acc, "test_loss": 1 - acc, "headline": "test_accuracy", "task": "classify",
                "train_seconds": 30.0 + i % 50, "params": 77290, "examples_seen": 64000, "steps": 1000,
                "model": "convnet", "dataset": config["data"]["name"], "device": "cpu",
                "energy_train_j": 900.0 + i, "energy_train_kwh": (900.0 + i) / 3.6e6}, indent=2))
        paths.append(run)
    return paths


def timed(fn) -> tuple[float, float, object]:
    """(CPU seconds, wall seconds, result) of ``fn()``."""
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - c, time.perf_counter() - w, out


def cli_seconds(root: Path) -> float:
    """CPU seconds of a child process running `layerwise runs ROOT --json`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "layerwise", "runs", str(root), "--json"], check=True,
                   stdout=subprocess.DEVNULL, env=os.environ | {"PYTHONPATH": str(SRC)})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(n: int, repeats: int, tmp: Path) -> dict:
    root = tmp / f"runs{n}"
    paths = make_runs(root, n)
    index = root / INDEX_NAME
    res: dict = {"runs": n}
    for mode in ("no_index", "cold", "warm", "touched_1pct"):
        cpu, wall = [], []
        for r in range(repeats):
            if mode == "cold":
                index.unlink(missing_ok=True)
            if mode == "touched_1pct":
                for p in paths[r::100]:  # 1%: a different 1% each repeat
                    with open(p / "metrics.jsonl", "a") as f:
                        f.write(json.dumps({"kind": "train", "step": 1020, "loss": 0.1}) + "\n")
            c, w, rows = timed(lambda use=mode != "no_index": list_runs(root, use_index=use))
            assert len(rows) == n, (len(rows), n)
            cpu.append(c)
            wall.append(w)
        res[mode] = {"cpu_s_median": round(statistics.median(cpu), 3), "cpu_s": [round(v, 3) for v in cpu],
                     "wall_s_median": round(statistics.median(wall), 3)}
    res["cli_warm_cpu_s_median"] = round(statistics.median(cli_seconds(root) for _ in range(repeats)), 3)
    res["index_bytes"] = index.stat().st_size
    res["warm_speedup_vs_no_index"] = round(res["no_index"]["cpu_s_median"] / res["warm"]["cpu_s_median"], 1)
    shutil.rmtree(root)
    return res


def plot(results: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ns = [r["runs"] for r in results]
    for mode, label, style in (("no_index", "no index (every run read)", "o:"), ("cold", "cold (index built)", "s--"),
                               ("touched_1pct", "1% of runs changed", "^-"), ("warm", "warm (index fresh)", "D-")):
        ax.plot(ns, [r[mode]["cpu_s_median"] for r in results], style, label=label)
    ax.plot(ns, [r["cli_warm_cpu_s_median"] for r in results], "x-", label="`layerwise runs --json`, warm (process)")
    ax.axhline(2.0, color="grey", lw=0.8)
    ax.text(ns[0], 2.05, "2 s", color="grey", fontsize=8)
    ax.set_xlabel("run directories")
    ax.set_ylabel("CPU seconds per listing")
    ax.set_title("layerwise runs: listing time (2-core VM)", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default="500,2000,5000", help="comma-separated numbers of fake runs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="")
    ap.add_argument("--plot", default="")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(int(n), args.repeats, Path(tmp)) for n in args.runs.split(",")]
    import sqlite3

    env = {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
           "cores": os.cpu_count(), "platform": platform.platform()}
    out = {"benchmark": "runs_index", "environment": env, "results": results}
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    if args.plot:
        plot(results, Path(args.plot))


if __name__ == "__main__":
    main()
