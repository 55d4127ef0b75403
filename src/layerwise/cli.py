"""`layerwise` command line: each subcommand is a thin call into one library function.

    layerwise train [RECIPE] [--section.key=value ...] [--resume RUN_DIR]
                    [--nproc N [--nnodes M --node-rank I --rdzv-endpoint HOST:PORT] [--max-restarts K]]
    layerwise finetune SOURCE [RECIPE] [--section.key=value ...]
    layerwise cv [RECIPE] --folds K [--dir OUT] [--section.key=value ...]
    layerwise rl [RECIPE] [--section.key=value ...] [--resume RUN_DIR]
    layerwise play RUN_DIR [--episodes N] [--seed S] [--gif PATH] [--policy greedy|sample]
    layerwise eval RUN_DIR [--data.key=value ...]
    layerwise predict RUN_DIR INPUT... [--top-k K]
    layerwise predict RUN_DIR --user ID [--top-k K] [--json]
    layerwise generate RUN_DIR [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K]
                       [--stop STR ...] [--stop-top-level] [--samples N] [--check-syntax python]
    layerwise explain RUN_DIR INPUT... [--method ig|saliency|gradcam|occlusion] [--target CLASS]
    layerwise explain RUN_DIR --split test --n 8
    layerwise attack RUN_DIR [--method fgsm|pgd] [--norm linf|l2] [--eps 0,0.1,0.2,0.3] [--steps 40]
                     [--restarts 1] [--n 1000] [--out DIR]
    layerwise probe RUN_DIR [--train-n N] [--test-n N] [--layer L] [--head H] [--out DIR]
    layerwise serve RUN_DIR [--host 127.0.0.1] [--port 8000] [--max-batch 32] [--max-wait-ms 5] [--workers N]
                    [--max-upload-mb 16] [--max-examples 256] [--timeout-s 30] [--threads T]
    layerwise info RUN_DIR
    layerwise report RUN_DIR [--out PATH] [--max-examples N]
    layerwise compare RUN_DIR RUN_DIR... [--out compare.html]
    layerwise runs [ROOT] [--sort [-]KEY] [--where KEY=VALUE|KEY>N|KEY<N ...] [--limit N] [--json|--csv]
    layerwise export RUN_DIR [--format onnx|pt2] [--out PATH] [--force]
    layerwise models [NAME] [--pretrained]
    layerwise scale SWEEP.yaml [--dir OUT] [--dry-run] [--max-runs K] [--section.key=value ...]
    layerwise scale fit TABLE --law n|d|nd [--json] [--holdout K] [--boot B] [--seed S]
    layerwise scale report DIR_OR_TABLE [--law n] [--holdout 1] [--out DIR]

Exit codes: 0 success, 1 a run that cannot proceed (missing data, corrupt checkpoint, divergence),
2 a configuration or usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import warnings
from pathlib import Path

from layerwise.config import ConfigError, help_text, load_config

USAGE_ERROR, RUN_ERROR = 2, 1


def _join_spaced_overrides(argv: list[str]) -> list[str]:
    """Accept ``--run.dir DIR`` as well as ``--run.dir=DIR``."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--") and "." in a and "=" not in a and i + 1 < len(argv) \
                and not argv[i + 1].startswith("--"):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
        else:
            out.append(a)
            i += 1
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="layerwise", description="Train, evaluate and use deep networks.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model (the built-in default when no recipe is given)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train from a YAML recipe (default: digits with a small residual CNN). "
                                   "Override any key with --section.key=value.",
                       epilog="config keys (--section.key=value):\n" + help_text())
    t.add_argument("recipe", nargs="?", help="YAML recipe (see recipes/)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its newest valid checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress output, only the results table")
    d = t.add_argument_group("several processes (README: Scaling out); also: torchrun ... -m layerwise train")
    d.add_argument("--nproc", type=int, metavar="N",
                   help="start N processes on this machine with torchrun's launcher (one per GPU)")
    d.add_argument("--nnodes", default="1", help="machines taking part (with --rdzv-endpoint)")
    d.add_argument("--node-rank", type=int, default=0, help="this machine's index, 0 .. nnodes-1")
    d.add_argument("--rdzv-endpoint", default="", metavar="HOST:PORT",
                   help="where the machines meet (usually the first node)")
    d.add_argument("--rdzv-id", default="", help="job id shared by the machines (e.g. $SLURM_JOB_ID)")
    d.add_argument("--max-restarts", type=int, default=0,
                   help="restart the processes up to K times after a failure; they resume from the last checkpoint")

    f = sub.add_parser("finetune", help="train starting from a trained model's weights (transfer learning)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Fine-tune: `layerwise train` with --model.init_from=SOURCE. The model is the "
                                   "source's (unless the recipe or --model.name names one); the body loads by "
                                   "tensor name and the head is new when the classes differ. Every layer trains "
                                   "from the start; --train.freeze_body_epochs=1 --optim.body_lr_scale=0.1 give "
                                   "fastai's fine_tune (the head alone first, then the body at lower rates). "
                                   "README: Transfer learning.",
                       epilog="config keys (--section.key=value): see `layerwise train --help`")
    f.add_argument("source", metavar="SOURCE", help="a finished run directory or a .safetensors file")
    f.add_argument("recipe", nargs="?", help="YAML recipe of the new task (see recipes/)")
    f.add_argument("--quiet", action="store_true", help="no progress output, only the results table")

    c = sub.add_parser("cv", help="K-fold cross-validation of a recipe: one run per fold, then mean and std",
                       description="Train every fold (data.folds=K, data.fold=0..K-1) of a source without a test "
                                   "split and report each test metric's mean and standard deviation. Rerun the "
                                   "same command to continue an interrupted one. Overrides --section.key=value "
                                   "apply to every fold.")
    c.add_argument("recipe", nargs="?", help="YAML recipe (see recipes/)")
    c.add_argument("--folds", type=int, default=10, help="K, the number of folds (default 10)")
    c.add_argument("--dir", help="output folder (default: <run.root>/<name>-cv<K>)")
    c.add_argument("--progress", action="store_true", help="show each fold's progress bar")
    c.add_argument("--quiet", action="store_true", help="no line per fold, only the results table")

    from layerwise.rl.config import RLConfig  # the config's dataclasses only: gymnasium is imported on use

    r = sub.add_parser("rl", help="train a game-playing agent with PPO on a Gymnasium environment",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Reinforcement learning with PPO (default: CartPole-v1, CleanRL's settings). "
                                   "Override any key with --section.key=value. Needs gymnasium: "
                                   "pip install 'layerwise[rl]'.",
                       epilog="config keys (--section.key=value):\n" + help_text(RLConfig))
    r.add_argument("recipe", nargs="?", help="YAML recipe (recipes/cartpole.yaml, recipes/acrobot.yaml)")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its newest valid checkpoint")
    r.add_argument("--quiet", action="store_true", help="no progress output, only the results table")

    pl = sub.add_parser("play", help="let a trained agent (a `layerwise rl` run) play episodes; report returns")
    pl.add_argument("run_dir")
    pl.add_argument("--episodes", type=int, default=10, help="episodes to play (default 10)")
    pl.add_argument("--seed", type=int, default=0, help="episode i is reset with seed S + i (default 0)")
    pl.add_argument("--policy", choices=("greedy", "sample"), default="greedy",
                    help="greedy: the most likely action (default); sample: draw from the policy")
    pl.add_argument("--gif", metavar="PATH", help="also render the first episode to this animated GIF")
    pl.add_argument("--json", action="store_true", help="print JSON instead of text")
    pl.add_argument("--device", default="cpu")

    e = sub.add_parser("eval", help="evaluate a finished run's model on its test split",
                       description="Evaluate a finished run's model on its test split. --data.key=value overrides "
                                   "evaluate the same weights on other data settings, e.g. --data.resolution=1024 "
                                   "for an fno trained on burgers at 256 points.")
    e.add_argument("run_dir")
    e.add_argument("--device", default="auto")
    e.add_argument("--data-root", default="", help="override the data root saved in the run's config")

    pr = sub.add_parser("predict", help="predictions for images, .npy arrays, .wav files, CSV rows, lines of text, "
                                              "SMILES strings for a molecules model, or .npy initial conditions for "
                                              "a burgers model")
    pr.add_argument("run_dir")
    pr.add_argument("inputs", nargs="*", metavar="INPUT")
    pr.add_argument("--user", metavar="ID", help="a ratings run: the top-k items this user (id as in the ratings "
                                                 "files) has not rated, with titles and predicted ratings")
    pr.add_argument("--top-k", type=int, default=None, help="classes shown (default 3), or items for --user (10)")
    pr.add_argument("--data-root", default="", help="--user: override the data root saved in the run's config")
    pr.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                    help="invert grayscale images drawn dark on light (auto: when mean brightness > 0.5)")
    pr.add_argument("--json", action="store_true", help="print JSON instead of text")
    pr.add_argument("--max-image-pixels", type=int, default=None, metavar="N",
                    help="refuse images larger than N pixels (0 = no limit; default: the run's "
                         "data.max_image_pixels, Pillow's 89,478,485)")
    pr.add_argument("--device", default="auto")

    x = sub.add_parser("explain", help="attributions: which pixels, tokens, bands or features a prediction rests on",
                       description="Explain a run's predictions with Captum: PNG overlays for images and "
                                   "spectrograms, a bar chart and table for table rows, coloured tokens (terminal "
                                   "and HTML) for text, written under RUN_DIR/explain/<method>-NNN. Inputs are read "
                                   "as `layerwise predict` reads them. README: Explanations.")
    x.add_argument("run_dir")
    x.add_argument("inputs", nargs="*", metavar="INPUT")
    x.add_argument("--method", default="ig", choices=("ig", "saliency", "gradcam", "occlusion"),
                   help="ig: Integrated Gradients (default); saliency: |gradient|; gradcam: Grad-CAM on the last "
                        "conv stage (convnet, resnet) or last block's tokens (vit); occlusion: output drop when "
                        "a window (a feature, a token) is set to the baseline")
    x.add_argument("--split", choices=("test", "train"), help="explain examples of this split instead of files")
    x.add_argument("--n", type=int, default=8, help="examples of --split (default 8)")
    x.add_argument("--seed", type=int, default=0, help="which examples of --split (a seeded choice)")
    x.add_argument("--target", default=None, metavar="CLASS",
                   help="explain this class (name or index; when the classes are numbers, a name) instead of the "
                        "predicted one")
    x.add_argument("--steps", type=int, default=50, help="ig: points on the path from the baseline (default 50)")
    x.add_argument("--internal-batch-size", type=int, default=64,
                   help="rows per forward pass inside ig and occlusion (bounds memory; default 64)")
    x.add_argument("--baseline", choices=("auto", "zero", "mean"), default="auto",
                   help="ig/occlusion reference: zero (black image) or the dataset mean; auto: zero for images, "
                        "mean for audio and tables")
    x.add_argument("--tolerance", type=float, default=0.05,
                   help="warn when ig's completeness gap exceeds this fraction of F(x) - F(baseline)")
    x.add_argument("--out", help="folder for the results (default RUN_DIR/explain); a new <method>-NNN inside")
    x.add_argument("--no-color", action="store_true", help="print token scores as numbers, not colours")
    x.add_argument("--invert", choices=("auto", "yes", "no"), default="auto", help="as for `layerwise predict`")
    x.add_argument("--data-root", default="", help="--split: override the data root saved in the run's config")
    x.add_argument("--device", default="auto")

    g = sub.add_parser("generate", help="sample text from a language-model run")
    g.add_argument("run_dir")
    g.add_argument("--prompt", default="", help="text to continue (default: start a new line)")
    g.add_argument("--tokens", type=int, default=500, help="tokens to sample")
    g.add_argument("--temperature", type=float, default=0.8, help="softmax temperature (0 = greedy)")
    g.add_argument("--top-k", type=int, default=200, help="sample among the k most likely tokens (0 = all)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--stop", action="append", default=[], metavar="STR",
                   help="cut each sample before the first STR in its continuation (repeatable; \\n, \\t, "
                        "\\\\ and \\xHH are read as escapes, e.g. --stop '\\n\\n\\n')")
    g.add_argument("--stop-top-level", action="store_true",
                   help="code: cut before the first later line that starts in column 0 (the end of a def's body)")
    g.add_argument("--samples", type=int, default=1, help="independent samples, separated by a rule line")
    g.add_argument("--check-syntax", choices=("python",), default=None,
                   help="parse each sample (Python's ast; nothing runs) and report which parse, and the fraction")
    g.add_argument("--device", default="auto")

    ex = sub.add_parser("export", help="the run's model as an ONNX file (or a torch.export .pt2), checked against "
                                       "PyTorch",
                        description="Export a run's model (dynamic batch; eval mode) with the preprocessing, class "
                                    "names and task in the file's metadata, then check it against PyTorch on a "
                                    "sample batch (onnxruntime for ONNX). The file is written atomically.")
    ex.add_argument("run_dir", help="a run directory, its model.safetensors, or pretrained:NAME")
    ex.add_argument("--format", choices=("onnx", "pt2"), default="onnx",
                    help="onnx (torch.onnx.export, dynamo) or pt2 (torch.export.save; PyTorch only)")
    ex.add_argument("--out", default=None, help="output file (default RUN_DIR/model.onnx; ./NAME.onnx for "
                                                "pretrained:NAME)")
    ex.add_argument("--force", action="store_true", help="replace an existing --out that is not an export of "
                                                          "the same weights")

    pb = sub.add_parser("probe", help="linear probes of every block's output (accuracy per depth), first-layer "
                                      "filters, one attention head",
                        description="Fit a logistic-regression probe on each depth's pooled output (depth 0: the raw "
                                    "input) of a classification run; write probe.json, probe.png, filters.png "
                                    "(convolutions) and attention.png (transformers) into --out.")
    pb.add_argument("run_dir", help="a run directory, its model.safetensors, or pretrained:NAME (with --data-root)")
    pb.add_argument("--train-n", type=int, default=5000, help="training examples the probes are fit on")
    pb.add_argument("--test-n", type=int, default=2000, help="test examples the probes are scored on")
    pb.add_argument("--seed", type=int, default=0, help="seed of the example draw and of the probes")
    pb.add_argument("--out", default=None, help="output directory (default RUN_DIR/probe; ./probe-NAME for "
                                                "pretrained:NAME)")
    pb.add_argument("--max-features", type=int, default=2048,
                    help="pool each depth's output to at most this many features")
    pb.add_argument("--layer", type=int, default=0, help="attention picture: the block")
    pb.add_argument("--head", type=int, default=0, help="attention picture: the head")
    pb.add_argument("--data-root", default="", help="override the data root saved in the run's config")
    pb.add_argument("--device", default="auto")

    a = sub.add_parser("attack", help="accuracy of a run under FGSM or PGD attacks over a range of eps (a table, "
                       "attack/<method>-<norm>.json and a plot)",
                       description="Attack a classification run's test images (or audio, table rows) in pixel "
                                   "space (images in [0, 1]; the run's normalization is part of the attacked "
                                   "model) and report accuracy at each eps. PGD: a uniform random start and "
                                   "--steps steps of STEP_FACTOR * eps / steps (Madry et al. 2018).")
    a.add_argument("run_dir")
    a.add_argument("--method", choices=("fgsm", "pgd"), default="pgd")
    a.add_argument("--norm", choices=("linf", "l2"), default="linf")
    a.add_argument("--eps", default="0,0.1,0.2,0.3", help="comma-separated radii in pixel units")
    a.add_argument("--steps", type=int, default=40, help="PGD steps")
    a.add_argument("--restarts", type=int, default=1, help="PGD random starts (each on the examples not yet fooled)")
    a.add_argument("--step-factor", type=float, default=2.5, help="PGD step size = STEP_FACTOR * eps / steps")
    a.add_argument("--n", type=int, default=1000, help="test examples attacked (a seeded choice)")
    a.add_argument("--seed", type=int, default=0, help="which examples, and the random starts")
    a.add_argument("--out", help="output folder (default: RUN_DIR/attack)")
    a.add_argument("--batch-size", type=int, default=500)
    a.add_argument("--device", default="auto")
    a.add_argument("--data-root", default="", help="where the run's dataset is (default: the run's data.root)")

    sv = sub.add_parser("serve", help="an HTTP prediction server with dynamic batching (FastAPI + uvicorn)",
                        description="Serve a run (RUN_DIR, a model.safetensors file, or pretrained:NAME) over HTTP: "
                                    "POST /predict (JSON or multipart files), GET /health, GET /metadata. Requests "
                                    "arriving within --max-wait-ms share one forward of up to --max-batch examples. "
                                    "SIGTERM or Ctrl-C stops it after the requests in flight. README: Serving.")
    sv.add_argument("run_dir")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--max-batch", type=int, default=32, help="examples per forward pass (default 32)")
    sv.add_argument("--max-wait-ms", type=float, default=5.0,
                    help="how long a request waits for others to share its forward, in ms (default 5)")
    sv.add_argument("--max-examples", type=int, default=256, help="examples per request (more: 413)")
    sv.add_argument("--max-upload-mb", type=float, default=16.0, help="request body size limit in MB (more: 413)")
    sv.add_argument("--timeout-s", type=float, default=30.0, help="seconds a request may wait for the model (503)")
    sv.add_argument("--max-queue", type=int, default=1024, help="requests allowed to wait (more: 503)")
    sv.add_argument("--top-k", type=int, default=3, help="classes shown when a request does not say")
    sv.add_argument("--workers", type=int, default=1, help="server processes, each with the model (default 1)")
    sv.add_argument("--threads", type=int, default=None,
                    help="torch threads per worker (default: CPU cores / workers, at least 1)")
    sv.add_argument("--device", default="auto")

    i = sub.add_parser("info", help="summary table of a run")
    i.add_argument("run_dir")

    rp = sub.add_parser("report", help="one self-contained HTML page of a run (RUN_DIR/report.html)",
                        description="Write RUN_DIR/report.html: headline metrics, curves, the task's section "
                                    "(confusion matrix and worst-classified examples, residuals, a text sample), "
                                    "energy, explain/probe/attack results, config and environment. No external "
                                    "resource: it reads offline and can be mailed.")
    rp.add_argument("run_dir")
    rp.add_argument("--out", help="the HTML file to write (default RUN_DIR/report.html)")
    rp.add_argument("--max-examples", type=int, default=1000, help="test examples read for the task's section")
    rp.add_argument("--device", default="cpu")
    rp.add_argument("--data-root", default="", help="where the run's dataset is (default: the run's data.root)")

    cp = sub.add_parser("compare", help="one HTML page setting runs side by side: metrics, config diff, curves")
    cp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    cp.add_argument("--out", default="compare.html", help="the HTML file to write (default ./compare.html)")
    r = sub.add_parser("runs", help="table of the runs under a folder: status, metric, time, energy; sort, filter",
                       description="List the runs under ROOT (any depth up to --max-depth), kept fast by an index "
                                   "ROOT/.layerwise-runs.sqlite that is refreshed from the run directories.")
    r.add_argument("root", nargs="?", default="runs", help="folder holding run directories (default: runs)")
    r.add_argument("--sort", action="append", metavar="KEY",
                   help="sort by a column, summary key or config key (section.key); -KEY descending "
                        "(--sort=-test_accuracy); repeatable")
    r.add_argument("--where", action="append", metavar="COND",
                   help="keep runs where KEY=VALUE (wildcards * ?), KEY!=VALUE, KEY>N, KEY<N, KEY>=N, KEY<=N; repeatable")
    r.add_argument("--limit", type=int, metavar="N", help="show the first N runs only")
    r.add_argument("--max-depth", type=int, default=4, help="folders to walk down looking for runs (default 4)")
    r.add_argument("--no-index", action="store_true", help="read every run directory; neither read nor write the index")
    out = r.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print a JSON list of dicts instead of the table")
    out.add_argument("--csv", action="store_true", help="print CSV instead of the table")

    m = sub.add_parser("models", help="list registered models, or one model's arguments")
    m.add_argument("name", nargs="?")
    m.add_argument("--pretrained", action="store_true",
                   help="list the shipped pretrained models (pretrained:NAME), their data and test figures")

    # `scale` has its own parsers (a sweep, `scale fit`, `scale report`): see _scale_parsers
    s = sub.add_parser("scale", add_help=False, help="run a scaling sweep, fit a scaling law, or report it "
                       "(layerwise scale --help)")
    s.add_argument("scale_args", nargs=argparse.REMAINDER)
    return p


def _scale_parsers() -> dict[str, argparse.ArgumentParser]:
    """The three forms of `layerwise scale`: a sweep (SWEEP.yaml), `fit` and `report`."""
    run = argparse.ArgumentParser(
        prog="layerwise scale", description="Train every point of a sweep spec (see sweeps/) and write "
        "OUT/results.csv. Also: `layerwise scale fit TABLE --law n` and `layerwise scale report DIR`. "
        "Extra --section.key=value overrides apply to every run (e.g. --data.root=DIR).")
    run.add_argument("spec", metavar="SWEEP.yaml")
    run.add_argument("--dir", help="output folder (default: sweeps/out/<spec name>); rerun to resume")
    run.add_argument("--dry-run", action="store_true", help="validate every run's config and print the grid")
    run.add_argument("--max-runs", type=int, help="start at most this many runs, then stop")
    run.add_argument("--progress", action="store_true", help="show each run's progress bar")

    law_help = "scaling law: n  L(N) = E + A/N^alpha,  d  L(D) = E + B/D^beta,  nd  both terms"
    fit = argparse.ArgumentParser(prog="layerwise scale fit",
                                  description="Fit a scaling law to a results table, with bootstrap intervals.")
    fit.add_argument("table", help="results table (.csv or .jsonl) or a sweep's output folder")
    fit.add_argument("--law", required=True, choices=("n", "d", "nd"), help=law_help)
    fit.add_argument("--json", action="store_true", help="print one JSON object")
    fit.add_argument("--holdout", type=int, default=0, help="also fit without the K largest runs and predict them")
    fit.add_argument("--boot", type=int, default=200, help="bootstrap resamples for the intervals (0 = none)")
    fit.add_argument("--seed", type=int, default=0, help="bootstrap seed")

    rep = argparse.ArgumentParser(prog="layerwise scale report",
                                  description="Write report.png and report.md for a sweep or a table.")
    rep.add_argument("source", metavar="DIR_OR_TABLE")
    rep.add_argument("--law", default="n", choices=("n", "d", "nd"), help=law_help)
    rep.add_argument("--holdout", type=int, default=1, help="runs held out to check the extrapolation (0 = none)")
    rep.add_argument("--boot", type=int, default=200, help="bootstrap resamples")
    rep.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    rep.add_argument("--out", help="output folder (default: the sweep folder or the table's folder)")
    return {"run": run, "fit": fit, "report": rep}


def _scale(argv: list[str]) -> int:
    """`layerwise scale ...`: a sweep, or its `fit` / `report` subcommand."""
    parsers = _scale_parsers()
    form = argv[0] if argv and argv[0] in ("fit", "report") else "run"
    parser = parsers[form]
    if form == "run" and (not argv or argv[0] in ("-h", "--help")):
        parser.print_help(file=sys.stdout if argv else sys.stderr)
        return 0 if argv else USAGE_ERROR
    from layerwise import scaling
    args, rest = parser.parse_known_args(argv[1:] if form != "run" else argv)
    overrides = [a for a in rest if a.startswith("--") and "." in a.split("=", 1)[0]]
    unknown = [a for a in rest if a not in overrides]
    if unknown or (overrides and form != "run"):
        parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")

    if form == "fit":
        table, _path = scaling.load_results(args.table)
        result = scaling.analyze(table, args.law, args.boot, args.seed, args.holdout)
        print(json.dumps(result, indent=2) if args.json else scaling.format_fit(result))
        return 0
    if form == "report":
        png, md = scaling.write_report(args.source, args.out, args.law, args.holdout, args.boot, args.seed,
                                       command=shlex.join(["layerwise", "scale", *argv]))
        print(f"wrote {png}\nwrote {md}")
        return 0
    out = Path(args.dir) if args.dir else Path("sweeps") / "out" / Path(args.spec).stem
    if args.dry_run:
        spec = scaling.load_spec(args.spec)
        points = scaling.plan(spec, overrides)
        print(f"sweep {args.spec}: {len(points)} runs into {out / 'runs'}, base {spec.base or '(built-in default)'}")
        for point in points:
            print(f"  {point.name}: {' '.join(point.overrides)}")
        print(f"every config is valid (metric {spec.metric}, params {spec.params})")
        return 0
    try:
        csv_path = scaling.run_sweep(args.spec, out, show_progress=args.progress, extra_overrides=overrides,
                                     max_runs=args.max_runs, echo=lambda line: print(line, flush=True))
    except scaling.SweepRunError as e:  # some runs failed, the rest are in the table
        print(f"layerwise: error: {e}", file=sys.stderr)
        return RUN_ERROR
    except KeyboardInterrupt:
        print(f"layerwise: interrupted; run `{shlex.join(['layerwise', 'scale', *argv])}` again to resume "
              f"(finished runs are kept; the cut-off one continues from its last checkpoint, or starts over "
              f"if it had none).", file=sys.stderr)
        return 130
    if csv_path.is_file():
        table = scaling.read_table(csv_path)
        print(scaling.format_table(table, [c for c in ("name", "params", "data", "compute", "loss",
                                                       "train_seconds") if c in table]))
        print(f"table: {csv_path}\nfit it: layerwise scale fit {csv_path} --law n")
    return 0


def _launch(args: argparse.Namespace, overrides: list[str]) -> int:
    """`layerwise train ... --nproc N`: check the config, then torchrun's launcher in-process."""
    from layerwise.distributed.launch import launch
    from layerwise.distributed.parallel import ParallelDims

    if args.nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {args.nproc}.")
    cfg = load_config(Path(args.resume) / "config.yaml" if args.resume else args.recipe, overrides)
    if args.resume:  # refused overrides are said once, here, not by every rank
        from layerwise.train.trainer import check_resume
        check_resume(args.resume, cfg)
    nnodes = int(str(args.nnodes).split(":")[-1])
    # a bad mesh fails here, before any process starts
    ParallelDims.build(cfg.dist.strategy, args.nproc * nnodes, cfg.dist.tp, cfg.dist.dp_replicate)
    worker = ["train"] + ([args.recipe] if args.recipe else []) + (["--resume", args.resume] if args.resume else [])
    worker += (["--quiet"] if args.quiet else []) + overrides
    run_dir = args.resume or cfg.run.dir
    if not run_dir and nnodes == 1:  # name it here, so that an error can say which run to resume
        from layerwise.train.run import pick_run_dir
        run_dir = str(pick_run_dir(cfg.run.root, cfg.run.name or cfg.data.name))
        worker.append(f"--run.dir={run_dir}")
    return launch(args.nproc, worker, nnodes=args.nnodes, node_rank=args.node_rank,
                  rdzv_endpoint=args.rdzv_endpoint, rdzv_id=args.rdzv_id, max_restarts=args.max_restarts,
                  run_dir=run_dir)


def _train(args: argparse.Namespace, overrides: list[str]) -> int:
    from layerwise.train.progress import print_table
    from layerwise.train.trainer import fit, resume

    if args.resume and args.recipe:
        raise ConfigError("give either a recipe or --resume RUN_DIR, not both: a resumed run keeps "
                          "the config saved in its directory.")
    from layerwise.rl.config import is_rl_recipe, is_rl_run
    if args.resume and is_rl_run(args.resume):
        from layerwise.train.run import RunDirError
        raise RunDirError(f"'{args.resume}' is a reinforcement-learning run; resume it with "
                          f"`layerwise rl --resume {args.resume}`.")
    if args.recipe and is_rl_recipe(args.recipe):
        raise ConfigError(f"'{args.recipe}' is a reinforcement-learning recipe (it has env/ppo sections); train "
                          f"it with `layerwise rl {args.recipe}`.")
    if args.nproc is not None:
        return _launch(args, overrides)
    if args.resume:
        summary = resume(args.resume, show_progress=not args.quiet, overrides=overrides)
    else:
        cfg = load_config(args.recipe, overrides)
        restarted = _elastic_restart(cfg)
        if restarted is not None and restarted[1]:
            summary = resume(restarted[0], show_progress=not args.quiet, overrides=overrides)
        else:
            summary = fit(cfg, run_dir=restarted[0] if restarted else None, show_progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print_table(summary, title=f"layerwise: {summary['model']} on {summary['dataset']}")
    return 0


def _finetune(args: argparse.Namespace, overrides: list[str]) -> int:
    """`layerwise finetune SOURCE [RECIPE]`: train from SOURCE's weights (train/finetune.py), saying
    which model and which fine-tuning defaults it took."""
    from layerwise.train.finetune import finetune_config
    from layerwise.train.progress import print_table
    from layerwise.train.trainer import fit

    cfg, notes = finetune_config(args.source, args.recipe, overrides)
    for line in notes:
        print(f"layerwise finetune: {line}", flush=True)
    summary = fit(cfg, show_progress=not args.quiet)
    print_table(summary, title=f"layerwise finetune: {summary['model']} on {summary['dataset']} from {args.source}")
    return 0


def _rl(args: argparse.Namespace, overrides: list[str]) -> int:
    """`layerwise rl [RECIPE] [--resume RUN_DIR]`: PPO training, then the results table."""
    from layerwise.rl.config import RLConfig, refuse_supervised_recipe
    from layerwise.train.progress import print_table

    if args.resume and args.recipe:
        raise ConfigError("give either a recipe or --resume RUN_DIR, not both: a resumed run keeps "
                          "the config saved in its directory.")
    from layerwise.rl.trainer import resume_rl, train_rl

    if args.resume:
        summary = resume_rl(args.resume, show_progress=not args.quiet, overrides=overrides)
    else:
        refuse_supervised_recipe(args.recipe)
        summary = train_rl(load_config(args.recipe, overrides, cls=RLConfig), show_progress=not args.quiet)
    print_table(summary, title=f"layerwise rl: {summary['model']} on {summary['env']}")
    return 0


def _runs(args: argparse.Namespace) -> int:
    """`layerwise runs [ROOT]`: the runs index (deploy/listing.py), with its errors as exit codes."""
    from layerwise.deploy.index import RunsError
    from layerwise.deploy.listing import runs_command

    warnings.formatwarning = lambda msg, category, *_a, **_k: f"layerwise: warning: {msg}\n"
    try:
        return runs_command(args)
    except ConfigError as e:
        print(f"layerwise: config error: {e}", file=sys.stderr)
        return USAGE_ERROR
    except RunsError as e:
        print(f"layerwise: error: {e}", file=sys.stderr)
        return RUN_ERROR
    except BrokenPipeError:  # `layerwise runs --json | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0


def _play(args: argparse.Namespace) -> int:
    """`layerwise play RUN_DIR`: the agent's returns per episode (and a GIF)."""
    from layerwise.rl.play import play

    out = play(args.run_dir, args.episodes, args.seed, args.policy, args.gif, args.device)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for i, r in enumerate(out["returns"]):
        print(f"episode {i} (seed {args.seed + i}): return {r:g}")
    print(f"{out['env']}, {out['policy']} policy: mean return {out['mean']:.2f} +- {out['std']:.2f} over "
          f"{out['episodes']} episodes (mean length {out['length']:.1f})")
    if out["gif"]:
        print(f"wrote {out['gif']}")
    elif out["gif_note"]:
        print(f"layerwise: warning: {out['gif_note']}", file=sys.stderr)
    return 0


def _elastic_restart(cfg) -> tuple[Path, bool] | None:
    """Under torchrun --max-restarts, after a restart: (the earlier attempt's run directory,
    whether it holds a checkpoint to resume). Without one, rank 0 clears it for a fresh start."""
    from layerwise.distributed.checkpoint import all_checkpoints
    from layerwise.distributed.launch import elastic_run_dir

    run_dir = elastic_run_dir(cfg.run.root)
    if run_dir is None:
        return None
    if all_checkpoints(run_dir / "checkpoints"):
        return run_dir, True
    if int(os.environ.get("RANK", "0")) == 0:
        import shutil
        shutil.rmtree(run_dir, ignore_errors=True)
    return run_dir, False


def main(argv: list[str] | None = None) -> int:
    argv = _join_spaced_overrides(list(sys.argv[1:] if argv is None else argv))
    if argv[:1] == ["runs"]:
        from layerwise.deploy.listing import join_sort_value
        argv = join_sort_value(argv)  # `--sort -KEY`: argparse would read -KEY as a flag
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "scale":
        rest = args.scale_args + rest
    overrides = [a for a in rest if a.startswith("--") and "." in a.split("=", 1)[0]]
    unknown = [a for a in rest if a not in overrides]
    if args.command != "scale" and (unknown or (overrides and args.command not in ("train", "finetune", "cv", "rl",
                                                                                   "eval"))):
        parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)} "
                     f"(config overrides --section.key=value go with `layerwise train`, `layerwise finetune`, "
                     f"`layerwise cv` and `layerwise rl`, and --data.key=value and the --run.* energy keys with "
                     f"`layerwise eval`)")
    if args.command == "scale" and (rest[:1] in (["fit"], ["report"], ["-h"], ["--help"]) or not rest):
        # help, fitting and reporting read a table or nothing and never train: no torch import (~2 s)
        try:
            return _scale(rest)
        except ValueError as e:  # ScalingError: a missing or bad table, too few runs: the data's fault
            print(f"layerwise: error: {e}", file=sys.stderr)
            return RUN_ERROR

    if args.command == "runs":  # reads run directories and an SQLite index, never torch
        return _runs(args)

    from layerwise.data import DataError
    from layerwise.distributed.parallel import DistributedError
    from layerwise.train.checkpoint import CheckpointError
    from layerwise.train.precision import PrecisionError
    from layerwise.train.run import RunDirError
    from layerwise.train.trainer import TrainingDiverged

    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, category, *_a, **_k: f"layerwise: warning: {msg}\n"
    try:
        if args.command == "train":
            return _train(args, overrides)
        if args.command == "finetune":
            return _finetune(args, overrides)
        if args.command == "scale":
            return _scale(rest)
        if args.command == "rl":
            return _rl(args, overrides)
        if args.command == "play":
            return _play(args)
        if args.command == "cv":
            from layerwise.train.crossval import cross_validate
            from layerwise.train.progress import print_table
            result = cross_validate(args.recipe, *overrides, folds=args.folds, out=args.dir,
                                    show_progress=args.progress and not args.quiet,
                                    echo=(lambda line: None) if args.quiet else (lambda line: print(line, flush=True)))
            print_table({k: v for k, v in result.items() if k != "per_fold"},
                        title=f"{args.folds}-fold cross-validation")
            return 0
        if args.command in ("eval", "predict", "generate", "explain"):
            from layerwise.rl.config import is_rl_run
            if is_rl_run(args.run_dir):
                raise RunDirError(f"'{args.run_dir}' is a reinforcement-learning run (`layerwise rl`); `layerwise "
                                  f"{args.command}` works on runs trained on data. Let the agent play with "
                                  f"`layerwise play {args.run_dir} --episodes 10`.")
        if args.command == "eval":
            from layerwise.train.inference import evaluate_run
            from layerwise.train.progress import print_table
            print_table(evaluate_run(args.run_dir, args.device, args.data_root, overrides),
                        title=f"eval {args.run_dir}")
        elif args.command == "predict":
            from layerwise.tasks import describe_prediction
            from layerwise.train.inference import predict
            if bool(args.user) == bool(args.inputs):
                raise ConfigError("`layerwise predict RUN_DIR` needs either input files or --user ID (for a ratings "
                                  "run such as recipes/movielens.yaml), not both and not neither.")
            if args.user:
                from layerwise.train.inference import recommend
                items = recommend(args.run_dir, args.user, 10 if args.top_k is None else args.top_k, args.device, args.data_root)
                if args.json:
                    print(json.dumps({"user": args.user, "items": items}, indent=2))
                for it in [] if args.json else items:
                    print(f"{it['rank']:>3}. {it['title']} (item {it['item']}): {it['rating']:.2f}")
                return 0
            results = predict(args.run_dir, args.inputs, 3 if args.top_k is None else args.top_k, args.invert, args.device,
                              args.max_image_pixels)
            if args.json:
                print(json.dumps(results, indent=2))
            for r in [] if args.json else results:
                print(f"{r['input']}: {describe_prediction(r)}")
        elif args.command == "explain":
            from layerwise.insight.commands import explain_command
            return explain_command(args)
        elif args.command == "generate":
            _generate(args)
        elif args.command == "probe":
            from layerwise.insight.probe import format_table, probe
            result = probe(args.run_dir, args.train_n, args.test_n, args.seed, args.out, args.device, args.data_root,
                           args.max_features, layer=args.layer, head=args.head)
            print(format_table(result) if "depths" in result else f"not probed: {result['refused']}")
            print("wrote " + ", ".join(result["files"]))
        elif args.command == "export":
            from layerwise.deploy.export import describe, export_run
            print(describe(export_run(args.run_dir, args.format, args.out, args.force)))
        elif args.command == "attack":
            from layerwise.insight.attack_report import run_command
            run_command(args)
        elif args.command == "serve":
            from layerwise.deploy.server import serve
            serve(args.run_dir, args.host, args.port, workers=args.workers, threads=args.threads,
                  max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_examples=args.max_examples,
                  max_upload_mb=args.max_upload_mb, timeout_s=args.timeout_s, max_queue=args.max_queue,
                  top_k=args.top_k, device=args.device)
        elif args.command == "info":
            from layerwise.train.inference import run_info
            from layerwise.train.progress import print_table
            from layerwise.rl.config import is_rl_run
            info = run_info(args.run_dir)
            if "resume_with" in info and is_rl_run(args.run_dir):
                info["resume_with"] = f"layerwise rl --resume {args.run_dir}"
            print_table(info, title=f"run {args.run_dir}")
        elif args.command == "report":
            from layerwise.deploy.report import write_report
            if args.max_examples < 1:
                raise ConfigError(f"--max-examples must be >= 1, got {args.max_examples}.")
            print(f"wrote {write_report(args.run_dir, args.out, args.device, args.data_root, None, args.max_examples)}")
        elif args.command == "compare":
            from layerwise.deploy.compare import compare_runs
            print(f"wrote {compare_runs(args.run_dirs, args.out)}")
        elif args.command == "models":
            from layerwise.models import list_models, model_args
            if args.pretrained:
                from layerwise.models.pretrained import pretrained_table
                print(pretrained_table())
            elif args.name:
                for k, v in model_args(args.name).items():
                    print(f"model.{k} = {v!r}")
            else:
                print("\n".join(list_models()))
        return 0
    except ConfigError as e:
        if _rank() in ("", "0"):  # every rank of a distributed run finds the same mistake: say it once
            print(f"layerwise: config error: {e}", file=sys.stderr)
        else:  # and let rank 0 say it before the launcher stops everyone at this rank's exit
            import time
            time.sleep(3)
        return USAGE_ERROR
    except (DataError, CheckpointError, PrecisionError, RunDirError, TrainingDiverged, DistributedError) as e:
        where = f" (rank {_rank()})" if _rank() and not isinstance(e, DistributedError) else ""
        print(f"layerwise: error{where}: {e}", file=sys.stderr)
        return RUN_ERROR
    except ValueError as e:  # e.g. an unknown model or optimizer name from the registries
        print(f"layerwise: error: {e}", file=sys.stderr)
        return USAGE_ERROR
    except OSError as e:  # a file the command needs cannot be read or written (permissions, a full disk)
        where = f" '{e.filename}'" if e.filename else ""
        print(f"layerwise: error: cannot use{where}: {e.strerror or e}. Check that the path exists, that you "
              f"may read and write it, and that the disk has room; files written earlier are kept.",
              file=sys.stderr)
        return RUN_ERROR
    except KeyboardInterrupt:
        command = "rl" if args.command == "rl" else "train"
        print(f"layerwise: interrupted; resume with `layerwise {command} --resume RUN_DIR` from the last "
              f"checkpoint.", file=sys.stderr)
        return 130


def unescape(text: str) -> str:
    """A command-line string with the escapes \\n, \\t, \\r, \\\\ and \\xHH made characters (other
    characters, non-ASCII ones included, are kept as they are)."""
    import re

    table = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
    return re.sub(r"\\(x[0-9a-fA-F]{2}|[ntr\\])",
                  lambda m: chr(int(m[1][1:], 16)) if m[1][0] == "x" else table[m[1]], text)


def _generate(args: argparse.Namespace) -> None:
    """`layerwise generate`: print the samples (separated by a rule line when several), each with
    its syntax check and the fraction that parse under --check-syntax."""
    from layerwise.train.inference import generate_samples, syntax_report

    texts = generate_samples(args.run_dir, args.prompt, args.samples, args.tokens, args.temperature,
                             args.top_k, args.seed, args.device, [unescape(s) for s in args.stop],
                             args.stop_top_level)
    report = syntax_report(texts, args.check_syntax) if args.check_syntax else None
    for i, text in enumerate(texts):
        if len(texts) > 1:
            print(f"----- sample {i + 1} of {len(texts)}")
        print(text)
        if report:
            err = report["errors"][i]
            print(f"[{args.check_syntax} syntax: {'parses' if err is None else err}]")
    if report:
        print(f"{report['parsed']} of {report['samples']} samples parse as {args.check_syntax} "
              f"({100 * report['fraction']:.1f}%)")


def _rank() -> str:
    """This process's rank when it is one of several ("" otherwise)."""
    return os.environ.get("RANK", "") if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""


if __name__ == "__main__":
    sys.exit(main())
