"""`layerwise compare RUN_DIR...`: one self-contained HTML page that sets runs side by side.

- the headline metrics of each run's summary.json in one table (with size, steps, time, energy);
- the configs diffed: only the keys whose resolved values differ, one column per run (a model's
  arguments with their registry defaults filled in, so naming a default is no difference);
- the curves of metrics.jsonl overlaid, one panel per metric, one colour per run (train as
  lines, test as dots).

Runs of different tasks still compare on what they share (their configs, size, time, energy,
learning rate), but a loss or metric is overlaid only among runs of the same task: a
classifier's cross-entropy and a regressor's MSE on one axis would be a picture of nothing.
The page says which runs were drawn apart. Refused: fewer than two runs, a path that is not a
run directory, the same run twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from layerwise.deploy.html import (
    Markup,
    check_out,
    esc,
    figure_uri,
    img,
    new_figure,
    note,
    page,
    section,
    table,
    write_page,
)
from layerwise.deploy.report import check_run_dir, read_json, read_records
from layerwise.deploy.status import clean_summary, task_from_records

SUMMARY_KEYS = ("params", "steps", "epochs", "env_steps", "train_seconds", "energy_train_j", "energy_method")
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
          "#bcbd22")


def run_colors(n: int) -> list[str]:
    """A distinct colour per run: :data:`COLORS` for up to 10 runs, else hues spaced evenly around
    the wheel (cycling 10 colours gave two runs of 11 the same line and legend entry)."""
    if n <= len(COLORS):
        return list(COLORS[:n])
    import colorsys

    rgb = [colorsys.hsv_to_rgb(k / n, 0.75, 0.6 + 0.25 * (k % 2)) for k in range(n)]
    return ["#" + "".join(f"{round(255 * c):02x}" for c in color) for color in rgb]


def load_runs(run_dirs: list[str | Path]) -> list[dict[str, Any]]:
    """Each run's path, label (its folder name, numbered when two share one), summary (None when
    unfinished), flat config, records and task. Raises ConfigError for fewer than two runs or
    one given twice, RunDirError (naming the path) for a path that is not a run directory."""
    from layerwise.config import ConfigError

    if isinstance(run_dirs, (str, bytes, Path)) or not all(isinstance(p, (str, Path)) for p in run_dirs):
        raise ConfigError(f"layerwise.compare takes a list of run directories (paths), got {run_dirs!r}; e.g. "
                          f"layerwise.compare(['runs/a', 'runs/b']).")
    if len(run_dirs) < 2:
        raise ConfigError(f"`layerwise compare` needs at least two run directories, got {len(run_dirs)}; "
                          f"for one run write its page with `layerwise report RUN_DIR`.")
    paths = [check_run_dir(p) for p in run_dirs]
    seen: dict[Path, str] = {}
    for given, p in zip(run_dirs, paths, strict=True):
        if p.resolve() in seen:
            raise ConfigError(f"'{given}' is the same run as '{seen[p.resolve()]}'; give each run once.")
        seen[p.resolve()] = str(given)
    names = [p.name for p in paths]
    runs = []
    for i, p in enumerate(paths):
        label = p.name if names.count(p.name) == 1 else f"{p.name} ({i + 1})"
        summary = clean_summary(read_json(p / "summary.json"))
        flat = flat_run_config(p / "config.yaml")
        records = read_records(p / "metrics.jsonl")
        data_task = str(flat.get("data.task") or "auto")
        task = (summary or {}).get("task") or ("rl" if any(k.startswith("ppo.") for k in flat) else
                                               data_task if data_task != "auto" else
                                               task_from_records(records) or "unknown")
        runs.append({"path": p, "label": label, "summary": summary, "config": flat,
                     "records": records, "task": task,
                     "headline": (summary or {}).get("headline")})
    return runs


def flat_run_config(path: Path) -> dict[str, Any]:
    """A run's config.yaml as {"section.key": value}, with the model's defaults filled in, and the
    keys added since an earlier layerwise wrote it (config.with_defaults: their defaults reproduce
    what that version did), so that neither counts as a difference."""
    from layerwise.config import flat_config, load_yaml, with_defaults

    saved = load_yaml(path)
    if "ppo" in saved:  # a `layerwise rl` run
        from layerwise.rl.config import RLConfig
        return flat_config(with_defaults(saved, RLConfig))
    return flat_config(with_defaults(saved))


def config_diff(runs: list[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    """(key, [value per run]) of the config keys whose values differ between the runs (a key a
    run lacks counts as its own value, shown "(absent)"); run.dir and run.name are left out (they
    always differ and the labels say them)."""
    keys = sorted(set().union(*(r["config"] for r in runs)) - {"run.dir", "run.name"})
    out = []
    missing = object()
    for k in keys:
        vals = [r["config"].get(k, missing) for r in runs]
        if any(v != vals[0] for v in vals[1:]):
            out.append((k, ["(absent)" if v is missing else v for v in vals]))
    return out


def metric_keys(runs: list[dict[str, Any]]) -> list[str]:
    """The numeric record keys to draw: loss, each run's headline, the other metrics logged by at
    least two of the runs, and the learning rate; bookkeeping fields left out."""
    skip = {"step", "epoch", "update", "examples", "examples_per_sec", "skipped", "skipped_steps", "sps"}
    counts: dict[str, int] = {}
    for r in runs:
        keys = {k for rec in r["records"] for k, v in rec.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in skip
                and not k.startswith("energy_")}
        for k in keys:
            counts[k] = counts.get(k, 0) + 1
    heads = [str(r["headline"]).removeprefix("test_") for r in runs if r["headline"]]
    order = ["loss", *dict.fromkeys(heads)] + sorted(k for k, n in counts.items() if n >= 2) + ["lr"]
    return [k for k in dict.fromkeys(order) if k in counts and k != "lr"] + (["lr"] if "lr" in counts else [])


def curves_html(runs: list[dict[str, Any]], max_panels: int = 8) -> tuple[Markup, list[str]]:
    """The overlaid curves (one PNG), and notes on what was drawn apart. A metric's panel holds the
    runs of one task; runs of other tasks that log a metric of the same name get their own panel."""
    panels: list[tuple[str, str, list[int]]] = []  # (metric, task, run indices)
    for k in metric_keys(runs):
        by_task: dict[str, list[int]] = {}
        for i, r in enumerate(runs):
            if any(isinstance(rec.get(k), (int, float)) for rec in r["records"]):
                task = "any" if k == "lr" else r["task"]
                by_task.setdefault(task, []).append(i)
        panels += [(k, t, idx) for t, idx in by_task.items()]
    notes = []
    tasks = sorted({r["task"] for r in runs})
    if len(tasks) > 1:
        notes.append(f"The runs are of different tasks ({', '.join(tasks)}): losses and metrics are overlaid only "
                     f"among runs of the same task; configs, sizes, time and energy compare across all.")
    if len(panels) > max_panels:
        notes.append(f"{len(panels) - max_panels} more metric panel(s) not drawn.")
        panels = panels[:max_panels]
    if not panels:
        return note("None of the runs has logged metrics yet (metrics.jsonl)."), notes
    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    fig = new_figure(4.6 * cols, 3.0 * rows + 0.5)
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.35 / (3.0 * rows + 0.5) + 0.06 / rows,
                        top=1 - 0.5 / (3.0 * rows + 0.5), hspace=0.5, wspace=0.25)
    colors = run_colors(len(runs))
    for n, (k, task, idx) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, n + 1)
        positive = True
        for i in idx:
            color = colors[i]
            for kind, style in (("train", "-"), ("test", "o")):
                pts = [(rec["step"], rec[k]) for rec in runs[i]["records"]
                       if rec.get("kind") == kind and isinstance(rec.get(k), (int, float))]
                if pts:
                    positive &= all(v > 0 for _, v in pts)
                    ax.plot(*zip(*pts, strict=True), style if len(pts) > 1 else "o", color=color, ms=3, lw=1.3)
        if k == "loss" and positive:
            ax.set_yscale("log")
        ax.set_title(k.replace("_", " ") + ("" if task == "any" or len(tasks) == 1 else f" ({task})"), fontsize=10)
        ax.set_xlabel("step (environment steps for rl)" if "rl" in tasks else "optimizer step", fontsize=8)
        ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[i], lw=2) for i in range(len(runs))]
    handles += [Line2D([], [], color="k", lw=1.3), Line2D([], [], color="k", marker="o", ls="")]
    fig.legend(handles, [r["label"] for r in runs] + ["train", "test"], loc="upper center",
               ncol=min(len(runs) + 2, 4), fontsize=8, frameon=False)
    return img(figure_uri(fig), "curves of the runs overlaid"), notes


def legend_html(runs: list[dict[str, Any]]) -> Markup:
    colors = run_colors(len(runs))
    spans = "".join(f'<span style="color:{colors[i]};margin-right:14px">&#9632; {esc(r["label"])}</span>'
                    for i, r in enumerate(runs))
    return Markup(f"<p>{spans}</p>")


def run_state(path: Path, finished: bool) -> str:
    """finished, running, unknown (another host's), resumable or crashed (deploy/status.py)."""
    from layerwise.deploy.status import dir_status

    return dir_status(path, finished)[0]


def build_compare(run_dirs: list[str | Path]) -> str:
    """The comparison page of ``run_dirs`` as a string (see the module docstring)."""
    runs = load_runs(run_dirs)
    heads = list(dict.fromkeys(r["headline"] for r in runs if r["headline"]))
    cols = ["run", "task", "status", *heads, "test_loss", *SUMMARY_KEYS]
    rows = []
    for r in runs:
        s = r["summary"] or {}
        rows.append([r["label"], r["task"], run_state(r["path"], r["summary"] is not None),
                     *[s.get(h, "") for h in heads], s.get("test_loss", ""), *[s.get(k, "") for k in SUMMARY_KEYS]])
    keep = [j for j in range(len(cols)) if j < 3 or any(row[j] not in ("", None) for row in rows)]
    summary = table([cols[j] for j in keep], [[row[j] for j in keep] for row in rows])
    diff = config_diff(runs)
    diff_html = (table(("key", *[r["label"] for r in runs]),
                       [(k, *[v if isinstance(v, (int, float, str, bool)) or v is None else str(v) for v in vals])
                        for k, vals in diff], cls="diff")
                 if diff else note("The runs' configs are the same (apart from run.dir and run.name)."))
    curves, notes = curves_html(runs)
    paths = table(("run", "directory"), [(r["label"], str(r["path"])) for r in runs])
    sections = [
        section("metrics", "Headline metrics (summary.json)", summary,
                *[note(n) for n in notes if n.startswith("The runs are")]),
        section("curves", "Curves", legend_html(runs), curves, *[note(n) for n in notes if not n.startswith("The")]),
        section("config", f"Config differences ({len(diff)} keys)", diff_html),
        section("runs", "Runs", paths),
    ]
    title = f"layerwise: {len(runs)} runs compared"
    sub = " | ".join(r["label"] for r in runs)
    return page(title, sub, sections, [("metrics", "Metrics"), ("curves", "Curves"), ("config", "Config"),
                                       ("runs", "Runs")])


def compare_runs(run_dirs: list[str | Path], out: str | Path = "compare.html") -> Path:
    """Write the comparison page of ``run_dirs`` (at least two run directories) to ``out``
    (default ./compare.html; replaced whole); returns its path. Raises ConfigError (fewer than
    two runs, one given twice, ``out`` a folder or a file that is not a layerwise page), RunDirError (a path that is not a run
    directory) or OSError (``out`` cannot be written)."""
    target = check_out(Path(out))
    return write_page(target, build_compare(run_dirs if isinstance(run_dirs, (str, bytes, Path)) else list(run_dirs)))

