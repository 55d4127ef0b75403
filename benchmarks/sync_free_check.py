"""The sync-free step against the synced one on a real device (issue 14): bit-identical weights,
weight averages, optimizer state and logged metrics, with NaN steps injected.

The Trainer's tests check this on the CPU (LAYERWISE_SYNC_FREE=1, torch's fused CPU kernels);
this runs the same comparison where it matters, on CUDA with torch's CUDA kernels, for AdamW
with EMA, lookahead and gradient accumulation, for Muon + Nesterov SGD, and for fp16 with its
loss scaler overflowing, plus a diverging run stopped by the guard. A small MLP on the built-in
digits data; seconds in all.

    PYTHONPATH=src python benchmarks/sync_free_check.py [--device cuda] [--out FILE.json]

Prints one line per case and exits 1 when a case differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile

import torch

MLP = ["--model.name=mlp", "--model.depth=2", "--model.width=64", "--train.eval_every=0", "--data.batch_size=64",
       "--train.max_steps=40", "--train.log_every=10"]
CASES = {
    "adamw+ema+lookahead+accum": ["--optim.name=adamw", "--optim.lr=0.003", "--train.ema_decay=0.9",
                                  "--train.lookahead_every=2", "--train.lookahead_start=0", "--train.grad_accum=2",
                                  "--optim.clip_grad_norm=1.0"],
    "muon+sgd+ema": ["--optim.name=muon", "--optim.muon_rest=sgd", "--optim.momentum=0.9", "--optim.nesterov=true",
                     "--train.ema_decay=0.8"],
    "fp16 overflow": ["--optim.name=adamw", "--optim.lr=0.003", "--train.precision=fp16", "--train.ema_decay=0.9"],
}
BAD = {3, 11, 12, 30}  # optimizer steps with NaN outputs


def digest(t) -> str:
    h = hashlib.sha256()
    tensors = dict(t.model.state_dict())
    tensors |= {f"ema.{k}": v for k, v in (t.ema.shadow.items() if t.ema else ())}
    tensors |= {f"slow.{k}": v for k, v in (t.lookahead.slow.items() if t.lookahead else ())}
    opt = t.optimizer.state_dict()
    for name, part in (opt.items() if "state" not in opt else [("", opt)]):
        for i, s in part["state"].items():
            tensors |= {f"opt.{name}.{i}.{k}": torch.as_tensor(v) for k, v in s.items()}
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].detach().float().cpu().numpy().tobytes())
    records = [(r["step"], r.get("loss"), r.get("accuracy"), r.get("skipped")) for r in t.log.records
               if r["kind"] == "train"]
    h.update(json.dumps(records).encode())
    return h.hexdigest()[:16]


def run(case: list[str], device: str, guard: bool, root: str, scale_up: bool, bad: set[int] = BAD) -> dict:
    from layerwise.config import load_config
    from layerwise.train.trainer import Trainer

    cfg = load_config(None, [f"--run.root={root}", "--run.plots=false", "--run.tensorboard=false",
                             f"--train.device={device}", *MLP, *case])
    t = Trainer(cfg, show_progress=False)
    if not t._device_guard:
        raise RuntimeError(f"the optimizer {t.optimizer!r} cannot skip on the device here")
    t._device_guard = guard
    inner, calls = t.forward, {"n": 0}
    accum = cfg.train.grad_accum

    def flaky(x):
        out = inner(x)
        calls["n"] += 1
        nan = (calls["n"] - 1) // accum in bad
        out = out * 1000.0 if scale_up else out  # fp16: gradients that overflow the first scales
        return out * float("nan") if nan else out
    t.forward = flaky
    s = t.fit()
    return {"digest": digest(t), "skipped_steps": s["skipped_steps"], "overflow_steps": s.get("overflow_steps"),
            "test_loss": s["test_loss"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if a.device == "cpu":
        os.environ["LAYERWISE_SYNC_FREE"] = "1"  # fused CPU kernels
    from layerwise.train.trainer import TrainingDiverged

    root = tempfile.mkdtemp()
    results, ok = {"device": torch.cuda.get_device_name(0) if a.device.startswith("cuda") else "cpu",
                   "torch": torch.__version__, "cases": {}}, True
    for name, case in CASES.items():
        if "fp16" in name and not a.device.startswith("cuda"):
            continue
        synced, free = (run(case, a.device, g, root, "fp16" in name) for g in (False, True))
        same = synced == free
        ok &= same
        results["cases"][name] = {"synced": synced, "sync_free": free, "identical": same}
        print(f"{name:<28} {'identical' if same else 'DIFFERENT'}  synced {synced}  sync-free {free}", flush=True)
    try:
        run(["--optim.name=adamw", "--train.max_bad_steps=3", "--train.log_every=20"], a.device, True, root, False,
            set(range(11, 40)))
        stop = "did not stop"
    except TrainingDiverged as e:
        stop = str(e)
    ok &= "steps 11 to 13" in stop and "went on to step 20" in stop
    results["diverged"] = stop
    print("divergence:", stop[:300], flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
