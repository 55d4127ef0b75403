"""Tasks: the objective of a run (loss, target preparation, metrics, headline, predictions).

    task = create_task(info, cfg)          # the kind comes from info.task (the data decided it)
    loss_sum = task.loss(out, y)           # summed over the batch's targets
    sums = task.stats(out, y, loss_sum)    # exact sums for the metrics, on the device
    task.metrics(sums, count)              # {"loss": ..., "accuracy": ...}

The Trainer names no loss: it asks the task. Kinds: ``classify``, ``multilabel``, ``regress``,
``lm``; each in its own module, chosen by name from :data:`TASKS`. Regression of a field (data
whose ``info.extra`` has ``"field"``, e.g. burgers: one value per grid point) is
:class:`FieldRegress`.
"""

from __future__ import annotations

from typing import Any

from layerwise.choices import unknown_choice_error
from layerwise.tasks.base import Task
from layerwise.tasks.classify import Classify, macro_f1
from layerwise.tasks.field import FieldRegress, describe_field
from layerwise.tasks.lm import LanguageModel
from layerwise.tasks.multilabel import MultiLabel
from layerwise.tasks.regress import Regress

TASKS: dict[str, type[Task]] = {"classify": Classify, "multilabel": MultiLabel, "regress": Regress,
                                "lm": LanguageModel}

__all__ = ["TASKS", "Classify", "FieldRegress", "LanguageModel", "MultiLabel", "Regress", "Task", "create_task",
           "describe_prediction", "list_tasks", "macro_f1"]


def list_tasks() -> list[str]:
    return list(TASKS)


def create_task(info: Any, cfg: Any = None, state: dict[str, Any] | None = None) -> Task:
    """The task for data described by ``info`` (its ``task`` field names the kind), with the
    options of config ``cfg`` (task.loss, task.threshold, task.huber_delta, train.label_smoothing;
    defaults when None). ``state`` (from :meth:`Task.state`, saved with a model) restores the
    target preparation; without it, call :meth:`Task.fit` on the training targets."""
    kind = info.task
    if kind not in TASKS:
        raise unknown_choice_error("task", kind, list(TASKS))
    t = getattr(cfg, "task", None)
    loss = getattr(t, "loss", "auto")
    smoothing = getattr(getattr(cfg, "train", None), "label_smoothing", 0.0)
    if smoothing and kind in ("multilabel", "regress"):
        from layerwise.config import ConfigError
        raise ConfigError(f"train.label_smoothing={smoothing} softens class targets; the task '{kind}' has none. "
                          f"Set --train.label_smoothing=0.")
    _unused_options(t, kind, loss)
    if kind == "classify":
        _only_auto(loss, kind, ("cross_entropy",))
        task: Task = Classify(info, t, label_smoothing=smoothing)
    elif kind == "multilabel":
        _only_auto(loss, kind, ("bce",))
        task = MultiLabel(info, t, threshold=getattr(t, "threshold", 0.5))
    elif kind == "regress" and "field" in getattr(info, "extra", {}):
        _field_options(t)
        task = FieldRegress(info, t, loss="mse" if loss == "auto" else loss, huber_delta=getattr(t, "huber_delta", 1.0))
    elif kind == "regress":
        if loss == "rel_l2":
            from layerwise.config import ConfigError
            raise ConfigError("task.loss=rel_l2 (relative L2 error per example) is for fields, one value per grid "
                              "point (e.g. data.name=burgers); for target columns use mse, huber or l1.")
        task = Regress(info, t, loss="mse" if loss == "auto" else loss, huber_delta=getattr(t, "huber_delta", 1.0),
                       transform=getattr(t, "target_transform", "none"), clip=getattr(t, "clip_predictions", False))
    else:
        _only_auto(loss, kind, ("cross_entropy",))
        task = LanguageModel(info, t, label_smoothing=smoothing)
    if state:
        task.load_state(state)
    return task


def describe_prediction(result: dict[str, Any]) -> str:
    """One line of text for a `predict` result of any task (told apart by its keys)."""
    if "top" in result:
        return ", ".join(f"{t['class']} ({t['probability']:.3f})" for t in result["top"])
    if "labels" in result:
        probs = result["probabilities"]
        if not result["labels"]:
            best = max(probs, key=probs.get)
            return f"(no label over the threshold; most likely {best} {probs[best]:.3f})"
        return ", ".join(f"{name} ({probs[name]:.3f})" for name in result["labels"])
    if "field" in result:
        return describe_field(result)
    return ", ".join(f"{c} = {v:.6g}" for c, v in result["values"].items())


def _field_options(t: Any) -> None:
    """Regression options that a field does not take are refused, not ignored."""
    bad = [] if t is None else [f"task.target_transform={t.target_transform}"] * (t.target_transform != "none") + \
        ["task.clip_predictions=true"] * bool(t.clip_predictions)
    if bad:
        from layerwise.config import ConfigError
        raise ConfigError(f"{', '.join(bad)}: not available for a field (one value per grid point, e.g. burgers), "
                          f"whose targets are standardized with one global mean and std. Remove it.")


def _unused_options(t: Any, kind: str, loss: str) -> None:
    """Task options that do nothing for this task are refused, not ignored."""
    if t is None:
        return
    from layerwise.config import ConfigError

    unused = []
    if kind != "regress" and getattr(t, "target_transform", "none") != "none":
        unused.append(f"task.target_transform={t.target_transform} (regression)")
    if kind != "regress" and getattr(t, "clip_predictions", False):
        unused.append("task.clip_predictions=true (regression)")
    if kind != "multilabel" and getattr(t, "threshold", 0.5) != 0.5:
        unused.append(f"task.threshold={t.threshold} (multilabel)")
    if getattr(t, "huber_delta", 1.0) != 1.0 and not (kind == "regress" and loss == "huber"):
        unused.append(f"task.huber_delta={t.huber_delta} (regression with task.loss=huber)")
    if unused:
        raise ConfigError(f"{', '.join(unused)}: does nothing for the task '{kind}' of this data; remove it, or "
                          f"choose the data or data.task it is for.")


def _only_auto(loss: str, kind: str, allowed: tuple[str, ...]) -> None:
    if loss not in ("auto", *allowed):
        from layerwise.config import ConfigError
        raise ConfigError(f"task.loss={loss} does not fit the task '{kind}', whose loss is "
                          f"{' or '.join(allowed)}. task.loss=mse|huber|l1 is for regression; leave it at auto.")
