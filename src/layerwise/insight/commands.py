"""The insight commands' printing and saving: thin layers over the library functions."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any


def fresh_dir(base: Path, stem: str) -> Path:
    """``base/<stem>-NNN``, the first number not taken: earlier results are never overwritten. Two
    commands finishing at once both get a folder (mkdir is the claim; a lost race takes the next)."""
    base.mkdir(parents=True, exist_ok=True)
    taken = {p.name for p in base.iterdir()}
    k = 1
    while True:
        while f"{stem}-{k:03d}" in taken:
            k += 1
        out = base / f"{stem}-{k:03d}"
        try:
            out.mkdir()
            return out
        except FileExistsError:
            taken.add(out.name)


def check_out_dir(base: Path) -> None:
    """ConfigError when ``base`` (--out) is an existing file, or lies under one, or its nearest
    existing folder cannot be written; creates nothing (a refused command leaves no folder)."""
    import os

    from layerwise.config import ConfigError

    p = base.absolute()
    while not p.exists():
        p = p.parent
    if not p.is_dir():
        raise ConfigError(f"--out '{base}' " + ("is a file" if p == base.absolute() else f"lies under the file '{p}'")
                          + "; give a folder (it is created if missing; each call writes a new <method>-NNN in it).")
    if not os.access(p, os.W_OK | os.X_OK):
        raise ConfigError(f"--out '{base}': the folder '{p}' cannot be written; give a folder you may write to.")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name.split(":")[0]).name)[:60] or "input"


def explain_command(args: Any) -> int:
    """`layerwise explain`: attributions for each input, saved under RUN_DIR/explain/<method>-NNN
    (or --out DIR/<method>-NNN): a PNG overlay per image or spectrogram, a bar chart and CSV per
    table row, one HTML page for text (tokens also printed in colour), summary.json with each
    prediction and IG completeness gap, attributions.npz. Prints one line per input."""
    import numpy as np

    from layerwise.insight import render
    from layerwise.insight.explain import explain

    if args.out:  # a folder that cannot be written is found before minutes of attributions, not after
        check_out_dir(Path(args.out))
    results = explain(args.run_dir, args.inputs, method=args.method, split=args.split, n=args.n, seed=args.seed,
                      target=args.target, steps=args.steps, internal_batch_size=args.internal_batch_size,
                      baseline=args.baseline, tolerance=args.tolerance, device=args.device,
                      data_root=args.data_root, invert=args.invert)
    # a run directory (given, or holding the given model file) keeps its explanations; a bare model
    # file elsewhere (e.g. a shipped pretrained one) writes into ./explain
    given = Path(args.run_dir)
    run_path = given if given.is_dir() or (given.parent / "config.yaml").is_file() else None
    run_path = run_path if run_path is None or run_path.is_dir() else run_path.parent
    base = Path(args.out) if args.out else (run_path / "explain" if run_path is not None else Path("explain"))
    out = fresh_dir(base, args.method)
    kind = results[0]["modality"]
    names = results[0]["features"] or []
    color = sys.stdout.isatty() and not args.no_color
    summary = []
    for i, r in enumerate(results):
        files = []
        stem = f"{i:03d}-{_safe(r['input'])}"
        if kind in ("image", "audio"):
            files.append(render.overlay_png(r, out / f"{stem}.png", spectrogram=kind == "audio").name)
        elif kind == "table":
            files.append(render.table_png(r, names, out / f"{stem}.png").name)
            rows = render.table_rows(r, names)
            (out / f"{stem}.csv").write_text("feature,value,attribution\n" + "".join(
                f"{n},{v:.6g},{a:.6g}\n" for n, v, a in rows), encoding="utf-8")
            files.append(f"{stem}.csv")
        head = render.headline(r)
        c = r["completeness"]
        gap = f"; IG completeness gap {c['gap']:+.3g} ({c['relative']:.2%} relative)" if c else ""
        print(f"{r['input']}: {head}{gap}" + (f" -> {out / files[0]}" if files else ""))
        if kind == "table":
            for n, v, a in rows[:8]:
                print(f"    {n:>24} = {v:<10.4g} {a:+.4g}")
        if kind == "text":
            scores = r["attribution"].tolist()
            print("    " + (render.ansi_tokens(r["tokens"], scores) if color else
                          " ".join(f"{t}({s:+.3f})" for t, s in zip(r["tokens"], scores, strict=True) if t)))
        summary.append({k: v for k, v in r.items() if k not in ("x", "attribution", "features")} | {"files": files})
    if kind == "text":
        render.tokens_html(results, out / "tokens.html")
        print(f"tokens coloured by attribution: {out / 'tokens.html'}")
    np.savez(out / "attributions.npz", **{f"a{i:03d}": r["attribution"].numpy() for i, r in enumerate(results)})
    (out / "summary.json").write_text(json.dumps({"run": str(args.run_dir), "method": args.method,
                                                  "steps": args.steps, "baseline": args.baseline,
                                                  "results": summary}, indent=2), encoding="utf-8")
    print(f"wrote {len(results)} explanation(s) to {out}")
    return 0
