"""`layerwise report RUN_DIR`: one self-contained HTML page of a run (``RUN_DIR/report.html``).

It shows, from the files the run left: the headline metrics (summary.json), the training and
evaluation curves (metrics.jsonl; the run's plots/*.png when they exist, else drawn here), the
task's own section (deploy/report_task.py: confusion matrix and worst-classified examples,
residuals, a language model's sample), energy, the resolved config (config.yaml), the
environment (env.json), and the results of ``layerwise explain``, ``probe`` and ``attack`` found
under RUN_DIR/explain, RUN_DIR/probe and RUN_DIR/attack. A run without summary.json (crashed,
or still running) gets a page of what exists, labelled unfinished. Everything read from files is
escaped; figures are inline PNG (deploy/html.py), so the page can be mailed and read offline.

Written at the end of every run when ``run.report`` is on (the default), by
:func:`write_report_after_run`, which never fails the run: it warns and says how to write the
report later.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from typing import Any

from layerwise.deploy.html import (
    Markup,
    check_out,
    esc,
    figure_uri,
    fmt,
    key_values,
    new_figure,
    note,
    page,
    png_file,
    pre,
    section,
    table,
    write_page,
)
from layerwise.deploy.status import clean_summary, task_from_records

REPORT_NAME = "report.html"
MAX_INSIGHT_FOLDERS = 3  # explain results per run: the newest folders
MAX_INSIGHT_IMAGES = 8  # pictures per explain folder


def _run_error(message: str) -> Exception:
    from layerwise.train.run import RunDirError

    return RunDirError(message)


def check_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path when it is a run directory (it holds config.yaml); RunDirError naming
    what was given and what to give otherwise (a missing path, a file, a folder of runs)."""
    if not isinstance(run_dir, (str, Path)):
        raise _run_error(f"a run directory is a path (str or Path), got {run_dir!r}; give the directory a "
                         f"`layerwise train` or `layerwise rl` run wrote.")
    path = Path(run_dir)
    if not path.exists():
        raise _run_error(f"'{path}' does not exist; give a run directory (runs/<name>-<time>) that `layerwise "
                         f"train` or `layerwise rl` wrote.")
    if path.is_file():
        hint = f" give its folder '{path.parent}'" if (path.parent / "config.yaml").is_file() else \
            " give a run directory"
        raise _run_error(f"'{path}' is a file, not a run directory;{hint}.")
    if not (path / "config.yaml").is_file():
        runs = sorted(p.name for p in path.iterdir() if (p / "config.yaml").is_file())
        if runs:
            raise _run_error(f"'{path}' is a folder of runs, not a run; give one of them: "
                             f"{', '.join(str(path / r) for r in runs[:5])}{', ...' if len(runs) > 5 else '.'}")
        raise _run_error(f"'{path}' is not a layerwise run directory (no config.yaml); give the directory a "
                         f"`layerwise train` or `layerwise rl` run wrote.")
    return path


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when it is missing or unreadable (a torn file)."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of metrics.jsonl; a torn last line (a run killed while writing), a record without
    a numeric step, and values that are not numbers where numbers belong (an edited or damaged
    file) are skipped."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if not isinstance(r, dict) or not _is_number(r.get("step")):
            continue
        out.append({k: v for k, v in r.items() if k in ("kind", "step") or _is_number(v) or not isinstance(
            v, (str, list, dict))})
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def headline_rows(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    """(name, value) of a summary's headline metric first, then its other test/eval metrics."""
    h = summary.get("headline")
    keys = [h] if h in summary else []
    keys += [k for k in summary if k != h and k.startswith(("test_", "eval_", "random_"))]
    return [(k, summary[k]) for k in keys]


RUN_KEYS = ("task", "model", "dataset", "env", "params", "flops_per_example", "steps", "epochs", "updates",
            "examples_seen", "env_steps", "train_seconds", "device", "precision", "parallel", "skipped_steps",
            "init_from")


def curves_figure(records: list[dict[str, Any]], keys: list[str], xlabel: str) -> str | None:
    """One PNG data URI of the train (lines) and test (dots) curves of ``keys``, one panel each
    (the loss on a log axis when positive); None when the records have none of them."""
    panels = [k for k in keys if any(r.get(k) is not None for r in records)]
    if not panels:
        return None
    cols = min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = new_figure(4.2 * cols, 2.9 * rows)
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.5 / (2.9 * rows), top=1 - 0.05 / rows, hspace=0.45,
                        wspace=0.28)  # 0.5 inch under the last row: its axis label
    for i, k in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for kind, style in (("train", "-"), ("test", "o-")):
            pts = [(r["step"], r[k]) for r in records if r.get("kind") == kind and isinstance(r.get(k), (int, float))]
            if pts:
                ax.plot(*zip(*pts, strict=True), style if len(pts) > 1 else "o-", ms=3, label=kind)  # one point: a dot
        if k == "loss" and all(not _is_number(r.get(k)) or r[k] > 0 for r in records):
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(k.replace("_", " "))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return figure_uri(fig)


def curves_section(run_dir: Path, records: list[dict[str, Any]], headline: str, task: str,
                   finished: bool, draw: bool = True) -> Markup:
    """The run's plots/*.png when a finished run wrote them (no drawing: the end-of-run report
    reuses them), else one figure drawn from metrics.jsonl (``draw``; a language model's also has
    its perplexity), else a note; and a table of the last evaluations."""
    from layerwise.deploy.html import img

    xlabel = "environment step" if task == "rl" else "optimizer step"
    keys = ["loss", headline, "lr"] + (["value_loss", "entropy"] if task == "rl" else [])
    pngs = sorted((run_dir / "plots").glob("*.png")) if finished else []
    parts: list[Markup] = []
    if pngs:
        order = {f"{k}.png": i for i, k in enumerate(keys)}
        pngs.sort(key=lambda p: (order.get(p.name, len(order)), p.name))
        parts.append(Markup('<div class="figs">' + "".join(png_file(p, p.stem, 420) for p in pngs) + "</div>"))
        uri = curves_figure(records, ["perplexity"], xlabel) if draw and task == "lm" else None
        if uri:  # the run's plots have loss, accuracy and lr; a language model is read by its perplexity too
            parts.append(img(uri, "perplexity"))
    elif draw:
        uri = curves_figure(records, keys + (["perplexity"] if task == "lm" else []), xlabel)
        parts.append(img(uri, "training and test curves") if uri else note("metrics.jsonl holds no curves yet."))
    else:  # the end of a run with run.plots=false: nothing is drawn (a figure costs more than the rest)
        parts.append(note(f"No curves drawn (run.plots=false); `layerwise report {run_dir}` draws them from "
                          f"metrics.jsonl."))
    tests = [r for r in records if r.get("kind") == "test"]
    if tests:
        cols = [k for k in ("loss", headline, "perplexity") if any(r.get(k) is not None for r in tests)]
        shown = tests[-10:]
        parts.append(Markup(f"<p>{len(tests)} evaluation(s){'; the last 10' if len(tests) > 10 else ''}:</p>")
                     + table(("step", *cols), [(r["step"], *[r.get(k) for k in cols]) for r in shown]))
    return section("curves", "Training and evaluation curves", *parts)


def energy_section(summary: dict[str, Any]) -> Markup | None:
    fields = {k: v for k, v in summary.items() if k.startswith("energy_") or k == "grid_gco2_per_kwh"}
    if not fields:
        return None
    return section("energy", "Energy", key_values(fields),
                   "Joules of training and evaluation; gCO2 = kWh x the grid's intensity (README: Energy).")


def _explain_section(base: Path) -> list[Markup]:
    parts = []
    # oldest first, by when each was written (a name sorts by method, ig-* before saliency-*, not by time)
    folders = sorted((p for p in base.iterdir() if (p / "summary.json").is_file()),
                     key=lambda p: ((p / "summary.json").stat().st_mtime_ns, p.name))
    for folder in folders[-MAX_INSIGHT_FOLDERS:]:
        s = read_json(folder / "summary.json") or {}
        rows, pics = [], []
        for r in s.get("results", []) if isinstance(s.get("results"), list) else []:
            pred = r.get("predicted")
            shown = (f"predicted {pred} (p {r['probability']:.3f})" if pred is not None and "probability" in r
                     else f"{r.get('target_name', '')} = {r['value']:.4g}" if "value" in r else "")
            rows.append((r.get("input", ""), shown, ", ".join(r.get("files", []))))
            for f in r.get("files", []):
                if f.endswith(".png") and len(pics) < MAX_INSIGHT_IMAGES and (folder / Path(f).name).is_file():
                    pics.append(png_file(folder / Path(f).name, f, 200))
        parts.append(Markup(f"<h3>explain/{esc(folder.name)}: {esc(s.get('method', ''))}</h3>")
                     + table(("input", "prediction", "files"), rows)
                     + Markup('<div class="figs">' + "".join(pics) + "</div>"))
    if len(folders) > MAX_INSIGHT_FOLDERS:
        parts.append(note(f"{len(folders) - MAX_INSIGHT_FOLDERS} older explain folder(s) not shown."))
    return parts


def _probe_section(base: Path) -> list[Markup]:
    p = read_json(base / "probe.json")
    if p is None:
        return []
    parts = [Markup("<h3>probe</h3>")]
    if "depths" in p:
        rows = [(d.get("depth"), d.get("name"), "x".join(str(s) for s in d.get("shape", [])), d.get("features"),
                 d.get("train_accuracy"), d.get("test_accuracy")) for d in p["depths"]]
        parts.append(table(("depth", "layer", "output shape", "features", "train accuracy", "test accuracy"), rows))
        if "chance" in p:
            chance = p["chance"]
            parts.append(Markup(f"<p>{esc(f'chance (majority class of the test sample): {chance}')}</p>"))
    elif "refused" in p:
        parts.append(note(f"not probed: {p['refused']}"))
    pics = [png_file(base / n, n, 360) for n in ("probe.png", "filters.png", "attention.png") if (base / n).is_file()]
    parts.append(Markup('<div class="figs">' + "".join(pics) + "</div>"))
    return parts


def _attack_section(base: Path) -> list[Markup]:
    parts = []
    for f in sorted(base.glob("*-*.json")):
        a = read_json(f)
        if not a or not isinstance(a.get("rows"), list):
            continue
        parts.append(Markup(f"<h3>attack: {esc(a.get('method', ''))} {esc(a.get('norm', ''))} on "
                            f"{esc(a.get('n', ''))} test examples</h3>"))
        parts.append(table(("eps", "accuracy", "correct", "n"), [(r.get("eps"), r.get("accuracy"), r.get("correct"),
                                                                   r.get("n")) for r in a["rows"]]))
    pics = [png_file(p, p.name, 360) for p in (base / "linf.png", base / "l2.png") if p.is_file()]
    if pics:
        parts.append(Markup('<div class="figs">' + "".join(pics) + "</div>"))
    return parts


def insight_section(run_dir: Path) -> Markup | None:
    """What `layerwise explain`, `probe` and `attack` left in the run directory, if anything."""
    parts: list[Markup] = []
    for name, build in (("explain", _explain_section), ("probe", _probe_section), ("attack", _attack_section)):
        base = run_dir / name
        if base.is_dir():
            try:
                parts += build(base)
            except (OSError, ValueError, KeyError, TypeError) as e:  # another tool's files: say so, go on
                parts.append(note(f"{name}/ could not be read: {e}", "warn"))
    return section("insight", "Explanations, probes and attacks", *parts) if parts else None


def build_report(run_dir: str | Path, device: str = "cpu", data_root: str = "", run: Any = None,
                 max_examples: int | None = None, draw: bool = True) -> str:
    """The report page of ``run_dir`` as a string (see the module docstring). ``run``: the run,
    already opened (``layerwise.insight.runs.LoadedRun``), to reuse its model and data; else it is
    opened when a task section needs it, on ``device`` with data from ``data_root`` (default: the
    run's data.root). ``max_examples`` bounds the test examples the task sections read (default
    1000). ``draw`` False: curves are not drawn when the run wrote no plots (the end-of-run report
    stays cheap). Raises RunDirError when ``run_dir`` is not a run directory."""
    from layerwise.deploy import report_task

    path = check_run_dir(run_dir)
    summary = clean_summary(read_json(path / "summary.json"))
    finished = summary is not None
    summary = summary or {}
    env = read_json(path / "env.json") or {}
    records = read_records(path / "metrics.jsonl")
    config_text = (path / "config.yaml").read_text(encoding="utf-8", errors="replace")
    rl = "env:" in config_text and "ppo:" in config_text
    task = summary.get("task") or ("rl" if rl else _task_from_config(config_text, records))
    headline = str(summary.get("headline", "")).removeprefix("test_") or ("episodic_return" if rl else "accuracy")
    if task == "rl":
        headline = "episodic_return"

    sections: list[Markup] = []
    status = (note(f"Finished: summary.json written; headline {summary.get('headline')} = "
                   f"{fmt(summary.get(summary.get('headline')))}.") if finished else
              note(unfinished_text(path, "rl" if task == "rl" else "train"), "warn"))
    metric_rows = headline_rows(summary)
    run_rows = [(k, summary[k]) for k in RUN_KEYS if summary.get(k) not in (None, "")]
    sections.append(section("summary", "Summary", status,
                            table(("metric", "value"), metric_rows) if metric_rows else "",
                            table(("run", ""), run_rows) if run_rows else ""))
    sections.append(curves_section(path, records, headline, task, finished, draw))
    if finished and (path / "model.safetensors").is_file() and task != "rl":
        opened = []

        def open_once() -> Any:
            if not opened:
                if run is not None:
                    opened.append(run)
                else:
                    from layerwise.insight.runs import open_run
                    opened.append(open_run(path, device, data_root))
            return opened[0]

        sections += report_task.task_sections(path, task, open_once, device,
                                              max_examples or report_task.MAX_EXAMPLES)
    for extra in (energy_section(summary), insight_section(path)):
        if extra is not None:
            sections.append(extra)
    sections.append(section("config", "Resolved config (config.yaml)", pre(config_text)))
    sections.append(section("environment", "Environment (env.json)", key_values(_flat(env)) if env else
                            note("no env.json")))
    nav = re.findall(r'<section id="([^"]+)"><h2>(.*?)</h2>', "".join(sections))  # titles already escaped
    title = f"layerwise run {path.name}" + ("" if finished else " (unfinished)")
    sub = " | ".join(str(v) for v in (task, summary.get("model"), summary.get("dataset") or summary.get("env"),
                                      env.get("started")) if v)
    return page(title, sub, sections, [(a, Markup(label)) for a, label in nav])


def unfinished_text(path: Path, command: str) -> str:
    """What an unfinished run's page says it is (deploy/status.py: running, another host's,
    resumable or crashed) and what to do: wait, resume from its checkpoint, or train again."""
    from layerwise.deploy.status import dir_status

    state, marker = dir_status(path, False)
    head = "Unfinished run: no summary.json; "
    if state == "running":
        return (head + f"it is still running (pid {marker.get('pid')}). This report shows what exists so far; the "
                "run writes its report when it ends (run.report), or write it again then.")
    if state == "unknown":
        return (head + f"running.json says it runs on host {marker.get('host')}, which cannot be checked from here. "
                "This report shows what exists so far; write it again when the run has ended.")
    if state == "resumable":
        return (head + f"it was stopped or crashed. This report shows what exists; finish it from its last checkpoint "
                f"with `layerwise {command} --resume {path}`, then write the report again.")
    return (head + "it crashed or was stopped before writing a complete checkpoint, so it cannot be resumed. This "
            "report shows what exists; train it again (the same config: config.yaml).")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v)
    return out


def _task_from_config(text: str, records: list[dict[str, Any]] = ()) -> str:
    """An unfinished run's task, from its config.yaml (data.task), or when that says "auto" (the
    data decides), from the metrics its records log (:func:`task_from_records`); "" when unknown."""
    try:
        import yaml

        d = yaml.safe_load(text) or {}
        task = str((d.get("data") or {}).get("task") or "")
    except Exception:  # noqa: BLE001 - a torn file: the page says the task is unknown
        task = ""
    return task_from_records(records) if task in ("", "auto") else task


def write_report(run_dir: str | Path, out: str | Path | None = None, device: str = "cpu", data_root: str = "",
                 run: Any = None, max_examples: int | None = None, draw: bool = True) -> Path:
    """Write :func:`build_report`'s page to ``out`` (default RUN_DIR/report.html, replaced whole:
    an earlier report is kept until the new one is complete); returns its path. Raises RunDirError
    (not a run directory), ConfigError (``out`` is a folder, or a file that is not a layerwise page) or OSError (it cannot be written)."""
    path = check_run_dir(run_dir)
    target = check_out(Path(out) if out else path / REPORT_NAME, "--out" if out else "the report")
    text = build_report(path, device, data_root, run, max_examples, draw)
    return write_page(target, text)


def write_report_after_run(run_dir: Path, device: Any = "cpu", dataset: Any = None) -> Path | None:
    """The end-of-run report (``run.report``): :func:`write_report` with the data the run already
    loaded (``dataset``, its test split, so it is not read again), drawing no figure (the run's
    plots/*.png are reused when it wrote them). Any failure becomes a warning that names the
    command to write the report later; the run and its files are never harmed. Returns the
    report's path, or None when it could not be written."""
    try:
        run = None
        if (run_dir / "model.safetensors").is_file() and dataset is not None:
            from layerwise.insight.runs import open_run
            run = open_run(run_dir, str(device))
            run._dataset = dataset
        return write_report(run_dir, device=str(device), run=run, draw=False)
    except Exception as e:  # noqa: BLE001 - whatever went wrong, the trained run must survive it
        warnings.warn(f"the run finished, but its report could not be written ({type(e).__name__}: {e}); "
                      f"write it with `layerwise report {run_dir}`", stacklevel=2)
        return None
