"""A language model of Python source (``recipes/python-code.yaml``) against compressors and a
unigram model on exactly the same held-out files, in the same run.

Held-out bits per byte (8 x compressed bytes / raw UTF-8 bytes) of:
- the recipe's GPT: the summed cross-entropy (log2) of every held-out token after the first,
  each predicted from the tokens before it in its window of block_size (windows laid end to end,
  as the lm task evaluates), divided by the bytes of those tokens;
- ``xz -9`` and ``zlib -9`` (Python's lzma and zlib modules, the libraries behind the command-line
  tools) on the held-out text: concatenated (one stream over all held-out files, so the
  compressor finds repeats across files; the fairer to xz and the figure the model is compared
  with) and per file (each file compressed alone, sizes summed); ``xz -9e`` beside them;
- xz -9 given the training text: bits of (train + held-out) minus bits of train alone, a
  compressor that has read what the model was trained on (a stronger baseline than the task asks);
- unigram models: the held-out tokens under the training tokens' frequencies (add-one), and the
  held-out bytes under the training bytes' frequencies.

Then ``--samples`` functions are sampled three ways (SAMPLING: prompt ``def `` after the two blank
lines that precede a top-level def, at temperature 0.8 / top-k 200 and 0.5 / top-k 40, and ``def ``
alone; token healing; up to ``--tokens`` tokens) and cut at the first line after the prompt that
starts in column 0 (the next top-level statement: the function's body has ended) or at the file
separator; each is parsed with Python's ``ast`` (leading blank lines change nothing), and the
fraction that parse is reported.

    python benchmarks/code_lm.py [--run RUN_DIR | --recipe recipes/python-code.yaml] [--key=value ...]
        [--samples 100] [--tokens 512] [--device cpu] [--out benchmarks/results/code_lm_2026-11-30.json]

Without --run the recipe is trained first (``--key=value`` overrides go to it).
"""

from __future__ import annotations

import argparse
import json
import lzma
import math
import sys
import time
import zlib
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "python-code.yaml"
OUT = REPO / "benchmarks" / "results" / "code_lm_2026-11-30.json"
# (name, context before the prompt "def ", temperature, top-k): the context "\n\n\n" is what comes
# before a top-level def in PEP 8 source (two blank lines); without it "def" is the first token of
# the model's context, where training windows start mid-line, and it rarely reads as a line start
SAMPLING = [("after a blank-line context, T=0.8 top-k 200 (generate's defaults)", "\n\n\n", 0.8, 200),
            ("after a blank-line context, T=0.5 top-k 40", "\n\n\n", 0.5, 40),
            ("bare 'def ' as the whole context, T=0.8 top-k 200", "", 0.8, 200)]


def compressed_bits_per_byte(chunks: list[bytes], compress) -> float:
    """8 x summed compressed size / summed raw size of ``chunks`` (each compressed alone)."""
    return 8 * sum(len(compress(c)) for c in chunks) / sum(len(c) for c in chunks)


def xz9(b: bytes) -> bytes:
    return lzma.compress(b, format=lzma.FORMAT_XZ, preset=9)  # = `xz -9` (CRC64 check, one block)


def xz9e(b: bytes) -> bytes:
    return lzma.compress(b, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)  # = `xz -9e`


def zlib9(b: bytes) -> bytes:
    return zlib.compress(b, 9)


@torch.no_grad()
def model_bits(model, tokens: torch.Tensor, block_size: int, batch: int = 32) -> tuple[float, int]:
    """Summed -log2 p of tokens[1:] (each given the tokens before it in its window of block_size
    targets; windows end to end) and the number of tokens scored. tokens: (N,) int64."""
    model.eval()
    N, T = len(tokens), block_size
    starts = list(range(0, N - 1, T))
    bits = 0.0
    for b in range(0, len(starts), batch):
        group = starts[b:b + batch]
        full = [s for s in group if s + T + 1 <= N]
        if full:
            idx = (torch.tensor(full)[:, None] + torch.arange(T + 1)[None]).to(tokens.device)  # (B, T+1)
            xy = tokens[idx]
            logp = torch.log_softmax(model(xy[:, :-1]).float(), -1)  # (B, T, V)
            bits -= float(logp.gather(-1, xy[:, 1:, None]).sum()) / math.log(2)
        for s in (s for s in group if s + T + 1 > N):  # the last, shorter window
            xy = tokens[s:][None]
            logp = torch.log_softmax(model(xy[:, :-1]).float(), -1)
            bits -= float(logp.gather(-1, xy[:, 1:, None]).sum()) / math.log(2)
    return bits, N - 1


def plot(result: dict, run_dir: Path, path: Path) -> None:
    """Two panels: held-out bits per byte of every row (lower is better), and the run's training
    and held-out bits per byte by step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["bits_per_byte"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(rows)[::-1]
    a.barh(names, [rows[n] for n in names], color=["C3" if n == "model" else "C0" for n in names])
    for i, n in enumerate(names):
        a.text(rows[n], i, f" {rows[n]:.3f}", va="center")
    a.set_xlabel("held-out bits per byte (lower is better)")
    a.set_xlim(0, max(rows.values()) * 1.2)
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [(r["step"], r["bits_per_byte"]) for r in recs if r.get("kind") == "train" and "bits_per_byte" in r]
    test = [(r["step"], r["bits_per_byte"]) for r in recs if r.get("kind") in ("eval", "test")
            and "bits_per_byte" in r]
    if train:
        b.plot(*zip(*train), label="training batches")
    if test:
        b.plot(*zip(*test), "o-", label="held-out files")
    b.axhline(rows["xz -9 (concatenated)"], color="k", ls="--", label="xz -9 on the held-out files")
    b.set_xlabel("step")
    b.set_ylabel("bits per byte")
    b.legend()
    fig.suptitle(f"{result['recipe']}: GPT on Python source vs compressors "
                 f"(sampled functions that parse: {result['functions'][0]['parsed']}/{result['functions'][0]['samples']}"
                 f" at T={result['functions'][0]['temperature']}, {result['functions'][1]['parsed']}/"
                 f"{result['functions'][1]['samples']} at T={result['functions'][1]['temperature']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train_or_load(args, overrides: list[str]) -> Path:
    if args.run:
        return Path(args.run)
    import layerwise

    summary = layerwise.fit(str(args.recipe), *overrides, show_progress=False)
    return Path(summary["run_dir"])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default="", help="a finished run of the recipe (default: train it now)")
    p.add_argument("--recipe", default=str(RECIPE))
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--tokens", type=int, default=512, help="most tokens per sampled function")
    p.add_argument("--device", default="cpu", help="where the model is evaluated and sampled (cpu, cuda, auto)")
    p.add_argument("--out", default=str(OUT))
    args, overrides = p.parse_known_args(argv)

    from layerwise.config import default_data_root, load_config
    from layerwise.data import load_dataset
    from layerwise.data.code import FILE_SEPARATOR
    from layerwise.tasks.lm import unigram_bits
    from layerwise.train.inference import (
        generate_samples,
        load_language_model,
        syntax_report,
    )

    t0 = time.perf_counter()
    run_dir = train_or_load(args, overrides)
    train_wall = time.perf_counter() - t0
    summary = json.loads((run_dir / "summary.json").read_text())
    cfg = load_config(run_dir / "config.yaml")
    ds = load_dataset(cfg.data.name, cfg.data.root or default_data_root(), cfg.data)
    model, tok, info, dev = load_language_model(run_dir, args.device)

    val_text = tok.decode(ds.x_test.tolist())
    train_text = tok.decode(ds.x_train.tolist())
    val = val_text.encode("utf-8")
    files = [(f + FILE_SEPARATOR).encode("utf-8") for f in val_text.split(FILE_SEPARATOR)[:-1]]
    assert b"".join(files) == val, "held-out text does not split into files"
    first = len(tok.decode(ds.x_test[:1].tolist()).encode("utf-8"))  # bytes of the unscored first token

    t = time.perf_counter()
    bits, scored = model_bits(model, ds.x_test.to(dev), cfg.data.block_size)
    eval_seconds = time.perf_counter() - t
    rows = {"model": bits / (len(val) - first)}
    rows["xz -9 (concatenated)"] = 8 * len(xz9(val)) / len(val)
    rows["xz -9e (concatenated)"] = 8 * len(xz9e(val)) / len(val)
    rows["zlib -9 (concatenated)"] = 8 * len(zlib9(val)) / len(val)
    rows["xz -9 (per file)"] = compressed_bits_per_byte(files, xz9)
    rows["zlib -9 (per file)"] = compressed_bits_per_byte(files, zlib9)
    tr = train_text.encode("utf-8")
    rows["xz -9 given the training text"] = 8 * (len(xz9(tr + val)) - len(xz9(tr))) / len(val)
    rows["unigram tokens (add-one)"] = unigram_bits(ds.x_train, ds.x_test[1:], info.num_classes) / (len(val) - first)
    rows["unigram bytes (add-one)"] = unigram_bits(torch.tensor(list(tr)), torch.tensor(list(val)), 256) / len(val)

    functions = []
    for name, context, temperature, top_k in SAMPLING:
        t = time.perf_counter()
        samples = generate_samples(run_dir, context + "def ", args.samples, args.tokens, temperature, top_k, seed=0,
                                   device=args.device, stop=[FILE_SEPARATOR], top_level=True)
        report = syntax_report(samples, "python")
        functions.append({"setting": name, "context": context, "prompt": "def ", "temperature": temperature,
                          "top_k": top_k, "samples": report["samples"], "parsed": report["parsed"],
                          "fraction": report["fraction"], "seconds": round(time.perf_counter() - t, 1),
                          "examples": [x.removeprefix(context) for x in samples[:5]],
                          "parsed_examples": [x.removeprefix(context) for x, e in zip(samples, report["errors"],
                                                                                      strict=True) if e is None][:5],
                          "errors": [e for e in report["errors"] if e][:10]})

    label = Path(args.recipe).name + (f" (run {run_dir.name})" if args.run else "")
    result = {"run_dir": str(run_dir), "recipe": label,
              "overrides": overrides,
              "bits_per_byte": rows, "model_vs_xz9": rows["model"] / rows["xz -9 (concatenated)"],
              "beats_xz9": rows["model"] < rows["xz -9 (concatenated)"],
              "run_test_bits_per_byte": summary.get("test_bits_per_byte"),
              "held_out": {"files": len(files), "bytes": len(val), "tokens": len(ds.x_test), "scored_tokens": scored,
                           "bytes_per_token": ds.info.extra["bytes_per_token"]},
              "train": {"files": ds.source["train_files"], "bytes": len(tr), "tokens": len(ds.x_train),
                        "duplicates_dropped": ds.source["duplicates_dropped"],
                        "empty_dropped": ds.source["empty_dropped"], "packages": ds.source["packages"],
                        "train_seconds": summary.get("train_seconds"),
                        "wall_seconds": None if args.run else round(train_wall, 1),
                        "params": summary.get("params"), "steps": summary.get("steps")},
              "functions": functions, "max_tokens": args.tokens, "seed": 0,
              "stop": "first line after the prompt starting in column 0, or the file separator",
              "eval_seconds": round(eval_seconds, 1), "device": str(dev),
              "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None, "env": environment()}
    print(f"held-out: {len(files)} files, {len(val):,} bytes, {len(ds.x_test):,} tokens "
          f"({ds.info.extra['bytes_per_token']:.3f} bytes/token)")
    print(f"{'bits per byte':<34} held-out")
    for k, v in rows.items():
        print(f"{k:<34} {v:.4f}")
    print(f"model / xz -9 = {result['model_vs_xz9']:.3f} ({'beats' if result['beats_xz9'] else 'does NOT beat'} xz -9)")
    for f in functions:
        print(f"functions that parse, {f['setting']}: {f['parsed']} of {f['samples']} "
              f"({100 * f['fraction']:.0f}%) in {f['seconds']:.0f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, run_dir, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png').name}")
    return result


if __name__ == "__main__":
    main()
