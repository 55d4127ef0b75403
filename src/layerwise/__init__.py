"""layerwise: deep networks built from simple layers, trained from one command.

    import layerwise
    summary = layerwise.fit("recipes/digits.yaml", "--train.epochs=5")
    summary["test_accuracy"], summary["run_dir"]
    summary = layerwise.finetune(summary["run_dir"], None, "--data.name=...")  # from trained weights
    summary = layerwise.fit_rl("recipes/cartpole.yaml", "--train.seed=1")   # PPO (needs layerwise[rl])
    result = layerwise.probe(summary["run_dir"])   # linear probe accuracy per depth, with pictures
    result = layerwise.attack(summary["run_dir"], "pgd", "linf", [0, 0.1, 0.3])  # accuracy under attack
    page = layerwise.report(summary["run_dir"])    # RUN_DIR/report.html (also written at the end of a run)
    page = layerwise.compare([run_a, run_b], out="compare.html")  # runs side by side
    rows = layerwise.runs("runs", sort="-test_accuracy", where=["dataset=mnist"])  # the runs index
    path = layerwise.export(summary["run_dir"])   # model.onnx, checked against PyTorch
    layerwise.serve(summary["run_dir"], port=8000)   # HTTP predictions with dynamic batching (blocks)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from layerwise.config import Config

__version__ = "0.1.0"


def cross_validate(recipe: str | Path | Config | None = None, *overrides: str, folds: int = 10,
                   out: str | Path | None = None, show_progress: bool = False) -> dict[str, Any]:
    """K-fold cross-validation of a recipe (see layerwise.train.crossval): one run per fold, and
    each test metric's mean and standard deviation as ``cv_<name>_mean`` / ``cv_<name>_std``."""
    from layerwise.train.crossval import cross_validate as _cv

    return _cv(recipe, *overrides, folds=folds, out=out, show_progress=show_progress, echo=lambda line: None)


def explain(run_dir: str | Path, inputs: list[str] | tuple[str, ...] = (), *, method: str = "ig",
            split: str | None = None, n: int = 8, seed: int = 0, target: str | int | None = None, steps: int = 50,
            internal_batch_size: int = 64, baseline: str = "auto", tolerance: float = 0.05, device: str = "auto",
            data_root: str = "") -> list[dict[str, Any]]:
    """Attributions of a run's predictions (``layerwise explain``; Captum): for each example of
    ``inputs`` (files, read as ``predict`` reads them) or of ``n`` examples of ``split``, a dict
    with "predicted", "probability" (or "value"), "target", "attribution" (a tensor shaped like
    the input; per token for text) and "completeness" (ig's gap). See
    layerwise.insight.explain.explain for the methods, baselines and errors."""
    from layerwise.insight.explain import explain as _explain

    return _explain(run_dir, inputs, method=method, split=split, n=n, seed=seed, target=target, steps=steps,
                    internal_batch_size=internal_batch_size, baseline=baseline, tolerance=tolerance, device=device,
                    data_root=data_root)


def _check_call(fn: str, recipe: Any, overrides: tuple, config_cls: type) -> None:
    """The arguments of :func:`fit` / :func:`fit_rl` have the right types; else ConfigError naming
    the function and the right call (a list of overrides is the usual slip)."""
    from layerwise.config import ConfigError

    if recipe is not None and not isinstance(recipe, (str, Path, config_cls)):
        other = "fit_rl" if fn == "fit" else "fit"
        raise ConfigError(f"layerwise.{fn}(recipe=...) takes a YAML path, a {config_cls.__name__} or None, not "
                          f"{type(recipe).__name__}. Pass the recipe's path (a "
                          f"{'Config' if fn == 'fit_rl' else 'RLConfig'} goes to layerwise.{other}).")
    bad = [o for o in overrides if not isinstance(o, str)]
    if bad:
        raise ConfigError(f"layerwise.{fn}: overrides are separate strings, e.g. layerwise.{fn}(recipe, "
                          f"'--train.seed=1', '--train.epochs=2'); got a {type(bad[0]).__name__}. Unpack a list "
                          f"with *overrides.")


def fit(recipe: str | Path | Config | None = None, *overrides: str, run_dir: str | Path | None = None,
        show_progress: bool = True) -> dict[str, Any]:
    """Train a recipe (a YAML path, a :class:`~layerwise.config.Config`, or None for the default
    job) with ``--section.key=value`` overrides; returns the run's summary (see summary.json)."""
    from layerwise.config import Config, ConfigError, apply_overrides, load_config
    from layerwise.train.trainer import fit as _fit

    _check_call("fit", recipe, overrides, Config)
    if isinstance(recipe, Config):
        cfg = apply_overrides(recipe, overrides)
    else:
        from layerwise.rl.config import is_rl_recipe

        if recipe is not None and is_rl_recipe(recipe):
            raise ConfigError(f"'{recipe}' is a reinforcement-learning recipe (it has env/ppo sections); train it "
                              f"with layerwise.fit_rl('{recipe}') (command line: `layerwise rl {recipe}`).")
        cfg = load_config(recipe, list(overrides))
    return _fit(cfg, run_dir, show_progress=show_progress)


def finetune(source: str | Path, recipe: str | Path | None = None, *overrides: str,
             show_progress: bool = True) -> dict[str, Any]:
    """Train starting from ``source``'s weights (a finished run directory or a .safetensors file):
    ``layerwise finetune SOURCE [RECIPE] [--key=value ...]``. The model is the source's unless the
    recipe or an override names one (see layerwise.train.finetune.finetune_config). Returns the
    run's summary, which names the source and its sha256."""
    from layerwise.config import Config, ConfigError
    from layerwise.train.finetune import finetune_config
    from layerwise.train.trainer import fit as _fit

    if not isinstance(source, (str, Path)) or not isinstance(recipe, (str, Path, type(None))):
        raise ConfigError(f"layerwise.finetune(source, recipe=None, *overrides) takes the path of a run directory "
                          f"or .safetensors file and a YAML recipe path or None; got {type(source).__name__} and "
                          f"{type(recipe).__name__}.")
    _check_call("finetune", None, overrides, Config)
    cfg, _notes = finetune_config(str(source), recipe, list(overrides))
    return _fit(cfg, show_progress=show_progress)


def fit_rl(recipe: Any = None, *overrides: str, run_dir: str | Path | None = None,
           show_progress: bool = True) -> dict[str, Any]:
    """Train an agent with PPO (``layerwise rl``): a YAML recipe path, an
    :class:`~layerwise.rl.config.RLConfig`, or None for CartPole with CleanRL's settings, with
    ``--section.key=value`` overrides; returns the run's summary (eval_return_mean, ...).
    Raises ConfigError for bad settings or when gymnasium is missing (pip install 'layerwise[rl]')."""
    from layerwise.config import apply_overrides, load_config
    from layerwise.rl.config import RLConfig
    from layerwise.rl.trainer import train_rl

    _check_call("fit_rl", recipe, overrides, RLConfig)
    if isinstance(recipe, RLConfig):
        cfg = apply_overrides(recipe, overrides)
    else:
        from layerwise.rl.config import refuse_supervised_recipe

        refuse_supervised_recipe(recipe)
        cfg = load_config(recipe, list(overrides), cls=RLConfig)
    return train_rl(cfg, run_dir, show_progress=show_progress)


def probe(run_dir: str | Path, train_n: int = 5000, test_n: int = 2000, seed: int = 0, out: str | Path | None = None,
          device: str = "auto", data_root: str = "", max_features: int = 2048, layer: int = 0,
          head: int = 0) -> dict[str, Any]:
    """Linear probes of every block's output (``layerwise probe``; see layerwise.insight.probe):
    train/test probe accuracy per depth (depth 0: the raw input) in ``result["depths"]``, written
    with its pictures to ``out`` (default RUN_DIR/probe). ``run_dir`` may be ``pretrained:NAME``
    with ``data_root`` the folder holding its data."""
    from layerwise.insight.probe import probe as _probe

    return _probe(run_dir, train_n, test_n, seed, out, device, data_root, max_features, layer=layer, head=head)


def export(run: str | Path, format: str = "onnx", out: str | Path | None = None, force: bool = False) -> Path:
    """Export a run's model (a run directory, its model.safetensors, or ``pretrained:NAME``) to
    ONNX or a torch.export ``.pt2`` (``layerwise export``), checked against PyTorch on a sample
    batch; returns the file's path (default RUN_DIR/model.onnx). Metadata, errors: see
    :func:`layerwise.deploy.export.export_run`."""
    from layerwise.deploy.export import export_run

    return export_run(run, format, out, force).path


def attack(run_dir: str | Path, method: str = "pgd", norm: str = "linf", eps: Any = (0, 0.1, 0.2, 0.3), *,
           steps: int = 40, restarts: int = 1, step_factor: float = 2.5, n: int = 1000, seed: int = 0,
           out: str | Path | None = None, device: str = "auto", data_root: str = "") -> dict[str, Any]:
    """Accuracy of a finished classification run under FGSM or PGD (``layerwise attack``) at each
    eps (pixel space: images in [0, 1]); writes RUN_DIR/attack/<method>-<norm>.json (or into
    ``out``) and a plot of accuracy against eps, and returns the JSON's dict (``rows``: eps,
    accuracy, correct, n, max_perturbation). Arguments and errors: see
    :func:`layerwise.insight.attack_report.attack`."""
    from layerwise.insight.attack_report import attack as _attack

    return _attack(run_dir, method, norm, eps, steps=steps, restarts=restarts, step_factor=step_factor, n=n,
                   seed=seed, out=out, device=device, data_root=data_root)


def report(run_dir: str | Path, out: str | Path | None = None, *, device: str = "cpu", data_root: str = "",
           max_examples: int = 1000) -> Path:
    """Write a run's self-contained HTML report (default ``run_dir/report.html``); returns its path.
    See :func:`layerwise.deploy.report.write_report`."""
    from layerwise.deploy.report import write_report

    if max_examples < 1:
        from layerwise.config import ConfigError
        raise ConfigError(f"max_examples must be >= 1, got {max_examples}.")
    return write_report(run_dir, out, device, data_root, None, max_examples)


def compare(run_dirs: list[str | Path], out: str | Path = "compare.html") -> Path:
    """Write one HTML page comparing two or more runs (metrics, config diff, overlaid curves);
    returns its path. See :func:`layerwise.deploy.compare.compare_runs`."""
    from layerwise.deploy.compare import compare_runs

    return compare_runs(run_dirs, out)


def runs(root: str | Path = "runs", sort: str | list[str] | None = None, where: str | list[str] = (),
         limit: int | None = None, max_depth: int = 4) -> list[dict[str, Any]]:
    """The runs under ``root`` (``layerwise runs``), one dict each: name, status (finished, running,
    unknown, resumable, crashed), task, model, dataset, headline, metric, steps, train_seconds,
    energy_train_j/_kwh, ..., the summary's keys and ``config`` ({"section.key": value}).
    ``sort``: a key or ``-KEY`` (descending), or a list; ``where``: conditions such as
    ``"dataset=mnist"`` or ``"test_accuracy>0.99"``. Uses and refreshes the index
    ``root/.layerwise-runs.sqlite``. Raises ConfigError for a bad condition or unknown key, RunsError
    (a ValueError) when ``root`` is not a folder. See layerwise.deploy.listing."""
    from layerwise.deploy.listing import list_runs

    return list_runs(root, sort, where, limit, max_depth)


def serve(run: str | Path, host: str = "127.0.0.1", port: int = 8000, **settings: Any) -> None:
    """Serve a run's model over HTTP until SIGTERM or Ctrl-C (``layerwise serve``; blocking):
    POST /predict, GET /health, GET /metadata, with dynamic batching. ``run``: a run directory, a
    model.safetensors file or ``pretrained:NAME``; ``settings``: the keyword arguments of
    :func:`layerwise.deploy.server.serve` (workers, max_batch, max_wait_ms, ...; an unknown one is a
    TypeError). :func:`layerwise.deploy.server.create_app` builds the ASGI app without running it."""
    from layerwise.deploy.server import serve as _serve

    return _serve(run, host, port, **settings)
