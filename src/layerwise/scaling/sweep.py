"""Scaling sweeps: train a grid of recipes and collect one results-table row per run.

A sweep spec is a YAML file:

    base: ../recipes/shakespeare-char.yaml  # the recipe every run starts from (relative to this
                                            # file's folder, else to the working directory;
                                            # leave it out for the built-in default job)
    overrides: ["--train.eval_every=0"]     # applied to every run, before the axes'
    axes:                                   # the grid is the cartesian product of the axes
      size:                                 # each value: a list of overrides ...
        - ["--model.n_layer=2", "--model.n_embd=32", "--optim.lr=0.004"]
        - ["--model.n_layer=4", "--model.n_embd=128", "--optim.lr=0.002"]
      steps: ["--train.max_steps=200", "--train.max_steps=400"]  # ... or one override
    metric: test_loss                       # the summary.json key fitted as the loss
    params: non_embedding                   # N: non_embedding (Kaplan et al. 2020; the total
                                            # for models without embeddings) or total
    budget_seconds: 1200                    # optional: start no run once the finished runs'
                                            # train_seconds add up to this

Grid points are named from their axis indices in spec order, ``size0-steps0, size0-steps1,
size1-steps0, ...`` (the first axis varies slowest), and run in that order in
``OUT/runs/<name>``. Every point's config is resolved before the first run starts, so a typo in
any override fails the sweep at once.

Resuming: a run directory holding summary.json is done and skipped. One without it was cut off
(a crash, Ctrl-C, a lost machine): if it holds a checkpoint and the same config, it continues from
the checkpoint (`layerwise train --resume`, exact); otherwise it is removed and run again. A done
run whose saved config differs from the spec's (the spec was edited) stops the sweep rather than
mixing two configurations in one table.

Devices: with more than one CUDA device, up to that many runs train at once, each a
``python -m layerwise train ... --train.device=cuda:i`` subprocess logging to ``OUT/logs/<name>.log``
(a failed run is reported at the end and the others go on); otherwise the runs train one after
another in this process, and a diverged run is reported while the rest go on.

After every run ``OUT/results.csv`` and ``OUT/results.jsonl`` are rewritten from the summary.json
files of all finished runs (`layerwise.scaling.table`), so the table of a resumed sweep is complete:

    name, params (N), params_total, data (D: examples seen, tokens for a language model),
    compute (C = 6 N D, Kaplan et al. 2020 sec. 2.1), compute_flops (the model's analytic count:
    flops_per_token * D for a language model, 3 * flops_per_example * D otherwise),
    loss (the metric), train_seconds, and one column per axis (its overrides as text).
"""

from __future__ import annotations

import inspect
import itertools
import math
import json
import queue
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from layerwise.choices import closest
from layerwise.config import Config, ConfigError, coerce, is_resumable, load_config, parse_override, yaml_error
from layerwise.scaling.table import ScalingError, write_table

SPEC_KEYS = ("base", "overrides", "axes", "metric", "params", "budget_seconds")
# summary.json numbers a sweep can fit (the tasks' test metrics, the run's cost)
SUMMARY_METRICS = ("test_loss", "test_accuracy", "test_top5_accuracy", "test_macro_f1", "test_micro_f1", "test_map",
                   "test_exact_match", "test_rmse", "test_mae", "test_r2", "test_perplexity", "test_bits_per_token",
                   "test_bits_per_byte", "test_bits_per_char", "train_seconds")
PARAM_MODES = ("non_embedding", "total")
# columns the sweep writes itself; an axis may not take one of these names
TABLE_COLUMNS = ("name", "params", "params_total", "data", "compute", "compute_flops", "loss", "train_seconds")
_AXIS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class SweepRunError(RuntimeError):
    """One or more runs of a sweep failed; the others finished and are in the table."""


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep spec (see the module docstring)."""

    path: Path
    base: Path | None
    overrides: tuple[str, ...]
    axes: dict[str, list[tuple[str, ...]]]
    metric: str = "test_loss"
    params: str = "non_embedding"
    budget_seconds: float | None = None


@dataclass(frozen=True)
class GridPoint:
    """One run of the grid: its name, each axis's value index, and its overrides in order."""

    name: str
    index: dict[str, int]
    overrides: tuple[str, ...]
    config: Config


# ------------------------------------------------------------------------------------------ the spec

def _override_list(value: Any, where: str) -> tuple[str, ...]:
    """A list of ``--section.key=value`` strings (a single string is a list of one), each checked."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise ScalingError(f"{where} must be an override string such as \"--train.max_steps=200\" or a list "
                           f"of them, got {value!r}.")
    for item in items:
        if not item.startswith("--"):
            raise ConfigError(f"{where}: cannot read the override {item!r}; write it as --section.key=value "
                              f"(e.g. --train.max_steps=200).")
        parse_override(item)  # raises ConfigError naming the bad override
    return tuple(items)


def _resolve_base(base: Any, spec_path: Path) -> Path | None:
    if base is None:
        return None
    if not isinstance(base, str) or not base.strip():
        raise ScalingError(f"sweep spec '{spec_path}': base must be a recipe path (a string), got {base!r}.")
    for candidate in (spec_path.parent / base, Path(base)):
        if candidate.is_file():
            return candidate
    raise ScalingError(
        f"sweep spec '{spec_path}': base recipe {base!r} not found, neither beside the spec "
        f"('{spec_path.parent / base}') nor from the working directory ('{Path(base).resolve()}'). "
        f"Fix the path (see the recipes/ folder).")


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a sweep spec; raises `ScalingError` or `ConfigError` naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise ScalingError(f"sweep spec '{path}' does not exist. Give a YAML file with base, axes and "
                           f"(optionally) overrides, metric, params, budget_seconds; see sweeps/.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ScalingError(f"sweep spec '{path}' is not valid YAML ({yaml_error(e)}). Fix the syntax and run "
                           f"again.") from None
    if not isinstance(raw, dict):
        raise ScalingError(f"sweep spec '{path}' must be a mapping with the keys {', '.join(SPEC_KEYS)}; "
                           f"got {type(raw).__name__}.")
    for key in raw:
        if key not in SPEC_KEYS:
            match = closest(str(key), SPEC_KEYS)
            hint = f" Did you mean '{match}'?" if match else ""
            raise ScalingError(f"sweep spec '{path}': unknown key '{key}'.{hint} Valid keys: "
                               f"{', '.join(SPEC_KEYS)}.")
    base = _resolve_base(raw.get("base"), path)
    overrides = _override_list(raw.get("overrides") or [], f"sweep spec '{path}', overrides")
    axes_raw = raw.get("axes")
    if not isinstance(axes_raw, dict) or not axes_raw:
        raise ScalingError(
            f"sweep spec '{path}': axes must be a non-empty mapping of axis name -> list of values, e.g. "
            f"axes: {{size: [[\"--model.width=64\"], [\"--model.width=128\"]]}}; got {axes_raw!r}.")
    axes: dict[str, list[tuple[str, ...]]] = {}
    for name, values in axes_raw.items():
        if not isinstance(name, str) or not _AXIS_NAME.match(name):
            raise ScalingError(f"sweep spec '{path}': axis name {name!r} must be a word (letters, digits, _), "
                               f"since run names are built from it (e.g. size0-steps1).")
        if name in TABLE_COLUMNS:
            raise ScalingError(f"sweep spec '{path}': axis name '{name}' is a column the sweep writes "
                               f"({', '.join(TABLE_COLUMNS)}); rename the axis.")
        if not isinstance(values, list) or not values:
            raise ScalingError(f"sweep spec '{path}': axis '{name}' must be a non-empty list of values (each an "
                               f"override or a list of overrides), got {values!r}.")
        axes[name] = [_override_list(v, f"sweep spec '{path}', axis '{name}' value {i}")
                      for i, v in enumerate(values)]
    metric = raw.get("metric", "test_loss")
    if not isinstance(metric, str) or not metric:
        raise ScalingError(f"sweep spec '{path}': metric must be a summary.json key such as test_loss, "
                           f"got {metric!r}.")
    if metric not in SUMMARY_METRICS:
        match = closest(metric, SUMMARY_METRICS)
        hint = f" Did you mean '{match}'?" if match else ""
        raise ScalingError(f"sweep spec '{path}': metric '{metric}' is not a number a run's summary.json holds.{hint} "
                           f"Choose one of {', '.join(SUMMARY_METRICS)}.")
    params = raw.get("params", "non_embedding")
    if params not in PARAM_MODES:
        match = closest(str(params), PARAM_MODES)
        hint = f" Did you mean '{match}'?" if match else ""
        raise ScalingError(f"sweep spec '{path}': params {params!r} is not one of {', '.join(PARAM_MODES)}.{hint}")
    budget = raw.get("budget_seconds")
    if budget is not None:
        try:  # typed like a config value: YAML 1.1 reads 1e3 as the string '1e3'
            budget = coerce("budget_seconds", budget, float)
        except ConfigError:
            pass  # refused just below, in the spec's own words
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                               or not math.isfinite(budget) or budget <= 0):
        raise ScalingError(f"sweep spec '{path}': budget_seconds must be a positive number of seconds, "
                           f"got {budget!r}.")
    return SweepSpec(path=path, base=base, overrides=overrides, axes=axes, metric=metric, params=params,
                     budget_seconds=None if budget is None else float(budget))


def _check_schedule(cfg: Config) -> None:
    """The Trainer's schedule check, made up front where the run length is known without the data
    (train.max_steps set): e.g. a warmup longer than the run would otherwise fail only at that run."""
    if cfg.train.max_steps <= 0:
        return  # an epoch-based length needs the dataset's size; the Trainer checks it then
    from layerwise.train.schedule import lr_multiplier

    o = cfg.optim
    warmup = o.warmup_steps or int(o.warmup_fraction * cfg.train.max_steps)
    try:
        lr_multiplier(0, cfg.train.max_steps, schedule=o.schedule, warmup_steps=warmup, min_ratio=o.min_lr_ratio,
                      start_ratio=o.start_lr_ratio)
    except ValueError as e:
        raise ConfigError(f"{e} (optim.schedule={o.schedule}, train.max_steps={cfg.train.max_steps})") from None


def plan(spec: SweepSpec, extra_overrides: Sequence[str] = ()) -> list[GridPoint]:
    """Every grid point in run order, each with its config resolved (so validated) up front.

    Overrides apply in this order: the spec's, each axis's value in axis order, then
    ``extra_overrides`` (e.g. from the command line). Raises `ConfigError` naming the point.
    """
    extra = _override_list(list(extra_overrides), "extra overrides")
    names = list(spec.axes)
    points = []
    for combo in itertools.product(*(range(len(spec.axes[a])) for a in names)):
        name = "-".join(f"{a}{i}" for a, i in zip(names, combo))
        overrides = spec.overrides + tuple(o for a, i in zip(names, combo) for o in spec.axes[a][i]) + extra
        try:
            cfg = load_config(spec.base, list(overrides))
            _check_schedule(cfg)
        except ConfigError as e:
            raise ConfigError(f"sweep '{spec.path}', grid point {name}: {e}") from None
        points.append(GridPoint(name=name, index=dict(zip(names, combo)), overrides=overrides, config=cfg))
    return points


# ------------------------------------------------------------------------------------------ the table

def _model_counts(run_dir: Path) -> dict[str, int | None]:
    """Analytic counts of a finished run's model, rebuilt on the meta device from the description
    saved in model.safetensors (no weights are read): total and non-embedding parameters (None
    when the model has no such split), forward FLOPs per example and training FLOPs per token
    (None for a model that is not a language model)."""
    import torch
    from safetensors import safe_open

    from layerwise.models import create_model

    with safe_open(str(run_dir / "model.safetensors"), framework="pt") as f:
        kw = json.loads((f.metadata() or {})["model"])
    kw["in_shape"] = tuple(kw["in_shape"])
    with torch.device("meta"):
        model = create_model(**kw)
    non_embedding = None
    if "non_embedding" in inspect.signature(model.num_params).parameters:
        non_embedding = model.num_params(non_embedding=True)
    per_token = model.flops_per_token() if hasattr(model, "flops_per_token") else None
    return {"params_total": model.num_params(), "params_non_embedding": non_embedding,
            "flops_per_example": model.flops_per_example(), "flops_per_token": per_token}


def run_row(spec: SweepSpec, point: GridPoint, run_dir: Path) -> dict[str, Any]:
    """The results-table row of a finished run, from its summary.json and saved model."""
    summary = json.loads((run_dir / "summary.json").read_text())
    if spec.metric not in summary:
        numeric = [k for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        match = closest(spec.metric, numeric)
        hint = f" Did you mean '{match}'?" if match else ""
        raise ScalingError(f"sweep '{spec.path}': metric '{spec.metric}' is not in {run_dir / 'summary.json'}."
                           f"{hint} Numeric keys there: {', '.join(numeric)}.")
    counts = _model_counts(run_dir)
    n = counts["params_total"]
    if spec.params == "non_embedding" and counts["params_non_embedding"] is not None:
        n = counts["params_non_embedding"]
    d = int(summary["examples_seen"])
    flops = (counts["flops_per_token"] * d if counts["flops_per_token"] is not None
             else 3 * counts["flops_per_example"] * d)
    row: dict[str, Any] = {"name": point.name, "params": n, "params_total": counts["params_total"], "data": d,
                           "compute": 6 * n * d, "compute_flops": flops, "loss": summary[spec.metric],
                           "train_seconds": summary["train_seconds"]}
    for axis, i in point.index.items():
        row[axis] = " ".join(spec.axes[axis][i])
    return row


def collect_rows(spec: SweepSpec, points: Sequence[GridPoint], out_dir: Path) -> list[dict[str, Any]]:
    """Rows of every finished run of ``points`` (those whose directory holds summary.json), in grid order."""
    return [run_row(spec, p, out_dir / "runs" / p.name) for p in points
            if (out_dir / "runs" / p.name / "summary.json").is_file()]


def write_results(spec: SweepSpec, points: Sequence[GridPoint], out_dir: Path) -> Path:
    """Rebuild ``out_dir/results.csv`` and ``results.jsonl`` from the finished runs; the CSV's path.
    With no run finished yet, nothing is written (a table needs at least one row)."""
    rows = collect_rows(spec, points, out_dir)
    csv_path = out_dir / "results.csv"
    if rows:
        write_table(rows, csv_path, out_dir / "results.jsonl")
    return csv_path


# ------------------------------------------------------------------------------------------ running

def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(cfg: Config, run_dir: Path) -> list[str]:
    """Keys (``section.key: saved -> planned``) where the config saved in ``run_dir`` differs from
    ``cfg``, leaving out the keys that do not change what a run learns (``config.RESUMABLE_KEYS``: the
    run section, data.root, the device, ...); a YAML round trip puts both in the same types."""
    saved = _flat(yaml.safe_load((run_dir / "config.yaml").read_text()) or {})
    planned = _flat(yaml.safe_load(yaml.safe_dump(cfg.to_dict(), sort_keys=False)))
    keys = [k for k in dict.fromkeys([*planned, *saved]) if not is_resumable(k)]
    return [f"{k}: {saved.get(k)!r} -> {planned.get(k)!r}" for k in keys if saved.get(k) != planned.get(k)]


def _prepare(point: GridPoint, run_dir: Path) -> str:
    """What to do with ``point``'s directory: "done", "resume" or "new" (after removing a cut-off run)."""
    if not run_dir.exists():
        return "new"
    has_config = (run_dir / "config.yaml").is_file()
    if not has_config and any(run_dir.iterdir()):
        raise ScalingError(f"'{run_dir}' holds files that are not a layerwise run (no config.yaml); the sweep "
                           f"will not delete them. Move them away or choose another --dir.")
    diff = config_differences(point.config, run_dir) if has_config else []
    if (run_dir / "summary.json").is_file():
        if diff:
            raise ScalingError(
                f"run {point.name} in '{run_dir}' finished with a different config than the spec now gives "
                f"({'; '.join(diff[:5])}). The spec changed since: sweep into a new --dir, or delete that "
                f"run to retrain it.")
        return "done"
    from layerwise.train.checkpoint import list_checkpoints
    if has_config and not diff and list_checkpoints(run_dir / "checkpoints"):
        return "resume"
    shutil.rmtree(run_dir)  # cut off before its first checkpoint (or with another config): start over
    return "new"


def _train_here(point: GridPoint, run_dir: Path, action: str, show_progress: bool) -> None:
    import layerwise
    from layerwise.train.checkpoint import CheckpointError
    from layerwise.train.trainer import resume

    if action == "resume":
        try:  # the overrides again: the same config, with this invocation's data.root, device, ...
            resume(run_dir, show_progress=show_progress, overrides=list(point.overrides))
            return
        except CheckpointError:  # every checkpoint unreadable: train it again
            shutil.rmtree(run_dir)
    layerwise.fit(point.config, run_dir=run_dir, show_progress=show_progress)


def _train_subprocess(spec: SweepSpec, point: GridPoint, run_dir: Path, action: str, device: str,
                      log_path: Path) -> int:
    """Train ``point`` in a ``python -m layerwise train`` subprocess on ``device``; its exit code."""
    cmd = [sys.executable, "-m", "layerwise", "train"]
    if action == "resume":
        cmd += ["--resume", str(run_dir), *point.overrides]
    else:
        cmd += ([str(spec.base)] if spec.base else []) + list(point.overrides) + [f"--run.dir={run_dir}"]
    cmd += [f"--train.device={device}", "--quiet"]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        return subprocess.run(cmd, check=False, stdout=log, stderr=subprocess.STDOUT).returncode


def _used_seconds(out_dir: Path, points: Sequence[GridPoint]) -> float:
    """train_seconds summed over the finished runs (what budget_seconds is compared with)."""
    total = 0.0
    for p in points:
        s = out_dir / "runs" / p.name / "summary.json"
        if s.is_file():
            total += float(json.loads(s.read_text())["train_seconds"])
    return total


def _cuda_devices() -> list[str]:
    import torch
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i}" for i in range(n)] if n > 1 else []


def run_sweep(spec_path: str | Path, out_dir: str | Path, show_progress: bool = False, *,
              extra_overrides: Sequence[str] = (), max_runs: int | None = None,
              devices: Sequence[str] | None = None, echo: Callable[[str], None] | None = None) -> Path:
    """Train every grid point of the spec at ``spec_path`` that is not done yet in ``out_dir``.

    Returns the path of ``out_dir/results.csv``, rewritten after every run (see the module
    docstring for resuming, devices and the columns). ``max_runs`` stops after starting that
    many runs; ``devices`` forces parallel subprocess runs on those devices (default: every CUDA
    device when there are two or more, else one run at a time in this process); ``echo`` receives
    one progress line per run. Raises `ScalingError`/`ConfigError` for a bad spec before any run,
    the run's own error for a run that cannot proceed (e.g. missing data), and `SweepRunError`
    at the end when some runs diverged or failed while the others finished.
    """
    from layerwise.train.trainer import TrainingDiverged

    say = echo or (lambda _line: None)
    spec = load_spec(spec_path)
    out_dir = Path(out_dir)
    points = plan(spec, extra_overrides)
    actions = {p.name: _prepare(p, out_dir / "runs" / p.name) for p in points}
    todo = [p for p in points if actions[p.name] != "done"]
    if max_runs is not None:
        todo = todo[:max(0, max_runs)]
    total = len(points)
    done = total - sum(a != "done" for a in actions.values())
    if done:
        say(f"{done} of {total} runs already done in '{out_dir / 'runs'}'")
    csv_path = write_results(spec, points, out_dir)
    failed: list[str] = []

    def over_budget() -> bool:
        return spec.budget_seconds is not None and _used_seconds(out_dir, points) >= spec.budget_seconds

    def report(point: GridPoint) -> None:
        nonlocal csv_path, done
        done += 1
        row = next((r for r in collect_rows(spec, [point], out_dir)), None)
        csv_path = write_results(spec, points, out_dir)
        if row is not None:
            say(f"[{done}/{total}] {point.name}: loss {row['loss']:.4f}  N {row['params']:.3g}  "
                f"D {row['data']:.3g}  C {row['compute']:.3g}  {row['train_seconds']:.1f} s")

    parallel = list(devices) if devices is not None else _cuda_devices()
    if not parallel:
        for point in todo:
            if over_budget():
                say(f"budget of {spec.budget_seconds:g} s used: {len(todo) - todo.index(point)} runs not started")
                break
            run_dir = out_dir / "runs" / point.name
            axes = " ".join(o for a, i in point.index.items() for o in spec.axes[a][i])
            say(f"training {point.name} ({axes or 'no axis overrides'})")
            try:
                _train_here(point, run_dir, actions[point.name], show_progress)
            except TrainingDiverged as e:
                failed.append(f"{point.name}: {e}")
                say(f"{point.name} diverged: {e}")
                continue
            report(point)
    else:
        free: queue.Queue[str] = queue.Queue()
        for d in parallel:
            free.put(d)

        def work(point: GridPoint) -> int | None:
            if over_budget():
                return None
            device = free.get()
            try:
                say(f"training {point.name} on {device}")
                return _train_subprocess(spec, point, out_dir / "runs" / point.name, actions[point.name],
                                         device, out_dir / "logs" / f"{point.name}.log")
            finally:
                free.put(device)

        with ThreadPoolExecutor(max_workers=len(parallel)) as pool:
            futures = {pool.submit(work, p): p for p in todo}
            for fut in as_completed(futures):
                point, rc = futures[fut], fut.result()
                if rc is None:
                    say(f"{point.name}: not started, budget of {spec.budget_seconds:g} s used")
                elif rc != 0:
                    failed.append(f"{point.name}: exit code {rc}, see {out_dir / 'logs' / (point.name + '.log')}")
                    say(f"{point.name} failed (exit code {rc})")
                else:
                    report(point)
    if failed:
        raise SweepRunError(f"{len(failed)} run(s) of the sweep failed; the table '{csv_path}' holds the "
                            f"others, and running the sweep again retries only these:\n  " + "\n  ".join(failed))
    return csv_path
