"""Fit a results table and report it: a JSON-ready result, text for the terminal, and a report
folder with ``report.png`` (loss against N with the fitted law and its bootstrap band, held-out
runs with their prediction intervals; loss against compute with the compute frontier) and
``report.md`` (the table, the law with intervals, the extrapolation check, the command).

    result = analyze(read_table("sweeps/out/shakespeare-gpt/results.csv"), law="n", holdout=1)
    write_report("sweeps/out/shakespeare-gpt", law="n", holdout=1)
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from layerwise.scaling.fit import (
    FORMULAS,
    LAWS,
    Fit,
    allocation_exponents,
    bootstrap_fits,
    fit_law,
    fit_summary,
    holdout_check,
    summarize_bootstrap,
)
from layerwise.scaling.table import ScalingError, read_table

LEVEL = 0.95  # every interval in the report


def load_results(source: str | Path) -> tuple[dict[str, np.ndarray], Path]:
    """The table at ``source``: a sweep folder (its results.csv, else results.jsonl) or a table file;
    returns the columns and the file read. Raises `ScalingError` when there is none."""
    source = Path(source)
    if source.is_dir():
        for name in ("results.csv", "results.jsonl"):
            if (source / name).is_file():
                return read_table(source / name), source / name
        raise ScalingError(f"'{source}' holds no results.csv or results.jsonl. Give a sweep's output folder "
                           f"(after at least one run finished) or the path of a results table.")
    return read_table(source), source


def _percentile_interval(x: np.ndarray, level: float = LEVEL) -> tuple[float, float, float]:
    q = 100 * (1 - level) / 2
    lo, hi = np.percentile(x, [q, 100 - q])
    return float(np.std(x, ddof=1)), float(lo), float(hi)


def analyze(table: Mapping[str, Any], law: str = "n", n_boot: int = 200, seed: int = 0,
            holdout: int = 0) -> dict[str, Any]:
    """Fit ``law`` to ``table`` with bootstrap intervals; JSON-ready.

    Keys: law, formula, n_points, objective, n_boot, one {value, se, lo, hi} per parameter (se/lo/hi
    None when ``n_boot`` is 0), "compute_optimal_exponents" {a, b} for law "nd" (N_opt ∝ C^a,
    D_opt ∝ C^b), and "holdout" (`holdout_check` of the ``holdout`` largest runs, each point with its
    run's name when the table has one) when ``holdout`` > 0.
    """
    if n_boot < 0 or n_boot == 1:
        raise ScalingError(f"the bootstrap needs 0 (no intervals) or at least 2 resamples (200 or more for "
                           f"{LEVEL:.0%} intervals), got {n_boot}.")
    if holdout < 0:
        raise ScalingError(f"holdout must be >= 0 (the number of largest runs to predict), got {holdout}.")
    if holdout and n_boot < 2:
        raise ScalingError("the holdout check's prediction intervals come from the bootstrap; give at least "
                           "2 resamples (200 or more) with it.")
    fit = fit_law(table, law)
    boots = bootstrap_fits(table, law, n_boot, seed, base=fit) if n_boot else []
    out = fit_summary(fit, summarize_bootstrap(boots, LEVEL) if boots else None)
    out["n_boot"] = n_boot
    if law == "nd":
        a, b = allocation_exponents(fit)
        ab = np.array([allocation_exponents(f) for f in boots]) if boots else None
        out["compute_optimal_exponents"] = {
            key: dict(zip(("value", "se", "lo", "hi"),
                          (value, *(_percentile_interval(ab[:, j]) if ab is not None else (None,) * 3))))
            for j, (key, value) in enumerate((("a", a), ("b", b)))}
    if holdout:
        check = holdout_check(table, law, k=holdout, n_boot=n_boot, seed=seed, level=LEVEL)
        if "name" in table:
            for p in check["points"]:
                p["name"] = str(table["name"][p["row"]])
        out["holdout"] = check
    return out


# ------------------------------------------------------------------------------------------ text

def _num(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    return str(v)


def format_fit(result: Mapping[str, Any]) -> str:
    """``analyze``'s result as terminal text: the law, each parameter with se and interval, the
    compute-optimal exponents (law nd) and the holdout check."""
    law = result["law"]
    lines = [(f"law {law}: {result['formula']}  ({result['n_points']} runs, Huber objective "
              f"{result['objective']:.3g}, {result['n_boot']} bootstrap resamples)"),
             f"  {'parameter':<10} {'value':>12} {'se':>12}   {LEVEL:.0%} interval"]
    groups = [(name, result[name]) for name in LAWS[law]]
    groups += list(result.get("compute_optimal_exponents", {}).items())
    for name, p in groups:
        interval = f"[{p['lo']:.4g}, {p['hi']:.4g}]" if p["lo"] is not None else "(no bootstrap)"
        se = f"{p['se']:.4g}" if p["se"] is not None else "-"
        lines.append(f"  {name:<10} {p['value']:>12.4g} {se:>12}   {interval}")
    if "compute_optimal_exponents" in result:
        lines.append("  (a, b: compute-optimal N_opt ∝ C^a, D_opt ∝ C^b)")
    if "holdout" in result:
        h = result["holdout"]
        lines.append(f"holdout: fitted to {h['n_fit']} runs, predicting the {h['k']} largest "
                     f"(max |relative error| {h['max_abs_rel_error']:.2%}):")
        for p in h["points"]:
            lines.append(f"  {p.get('name', 'row ' + str(p['row'] + 1))}: predicted {p['predicted']:.4g} "
                         f"[{p['lo']:.4g}, {p['hi']:.4g}], observed {p['observed']:.4g}, relative error "
                         f"{p['rel_error']:+.2%} ({'inside' if p['inside'] else 'OUTSIDE'} the interval)")
    return "\n".join(lines)


def _columns(table: Mapping[str, Any]) -> list[str]:
    first = [c for c in ("name", "params", "data", "compute", "loss", "train_seconds") if c in table]
    return first + [c for c in table if c not in first]


def format_table(table: Mapping[str, Any], columns: Sequence[str] | None = None) -> str:
    """The table as aligned text columns (numbers to 4 significant digits)."""
    cols = list(columns) if columns is not None else _columns(table)
    cells = [[_num(v) for v in table[c]] for c in cols]
    widths = [max(len(c), *(len(v) for v in col)) for c, col in zip(cols, cells)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    for i in range(len(cells[0]) if cells else 0):
        lines.append("  ".join(col[i].ljust(w) for col, w in zip(cells, widths)))
    return "\n".join(lines)


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(table: Mapping[str, Any], result: Mapping[str, Any], source: Path, command: str) -> str:
    """report.md's text."""
    cols = _columns(table)
    m = len(table["loss"])
    out = [f"# Scaling report: {source}", "", f"Command: `{command}`", "", "![report](report.png)", "",
           f"## Results ({m} runs)", "",
           _markdown_table(cols, [[_num(table[c][i]) for c in cols] for i in range(m)]), "",
           f"## Fitted law {result['law']}: {result['formula']}", "",
           (f"Fitted to all {result['n_points']} runs (Huber loss on log L, Hoffmann et al. 2022 approach 3); "
            f"standard errors and {LEVEL:.0%} percentile intervals from {result['n_boot']} bootstrap "
            f"resamples over runs."), ""]
    groups = [(n, result[n]) for n in LAWS[result["law"]]] + list(result.get("compute_optimal_exponents", {}).items())
    out.append(_markdown_table(["parameter", "value", "se", f"{LEVEL:.0%} interval"],
                               [[n, f"{p['value']:.4g}", _num(p["se"]) or "-",
                                 f"[{p['lo']:.4g}, {p['hi']:.4g}]" if p["lo"] is not None else "-"]
                                for n, p in groups]))
    if "compute_optimal_exponents" in result:
        out += ["", "a, b: the compute-optimal allocation N_opt ∝ C^a, D_opt ∝ C^b."]
    if "holdout" in result:
        h = result["holdout"]
        out += ["", f"## Extrapolation check: the {h['k']} largest run(s) held out", "",
                f"The law was fitted to the other {h['n_fit']} runs (" +
                ", ".join(f"{k} = {v:.4g}" for k, v in h["params"].items()) +
                f") and predicts the held-out runs with {LEVEL:.0%} bootstrap prediction intervals "
                f"(parameter uncertainty plus run-to-run scatter). Largest |relative error|: "
                f"{h['max_abs_rel_error']:.2%}.", "",
                _markdown_table(["run", "params", "data", "predicted", f"{LEVEL:.0%} interval", "observed",
                                 "relative error", "inside"],
                                [[p.get("name", f"row {p['row'] + 1}"), _num(p["params"]), _num(p["data"]),
                                  f"{p['predicted']:.4g}", f"[{p['lo']:.4g}, {p['hi']:.4g}]",
                                  f"{p['observed']:.4g}", f"{p['rel_error']:+.2%}",
                                  "yes" if p["inside"] else "no"] for p in h["points"]])]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------ figure

def _curves(fit: Fit, boots: Sequence[Fit], table: Mapping[str, Any], x: np.ndarray
            ) -> list[tuple[str, np.ndarray, np.ndarray | None, np.ndarray | None]]:
    """(label, curve, band lo, band hi) over ``x`` (N, or D for law d); law nd: one per data size."""
    law = fit.law
    if law == "nd":
        ds = np.unique(np.asarray(table["data"], dtype=float))
        ds = ds[np.unique(np.linspace(0, len(ds) - 1, min(len(ds), 4)).round().astype(int))]
        kws = [(f"D = {d:.3g}", {"N": x, "D": d}) for d in ds]
    else:
        kws = [("fit", {"N": x} if law == "n" else {"D": x})]
    q = 100 * (1 - LEVEL) / 2
    out = []
    for label, kw in kws:
        band = np.percentile([b.predict(**kw) for b in boots], [q, 100 - q], axis=0) if boots else (None, None)
        out.append((label, fit.predict(**kw), band[0], band[1]))
    return out


def plot(table: Mapping[str, Any], result: Mapping[str, Any], path: Path, n_boot: int = 200,
         seed: int = 0) -> None:
    """report.png: loss vs N (D for law d) with the law fitted to the kept runs and its bootstrap
    band, held-out runs and their prediction intervals; loss vs compute with the compute frontier."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    law = result["law"]
    axis = "data" if law == "d" else "params"
    cols = {c: np.asarray(table[c], dtype=float) for c in ("params", "data", "compute", "loss")}
    held = [p["row"] for p in result["holdout"]["points"]] if "holdout" in result else []
    # the kept runs in holdout_check's order (sorted by size), so the band is drawn from the same
    # bootstrap resamples as the prediction intervals; all runs in table order without a holdout
    order = np.argsort(cols[axis], kind="stable")
    kept = order[:-len(held)] if held else np.arange(len(cols["loss"]))
    train = {c: v[kept] for c, v in cols.items()}
    fit = fit_law(train, law)  # the law the held-out runs are predicted from (all runs when none is)
    boots = bootstrap_fits(train, law, n_boot, seed, base=fit) if n_boot else []
    x = cols[axis]
    grid = np.geomspace(x.min() / 1.3, x.max() * 1.3, 200)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    for label, y, lo, hi in _curves(fit, boots, table, grid):
        line, = ax1.plot(grid, y, label=f"{label} ({len(kept)} runs)" if held else label)
        if lo is not None:
            ax1.fill_between(grid, lo, hi, color=line.get_color(), alpha=0.2, lw=0,
                             label=f"{LEVEL:.0%} bootstrap band" if label == "fit" else None)
    if held:
        full = fit_law(cols, law)
        kw = {"N": grid, "D": np.median(cols["data"])} if law == "nd" else ({"N": grid} if law == "n" else {"D": grid})
        ax1.plot(grid, full.predict(**kw), "k--", lw=1, label=f"fit to all {len(x)} runs")
    ax1.scatter(x[kept], cols["loss"][kept], color="k", zorder=3, label="runs")
    if held:
        pts = result["holdout"]["points"]
        ax1.scatter(x[held], cols["loss"][held], marker="s", facecolors="none", edgecolors="r", s=60,
                    zorder=4, label="held out (observed)")
        px = x[held]
        pred = np.array([p["predicted"] for p in pts])
        # the interval is a percentile range of simulated losses, so it need not contain the point prediction
        err = np.maximum(0.0, [[p["predicted"] - p["lo"] for p in pts], [p["hi"] - p["predicted"] for p in pts]])
        ax1.errorbar(px, pred, yerr=err, fmt="rx", capsize=4, zorder=4,
                     label=f"predicted, {LEVEL:.0%} interval")
    p = result
    names = LAWS[law]
    exps = ", ".join(f"{n} = {p[n]['value']:.3f}" + (f" [{p[n]['lo']:.3f}, {p[n]['hi']:.3f}]"
                                                    if p[n]["lo"] is not None else "")
                     for n in names if n in ("alpha", "beta"))
    ax1.set(xscale="log", yscale="log", xlabel="parameters N" if axis == "params" else "data D",
            ylabel="loss", title=f"{FORMULAS[law]}\nfitted to all {len(x)} runs: {exps}")
    ax1.legend(fontsize=8)
    ax1.grid(True, which="both", alpha=0.3)

    c = cols["compute"]
    order = np.argsort(c)
    frontier = np.minimum.accumulate(cols["loss"][order])
    ax2.step(c[order], frontier, where="post", color="C1", label="compute frontier (best loss at <= C)")
    ax2.scatter(c[kept], cols["loss"][kept], color="k", zorder=3, label="runs")
    if held:
        ax2.scatter(c[held], cols["loss"][held], marker="s", facecolors="none", edgecolors="r", s=60,
                    zorder=4, label="held out")
    ax2.set(xscale="log", yscale="log", xlabel="training compute C = 6 N D (FLOPs)", ylabel="loss",
            title="loss vs compute")
    ax2.legend(fontsize=8)
    ax2.grid(True, which="both", alpha=0.3)
    plain = FuncFormatter(lambda v, _pos: f"{v:g}")  # losses span less than a decade: 0.8, 2, 3
    for ax in (ax1, ax2):
        ax.xaxis.set_minor_formatter(NullFormatter())  # 2x10^2, 3x10^2, ... collide on a log axis
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(source: str | Path, out_dir: str | Path | None = None, law: str = "n", holdout: int = 1,
                 n_boot: int = 200, seed: int = 0, command: str | None = None) -> tuple[Path, Path]:
    """Fit the table at ``source`` (a sweep folder or a table file) and write report.png and report.md
    into ``out_dir`` (default: the sweep folder, or the table's folder); returns their paths.
    ``command`` is quoted in report.md (default: the equivalent ``layerwise scale report`` line)."""
    table, path = load_results(source)
    result = analyze(table, law, n_boot, seed, holdout)
    out = Path(out_dir) if out_dir is not None else path.parent
    out.mkdir(parents=True, exist_ok=True)
    if command is None:
        command = shlex.join(["layerwise", "scale", "report", str(source), "--law", law, "--holdout",
                              str(holdout), "--boot", str(n_boot), "--seed", str(seed)])
    png, md = out / "report.png", out / "report.md"
    plot(table, result, png, n_boot, seed)
    md.write_text(markdown(table, result, path, command))
    return png, md
