"""layerwise against its baselines on one CUDA GPU, in one command (issue 14, performance).

Parts, in the order they run (``--only`` picks some; a part that fails prints its error and the
next one runs; every figure is written to the JSON as soon as it exists, so a run cut short keeps
what it measured):

  cifar     CIFAR-10 (the JPEG copy, decoded once into uint8 tensors that both sides use):
            `layerwise.fit` on recipes/cifar10-gpu.yaml against airbench94_muon's reference loop
            (benchmarks/_airbench.py: batch 2000, Muon + Nesterov SGD, label smoothing, TTA, 8
            epochs, fp16 as the reference) on the same GPU, eager and compiled. Final TTA accuracy,
            training time, time to --target (94%: the mean accuracy of the runs must reach it),
            and the ratio layerwise / baseline.
  gpt       the GPT language model at GPT-2 124M shape (12 layers, 12 heads, 768 wide, context
            1024, vocabulary 50304, no biases, tied head) on uniform random tokens, bf16 autocast,
            torch.compile, fused AdamW, clip 1.0: tokens/s and model FLOPs utilization through the
            Trainer (`layerwise.fit` on a random-token dataset registered here) and in a plain loop.
  overhead  one epoch of the recipe's convnet: the Trainer (`layerwise.fit`, --train.epochs=1)
            against a plain loop over the same model, optimizer, loader and precision (forward,
            loss, backward, step; nothing else), and the plain loop with the Trainer's one
            per-step host sync added (the finiteness check of loss and gradient norm).

Timing. Every timed region starts and ends with a device synchronization. "train_seconds" is the
training loop only: for layerwise the summary's train_seconds (first step to last, the data
pipeline included, data decoding, model building, whitening init and the final evaluation
excluded); for the baseline the same region (its first epoch's preprocessing included, as the
reference times it; whitening init and evaluation reported apart). Warm-up is excluded the same
way for both: before the timed runs each side makes one untimed warm-up run in this process (the
reference's own habit: it compiles and tunes on a run with random labels), so cuDNN/cuBLAS
initialization and compilation fall there. cudnn.benchmark is on for the baseline only, as the
reference sets it; layerwise runs as users get it, per-epoch checkpoints included (two one-run
probes show what the flag would give it and what the checkpoints cost; --no-probes skips them).

MFU = training FLOPs per token x tokens/s / the GPU's dense bf16 peak (PEAK_BF16_TFLOPS, by
device name; --peak-tflops overrides). FLOPs per token: `GPT.flops_per_token()`, 6 N + 12 L T d
with N the matmul weights (the tied head included, the embeddings' lookups not), attention
counted in full (not halved for causality): the convention of PaLM's appendix B and of nanoGPT's
estimate_mfu (whose N also holds the LayerNorm gains, 0.01% here). The
JSON also gives the 6 N figure with N all parameters, for comparison with reports that leave
attention out.

  energy    layerwise's own energy metering (layerwise.insight.energy, issue 16): what its meter
            (source selection, start offsets, CPU share) reports for a fixed matmul load against
            the raw NVML counter difference over the same region (benchmarks/_energy.py),
            and the default job (digits, resnet-digits) on the GPU, as summary.json reports it
            (energy_method, joules of training and evaluation, joules per training example).

Energy: NVML's cumulative energy counter (benchmarks/_energy.py) read around each timed region;
"unavailable" when NVML cannot be read. Per step for the plain loops and the baseline's training
loop; per whole run (setup and final evaluation included) for layerwise's fits, which give no
hook inside their loop.

    PYTHONPATH=src python benchmarks/gpu.py --data-root DIR [--only cifar gpt overhead energy] [--out FILE.json]
    PYTHONPATH=src python benchmarks/gpu.py --smoke --data-root DIR   # tiny sizes on the CPU, every code path

DIR holds cifar10/cifar10_{train,test}_jpeg.npz (default: $LAYERWISE_DATA or .gpu-data). The JSON
goes to $OUT/gpu_bench.json when OUT is set and to --out; with neither, to
benchmarks/results/gpu_bench_<date>.json ($TMPDIR/gpu_bench_smoke.json for --smoke).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
import _airbench
from _energy import EnergyMeter, EnergyWindow, driver_version

REPO = Path(__file__).resolve().parents[1]
RECIPE = str(REPO / "recipes" / "cifar10-gpu.yaml")
PARTS = ("cifar", "gpt", "overhead", "energy")  # the order they run: the cheap overhead and energy parts last
# dense bf16 tensor-core peak (TFLOP/s, no sparsity) by device name; the first key found in the name wins
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0)]
# airbench94_muon variants: eager, or torch.compile in its default mode ("compiled") or a named mode
BASELINE_MODES = ("eager", "compiled", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
QUIET = ["--run.plots=false", "--run.tensorboard=false"]
# what --smoke changes so that every path runs in seconds on one CPU thread
SMOKE_CIFAR = ["--model.name=convnet-half", "--data.batch_size=100", "--data.eval_batch_size=100",
               "--train.precision=fp32", "--train.channels_last=false", "--train.epochs=2",
               "--train.freeze_stem_after=1", "--train.device=cpu"]
SMOKE_HYPER = {"batch_size": 100, "epochs": 2, "whiten_bias_epochs": 1, "widths": (32, 128, 128),
               "whiten_images": 256, "eval_batch_size": 100}


def peak_tflops(device_name: str) -> float | None:
    """Dense bf16 peak of a GPU from PEAK_BF16_TFLOPS, or None for a device not in the table."""
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def cudnn_benchmark(on: bool):
    """torch.backends.cudnn.benchmark set for the block, restored after."""
    was = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = was


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Bench:
    """What every part shares: options, device, energy meter, the results and where they go."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.smoke = args, args.smoke
        self.device = torch.device("cpu" if args.smoke else "cuda")
        self.meter = EnergyMeter(0) if self.device.type == "cuda" else None
        self.tmp = Path(tempfile.mkdtemp(prefix="layerwise-gpu-bench-"))
        self.data_root = Path(args.data_root)
        self.t0 = time.perf_counter()
        name = torch.cuda.get_device_name(0) if self.device.type == "cuda" else "cpu"
        self.peak = args.peak_tflops or (peak_tflops(name) if self.device.type == "cuda" else None)
        from layerwise.train.run import environment
        self.results: dict = {
            "benchmark": "benchmarks/gpu.py", "smoke": self.smoke, "argv": sys.argv[1:],
            "env": environment(self.device, 0) | {"nvidia_driver": driver_version()},
            "peak_bf16_tflops": self.peak,
            "energy": (self.meter.backend if self.meter and self.meter.available
                       else f"unavailable ({self.meter.reason if self.meter else 'not a CUDA device'})"),
            "parts": {}}
        self.paths = [Path(os.environ["OUT"]) / "gpu_bench.json"] if os.environ.get("OUT") else []
        if args.out:
            self.paths.append(Path(args.out))
        if not self.paths:
            self.paths.append(Path(tempfile.gettempdir()) / "gpu_bench_smoke.json" if self.smoke else
                              REPO / "benchmarks" / "results" / f"gpu_bench_{time.strftime('%Y-%m-%d')}.json")

    def save(self, part: str, figures: dict) -> None:
        """Record (and write out at once) the figures of ``part`` measured so far."""
        self.results["parts"][part] = figures
        self.results["elapsed_seconds"] = round(time.perf_counter() - self.t0, 1)
        text = json.dumps(self.results, indent=2, default=str) + "\n"
        for path in self.paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)

    def fit(self, recipe, *overrides: str, name: str) -> tuple[dict, float | None]:
        """`layerwise.fit` in a fresh run directory; (summary, joules of the whole call)."""
        import layerwise

        sync(self.device)
        with EnergyWindow(self.meter) as w:
            s = layerwise.fit(recipe, *overrides, run_dir=self.tmp / f"{name}-{time.perf_counter_ns()}",
                              show_progress=False)
            sync(self.device)
        return s, w.joules

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.1f} s] {msg}", flush=True)


@contextlib.contextmanager
def guarded(b: Bench, part: str, out: dict, key: str):
    """Run one side of a part; if it fails, print the error, record it as out[key] and go on, so
    that one broken side does not hide the others."""
    try:
        yield
    except Exception as e:  # noqa: BLE001  reported in the JSON and the table
        traceback.print_exc()
        out[key] = {"error": f"{type(e).__name__}: {e}"}
        b.save(part, out)
        free_memory()


def _stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def summarize_runs(runs: list[dict], target: float) -> dict:
    """Mean accuracy and time of repeated runs; time to target when the mean accuracy reaches it."""
    acc = _stats([r["accuracy"] for r in runs])
    secs = _stats([r["train_seconds"] for r in runs])
    reached = acc["mean"] >= target
    return {"runs": runs, "accuracy": acc, "train_seconds": secs,
            "time_to_target_seconds": secs["mean"] if reached else None,
            "runs_reaching_target": sum(r["accuracy"] >= target for r in runs)}


# ------------------------------------------------------------------------------------------ cifar


def smoke_cifar_root(src: Path, dst: Path, n_train: int = 500, n_test: int = 200) -> Path:
    """A data root with a few hundred images of each split of the JPEG copy, spread over classes."""
    (dst / "cifar10").mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        rel = f"cifar10/cifar10_{split}_jpeg.npz"
        with np.load(src / rel, allow_pickle=False) as f:
            d = {k: f[k] for k in f.files}
        off = d["offsets"]
        keep = np.linspace(0, len(off) - 2, n).round().astype(np.int64)
        parts = [d["jpeg"][off[i]:off[i + 1]] for i in keep]
        out = {k: v[keep] for k, v in d.items() if k not in ("jpeg", "offsets", "classes")}
        out |= {"jpeg": np.concatenate(parts), "offsets": np.concatenate([[0], np.cumsum([len(p) for p in parts])]),
                "classes": d["classes"]}
        np.savez(dst / rel, **out)
    return dst


def part_cifar(b: Bench) -> None:
    from layerwise.config import DataConfig
    from layerwise.data import load_dataset

    a, dev = b.args, b.device
    out: dict = {"target": a.target, "runs_per_side": a.runs, "recipe": "recipes/cifar10-gpu.yaml"}
    t = time.perf_counter()
    ds = load_dataset("cifar10", b.data_root, DataConfig(name="cifar10"))  # decoded once; fit reuses it
    out["decode_seconds"] = round(time.perf_counter() - t, 2)
    train = (ds.x_train.to(dev), ds.y_train.to(dev))
    test = (ds.x_test.to(dev), ds.y_test.to(dev))
    out["images"] = {"train": len(train[1]), "test": len(test[1])}
    b.log(f"cifar: {len(train[1])} + {len(test[1])} images decoded in {out['decode_seconds']} s")

    lw = [f"--data.root={b.data_root}", *QUIET, *(SMOKE_CIFAR if b.smoke else [])]
    # (key, extra overrides, cudnn.benchmark, runs): the recipe as users run it, then one-run probes of
    # what its per-epoch checkpoints cost and what cudnn.benchmark would give
    variants = [("layerwise", [], False, a.runs)]
    if a.probes:
        variants += [("layerwise_no_checkpoints", ["--run.checkpoint_every=1000000"], False, 1),
                     ("layerwise_cudnn_benchmark", [], True, 1)]
    for key, extra, bench, n_runs in variants:
        with guarded(b, "cifar", out, key), cudnn_benchmark(bench):
            t = time.perf_counter()
            if key != "layerwise_no_checkpoints":  # that one runs in the state the first variant left
                b.fit(RECIPE, *lw, "--train.epochs=2", "--train.freeze_stem_after=1", name="cifar-warmup")
            warm = time.perf_counter() - t
            runs = []
            for seed in range(n_runs):
                t = time.perf_counter()
                s, joules = b.fit(RECIPE, *lw, *extra, f"--train.seed={seed}", name=f"cifar-{seed}")
                runs.append({"seed": seed, "accuracy": s["test_accuracy"], "train_seconds": s["train_seconds"],
                             "steps": s["steps"], "epochs": s["epochs"], "fit_wall_seconds": time.perf_counter() - t,
                             "fit_joules": joules})
                b.log(f"cifar {key} seed {seed}: {s['test_accuracy']:.4f} in {s['train_seconds']:.2f} s")
            out[key] = summarize_runs(runs, a.target) | {"warmup_seconds": round(warm, 2), "cudnn_benchmark": bench,
                                                         "extra_overrides": extra}
            b.save("cifar", out)

    hp = _airbench.Hyper(**(SMOKE_HYPER if b.smoke else {}))
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    for mode in a.baseline_modes:
        net = _airbench.AirbenchNet(hp, dtype).to(dev).to(memory_format=torch.channels_last)
        orth = _airbench.orthogonalize
        if mode != "eager":  # the reference compiles the network and the Newton-Schulz function
            net = torch.compile(net, mode=None if mode == "compiled" else mode)
            orth = torch.compile(_airbench.orthogonalize)
        with guarded(b, "cifar", out, f"airbench_{mode}"), cudnn_benchmark(True):  # the reference sets it
            t = time.perf_counter()
            warm_hp = dataclasses.replace(hp, epochs=2, whiten_bias_epochs=1)
            _airbench.train_run(net, train, test, warm_hp, dtype, seed=1000, orth=orth, random_labels=True)
            warm = time.perf_counter() - t
            runs = []
            for seed in range(a.runs):
                t = time.perf_counter()
                with EnergyWindow(b.meter) as w:
                    r = _airbench.train_run(net, train, test, hp, dtype, seed=seed, orth=orth, energy=b.meter)
                r |= {"seed": seed, "accuracy": r.pop("tta_accuracy"), "run_wall_seconds": time.perf_counter() - t,
                      "run_joules": w.joules,
                      "joules_per_step": r["train_joules"] / r["steps"] if r["train_joules"] is not None else None}
                runs.append(r)
                b.log(f"cifar airbench94_muon {mode} seed {seed}: {r['accuracy']:.4f} in {r['train_seconds']:.2f} s")
            out[f"airbench_{mode}"] = summarize_runs(runs, a.target) | {
                "warmup_seconds": round(warm, 2), "compile_mode": None if mode == "eager" else mode,
                "precision": str(dtype).replace("torch.", ""), "epochs": hp.epochs, "batch_size": hp.batch_size}
            out["ratios"] = cifar_ratios(out)
            b.save("cifar", out)
        del net
        free_memory()


def cifar_ratios(out: dict) -> dict:
    """layerwise / baseline: training time, and time to target where both reached it."""
    lw = out.get("layerwise")
    ratios: dict = {}
    for key in [k for k in out if k.startswith("airbench_") and lw and "error" not in out[k]]:
        base = out[key]
        ratios[f"train_seconds_layerwise_over_{key}"] = lw["train_seconds"]["mean"] / base["train_seconds"]["mean"]
        both = lw["time_to_target_seconds"] and base["time_to_target_seconds"]
        ratios[f"time_to_target_layerwise_over_{key}"] = (
            lw["time_to_target_seconds"] / base["time_to_target_seconds"] if both else None)
        ratios[f"accuracy_points_layerwise_minus_{key}"] = 100 * (lw["accuracy"]["mean"] - base["accuracy"]["mean"])
    return ratios


# --------------------------------------------------------------------------------------- overhead


def plain_epoch(b: Bench, ds, cfg, *, host_sync: bool) -> dict:
    """One epoch of cfg's model in a plain loop; seconds, steps and joules between syncs."""
    from layerwise.data.loaders import build_loaders
    from layerwise.models import create_model
    from layerwise.train.optim import build_optimizer
    from layerwise.train.precision import autocast
    from layerwise.train.schedule import apply_lr

    dev, t, o = b.device, cfg.train, cfg.optim
    torch.manual_seed(t.seed)
    loaders = build_loaders(ds, cfg.data, dev, cfg.data.batch_size // t.grad_accum, seed=t.seed)
    model = create_model(cfg.model.name, in_shape=ds.info.in_shape, num_classes=ds.info.num_classes,
                         **cfg.model.args).to(dev)
    idx = torch.linspace(0, len(ds.x_train) - 1, min(len(ds.x_train), 5000)).long()
    model.init_from_data(loaders.transform(ds.x_train[idx].to(dev), None)[0])  # the whitening stem
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(
        model, o.name, lr=o.lr, weight_decay=o.weight_decay, momentum=o.momentum, nesterov=o.nesterov,
        betas=tuple(o.betas), eps=o.eps, muon_lr=o.muon_lr, muon_momentum=o.muon_momentum, muon_rest=o.muon_rest,
        muon_normalize=o.muon_normalize, muon_ns_steps=o.muon_ns_steps, no_decay_lr_scale=o.no_decay_lr_scale,
        device_type=dev.type)
    params = list(model.parameters())
    steps = len(loaders.train)
    sync(dev)
    with EnergyWindow(b.meter) as w:
        start = time.perf_counter()
        for step, (x, y) in enumerate(loaders.train):
            apply_lr(opt, 1 - step / steps)  # the recipe's linear decay
            with autocast(dev.type, t.precision):
                out = model(x)
            loss = F.cross_entropy(out, y, label_smoothing=t.label_smoothing, reduction="sum") / len(y)
            loss.backward()
            if host_sync:  # what the Trainer adds: the gradient norm and one finiteness flag read on the host
                norm = torch.nn.utils.clip_grad_norm_(params, math.inf, foreach=True)
                if not bool(torch.isfinite(loss) & torch.isfinite(norm)):
                    raise RuntimeError(f"non-finite loss or gradient at step {step}")
            opt.step()
            opt.zero_grad(set_to_none=True)
        sync(dev)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "steps": steps, "joules": w.joules}


def part_overhead(b: Bench) -> None:
    from layerwise.config import load_config
    from layerwise.data import load_dataset

    a = b.args
    over = [f"--data.root={b.data_root}", *QUIET, *(SMOKE_CIFAR if b.smoke else []), "--train.epochs=1"]
    cfg = load_config(RECIPE, over)
    if cfg.train.compile:
        raise RuntimeError("the overhead part compares eager loops; the recipe now compiles: extend plain_epoch")
    ds = load_dataset("cifar10", b.data_root, cfg.data)
    sides: dict[str, list] = {"plain": [], "plain_host_sync": [], "layerwise": []}

    def layerwise_epoch() -> dict:
        s, joules = b.fit(RECIPE, *over, name="overhead")
        return {"seconds": s["train_seconds"], "steps": s["steps"], "fit_joules": joules}

    run = {"plain": lambda: plain_epoch(b, ds, cfg, host_sync=False),
           "plain_host_sync": lambda: plain_epoch(b, ds, cfg, host_sync=True), "layerwise": layerwise_epoch}
    for name in sides:  # warm-up, untimed
        run[name]()
    for _ in range(a.repeats):  # interleaved, so drifts in clock or temperature hit every side alike
        for name, rows in sides.items():
            rows.append(run[name]())
    out: dict = {"model": cfg.model.name, "batch_size": cfg.data.batch_size, "precision": cfg.train.precision,
                 "channels_last": cfg.train.channels_last, "repeats": a.repeats}
    for name, rows in sides.items():
        med = statistics.median(r["seconds"] for r in rows)
        steps = rows[0]["steps"]
        joules = [r["joules"] / r["steps"] for r in rows if r.get("joules") is not None]
        out[name] = {"epoch_seconds_median": med, "ms_per_step": 1000 * med / steps, "steps": steps,
                     "epoch_seconds": [r["seconds"] for r in rows],
                     "joules_per_step": statistics.median(joules) if joules else None}
    out["ratio_layerwise_over_plain"] = out["layerwise"]["epoch_seconds_median"] / out["plain"]["epoch_seconds_median"]
    out["ratio_host_sync_over_plain"] = (out["plain_host_sync"]["epoch_seconds_median"]
                                         / out["plain"]["epoch_seconds_median"])
    b.log(f"overhead: layerwise {out['layerwise']['ms_per_step']:.2f} ms/step, plain {out['plain']['ms_per_step']:.2f}"
          f" ({out['ratio_layerwise_over_plain']:.3f}x)")
    b.save("overhead", out)
    free_memory()


# -------------------------------------------------------------------------------------------- gpt


def gpt_shape(b: Bench) -> dict:
    a = b.args
    if b.smoke:
        return {"n_layer": 2, "n_head": 2, "n_embd": 64, "block": 64, "vocab": 512, "batch": 4, "warmup": 2,
                "steps": 4, "log_every": 2}
    return {"n_layer": 12, "n_head": 12, "n_embd": 768, "block": 1024, "vocab": 50304, "batch": a.gpt_batch,
            "warmup": a.gpt_warmup, "steps": a.gpt_steps, "log_every": 10}


def register_random_tokens(n_train: int, n_val: int, block: int, vocab: int) -> None:
    """A dataset 'random-tokens' of uniform token ids (seed 0) in layerwise's registry."""
    from layerwise.data.datasets import Dataset, DatasetInfo, register_dataset

    @register_dataset("random-tokens")
    def _random_tokens(root, opts) -> Dataset:
        g = torch.Generator().manual_seed(0)
        info = DatasetInfo("random-tokens", (int(opts.block_size),), vocab, [], 1.0, [], [], task="lm")
        return Dataset(info, torch.randint(vocab, (n_train,), generator=g), None,
                       torch.randint(vocab, (n_val,), generator=g), None,
                       {"generator": "torch.randint, uniform over the vocabulary, seed 0", "vocab_size": vocab})


def gpt_trainer(b: Bench, g: dict) -> dict:
    """Tokens/s through `layerwise.fit`: the train log's intervals after the warm-up steps."""
    total = g["warmup"] + g["steps"]
    over = [f"--data.root={b.tmp}", "--data.name=random-tokens", f"--data.block_size={g['block']}",
            f"--data.batch_size={g['batch']}", "--model.name=gpt", f"--model.n_layer={g['n_layer']}",
            f"--model.n_head={g['n_head']}", f"--model.n_embd={g['n_embd']}", "--model.bias=false",
            "--model.dropout=0.0", "--optim.name=adamw", "--optim.lr=0.0006", "--optim.weight_decay=0.1",
            "--optim.betas=[0.9, 0.95]", "--optim.clip_grad_norm=1.0", "--optim.schedule=cosine",
            f"--optim.warmup_steps={g['warmup']}", f"--train.max_steps={total}", f"--train.log_every={g['log_every']}",
            "--train.eval_every=0", "--run.checkpoint_every=1000000", *QUIET,
            f"--train.precision={'fp32' if b.smoke else 'bf16'}", f"--train.compile={str(b.args.compile).lower()}",
            f"--train.device={b.device.type}"]
    if b.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    s, _ = b.fit(None, *over, name="gpt")
    wall = time.perf_counter() - t
    records = [json.loads(line) for line in (Path(s["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    tokens = seconds = 0.0
    prev = 0
    for r in (r for r in records if r["kind"] == "train"):
        n = (r["step"] - prev) * g["batch"] * g["block"]
        if prev >= g["warmup"]:  # the first intervals hold compilation
            tokens, seconds = tokens + n, seconds + n / r["examples_per_sec"]
        prev = r["step"]
    return {"tokens_per_second": tokens / seconds if seconds else None, "timed_steps": round(tokens / g["batch"]
            / g["block"]), "fit_wall_seconds": wall, "train_seconds": s["train_seconds"], "params": s["params"],
            "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if b.device.type == "cuda" else None}


def gpt_plain(b: Bench, g: dict) -> dict:
    """The same model, compiled the same way, in a plain loop: random windows gathered on the device,
    forward under autocast, cross-entropy, backward, clip, fused AdamW (decay on matrices)."""
    from layerwise.models import create_model
    from layerwise.train.precision import autocast

    dev, T, V, B = b.device, g["block"], g["vocab"], g["batch"]
    torch.manual_seed(0)
    model = create_model("gpt", in_shape=(T,), num_classes=V, n_layer=g["n_layer"], n_head=g["n_head"],
                         n_embd=g["n_embd"], bias=False, dropout=0.0).to(dev)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=6e-4, betas=(0.9, 0.95), fused=dev.type == "cuda")
    forward = torch.compile(model) if b.args.compile else model
    tokens = torch.randint(V, ((g["warmup"] + g["steps"]) * B * 4 + T + 1,), device=dev)
    window = torch.arange(T, device=dev)
    precision = "fp32" if b.smoke else "bf16"

    def step() -> torch.Tensor:
        idx = torch.randint(len(tokens) - T - 1, (B,), device=dev)[:, None] + window  # (B, T)
        x, y = tokens[idx], tokens[idx + 1]
        with autocast(dev.type, precision):
            logits = forward(x)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(g["warmup"]):  # compilation happens here
        step()
    sync(dev)
    with EnergyWindow(b.meter) as w:
        start = time.perf_counter()
        for _ in range(g["steps"]):
            loss = step()
        sync(dev)
        seconds = time.perf_counter() - start
    n = g["steps"] * B * T
    return {"tokens_per_second": n / seconds, "timed_steps": g["steps"], "seconds": seconds,
            "ms_per_step": 1000 * seconds / g["steps"], "final_loss": float(loss.detach()),
            "joules_per_step": w.joules / g["steps"] if w.joules is not None else None,
            "tokens_per_joule": n / w.joules if w.joules else None,
            "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None}


def part_gpt(b: Bench) -> None:
    from layerwise.models import create_model

    g = gpt_shape(b)
    register_random_tokens((g["warmup"] + g["steps"] + 2) * g["batch"] * g["block"] + g["block"] + 1,
                           4 * g["block"] + 1, g["block"], g["vocab"])
    with torch.device("meta"):  # the analytic counts need no weights
        model = create_model("gpt", in_shape=(g["block"],), num_classes=g["vocab"], n_layer=g["n_layer"],
                             n_head=g["n_head"], n_embd=g["n_embd"], bias=False)
    fpt, params = model.flops_per_token(), model.num_params()
    out: dict = {"shape": g, "compile": b.args.compile, "precision": "fp32" if b.smoke else "bf16",
                 "peak_bf16_tflops": b.peak, "flops_per_token": fpt, "params": params,
                 "params_non_embedding": model.num_params(non_embedding=True)}
    for key, fn in (("layerwise", gpt_trainer), ("plain", gpt_plain)):
        t = time.perf_counter()
        r = out[key] = fn(b, g) | {"part_wall_seconds": round(time.perf_counter() - t, 1)}
        free_memory()
        if r["tokens_per_second"] and b.peak:
            r["mfu"] = fpt * r["tokens_per_second"] / (b.peak * 1e12)
            r["mfu_6n"] = 6 * params * r["tokens_per_second"] / (b.peak * 1e12)
        b.log(f"gpt {key}: {r['tokens_per_second'] or 0:,.0f} tokens/s, MFU {_fmt(r.get('mfu'), '.3f')}")
        if key == "plain" and out["layerwise"]["tokens_per_second"]:
            out["ratio_layerwise_over_plain_tokens_per_second"] = (out["layerwise"]["tokens_per_second"]
                                                                   / r["tokens_per_second"])
        b.save("gpt", out)


# ------------------------------------------------------------------------------------------ energy


def part_energy(b: Bench) -> None:
    from layerwise.insight.energy import EnergyMeter as LibraryMeter

    out: dict = {}
    dev = b.device
    lib = LibraryMeter.for_device(dev)
    out["library_method"], out["library_sources"], out["library_reasons"] = lib.method, lib.describe(), lib.reasons
    n = 1024 if b.smoke else 8192
    x = torch.randn(n, n, device=dev, dtype=torch.float32 if b.smoke else torch.bfloat16)
    y = x @ x  # warm-up: cuBLAS handles and kernels
    sync(dev)
    seconds = 1.0 if b.smoke else 5.0
    lib.start()
    with EnergyWindow(b.meter) as w:
        start, k = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            for _ in range(10):
                y = x @ x
            sync(dev)
            k += 10
        seconds = time.perf_counter() - start
    parts = lib.read()
    del x, y
    out["matmul"] = {"n": n, "matmuls": k, "seconds": seconds, "library_joules": parts,
                     "benchmark_nvml_joules": w.joules,
                     "ratio_library_over_benchmark_gpu": (parts["gpu"] / w.joules
                                                          if w.joules and "gpu" in parts else None)}
    b.save("energy", out)
    b.log(f"energy: library {parts}, benchmark NVML window {w.joules} J")
    over = [*QUIET, f"--train.device={dev.type}"]
    b.fit(None, *over, "--train.epochs=1", name="energy-warmup")
    s, joules = b.fit(None, *over, name="energy-default-job")
    out["default_job"] = {k: v for k, v in s.items() if k.startswith(("energy", "grid", "test_accuracy",
                                                                      "train_seconds", "examples_seen"))}
    out["default_job"]["benchmark_nvml_joules_whole_fit"] = joules
    b.save("energy", out)


# ------------------------------------------------------------------------------------------ table


def _fmt(v, spec: str = ".3f", unit: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{unit}"


def table(results: dict) -> list[tuple[str, str, str, str]]:
    """(measurement, value, target, met) rows for what was measured."""
    rows = []
    p = results["parts"]
    if "cifar" in p:
        c = p["cifar"]
        tgt = f">= {100 * c['target']:.0f}%"
        for key in [k for k in c if k.startswith(("layerwise", "airbench_"))]:
            r = c[key]
            if "error" in r:
                rows.append((f"CIFAR-10 {key}: FAILED", r["error"][:60], "", ""))
                continue
            ttt = r["time_to_target_seconds"]
            rows.append((f"CIFAR-10 {key}: TTA accuracy (mean of {r['accuracy']['n']})",
                         f"{100 * r['accuracy']['mean']:.2f}% (+-{100 * r['accuracy']['std']:.2f})", tgt,
                         "yes" if ttt else "no"))
            rows.append((f"CIFAR-10 {key}: train s (time to {100 * c['target']:.0f}%)",
                         f"{r['train_seconds']['mean']:.2f} ({_fmt(ttt, '.2f', ' s') if ttt else 'not reached'})",
                         "", ""))
        lw = c.get("layerwise")
        for key in [k for k in c if f"train_seconds_layerwise_over_{k}" in c.get("ratios", {})]:
            ratio = c["ratios"][f"train_seconds_layerwise_over_{key}"]
            rows.append((f"CIFAR-10 train time: layerwise / {key}", f"{ratio:.3f}x", "", ""))
            ttt = c["ratios"][f"time_to_target_layerwise_over_{key}"]
            value = (f"{ttt:.3f}x" if ttt is not None else "layerwise did not reach it"
                     if not lw["time_to_target_seconds"] else f"{key} did not reach it")
            met = "-" if ttt is None and lw["time_to_target_seconds"] else "yes" if ttt is not None and ttt <= 1 else "no"
            rows.append((f"CIFAR-10 time to {100 * c['target']:.0f}%: layerwise / {key}", value, "<= 1.00x", met))
        for key in [k for k in c if k.startswith("airbench_")]:
            j = [r["joules_per_step"] for r in c[key].get("runs", []) if r.get("joules_per_step") is not None]
            if j:
                rows.append((f"CIFAR-10 {key}: energy per training step", f"{statistics.fmean(j):.1f} J", "", ""))
        j = [r["fit_joules"] for r in c.get("layerwise", {}).get("runs", []) if r.get("fit_joules") is not None]
        if j:
            rows.append(("CIFAR-10 layerwise: energy per whole fit", f"{statistics.fmean(j):.0f} J", "", ""))
    if "overhead" in p and "ratio_layerwise_over_plain" in p["overhead"]:
        o = p["overhead"]
        for k in ("plain", "plain_host_sync", "layerwise"):
            rows.append((f"convnet epoch, {k}: ms per step (median of {o['repeats']})",
                         f"{o[k]['ms_per_step']:.2f}", "", ""))
        rows.append(("convnet epoch: layerwise / plain", f"{o['ratio_layerwise_over_plain']:.3f}x", "<= 1.02x",
                     "yes" if o["ratio_layerwise_over_plain"] <= 1.02 else "no"))
        rows.append(("convnet epoch: plain + host sync / plain", f"{o['ratio_host_sync_over_plain']:.3f}x", "", ""))
        if o["plain"]["joules_per_step"] is not None:
            rows.append(("convnet plain loop: energy per step", f"{o['plain']['joules_per_step']:.2f} J", "", ""))
    if "gpt" in p:
        gp = p["gpt"]
        for k in ("layerwise", "plain"):
            if k in gp:
                mfu = gp[k].get("mfu")
                rows.append((f"GPT-124M {k}: tokens/s", f"{gp[k]['tokens_per_second']:,.0f}", "", ""))
                rows.append((f"GPT-124M {k}: MFU (6N + 12LTd)", _fmt(mfu and 100 * mfu, ".1f", "%"), ">= 45%",
                             "-" if mfu is None else ("yes" if mfu >= 0.45 else "no")))
        if gp.get("ratio_layerwise_over_plain_tokens_per_second"):
            rows.append(("GPT-124M tokens/s: layerwise / plain", f"{gp['ratio_layerwise_over_plain_tokens_per_second']:.3f}x",
                         "", ""))
        if gp.get("plain", {}).get("joules_per_step") is not None:
            rows.append(("GPT-124M plain: energy per step", f"{gp['plain']['joules_per_step']:.1f} J", "", ""))
    if "energy" in p and "matmul" in p["energy"]:
        e = p["energy"]
        r = e["matmul"]["ratio_library_over_benchmark_gpu"]
        rows.append(("energy: layerwise NVML / benchmark NVML (matmul load)", _fmt(r, ".3f", "x"), "0.98-1.02x",
                     "-" if r is None else "yes" if 0.98 <= r <= 1.02 else "no"))
        job = e.get("default_job", {})
        if job:
            rows.append((f"default job: training energy ({job.get('energy_method')})",
                         f"{job['energy_train_j']:.0f} J", "", ""))
            rows.append(("default job: energy per training example", f"{job['energy_per_example_j']:.4f} J", "", ""))
    for part, r in p.items():
        if "error" in r:
            rows.append((f"{part}: FAILED", r["error"][:60], "", ""))
    return rows


def print_table(results: dict) -> None:
    try:
        body = table(results)
    except Exception as e:  # noqa: BLE001  the JSON holds every figure; the table must not hide it
        traceback.print_exc()
        body = [("table", f"cannot be built ({type(e).__name__}: {e}); see the JSON", "", "")]
    rows = [("measurement", "value", "target", "met"), *body]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    env = results["env"]
    print(f"\n{env.get('gpu', 'cpu')}, torch {env['torch']}, CUDA {env.get('cuda')}, driver "
          f"{env.get('nvidia_driver')}, peak bf16 {results['peak_bf16_tflops']} TFLOP/s, energy: {results['energy']}"
          f"{' (SMOKE: tiny sizes on the CPU; figures mean nothing)' if results['smoke'] else ''}")
    for i, r in enumerate(rows):
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))
        if i == 0:
            print("-+-".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", default=os.environ.get("LAYERWISE_DATA", ".gpu-data"))
    ap.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, to check every code path")
    ap.add_argument("--runs", type=int, default=None, help="CIFAR-10 runs per side (default 3; smoke 1)")
    ap.add_argument("--target", type=float, default=0.94, help="CIFAR-10 accuracy for time-to-target")
    ap.add_argument("--baseline-modes", nargs="+", default=None, choices=BASELINE_MODES,
                    help="airbench94_muon variants: eager, compiled (torch.compile's default mode), or a "
                         "torch.compile mode such as max-autotune (the reference's; minutes of tuning). "
                         "Default: eager compiled (smoke: eager)")
    ap.add_argument("--no-probes", dest="probes", action="store_false",
                    help="skip the one-run layerwise probes (no per-epoch checkpoints; cudnn.benchmark on)")
    ap.add_argument("--repeats", type=int, default=None, help="overhead: timed epochs per side (default 5; smoke 1)")
    ap.add_argument("--gpt-batch", type=int, default=32, help="sequences of 1024 tokens per step")
    ap.add_argument("--gpt-warmup", type=int, default=20, help="untimed steps (compilation) before timing")
    ap.add_argument("--gpt-steps", type=int, default=60, help="timed steps")
    ap.add_argument("--no-compile", dest="compile", action="store_false", default=None,
                    help="GPT without torch.compile (default: compile on CUDA, not in --smoke)")
    ap.add_argument("--compile", dest="compile", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak, for a GPU not in the table")
    args = ap.parse_args(argv)
    args.runs = args.runs or (1 if args.smoke else 3)
    args.repeats = args.repeats or (1 if args.smoke else 5)
    args.baseline_modes = args.baseline_modes or (["eager"] if args.smoke else ["eager", "compiled"])
    args.compile = (not args.smoke) if args.compile is None else args.compile
    if not args.smoke and not torch.cuda.is_available():
        print(f"benchmarks/gpu.py needs a CUDA GPU and torch {torch.__version__} sees none. Run it on the GPU "
              f"machine, or add --smoke to check it on this CPU at tiny sizes.", file=sys.stderr)
        return 2
    if args.smoke:
        torch.set_num_threads(1)
    b = Bench(args)
    src = b.data_root
    if {"cifar", "overhead"} & set(args.only) and not (src / "cifar10" / "cifar10_train_jpeg.npz").is_file():
        print(f"benchmarks/gpu.py: no CIFAR-10 JPEG copy under --data-root '{src}' (it needs "
              f"cifar10/cifar10_train_jpeg.npz and cifar10/cifar10_test_jpeg.npz). Point --data-root (or "
              f"LAYERWISE_DATA) at the folder that holds cifar10/, or run --only gpt.", file=sys.stderr)
        return 2
    if args.smoke and {"cifar", "overhead"} & set(args.only):
        b.data_root = smoke_cifar_root(src, b.tmp / "data")
    b.log(f"device {b.device}, parts {', '.join(args.only)}, JSON to {', '.join(map(str, b.paths))}")
    for part in [p for p in PARTS if p in args.only]:
        t = time.perf_counter()
        try:
            {"cifar": part_cifar, "overhead": part_overhead, "gpt": part_gpt, "energy": part_energy}[part](b)
            b.save(part, b.results["parts"][part] | {"part_seconds": round(time.perf_counter() - t, 1)})
        except Exception as e:  # noqa: BLE001  report and go on: one broken part must not hide the others
            traceback.print_exc()
            b.save(part, b.results["parts"].get(part, {}) | {"error": f"{type(e).__name__}: {e}",
                                                             "part_seconds": round(time.perf_counter() - t, 1)})
            free_memory()
    b.log("done")
    print_table(b.results)
    shutil.rmtree(b.tmp, ignore_errors=True)  # run directories (a GPT fit leaves ~0.5 GB of weights)
    return 0


if __name__ == "__main__":
    sys.exit(main())
