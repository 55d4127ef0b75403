"""The Trainer's step against a plain PyTorch step on one model, alternating every few steps (issue 14).

benchmarks/peers.py runs each contestant in its own process one after another; on a shared VM
whose speed drifts from minute to minute its per-round ratios spread by +-10%, more than the
overhead being measured. This measures the same thing in one process where the drift cannot
fall between the sides: one model object (the MNIST MLP 784-512-512-10 or the harness's small
CNN), trained alternately ``--chunk`` steps by the Trainer's own loop (``Trainer._fit`` with
evaluation, checkpoints, plots and the report off) and ``--chunk`` steps by the plain loop of
benchmarks/peers/run_plain.py (a random batch of an in-memory copy of the same normalized
images, ``F.cross_entropy``, ``zero_grad``, ``backward``, torch's default SGD with momentum
0.9), ``--rounds`` times; each step is timed alone (the Trainer's by its progress tick) and
the medians of the two sides' step times are compared. The Trainer keeps everything it does per
step: the finiteness guard, the metric sums, the learning rate, the loader.

    PYTHONPATH=src python benchmarks/step_interleaved.py --data-root <data> [--case mlp|cnn]
        [--threads 2] [--rounds 60] [--chunk 10] [--out FILE.json]

Prints the two medians, their ratio and difference; the JSON holds every step time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "peers"))
from _env import environment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", default=os.environ.get("LAYERWISE_DATA"))
    ap.add_argument("--case", choices=("mlp", "cnn"), default="mlp")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--chunk", type=int, default=10, help="steps per side before the other side runs")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if not args.data_root:
        raise SystemExit("pass --data-root (or set LAYERWISE_DATA) to a folder holding mnist/")
    torch.set_num_threads(args.threads)

    from layerwise.config import load_config
    from layerwise.models import register_model
    from layerwise.models.base import Model
    from layerwise.train.trainer import Trainer

    if args.case == "cnn":
        from _common import CNN

        class LayerwiseCNN(CNN, Model):
            """The harness's CNN with layerwise's model face."""

        register_model("peers-cnn")(lambda *, in_shape, num_classes: LayerwiseCNN(num_classes=num_classes))
        model = ["--model.name=peers-cnn"]
    else:
        model = ["--model.name=mlp", "--model.depth=2", "--model.width=512"]
    root = tempfile.mkdtemp(prefix="step-interleaved-")
    cfg = load_config(None, [*model, "--data.name=mnist", f"--data.root={args.data_root}", "--data.batch_size=128",
                             "--optim.name=sgd", "--optim.lr=0.01", "--optim.momentum=0.9", "--optim.nesterov=false",
                             "--optim.weight_decay=0", "--optim.schedule=constant", "--train.epochs=1000",
                             f"--train.threads={args.threads}", f"--run.root={root}", "--train.eval_every=0",
                             "--run.checkpoint_every=1000000000", "--run.plots=false", "--run.tensorboard=false",
                             "--run.report=false"])
    trainer = Trainer(cfg, show_progress=False)
    trainer._finish = lambda: {}  # the loop only: no final evaluation or model file between chunks
    stamps: list[float] = []
    trainer.display.tick = lambda step: stamps.append(time.perf_counter())

    net = trainer.model  # the same parameters for both sides
    plain_opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    it = iter(trainer.train_loader)
    batches = [next(it) for _ in range(50)]
    X = torch.cat([b[0] for b in batches]).clone()
    Y = torch.cat([b[1] for b in batches]).clone()
    gen = torch.Generator().manual_seed(0)

    def plain(n: int) -> list[float]:
        times, t = [], time.perf_counter()
        for _ in range(n):
            idx = torch.randint(0, len(X), (128,), generator=gen)
            loss = F.cross_entropy(net(X[idx]), Y[idx])
            plain_opt.zero_grad(set_to_none=True)
            loss.backward()
            plain_opt.step()
            now = time.perf_counter()
            times.append(now - t)
            t = now
        return times

    def layerwise(n: int) -> list[float]:
        trainer.total_steps = trainer.step + n
        stamps.clear()
        t0 = time.perf_counter()
        trainer._fit()
        s = [t0, *stamps]
        return [b - a for a, b in zip(s, s[1:], strict=False)]

    plain(args.chunk)
    layerwise(args.chunk)  # warm-up: allocator, first optimizer state
    P: list[float] = []
    L: list[float] = []
    for _ in range(args.rounds):
        P += plain(args.chunk)
        L += layerwise(args.chunk)
    mp, ml = statistics.median(P), statistics.median(L)
    result = {"case": args.case, "threads": args.threads, "rounds": args.rounds, "chunk": args.chunk,
              "plain_median_us": round(mp * 1e6, 1), "layerwise_median_us": round(ml * 1e6, 1),
              "ratio": round(ml / mp, 4), "difference_us": round((ml - mp) * 1e6, 1),
              "plain_us": [round(v * 1e6, 1) for v in P], "layerwise_us": [round(v * 1e6, 1) for v in L],
              "env": environment()}
    print(f"{args.case}, {args.threads} threads, {len(P)} steps a side: plain {mp * 1e6:.0f} us, "
          f"layerwise {ml * 1e6:.0f} us per step (medians): ratio {ml / mp:.3f}, {1e6 * (ml - mp):+.0f} us")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
