"""The end-of-run report of a run trained on a CUDA GPU, against the same report written on the CPU.

Trains the built-in default job (digits + resnet-digits) on the GPU with run.report on, then
checks that report.html was written by the run (no warning), that its worst-classified examples
are the same 12 test examples, with the same true-class probabilities within 1e-3, as a report of
the same run written on the CPU, and reports the report's share of the job's wall time.

    PYTHONPATH=src python benchmarks/report_gpu.py [--out FILE.json]

One JSON object goes to stdout and to $OUT/report_gpu.json when OUT is set (else --out). Exit
status 1 when a check fails, 2 when there is no GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from layerwise.config import load_config
from layerwise.deploy.report import write_report
from layerwise.train.trainer import fit

PATTERN = r'data-position="(\d+)" data-p-true="([^"]+)"'


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to check", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            summary = fit(load_config(None, [f"--run.dir={run}", "--train.device=cuda", "--run.tensorboard=false"]),
                          show_progress=False)
        job = time.perf_counter() - t0
        gpu_text = (run / "report.html").read_text(encoding="utf-8")
        t0 = time.perf_counter()
        write_report(run, Path(tmp) / "cuda.html", device="cuda")
        again = time.perf_counter() - t0
        cpu_text = write_report(run, Path(tmp) / "cpu.html", device="cpu").read_text(encoding="utf-8")
    gpu = [(int(a), float(b)) for a, b in re.findall(PATTERN, gpu_text)]
    cpu = [(int(a), float(b)) for a, b in re.findall(PATTERN, cpu_text)]
    report_warnings = [str(w.message) for w in caught if "report" in str(w.message)]
    checks = {
        "written_by_the_run": bool(gpu_text) and not report_warnings,
        "same_examples": [p for p, _ in gpu] == [p for p, _ in cpu] and len(gpu) == 12,
        "same_probabilities": len(gpu) == len(cpu) and all(abs(a - b) <= 1e-3 for (_, a), (_, b) in zip(gpu, cpu)),
    }
    result = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
              "test_accuracy": summary["test_accuracy"], "job_seconds": round(job, 2),
              "report_seconds_on_demand_cuda": round(again, 3), "report_kib": round(len(gpu_text) / 1024),
              "warnings": report_warnings, "checks": checks}
    line = json.dumps(result)
    print(line)
    out = Path(os.environ["OUT"]) / "report_gpu.json" if os.environ.get("OUT") else (Path(args.out) if args.out else None)
    if out:
        out.write_text(line + "\n")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
