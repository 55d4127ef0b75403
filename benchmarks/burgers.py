"""Burgers' equation in two settings, 1,000 training and 200 test pairs at 256 points:

- ``text``: ``recipes/burgers.yaml``, Li et al.'s (2021) paper text: nu = 0.1, u0 ~ N(0, 625
  (-Delta + 25 I)^-2). Viscosity dominates (u(1) is ~1/70 of u0, nearly a sine).
- ``sharp``: ``recipes/burgers-sharp.yaml``, Li et al.'s released data generator: nu = 1e-3,
  u0 ~ N(0, 49^2 (-Delta + 49 I)^-2.5). Shocks; the setting their 0.0149 was measured in.

For each: the recipe (the FNO) beside, in the same run and on the same data, two convnets of
about the FNO's FLOPs with the recipe's optimizer and epochs (cnn1d plain, 33 points of receptive
field, and dilated, the whole domain), "predict u0 unchanged", and the heat equation (Burgers
without its nonlinear term, solved exactly): test relative L2 error. Then resolution transfer:
the trained models evaluated at 512 and 1024 points through `layerwise eval RUN
--data.resolution=R` (the library call behind it), and a picture of one test example (solver
against the models).

    python benchmarks/burgers.py [--setting both|text|sharp] [--data-root DIR] [--threads 2]
        [--out benchmarks/results/burgers_<date>.json] [--model.key=value ...]  (overrides for the FNO runs)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPES = {"text": REPO / "recipes" / "burgers.yaml", "sharp": REPO / "recipes" / "burgers-sharp.yaml"}
CONVNETS = {"cnn1d": ["--model.name=cnn1d", "--model.width=32", "--model.depth=4", "--model.kernel_size=5"],
            "cnn1d_dilated": ["--model.name=cnn1d", "--model.width=32", "--model.depth=8", "--model.kernel_size=3",
                              "--model.dilation_growth=2"]}
Q = ["--run.plots=false", "--run.tensorboard=false", "--run.keep_checkpoints=1"]


def rel_l2(pred: np.ndarray, y: np.ndarray) -> float:
    """Mean over examples of ||pred - y||_2 / ||y||_2 (rows are examples)."""
    return float(np.mean(np.linalg.norm(pred - y, axis=1) / np.linalg.norm(y, axis=1)))


def heat(u0: np.ndarray, nu: float, t: float = 1.0) -> np.ndarray:
    """u0 evolved by u_t = nu u_xx alone (exact, in Fourier space): Burgers without (u^2/2)_x."""
    R = u0.shape[1]
    k = 2 * np.pi * np.arange(R // 2 + 1)
    return np.fft.irfft(np.fft.rfft(u0, axis=1) * np.exp(-nu * k * k * t), n=R, axis=1)


def picture(runs: dict[str, str], recipe: Path, root: str, path: Path, title: str) -> None:
    """One test example at 1024 points: u0, and u(1) from the solver beside the models' predictions
    (the FNO at 256 and, with the same weights, at 1024 points; the convnets at 256). The example
    is the one with the steepest u(1) among the first 20 (a shock, where there is one)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from layerwise.config import load_config
    from layerwise.data import load_dataset
    from layerwise.data.inputs import prepare_inputs
    from layerwise.train.inference import _info, model_task
    from layerwise.train.run import load_model

    cfg = load_config(recipe, [f"--data.root={root}", "--data.resolution=1024"])
    ds = load_dataset("burgers", root, cfg.data)
    index = int(ds.y_test[:20].diff(dim=1).abs().amax(dim=1).argmax())
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(1024) / 1024
    a.plot(x, ds.x_test[index, 0].numpy(), "k")
    a.set_title(f"initial condition u0 (test example {index})")
    b.plot(x, ds.y_test[index].numpy(), "k", lw=3, alpha=0.35, label="solver (ETDRK4, 1024 points)")
    lines = [("fno", 256, "C0o", "FNO, 256 points (trained)"), ("fno", 1024, "C0-", "FNO, same weights at 1024 points"),
             ("cnn1d", 256, "C3x", "cnn1d baseline, 256 points"),
             ("cnn1d_dilated", 256, "C2+", "cnn1d dilated, 256 points")]
    for name, res, style, label in lines:
        model, meta = load_model(runs[name], "cpu")
        info = _info(meta)
        task = model_task(meta, info)
        model.eval()
        u0 = ds.x_test[index:index + 1, :, ::1024 // res]
        with torch.no_grad():
            pred = task.to_units(model(prepare_inputs(u0, info, "cpu")))[0].numpy()
        xs = np.arange(res) / res
        keep = slice(None, None, 4) if res == 256 else slice(None)
        b.plot(xs[keep], pred[keep], style, ms=3, label=label)
    b.set_title(title)
    for ax in (a, b):
        ax.set_xlabel("x")
        ax.grid(alpha=0.3)
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def measure(setting: str, args: argparse.Namespace, root: str, runs: Path, out: Path) -> dict:
    """Everything for one setting (module docstring); prints as it goes."""
    import layerwise
    from layerwise.config import load_config
    from layerwise.data import load_dataset
    from layerwise.train.inference import evaluate_run

    recipe = RECIPES[setting]
    common = [f"--data.root={root}", f"--run.root={runs}", f"--train.threads={args.threads}", *Q]
    if args.quick:
        common += ["--data.num_train=100", "--data.num_test=20", "--train.epochs=1"]
    cfg = load_config(recipe, common)
    t0 = time.perf_counter()
    ds = load_dataset("burgers", root, cfg.data)  # generated (and cached) here, timed
    result: dict = {"recipe": str(recipe.relative_to(REPO)), "data": {
        "seconds": round(time.perf_counter() - t0, 2),
        **{k: ds.source[k] for k in ("viscosity", "grf", "grid", "resolution", "train", "test", "cached",
                                     "solver_modes", "solver_dt")}}}
    nu = ds.source["viscosity"]
    u0, y = ds.x_test[:, 0].double().numpy(), ds.y_test.double().numpy()
    result["u0_unchanged"] = {"test_rel_l2": rel_l2(u0, y)}
    result["heat_equation"] = {"test_rel_l2": rel_l2(heat(u0, nu), y)}
    print(f"[{setting}] data: {result['data']}\n[{setting}] u0 unchanged: "
          f"{result['u0_unchanged']['test_rel_l2']:.4f}   heat equation: {result['heat_equation']['test_rel_l2']:.4f}",
          flush=True)

    keys = ("test_rel_l2", "test_rmse", "test_r2", "train_seconds", "params", "flops_per_example", "epochs",
            "run_dir")
    run_dirs = {}
    for name, extra in (("fno", list(args.fno)), *CONVNETS.items()):
        t0 = time.perf_counter()
        s = layerwise.fit(str(recipe), *common, *extra, show_progress=False)
        row = {k: s[k] for k in keys} | {"wall_seconds": round(time.perf_counter() - t0, 1), "overrides": extra}
        for res in (512, 1024):
            e = evaluate_run(s["run_dir"], "cpu", root, [f"--data.resolution={res}"])
            row[f"test_rel_l2_at_{res}"] = e["test_rel_l2"]
        run_dirs[name] = row.pop("run_dir")
        result[name] = row
        print(f"[{setting}] {name}: rel L2 {row['test_rel_l2']:.4f} at 256, {row['test_rel_l2_at_512']:.4f} at 512, "
              f"{row['test_rel_l2_at_1024']:.4f} at 1024; {row['train_seconds']:.0f} s of training, "
              f"{row['params']:,} params", flush=True)

    png = out.with_name(out.stem.replace("burgers", f"burgers-{setting}" if setting == "sharp" else "burgers") + ".png")
    picture(run_dirs, recipe, root, png, f"u(x, t=1), nu = {nu:g}")
    result["picture"] = png.name
    f = result["fno"]
    result["target"] = {"test_rel_l2_max": 0.02, "train_seconds_max": 600,
                        "reached": f["test_rel_l2"] <= 0.02 and f["train_seconds"] <= 600}
    print(f"[{setting}] target rel L2 <= 0.02 in <= 600 s: "
          f"{'reached' if result['target']['reached'] else 'NOT reached'}; picture {png}", flush=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setting", choices=["both", "text", "sharp"], default="both")
    p.add_argument("--data-root", default="", help="where the generated data is cached (default: a temporary folder)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / f"burgers_{time.strftime('%Y-%m-%d')}.json"))
    p.add_argument("--quick", action="store_true", help="a smoke test: 100 + 20 examples, one epoch (not a figure)")
    args, extra_fno = p.parse_known_args()
    args.fno = extra_fno

    import torch

    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    root = args.data_root or str(Path(tmp.name) / "data")
    runs = Path(tmp.name) / "runs"
    out = Path(args.out)
    result: dict = {"env": environment(), "command": " ".join(["python", "benchmarks/burgers.py", *sys.argv[1:]])}
    for setting in (["text", "sharp"] if args.setting == "both" else [args.setting]):
        result[setting] = measure(setting, args, root, runs, out)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
