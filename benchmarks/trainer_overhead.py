"""The Trainer's per-step cost over a plain loop, on the CPU, for a tiny model (issue 14).

A small MLP on the built-in digits data (batch 64) is where the Trainer's own per-step work (the
task's metric sums, the finiteness check, the learning rate, the progress counters) weighs the
most against the model's. Sides, each in a fresh process on one thread, interleaved over
--repeats rounds (median reported):

  plain            forward, cross-entropy, backward, optimizer step, zero_grad: nothing else
  plain_host_sync  the same plus the gradient norm and one finiteness flag read on the host per step
  layerwise        `layerwise.fit` (train_seconds / steps; train.log_every=20, no evaluation or
                   checkpoint inside the loop), with LAYERWISE_SYNC_FREE=0 (the synced step)
  layerwise_sync_free  the same with LAYERWISE_SYNC_FREE=1 (the device-side skip of a GPU, run on
                   the CPU with torch's fused CPU kernels; the plain sides then use them too)

Every side uses the same model, optimizer (AdamW, foreach, or fused for the sync-free pair), data
order and batch. On the CPU a host read costs nothing, so this measures the Python and the
kernels the Trainer adds, not the GPU's pipeline stall (benchmarks/gpu.py --only overhead does).

    PYTHONPATH=src python benchmarks/trainer_overhead.py [--steps 400] [--repeats 5] [--out FILE.json] [--no-fused]

The JSON goes to --out, else benchmarks/results/trainer_overhead_cpu_<date>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _child import child_env, run_child
from _env import environment

REPO = Path(__file__).resolve().parents[1]
MODEL = ["--model.name=mlp", "--model.depth=2", "--model.width=64", "--data.batch_size=64", "--optim.name=adamw",
         "--optim.lr=0.003", "--optim.schedule=cosine"]

CHILD = r"""
import json, math, sys, tempfile, time
import torch, torch.nn.functional as F
torch.set_num_threads(1)
side, steps, model_args, fused = json.loads(sys.argv[1])
sys.path.insert(0, sys.argv[2])
from _child import emit
from layerwise.config import load_config
root = tempfile.mkdtemp()
over = [f"--run.root={root}", "--run.plots=false", "--run.tensorboard=false", "--train.eval_every=0",
        "--run.checkpoint_every=1000000", f"--train.max_steps={steps}", "--train.threads=1", *model_args]
if side.startswith("layerwise"):
    import layerwise
    s = layerwise.fit(None, *over, show_progress=False, run_dir=f"{root}/run")
    emit({"seconds": s["train_seconds"], "steps": s["steps"]})
    sys.exit()
from layerwise.data import load_dataset
from layerwise.data.loaders import build_loaders
from layerwise.models import create_model
from layerwise.train.optim import build_optimizer
from layerwise.train.schedule import apply_lr, lr_multiplier
cfg = load_config(None, over)
t, o = cfg.train, cfg.optim
torch.manual_seed(t.seed)
ds = load_dataset(cfg.data.name, cfg.data.root or root, cfg.data)
loaders = build_loaders(ds, cfg.data, torch.device("cpu"), cfg.data.batch_size, seed=t.seed)
model = create_model(cfg.model.name, in_shape=ds.info.in_shape, num_classes=ds.info.num_classes, **cfg.model.args)
kw = {"fused": True} if fused else {}
opt = build_optimizer(model, o.name, lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas), eps=o.eps,
                      device_type="cpu", **kw)
params = list(model.parameters())
batches, step = iter(loaders.train), 0
start = time.perf_counter()
while step < steps:
    try:
        x, y = next(batches)
    except StopIteration:
        batches = iter(loaders.train)
        continue
    apply_lr(opt, lr_multiplier(step, steps, schedule=o.schedule))
    loss = F.cross_entropy(model(x), y, reduction="sum") / len(y)
    loss.backward()
    if side == "plain_host_sync":
        norm = torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)
        if not bool(torch.isfinite(loss) & torch.isfinite(norm)):
            raise RuntimeError("non-finite step")
    opt.step()
    opt.zero_grad(set_to_none=True)
    step += 1
emit({"seconds": time.perf_counter() - start, "steps": steps})
"""


def run_side(side: str, steps: int, fused: bool) -> dict:
    env = child_env(1, LAYERWISE_SYNC_FREE="1" if fused else "0")
    return run_child([sys.executable, "-c", CHILD, json.dumps([side, steps, MODEL, fused]), str(Path(__file__).parent)],
                     env=env)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-fused", action="store_true",
                    help="leave out the fused pair (for a checkout older than LAYERWISE_SYNC_FREE)")
    a = ap.parse_args(argv)
    sides = {"plain": ("plain", False), "plain_host_sync": ("plain_host_sync", False),
             "layerwise": ("layerwise", False)}
    if not a.no_fused:
        sides |= {"plain_fused": ("plain", True), "layerwise_sync_free": ("layerwise", True)}
    rows: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(a.repeats):  # interleaved: drifts of a shared machine hit every side alike
        for name, (side, fused) in sides.items():
            r = run_side(side, a.steps, fused)
            rows[name].append(1000 * r["seconds"] / r["steps"])
    med = {k: statistics.median(v) for k, v in rows.items()}
    result = {"benchmark": "benchmarks/trainer_overhead.py", "env": environment(), "steps": a.steps,
              "repeats": a.repeats, "model": MODEL, "ms_per_step": rows, "ms_per_step_median": med,
              "ratio_layerwise_over_plain": med["layerwise"] / med["plain"],
              "ratio_host_sync_over_plain": med["plain_host_sync"] / med["plain"],
              "ratio_layerwise_sync_free_over_plain_fused": (med["layerwise_sync_free"] / med["plain_fused"]
                                                             if "plain_fused" in med else None)}
    print(f"{'side':<22}{'ms/step (median)':>18}")
    for k, v in med.items():
        print(f"{k:<22}{v:>18.3f}")
    print(f"layerwise / plain {result['ratio_layerwise_over_plain']:.3f}x; plain + host sync / plain "
          f"{result['ratio_host_sync_over_plain']:.3f}x")
    if result["ratio_layerwise_sync_free_over_plain_fused"]:
        print(f"sync-free layerwise / plain (fused) {result['ratio_layerwise_sync_free_over_plain_fused']:.3f}x")
    path = Path(a.out) if a.out else REPO / "benchmarks" / "results" / f"trainer_overhead_cpu_{time.strftime('%Y-%m-%d')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
