"""Class subsets and few-label training sets of a classification source (transfer learning).

Two data options, applied by :func:`layerwise.data.datasets.load_dataset` to whatever a
classification source returns (built-in images, image folders, audio, CSV tables, text classes):

- ``data.classes``: keep only these classes, in every split, relabelled 0 .. k-1 in the order
  given (``[bird, cat, deer, dog, frog, horse]`` makes bird 0 and horse 5). A class is named by
  its name, or by its label number where no class has that name (MNIST's classes are named
  ``"0"`` .. ``"9"``, so ``[5, 6]`` means the digits 5 and 6 either way).
- ``data.labels_per_class``: N training examples of every (kept) class, the rest of the training
  split dropped; the test split stays whole. The N examples of a class are the first N of a
  permutation of that class's training examples drawn by a generator seeded with
  (``data.subset_seed``, the class's label in the source): the same examples for the same seed
  whatever else is chosen (which other classes are kept, their order, train.seed, the batch
  size), and a smaller N keeps a subset of a larger one's examples, so a curve over N adds
  examples instead of redrawing them (the few-label protocol of e.g. Oquab et al., CVPR 2014,
  and Kornblith et al., CVPR 2019, "Do Better ImageNet Models Transfer Better?").

The normalization statistics (``info.mean``/``info.std``) stay the source's: a model fine-tuned
on a subset sees inputs scaled exactly as its pretraining on another subset did.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from layerwise.data.datasets import DataError, Dataset
from layerwise.data.loader import take

__all__ = ["apply_subsets", "resolve_classes", "select_classes", "stratified_subset"]


def _config_error(msg: str) -> Exception:
    from layerwise.config import ConfigError  # config sits above data: import late

    return ConfigError(msg)


def resolve_classes(wanted: list[Any], classes: list[str], dataset: str) -> list[int]:
    """The label numbers (positions in ``classes``) of the classes ``wanted`` names, in its order.

    An entry is a class name, or an int label number where no class has that name. Raises
    ConfigError naming the entry and the valid classes when one is unknown, repeated, not a name
    or number (YAML reads an unquoted yes/no/on/off as a boolean), or fewer than two are kept."""
    names = [str(c) for c in classes]
    valid = ", ".join(names) if len(names) <= 30 else ", ".join(names[:30]) + f", ... ({len(names)} in all)"
    out: list[int] = []
    for v in wanted:
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise _config_error(
                f"data.classes holds {v!r} ({type(v).__name__}); each entry must be a class name or a label "
                f"number. Quote names YAML reads otherwise (e.g. \"no\", \"on\", \"1.5\"). Classes of '{dataset}': "
                f"{valid}.")
        if str(v) in names:
            label = names.index(str(v))
        elif isinstance(v, int) and 0 <= v < len(names):
            label = v
        else:
            from layerwise.choices import closest

            hint = closest(str(v), names)
            raise _config_error(
                f"data.classes names {v!r}, which is not a class of dataset '{dataset}'"
                f"{f' (did you mean {hint!r}?)' if hint else ''}. Its classes (label numbers 0 .. "
                f"{len(names) - 1}, in this order): {valid}.")
        if label in out:
            raise _config_error(f"data.classes names class '{names[label]}' twice; give each class once.")
        out.append(label)
    if len(out) < 2:
        raise _config_error(f"data.classes keeps {len(out)} class(es) of '{dataset}'; a classifier needs at least "
                            f"two. Name two or more (classes: {valid}), or leave data.classes empty for all.")
    return out


def select_classes(ds: Dataset, labels: list[int]) -> Dataset:
    """``ds`` with only the examples of the classes ``labels`` (label numbers of ``ds``), in every
    split, relabelled so that ``labels[i]`` becomes i; ``info.classes`` and ``num_classes`` follow."""
    old = torch.full((ds.info.num_classes,), -1, dtype=torch.long)
    old[torch.tensor(labels)] = torch.arange(len(labels))

    def keep(x: Any, y: torch.Tensor) -> tuple[Any, torch.Tensor]:
        new = old[y]  # (N,): -1 for the classes dropped
        idx = torch.nonzero(new >= 0).flatten()
        return take(x, idx), new[idx]

    (xtr, ytr), (xte, yte) = keep(ds.x_train, ds.y_train), keep(ds.x_test, ds.y_test)
    info = dataclasses.replace(ds.info, num_classes=len(labels), classes=[ds.info.classes[i] for i in labels])
    return Dataset(info, xtr, ytr, xte, yte, dict(ds.source), ds.tokenizer, list(ds.warnings))


def stratified_subset(y: np.ndarray, n: int, seed: int, labels: np.ndarray | None = None) -> np.ndarray:
    """Sorted indices of ``n`` examples of every class in ``y`` (N,) int.

    Class c's examples are the first n of ``default_rng([seed, labels[c]]).permutation`` of its
    indices, where ``labels[c]`` is the class's label in the source (default: c itself), so a
    class's choice depends on the seed and the class alone. Raises DataError naming the classes
    with fewer than n examples (``labels`` are the numbers it names them by)."""
    labels = np.arange(int(y.max()) + 1 if len(y) else 0) if labels is None else np.asarray(labels)
    parts, short = [], []
    for c in range(len(labels)):
        idx = np.flatnonzero(y == c)
        if len(idx) < n:
            short.append((c, len(idx)))
            continue
        parts.append(np.random.default_rng([int(seed), int(labels[c])]).permutation(idx)[:n])
    if short:
        listed = ", ".join(f"class {labels[c]} has {k}" for c, k in short[:5])
        raise DataError(f"{n} examples per class were asked for, but {listed}. Ask for fewer.")
    return np.sort(np.concatenate(parts)) if parts else np.empty(0, np.int64)


def apply_subsets(ds: Dataset, opts: Any) -> Dataset:
    """``ds`` after ``data.classes`` then ``data.labels_per_class`` (see the module docstring);
    ``ds`` itself when neither is set. The choice is recorded in ``ds.source["subset"]`` (written
    to env.json). Raises ConfigError for a source that is not single-label classification (a
    language model's text, regression targets, multilabel rows: there is no class to keep or
    stratify by) and for bad class names; DataError when a class has fewer than N examples."""
    wanted = list(getattr(opts, "classes", None) or [])
    n = int(getattr(opts, "labels_per_class", 0) or 0)
    if not wanted and not n:
        return ds
    keys = " and ".join(k for k, on in (("data.classes", wanted), ("data.labels_per_class", n)) if on)
    if ds.info.task != "classify":
        raise _config_error(
            f"{keys}: only a classification source has classes to keep or stratify by, and dataset "
            f"'{ds.info.name}' is a {ds.info.task} source ({_TASK_WORDS.get(ds.info.task, ds.info.task)}). "
            f"Remove {keys}; to train on less of it, use data.train_subset.")
    if n < 0:
        raise _config_error(f"data.labels_per_class must be >= 0 (0 = every training example), got {n}.")
    source_labels = list(range(ds.info.num_classes))
    if wanted:
        source_labels = resolve_classes(wanted, ds.info.classes, ds.info.name)
        ds = select_classes(ds, source_labels)
    record: dict[str, Any] = {"classes": list(ds.info.classes), "source_labels": source_labels}
    if n:
        seed = int(getattr(opts, "subset_seed", 0))
        y = ds.y_train.cpu().numpy()
        counts = np.bincount(y, minlength=ds.info.num_classes)
        if counts.min() < n:
            named = ", ".join(f"'{ds.info.classes[c]}' {int(k)}" for c, k in enumerate(counts) if k < n)
            raise DataError(
                f"data.labels_per_class={n} asks for {n} training examples of every class, but the training "
                f"split of dataset '{ds.info.name}' has fewer of {named}. Lower data.labels_per_class to at "
                f"most {int(counts.min())}, or leave those classes out with data.classes.")
        t = torch.from_numpy(stratified_subset(y, n, seed, np.array(source_labels)))
        ds = Dataset(ds.info, take(ds.x_train, t), ds.y_train[t], ds.x_test, ds.y_test, ds.source, ds.tokenizer,
                     ds.warnings)
        record |= {"labels_per_class": n, "subset_seed": seed}
    record |= {"train": len(ds.y_train), "test": len(ds.y_test)}
    ds.source = {**ds.source, "subset": record}
    return ds


_TASK_WORDS = {"lm": "a token stream for next-token prediction", "regress": "numeric targets",
               "multilabel": "several labels per example"}
