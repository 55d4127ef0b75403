"""The classification task's metric sums on CUDA make no host sync, and equal the CPU's (issue 14).

Every training step computes the task's sums (``Classify.stats``). CUDA's ``torch.bincount`` reads
its input's minimum and maximum on the host, so the confusion counts it made stalled every step's
queue; ``tasks.classify.confusion_counts`` counts by ``index_put_`` off the CPU. This runs both
paths of ``stats`` (a training batch; an evaluation batch with padding left out) under
``torch.cuda.set_sync_debug_mode("error")``, which raises on any synchronizing call, for 10 and
100 classes (top-5 counted for 100), with hard and soft targets, and compares the sums with the
CPU's bit for bit. Seconds in all.

    PYTHONPATH=src python benchmarks/stats_sync_gpu.py [--out FILE.json]

Prints one JSON line per case and exits 1 when a case syncs or differs; on a machine without CUDA
it prints one line that says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F

from layerwise.data import DatasetInfo
from layerwise.tasks import create_task


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"check": "stats_sync_gpu", "skipped": "no CUDA device"}))
        return 0
    dev = torch.device("cuda")
    results, failed = [], False
    for C in (10, 100):
        info = DatasetInfo("t", (2,), C, [str(i) for i in range(C)], 1.0, [0.0] * 2, [1.0] * 2)
        task = create_task(info)
        g = torch.Generator().manual_seed(C)
        out, y = torch.randn(256, C, generator=g), torch.randint(0, C, (256,), generator=g)
        loss = torch.rand((), generator=g) * 100
        keep = torch.rand(256, generator=g) < 0.9
        for targets, yy in (("hard", y), ("soft", F.one_hot(y, C).float() * 0.7 + 0.3 / C)):
            for path, kw in (("train", {}), ("eval", {"keep": keep})):
                cpu = task.stats(out, yy, loss, **kw)
                args_dev = [t.to(dev) for t in (out, yy, loss)]
                kw_dev = {k: v.to(dev) for k, v in kw.items()}
                torch.cuda.synchronize()
                rec = {"check": "stats_sync_gpu", "classes": C, "targets": targets, "path": path}
                try:
                    torch.cuda.set_sync_debug_mode("error")
                    got = task.stats(*args_dev, **kw_dev)
                    torch.cuda.set_sync_debug_mode("default")
                    rec["synced"] = False
                    rec["equal_to_cpu"] = bool(got.cpu().equal(cpu))
                except RuntimeError as e:
                    torch.cuda.set_sync_debug_mode("default")
                    rec["synced"], rec["error"] = True, str(e).splitlines()[0]
                failed |= rec["synced"] or not rec.get("equal_to_cpu", False)
                results.append(rec)
                print(json.dumps(rec), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cases": results}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
