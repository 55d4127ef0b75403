"""K-fold cross-validation: one run per fold of a source without a test split, and their mean.

    layerwise cv RECIPE --folds K [--dir OUT] [--section.key=value ...]
    layerwise.cross_validate("recipes/breast-cancer.yaml", folds=10)

Fold i trains with ``--data.folds=K --data.fold=i`` in ``OUT/fold<i>`` (the folds partition the
data: stratified for classes, seed 0; :func:`layerwise.data.datasets.holdout_split`). A fold that
finished (summary.json, same config) is kept; one that was cut off resumes from its checkpoint;
so an interrupted cross-validation continues where it stopped. ``OUT/cv_summary.json`` holds, for
every test metric of the task, ``cv_<name>_mean`` and ``cv_<name>_std`` (the sample standard
deviation over the folds, ddof 1), the folds' own values, and their energy summed
(``energy_train_total_j`` / ``_kwh`` / ``_gco2``; the same for evaluation).
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path
from typing import Any

from layerwise.config import Config, ConfigError, apply_overrides, config_changes, is_resumable, load_config

__all__ = ["cross_validate", "summarize_folds"]


def summarize_folds(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample std (ddof 1) over the folds of every numeric ``test_<name>`` key, as
    ``cv_<name>_mean`` / ``cv_<name>_std``; the headline first."""
    headline = summaries[0].get("headline", "test_loss")
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    keys = [k for k in summaries[0] if k.startswith("test_") and all(number(s.get(k)) for s in summaries)]
    keys.sort(key=lambda k: (k != headline, k != "test_loss"))
    out: dict[str, Any] = {"folds": len(summaries), "headline": "cv_" + headline[5:] + "_mean"}
    for k in keys:
        values = [float(s[k]) for s in summaries]
        name = k[5:]
        out[f"cv_{name}_mean"] = statistics.fmean(values)
        out[f"cv_{name}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    out["train_seconds_total"] = round(sum(float(s.get("train_seconds", 0.0)) for s in summaries), 3)
    return out | _energy_totals(summaries)


def _energy_totals(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The folds' energy summed (energy_train_total_j/_kwh/_gco2, energy_eval_total_*), when every
    fold metered it (README: Energy and carbon); the method when they agree, and which folds
    counted only part of their training (resumed from a checkpoint without joules)."""
    if not all("energy_train_j" in s for s in summaries):
        return {}
    out: dict[str, Any] = {}
    from layerwise.insight.energy import carbon_fields, significant

    grids = {s.get("grid_gco2_per_kwh") for s in summaries}
    for phase in ("train", "eval"):
        joules = sum(float(s[f"energy_{phase}_j"]) for s in summaries)
        if len(grids) == 1 and None not in grids:  # one grid: the totals of the summed joules, to the digit
            out |= carbon_fields(f"energy_{phase}_total", joules, float(next(iter(grids))))
        else:  # folds priced on different (or unrecorded) grids: the grams add, each at its own
            out |= {f"energy_{phase}_total_j": significant(joules)}
            for unit in ("kwh", "gco2"):
                out[f"energy_{phase}_total_{unit}"] = sum(float(s.get(f"energy_{phase}_{unit}", 0.0)) for s in summaries)
    methods = {s.get("energy_method") for s in summaries}
    out["energy_method"] = methods.pop() if len(methods) == 1 else "mixed"
    partial = [str(i) for i, s in enumerate(summaries) if s.get("energy_unmetered_examples")]
    if partial:
        out["energy_note"] = (f"fold{'s' if len(partial) > 1 else ''} {', '.join(partial)} metered only part of "
                              f"their training (resumed from a checkpoint without joules; see their summary.json)")
    return out


def _fold_config(base: Config, folds: int, fold: int, run_dir: Path) -> Config:
    return apply_overrides(base, [f"--data.folds={folds}", f"--data.fold={fold}", f"--run.dir={run_dir}"])


def _differences(cfg: Config, run_dir: Path) -> list[str]:
    """How the run saved in ``run_dir`` differs from ``cfg`` in what it learns ("key: saved ->
    new"; ["config.yaml unreadable"] when it cannot be read)."""
    try:
        saved = load_config(run_dir / "config.yaml").to_dict()
    except ConfigError:
        return ["its config.yaml cannot be read"]
    return [f"{k}: {a!r} -> {b!r}" for k, (a, b) in config_changes(saved, cfg.to_dict()).items() if not is_resumable(k)]


def _same_run(cfg: Config, run_dir: Path) -> bool:
    """Whether the run saved in ``run_dir`` has ``cfg`` (up to settings that do not change what it learns)."""
    return not _differences(cfg, run_dir)


def cross_validate(recipe: str | Path | Config | None, *overrides: str, folds: int = 10, out: str | Path | None = None,
                   show_progress: bool = False, echo=print) -> dict[str, Any]:
    """Train every fold of K-fold cross-validation and return the summary (also written to
    ``out/cv_summary.json``). ``recipe`` is a YAML path, a Config or None (the default job);
    ``overrides`` are ``--section.key=value`` strings applied to every fold. Raises ConfigError
    for a bad config or K < 2, before any fold trains."""
    if folds < 2:
        raise ConfigError(f"cross-validation needs --folds >= 2, got {folds}.")
    if isinstance(recipe, Config):
        base = apply_overrides(recipe, list(overrides))
    else:
        base = load_config(recipe, list(overrides))
    if base.run.dir:  # each fold's run.dir is set below: a user's would be dropped without a word
        raise ConfigError(f"`layerwise cv` puts fold i in OUT/fold<i>, so run.dir={base.run.dir!r} would be ignored; "
                          f"give the folder as --dir OUT (cross_validate(..., out=OUT)) and leave run.dir empty.")
    name = base.run.name or base.data.name
    out = Path(out) if out else Path(base.run.root) / f"{name}-cv{folds}"
    configs = [_fold_config(base, folds, i, out / f"fold{i}") for i in range(folds)]  # every fold checked first
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _run_folds(configs, out, folds, show_progress, echo)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):  # refused before anything was written
            out.rmdir()
        raise


def _run_folds(configs: list[Config], out: Path, folds: int, show_progress: bool, echo) -> dict[str, Any]:
    from layerwise.train.trainer import Trainer, resume

    summaries = []
    for i, cfg in enumerate(configs):
        run_dir = out / f"fold{i}"
        done = (run_dir / "summary.json").is_file() and _same_run(cfg, run_dir)
        if done:
            summary = json.loads((run_dir / "summary.json").read_text())
            echo(f"fold {i}: done earlier ({summary.get(summary.get('headline', 'test_loss'))})")
        else:
            checkpoints = list((run_dir / "checkpoints").glob("step_*")) if run_dir.is_dir() else []
            if run_dir.exists() and not (checkpoints and _same_run(cfg, run_dir)):
                if (run_dir / "summary.json").is_file():
                    diff = _differences(cfg, run_dir)
                    raise ConfigError(f"'{run_dir}' holds a finished run with another config than this "
                                      f"cross-validation's ({'; '.join(diff[:5])}); choose another --dir or "
                                      f"delete it.")
                shutil.rmtree(run_dir)  # cut off before a checkpoint, or another config: start over
            if run_dir.exists():
                summary = resume(run_dir, show_progress=show_progress)
            else:
                summary = Trainer(cfg, run_dir, show_progress=show_progress).fit()
            h = summary.get("headline", "test_loss")
            echo(f"fold {i}: {h} {summary.get(h)}")
        summaries.append(summary)
    result = summarize_folds(summaries) | {"per_fold": [
        {k: v for k, v in s.items() if k.startswith("test_") or k in ("train_seconds", "run_dir")} for s in summaries],
        "dir": str(out)}
    from layerwise.train.run import write_json

    write_json(out / "cv_summary.json", result)
    return result
