"""What `layerwise explain` refuses before and while it works: arguments of the wrong type or
range (the Python API gets them untyped), a --target that is not an output, inputs holding NaN,
outputs that are not finite (NaN weights named by tensor). Each raises the project's errors with
the fix (ConfigError: exit 2; DataError, RunDirError: exit 1)."""

from __future__ import annotations

import math
from typing import Any

import torch

from layerwise.config import ConfigError
from layerwise.data import DataError
from layerwise.insight.runs import LoadedRun
from layerwise.train.run import RunDirError

METHODS = ("ig", "saliency", "gradcam", "occlusion")

MAX_STEPS = 2048  # Captum's Gauss-Legendre nodes cost O(steps^3) CPU: 0.9 s at 2048, 9 s and 134 MB at 4096


def check_arguments(inputs: Any, method: Any, split: Any, n: Any, steps: Any, internal_batch_size: Any,
                    tolerance: Any, target: Any, seed: Any = 0) -> list[str]:
    """The arguments of :func:`layerwise.insight.explain.explain`, checked before any work (the
    Python API gets them untyped): returns the inputs as a list of paths (one str or Path is one
    input, not its characters); ConfigError naming the argument, its value and what it takes
    otherwise."""
    from numbers import Integral, Real
    from pathlib import Path

    inputs = [] if inputs is None else [inputs] if isinstance(inputs, (str, Path)) else inputs
    if not isinstance(inputs, (list, tuple)) or not all(isinstance(p, (str, Path)) for p in inputs):
        raise ConfigError(f"explain: inputs are file paths (a list of str or Path), got {type(inputs).__name__}.")
    if not isinstance(method, str) or method not in METHODS:
        raise ConfigError(f"unknown --method '{method}'; choose one of {', '.join(METHODS)}.")
    if bool(inputs) == bool(split):
        raise ConfigError("`layerwise explain RUN_DIR` takes input files or --split test|train (with --n N), not "
                          "both and not neither.")
    for name, v, lo, hi in (("n", n, 1, None), ("steps", steps, 2, MAX_STEPS),
                            ("internal-batch-size", internal_batch_size, 1, None)):
        if not isinstance(v, Integral) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
            raise ConfigError(f"--{name} takes a whole number >= {lo}" + (f" and <= {hi}" if hi else "") +
                              f", got {v!r}" + ("; IG's gap shrinks quickly with steps (20 to 300 are usual), and "
                                                "one that stays large points to a non-smooth model (max-pooling, "
                                                "ReLU kinks) rather than too few steps." if name == "steps" else "."))
    if isinstance(tolerance, bool) or not isinstance(tolerance, Real) or not 0 <= tolerance < math.inf:
        raise ConfigError(f"--tolerance is a fraction >= 0 (0.05 warns above a 5% completeness gap), got "
                          f"{tolerance!r}.")
    if isinstance(seed, bool) or not isinstance(seed, Integral) or not -2**63 <= seed < 2**63:
        raise ConfigError(f"--seed is a whole number that fits 64 bits, got {seed!r}.")
    if target is not None and (isinstance(target, bool) or not isinstance(target, (Integral, str))):
        raise ConfigError(f"--target is a class name or an output index (int), got {target!r}.")
    return [str(p) for p in inputs]


def check_inputs(x: torch.Tensor, names: list[str]) -> None:
    """DataError naming the first input that holds NaN or Inf."""
    if x.is_floating_point():
        bad = (~torch.isfinite(x.reshape(len(x), -1))).any(1)
        if bool(bad.any()):
            raise DataError(f"input '{names[int(bad.nonzero()[0])]}' holds NaN or Inf values; attributions of "
                            f"such an input mean nothing. Clean the input first.")


def check_outputs(run: LoadedRun, out: torch.Tensor, names: list[str]) -> None:
    """RunDirError when the model's weights hold NaN or Inf (naming the tensors), DataError naming
    the first input whose output (B, K) is not finite otherwise: an explanation of a NaN output
    means nothing, and its argmax would name an arbitrary class."""
    bad = (~torch.isfinite(out.reshape(len(out), -1))).any(1)
    if not bool(bad.any()):
        return
    state = [(k, v) for k, v in run.model.state_dict().items() if v.is_floating_point()]
    broken = [k for k, v in state if not bool(torch.isfinite(v).all())]
    if broken:
        raise RunDirError(f"the model in '{run.path}' holds NaN or Inf weights ({', '.join(broken[:3])}"
                          f"{' ...' if len(broken) > 3 else ''}), so its outputs are NaN and nothing can be "
                          f"explained. Explain a run whose training ended with finite weights, or retrain this one "
                          f"(a lower optim.lr, optim.clip_grad_norm).")
    raise DataError(f"the model's output for input '{names[int(bad.nonzero()[0])]}' is NaN or Inf (its values are "
                    f"likely far outside the range the model was trained on); give inputs on the training data's "
                    f"scale.")


def resolve_target(run: LoadedRun, target: str | int | None) -> int | None:
    """--target as an output index: a class name, or an index below the number of outputs; None
    keeps the predicted class. ConfigError naming the classes otherwise. When the class names are
    numbers (digits 3 and 8 of MNIST), a text --target is read as a name only: "1" would otherwise
    quietly explain the second class, "8"; the Python API's int stays an index."""
    if target is None:
        return None
    classes = list(run.info.classes or [])
    if isinstance(target, str) and target in classes:
        return classes.index(target)
    numeric = [c.lstrip("-").isdigit() for c in [*classes, str(target)]]
    if isinstance(target, str) and classes and all(numeric):
        shown = ", ".join(classes[:20]) + (" ..." if len(classes) > 20 else "")
        raise ConfigError(f"--target '{target}' is not a class of this model ({shown}); its classes are numbers, so "
                          f"--target names one of them (an output index: target={target} in the Python API).")
    n_out = run.info.num_classes or len(classes) or 1
    try:
        k = int(target)
    except (TypeError, ValueError):
        k = -1
    if not 0 <= k < n_out:
        shown = ", ".join(classes[:20]) + (" ..." if len(classes) > 20 else "")
        raise ConfigError(f"--target '{target}' is not an output of this model; give a class name ({shown}) or an "
                          f"index from 0 to {n_out - 1}.")
    return k
