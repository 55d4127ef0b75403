"""Every GPU check of layerwise in one process, for a machine with one CUDA GPU.

Each job is a `layerwise.fit` of a recipe plus overrides; one JSON line per job goes to stdout
and to $OUT/gpu_results.jsonl as soon as it ends, so a run cut short keeps what it measured.
A job that fails prints its error and the next one runs.

    python benchmarks/gpu_check.py --data-root DIR [--only NAME ...] [--list]

DIR holds cifar10/, tinyshakespeare/, housing/ and movie-reviews/ (see benchmarks/gpu_check.sh for
carrying them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

Q = ["--run.plots=false", "--run.tensorboard=false"]
# recipes/cifar10-gpu.yaml as it was with Nesterov SGD and lookahead (airbench94, before Muon)
GPU_SGD = ["--optim.name=sgd", "--optim.lr=1.5", "--optim.weight_decay=0.00133", "--optim.schedule=triangle",
           "--optim.start_lr_ratio=0.2", "--optim.warmup_fraction=0.23", "--optim.min_lr_ratio=0.07",
           "--data.batch_size=1024", "--train.lookahead_every=5", "--train.lookahead_start=3"]
# recipes/cifar10-cpu.yaml as it was with Nesterov SGD (87.51% on the CPU, 2026-11-26)
CPU_SGD = ["--optim.name=sgd", "--optim.lr=0.75", "--optim.weight_decay=0.00133", "--optim.schedule=triangle",
           "--optim.start_lr_ratio=0.2", "--optim.warmup_fraction=0.23", "--optim.min_lr_ratio=0.07",
           "--data.batch_size=1024", "--train.grad_accum=4", "--train.epochs=9", "--train.lookahead_every=5",
           "--train.lookahead_start=2"]
GPT_DIST = ["--train.max_steps=500", "--train.compile=true", "--train.eval_every_steps=0", "--train.eval_every=0"]
# (name, recipe, overrides): the order is the priority order (most important first)
JOBS: list[tuple[str, str | None, list[str]]] = [
    # the distributed paths on one GPU: a real one-rank NCCL process group, bf16, compile, and the
    # throughput of each strategy against the plain run (README: Scaling out)
    ("dist-none-gpt", "recipes/shakespeare-char-gpu.yaml", GPT_DIST),
    ("dist-ddp-nccl-gpt", "recipes/shakespeare-char-gpu.yaml", [*GPT_DIST, "--dist.strategy=ddp"]),
    ("dist-fsdp-nccl-gpt", "recipes/shakespeare-char-gpu.yaml", [*GPT_DIST, "--dist.strategy=fsdp"]),
    ("dist-fsdp-ac-gpt", "recipes/shakespeare-char-gpu.yaml", [*GPT_DIST, "--dist.strategy=fsdp",
                                                               "--dist.activation_checkpointing=true"]),
    ("dist-fsdp-offload-gpt", "recipes/shakespeare-char-gpu.yaml", [*GPT_DIST, "--dist.strategy=fsdp",
                                                                    "--dist.cpu_offload=true", "--train.compile=false"]),
    ("dist-fsdp-torchrun-gpt", "recipes/shakespeare-char-gpu.yaml", [*GPT_DIST, "--dist.strategy=fsdp",
                                                                     "--nproc=1"]),
    ("dist-ddp-cifar", "recipes/cifar10-gpu.yaml", ["--dist.strategy=ddp", "--train.freeze_stem_after=0"]),
    ("default-job-cuda", None, []),
    # the tasks on CUDA: regression (a table with missing values), text classes, fp16 loss scaling
    # with an EMA (overflow steps are counted and leave the average alone)
    ("housing-cuda", "recipes/housing.yaml", []),
    ("movie-reviews-fold0-cuda", "recipes/movie-reviews.yaml", []),
    ("movie-reviews-transformer-fold0-cuda", "recipes/movie-reviews.yaml",
     ["--model.name=text-transformer", "--model.n_layer=2", "--model.n_embd=128", "--model.n_head=4",
      "--model.dropout=0.1", "--optim.lr=0.001", "--optim.weight_decay=0.01", "--train.epochs=5"]),
    ("fp16-ema-digits-cuda", None, ["--train.precision=fp16", "--train.ema_decay=0.99", "--train.epochs=3"]),
    ("cifar10-gpu", "recipes/cifar10-gpu.yaml", []),
    ("cifar10-gpu-sgd", "recipes/cifar10-gpu.yaml", GPU_SGD),
    # the recipe as measured before Muon, airbench's lookahead, alternating flips, reflect padding
    # and whitening-bias freeze were added (89.53% on 2026-11-26): what those bring
    ("cifar10-gpu-sgd-without-tricks", "recipes/cifar10-gpu.yaml",
     [*GPU_SGD, "--train.lookahead_every=0", "--train.freeze_stem_after=0", "--data.flip_mode=random",
      "--data.translate_pad=zero"]),
    # epochs are cheap on the GPU: how far more of them take the recipe toward the 93%
    *[(f"cifar10-gpu-ep{n}", "recipes/cifar10-gpu.yaml", [f"--train.epochs={n}"]) for n in (8, 16, 24)],
    ("cifar10-gpu-fp16-gradscaler", "recipes/cifar10-gpu.yaml", ["--train.precision=fp16", "--train.epochs=4"]),
    # accuracy of the CPU recipes, computed on the GPU in fp32 (their CPU time is measured on the CPU)
    ("cifar10-cpu-recipe-on-gpu", "recipes/cifar10-cpu.yaml", ["--train.device=cuda"]),
    ("cifar10-cpu-recipe-no-low-res", "recipes/cifar10-cpu.yaml", ["--train.device=cuda", "--data.low_res_size=0"]),
    ("cifar10-cpu-recipe-12ep", "recipes/cifar10-cpu.yaml", ["--train.device=cuda", "--train.epochs=12"]),
    ("cifar10-cpu-recipe-bias1x", "recipes/cifar10-cpu.yaml", ["--train.device=cuda", "--optim.no_decay_lr_scale=1"]),
    # loss curves of the CPU language-model recipes (their CPU time is measured on the CPU)
    *[(f"shakespeare-char-{tag}", "recipes/shakespeare-char.yaml", ["--train.eval_every_steps=150", *o])
      for tag, o in [("base", []), ("lr5e-3", ["--optim.lr=0.005"]), ("lr2e-3", ["--optim.lr=0.002"]),
                     ("b24-600", ["--data.batch_size=24", "--train.max_steps=600", "--optim.lr=0.004"]),
                     ("modern", ["--model.rotary=true", "--model.mlp=swiglu", "--model.norm=rmsnorm"]),
                     ("steps900", ["--train.max_steps=900"])]],
    *[(f"shakespeare-long-{tag}", "recipes/shakespeare-char-long.yaml", ["--train.eval_every_steps=200", *o])
      for tag, o in [("base", []),
                     ("d192", ["--model.n_embd=192", "--train.max_steps=760", "--optim.lr=0.002"]),
                     ("l6d192", ["--model.n_layer=6", "--model.n_head=6", "--model.n_embd=192",
                                 "--train.max_steps=530", "--optim.lr=0.002"]),
                     ("lr2e-3", ["--optim.lr=0.002"])]],
    ("shakespeare-char-gpu", "recipes/shakespeare-char-gpu.yaml", []),
    ("cifar10-gpu-compile", "recipes/cifar10-gpu.yaml", ["--train.compile=true"]),
    ("cifar10-gpu-compile-fp32", "recipes/cifar10-gpu.yaml", ["--train.compile=true", "--train.precision=fp32",
                                                              "--train.epochs=2"]),
    ("cifar10-gpu-fp32", "recipes/cifar10-gpu.yaml", ["--train.precision=fp32", "--train.channels_last=false"]),
    # tuning grid for the CPU recipe (accuracy only; fp32 on the GPU)
    ("cifar10-cpu-recipe-sgd", "recipes/cifar10-cpu.yaml", ["--train.device=cuda", *CPU_SGD]),
    *[(f"cifar10-cpu-{tag}", "recipes/cifar10-cpu.yaml", ["--train.device=cuda", *o])
      for tag, o in [("lookahead", ["--train.lookahead_every=5", "--train.lookahead_start=2"]),
                     ("muon-lr016", ["--optim.muon_lr=0.16"]), ("muon-lr036", ["--optim.muon_lr=0.36"]),
                     ("lr075", ["--optim.lr=0.75"]), ("ep7", ["--train.epochs=7"]), ("ep9", ["--train.epochs=9"]),
                     ("ns5", ["--optim.muon_ns_steps=5"]), ("b1000", ["--data.batch_size=1000",
                                                                   "--train.grad_accum=4", "--optim.muon_lr=0.17",
                                                                   "--optim.weight_decay=0.00133"]),
                     ("ema", ["--train.ema_decay=0.99"]), ("ls01", ["--train.label_smoothing=0.1"])]],
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", default=os.environ.get("LAYERWISE_DATA", ".gpu-data"))
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="2 steps per job (to check the script on a CPU)")
    args = ap.parse_args()
    if args.list:
        print("\n".join(n for n, _, _ in JOBS))
        return
    import layerwise

    out = Path(os.environ.get("OUT", tempfile.gettempdir())) / "gpu_results.jsonl"
    print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda,
                      "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, recipe, overrides in JOBS:
            if args.only and name not in args.only:
                continue
            t0 = time.perf_counter()
            rec: dict = {"job": name, "recipe": recipe, "overrides": overrides}
            try:
                smoke = ["--train.max_steps=2", "--train.device=cpu", "--data.train_subset=2048",
                         "--train.eval_every_steps=1", "--train.precision=fp32", "--train.eval_tta=none",
                         "--optim.warmup_steps=0",
                         "--model.name=convnet-half" if "cifar" in name else "--train.log_every=1"
                         ] if args.smoke else []
                config = [f"--data.root={args.data_root}", *Q, *overrides, *smoke]
                if any(o.startswith("--nproc") for o in overrides):  # through torchrun's launcher
                    run_dir = Path(tmp) / name
                    nproc = [o.split("=")[1] for o in overrides if o.startswith("--nproc")][0]
                    cmd = [sys.executable, "-m", "layerwise", "train", recipe,
                           *[o for o in config if not o.startswith("--nproc")],
                           f"--run.dir={run_dir}", "--quiet", "--nproc", nproc]
                    p = subprocess.run(cmd, capture_output=True, text=True)
                    if p.returncode:
                        raise RuntimeError(f"exit {p.returncode}: {p.stderr[-2000:]}")
                    s = json.loads((run_dir / "summary.json").read_text())
                else:
                    s = layerwise.fit(recipe, *config, run_dir=Path(tmp) / name, show_progress=False)
                rec |= {k: s[k] for k in ("test_accuracy", "test_loss", "test_rmse", "train_seconds", "steps", "epochs",
                                          "device", "precision", "params", "skipped_steps", "overflow_steps", "parallel",
                                          "params_on_rank0") if k in s}
                records = list(map(json.loads, (Path(s["run_dir"]) / "metrics.jsonl").read_text().splitlines()))
                rec["test_curve"] = [(r["step"], round(r["loss"], 4), round(r.get("accuracy") or 0.0, 4))
                                     for r in records if r["kind"] == "test"]
                # throughput after the first log interval (which holds compilation): examples/s,
                # tokens/s for a language model
                rates = sorted(r["examples_per_sec"] for r in records if r["kind"] == "train")[1:]
                rec["examples_per_sec_median"] = round(rates[len(rates) // 2]) if rates else None
            except Exception as e:  # report and go on: one broken job must not hide the others
                rec["error"] = f"{type(e).__name__}: {e}"
                traceback.print_exc()
            rec["wall_seconds"] = round(time.perf_counter() - t0, 2)
            line = json.dumps(rec)
            print(line, flush=True)
            with out.open("a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
