"""`layerwise` command line: each subcommand is a thin call into one library function.

    layerwise train [RECIPE] [--section.key=value ...] [--resume RUN_DIR]
    layerwise eval RUN_DIR
    layerwise predict RUN_DIR INPUT... [--top-k K]
    layerwise generate RUN_DIR [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K]
    layerwise info RUN_DIR
    layerwise models [NAME]

Exit codes: 0 success, 1 a run that cannot proceed (missing data, corrupt checkpoint, divergence),
2 a configuration or usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

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

    e = sub.add_parser("eval", help="evaluate a finished run's model on its test split")
    e.add_argument("run_dir")
    e.add_argument("--device", default="auto")
    e.add_argument("--data-root", default="", help="override the data root saved in the run's config")

    pr = sub.add_parser("predict", help="top-k classes for image files or .npy arrays")
    pr.add_argument("run_dir")
    pr.add_argument("inputs", nargs="+", metavar="INPUT")
    pr.add_argument("--top-k", type=int, default=3)
    pr.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                    help="invert grayscale images drawn dark on light (auto: when mean brightness > 0.5)")
    pr.add_argument("--json", action="store_true", help="print JSON instead of text")
    pr.add_argument("--device", default="auto")

    g = sub.add_parser("generate", help="sample text from a language-model run")
    g.add_argument("run_dir")
    g.add_argument("--prompt", default="", help="text to continue (default: start a new line)")
    g.add_argument("--tokens", type=int, default=500, help="tokens to sample")
    g.add_argument("--temperature", type=float, default=0.8, help="softmax temperature (0 = greedy)")
    g.add_argument("--top-k", type=int, default=200, help="sample among the k most likely tokens (0 = all)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto")

    i = sub.add_parser("info", help="summary table of a run")
    i.add_argument("run_dir")

    m = sub.add_parser("models", help="list registered models, or one model's arguments")
    m.add_argument("name", nargs="?")
    return p


def _train(args: argparse.Namespace, overrides: list[str]) -> int:
    from layerwise.train.progress import print_table
    from layerwise.train.trainer import fit, resume

    if args.resume:
        if args.recipe:
            raise ConfigError("give either a recipe or --resume RUN_DIR, not both: a resumed run keeps "
                              "the config saved in its directory.")
        summary = resume(args.resume, show_progress=not args.quiet, overrides=overrides)
    else:
        cfg = load_config(args.recipe, overrides)
        summary = fit(cfg, show_progress=not args.quiet)
    print_table(summary, title=f"layerwise: {summary['model']} on {summary['dataset']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = _join_spaced_overrides(list(sys.argv[1:] if argv is None else argv))
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    overrides = [a for a in rest if a.startswith("--") and "." in a.split("=", 1)[0]]
    unknown = [a for a in rest if a not in overrides]
    if unknown or (overrides and args.command != "train"):
        parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)} "
                     f"(config overrides --section.key=value go with `layerwise train`)")

    from layerwise.data import DataError
    from layerwise.train.checkpoint import CheckpointError
    from layerwise.train.precision import PrecisionError
    from layerwise.train.run import RunDirError
    from layerwise.train.trainer import TrainingDiverged

    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, category, *_a, **_k: f"layerwise: warning: {msg}\n"
    try:
        if args.command == "train":
            return _train(args, overrides)
        if args.command == "eval":
            from layerwise.train.inference import evaluate_run
            from layerwise.train.progress import print_table
            print_table(evaluate_run(args.run_dir, args.device, args.data_root), title=f"eval {args.run_dir}")
        elif args.command == "predict":
            from layerwise.train.inference import predict
            results = predict(args.run_dir, args.inputs, args.top_k, args.invert, args.device)
            if args.json:
                print(json.dumps(results, indent=2))
            for r in [] if args.json else results:
                top = ", ".join(f"{t['class']} ({t['probability']:.3f})" for t in r["top"])
                print(f"{r['input']}: {top}")
        elif args.command == "generate":
            from layerwise.train.inference import generate
            print(generate(args.run_dir, args.prompt, args.tokens, args.temperature, args.top_k,
                           args.seed, args.device))
        elif args.command == "info":
            from layerwise.train.inference import run_info
            from layerwise.train.progress import print_table
            print_table(run_info(args.run_dir), title=f"run {args.run_dir}")
        elif args.command == "models":
            from layerwise.models import list_models, model_args
            if args.name:
                for k, v in model_args(args.name).items():
                    print(f"model.{k} = {v!r}")
            else:
                print("\n".join(list_models()))
        return 0
    except ConfigError as e:
        print(f"layerwise: config error: {e}", file=sys.stderr)
        return USAGE_ERROR
    except (DataError, CheckpointError, PrecisionError, RunDirError, TrainingDiverged) as e:
        print(f"layerwise: error: {e}", file=sys.stderr)
        return RUN_ERROR
    except ValueError as e:  # e.g. an unknown model or optimizer name from the registries
        print(f"layerwise: error: {e}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("layerwise: interrupted; resume with `layerwise train --resume RUN_DIR` from the last "
              "checkpoint.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
