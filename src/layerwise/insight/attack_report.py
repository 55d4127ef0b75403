"""`layerwise attack RUN_DIR`: a run's accuracy under FGSM or PGD over a range of eps, as a table,
attack/<method>-<norm>.json and a plot of accuracy against eps (insight/attack.py does the attacks)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from layerwise.config import ConfigError


def parse_eps(text: str) -> list[float]:
    """'0,0.1,0.3' -> [0.0, 0.1, 0.3]. Raises ConfigError for a value that is not a finite number
    >= 0, or an empty list."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--eps takes comma-separated numbers, e.g. --eps 0,0.1,0.2,0.3; got '{text}'.") from None
    bad = [v for v in values if not (math.isfinite(v) and v >= 0)]
    if not values or bad:
        raise ConfigError(f"--eps needs finite radii >= 0 (pixel units: images in [0, 1], e.g. 0,0.1,0.2,0.3); "
                          f"got '{text}'.")
    return values


def accuracy_figure(curves: dict[str, list[dict[str, Any]]], title: str, path: Path) -> Path:
    """A PNG of accuracy against eps, one line per curve ({label: rows of
    :func:`~layerwise.insight.attack.accuracy_under_attack`}). Returns ``path``."""
    # the Figure API without pyplot, as train/metrics.py draws (about 2x faster)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.13, top=0.91)
    for label, rows in curves.items():
        ax.plot([r["eps"] for r in rows], [r["accuracy"] for r in rows], "o-", label=label)
    ax.set_xlabel("eps (pixel space)")
    ax.set_ylabel("accuracy under attack")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def attack(run_dir: str | Path, method: str = "pgd", norm: str = "linf", eps: list[float] | str = (0, 0.1, 0.2, 0.3),
           steps: int = 40, restarts: int = 1, step_factor: float = 2.5, n: int = 1000, seed: int = 0,
           out: str | Path | None = None, device: str = "auto", data_root: str = "",
           batch_size: int = 500) -> dict[str, Any]:
    """Accuracy of a finished classification run under an attack, over a range of eps.

    run_dir: a run directory (its test split is attacked: ``n`` images chosen by ``seed``);
    method: ``fgsm`` or ``pgd``; norm: ``linf`` or ``l2``; eps: radii in pixel space (images in
    [0, 1]; audio features and table columns in raw / scale units, unbounded); PGD takes ``steps``
    steps of ``step_factor * eps / steps`` (Madry et al. 2018's rule), a uniform random start,
    and ``restarts`` starts. Writes ``<out>/<method>-<norm>.json`` (default out:
    ``run_dir/attack``) and ``.png`` (accuracy against eps, beside the other attacks of that norm
    already in ``out``); returns the JSON's dict.

    Raises RunDirError (no run there), ConfigError (bad arguments, or a run whose inputs are
    token ids, or whose task is not single-label classification), DataError (its data missing).
    """
    from layerwise.insight.attack import METHODS, NORMS, accuracy_under_attack
    from layerwise.insight.runs import open_run

    eps_list = parse_eps(eps if isinstance(eps, str) else ",".join(str(float(e)) for e in eps))
    if method not in METHODS or norm not in NORMS:
        raise ConfigError(f"--method must be fgsm or pgd and --norm linf or l2; got '{method}' and '{norm}'.")
    if steps < 1 or restarts < 1 or n < 1 or step_factor <= 0 or batch_size < 1:
        raise ConfigError(f"--steps, --restarts, --n and --batch-size must be >= 1 and --step-factor > 0; got "
                          f"steps={steps}, restarts={restarts}, n={n}, step_factor={step_factor}, "
                          f"batch_size={batch_size}.")
    run = open_run(run_dir, device=device, data_root=data_root)
    if not run.has_pixels:
        raise ConfigError(f"'{run.path}' is a run on token ids or indices ({run.info.name}): an attack perturbs "
                          f"real-valued inputs (images, audio features, table columns) by a small eps, and a "
                          f"token id has no small change. Attack a run on images, audio or tables.")
    if run.info.task != "classify":
        raise ConfigError(f"'{run.path}' is a {run.info.task} run: `layerwise attack` measures classification "
                          f"accuracy under attack, so it takes single-label classifiers (images, audio, tables).")
    x, y = run.examples("test", n=n, seed=seed)
    is_image = len(run.info.in_shape) == 3 and "audio" not in run.info.extra
    bounds = (0.0, 1.0) if is_image else None  # other features: no natural range (module docstring)
    t0 = time.perf_counter()
    rows = accuracy_under_attack(run.pixel_model(), x, y, eps_list, method=method, norm=norm, steps=steps,
                                 restarts=restarts, step_factor=step_factor, bounds=bounds,
                                 batch_size=batch_size, seed=seed)
    result = {"run": str(run.path), "dataset": run.info.name, "method": method, "norm": norm,
              "steps": 1 if method == "fgsm" else steps, "restarts": 1 if method == "fgsm" else restarts,
              "step_size": ("eps" if method == "fgsm" else f"{step_factor:g} * eps / {steps}"),
              "random_start": method == "pgd", "bounds": list(bounds) if bounds else None, "n": len(x), "seed": seed,
              "seconds": round(time.perf_counter() - t0, 2), "rows": rows}
    folder = Path(out) if out else run.path / "attack"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{method}-{norm}"
    (folder / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    curves = {}
    for f in sorted(folder.glob(f"*-{norm}.json")):  # this attack beside the others of its norm
        try:
            other = json.loads(f.read_text())
            curves[_label(other)] = other["rows"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not one of ours: left alone
    result["plot"] = str(accuracy_figure(curves, f"{run.info.name}: {len(x)} test examples, "
                                                 f"{'L-inf' if norm == 'linf' else 'L2'} eps", folder / f"{norm}.png"))
    result["json"] = str(folder / f"{stem}.json")
    return result


def _label(r: dict[str, Any]) -> str:
    return "FGSM" if r["method"] == "fgsm" else f"PGD-{r['steps']}" + (f" x{r['restarts']}" if r["restarts"] > 1 else "")


def table(result: dict[str, Any]) -> str:
    """The attack's rows as a text table: eps, accuracy, correct / n, largest perturbation."""
    head = (f"{_label(result)} ({result['norm']}, step {result['step_size']}, bounds {result['bounds']}) on "
            f"{result['n']} test examples of {result['dataset']}")
    lines = [head, f"{'eps':>8}  {'accuracy':>8}  {'correct':>11}  {'max |delta|':>11}"]
    for r in result["rows"]:
        lines.append(f"{r['eps']:>8.4g}  {r['accuracy']:>8.4f}  {r['correct']:>5}/{r['n']:<5}  "
                     f"{r['max_perturbation']:>11.4g}")
    return "\n".join(lines)


def run_command(args: Any) -> None:
    """`layerwise attack` (cli.py's parsed arguments): run :func:`attack`, print its table and the
    files written. Errors propagate to cli.main, which maps them to exit codes."""
    from layerwise.rl.config import is_rl_run
    from layerwise.train.run import RunDirError

    if is_rl_run(args.run_dir):
        raise RunDirError(f"'{args.run_dir}' is a reinforcement-learning run (`layerwise rl`); `layerwise attack` "
                          f"works on classifiers trained on data.")
    result = attack(args.run_dir, args.method, args.norm, args.eps, steps=args.steps, restarts=args.restarts,
                    step_factor=args.step_factor, n=args.n, seed=args.seed, out=args.out, device=args.device,
                    data_root=args.data_root, batch_size=args.batch_size)
    print(table(result))
    print(f"wrote {result['json']}\nwrote {result['plot']}")
