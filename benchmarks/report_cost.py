"""What the end-of-run report (run.report=true) costs the default job, in CPU time.

Trains the built-in default (`layerwise train`: digits + resnet-digits) once with run.report=false,
measuring the process time of the whole job (data, model, training, evaluation, model file, plots),
then writes the report the way the Trainer does at the end of a run (the test split it already
holds, the model file just written), REPEATS times, and prints both figures, their ratio and the
report's size. CPU time (time.process_time), not wall time: the figure holds on a busy machine.

    python benchmarks/report_cost.py [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from layerwise.config import load_config
    from layerwise.deploy.report import write_report_after_run
    from layerwise.train.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        cfg = load_config(None, [f"--run.dir={run_dir}", "--run.report=false", f"--train.threads={args.threads}"])
        t0 = time.process_time()
        trainer = Trainer(cfg, show_progress=False)
        summary = trainer.fit()
        job = time.process_time() - t0
        costs = []
        for _ in range(args.repeats):
            t0 = time.process_time()
            path = write_report_after_run(run_dir, trainer.device, trainer._test_split)
            costs.append(time.process_time() - t0)
        size = path.stat().st_size
    best = min(costs)
    print(f"default job (run.report=false): {job:.2f} s CPU, test accuracy {summary['test_accuracy']:.4f}")
    print(f"end-of-run report: {', '.join(f'{c:.3f}' for c in costs)} s CPU (best {best:.3f} s) = "
          f"{100 * best / job:.1f}% of the job; report.html {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
