"""classify: one class per example (softmax, cross-entropy)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from layerwise.tasks.base import Task

MAX_CONFUSION = 1024  # classes up to which the confusion matrix (and macro-F1) is kept: C^2 sums


def macro_f1(confusion: torch.Tensor) -> float | None:
    """Macro-averaged F1 from a (C, C) confusion matrix (rows: true class, columns: predicted),
    over the classes that occur as a label or a prediction (scikit-learn's f1_score(average=
    "macro") with its default labels)."""
    tp = confusion.diagonal()
    true, pred = confusion.sum(1), confusion.sum(0)
    present = (true + pred) > 0
    if not bool(present.any()):
        return None
    f1 = 2 * tp / (true + pred).clamp_min(1e-300)  # 2TP / (2TP + FP + FN)
    return float(f1[present].mean())


def confusion_counts(codes: torch.Tensor, size: int, weights: torch.Tensor | None = None, *,
                     bincount: bool | None = None) -> torch.Tensor:
    """(size,) counts of each value of ``codes`` ((B,) int64 in [0, size)), weighted by ``weights``
    ((B,) float64) when given: ``torch.bincount`` on the CPU (int64 without weights, else float64);
    elsewhere float64 by ``index_put_(accumulate=True)``, because CUDA's bincount reads the codes'
    minimum and maximum on the host, a sync that would stall every training step's queue. The
    counts are whole numbers (or sums of 0/1 weights), exact in float64 in any order. ``bincount``
    True/False picks the way regardless of the device (tests)."""
    if bincount if bincount is not None else codes.device.type == "cpu":
        return torch.bincount(codes, weights=weights, minlength=size)
    if weights is None:
        weights = torch.ones(codes.shape, dtype=torch.float64, device=codes.device)
    return torch.zeros(size, dtype=torch.float64, device=codes.device).index_put_((codes,), weights, accumulate=True)


class Classify(Task):
    """Cross-entropy over ``num_classes`` logits (``F.cross_entropy``, label smoothing from
    train.label_smoothing; soft targets from mixup/cutmix taken as they are).

    Metrics: accuracy, top-5 accuracy when there are more than 10 classes, macro-F1 and the
    confusion matrix (rows true, columns predicted; up to MAX_CONFUSION classes). For soft
    targets the label is their argmax."""

    name = "classify"
    headline = "accuracy"
    defer_stats = True  # correct, top-5 and confusion counts
    higher_is_better = True

    def __init__(self, info: Any, options: Any = None, label_smoothing: float = 0.0):
        super().__init__(info, options)
        self.label_smoothing = float(label_smoothing)
        C = info.num_classes
        self.confusion = C <= MAX_CONFUSION
        self.top5 = C > 10

    @property
    def stats_size(self) -> int:
        C = self.info.num_classes
        return 3 + (C * C if self.confusion else 0)  # loss, correct, top-5 correct, confusion

    def loss(self, out: torch.Tensor, y: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        out = self._full(out)
        if keep is None:
            return F.cross_entropy(out, y, reduction="sum", label_smoothing=self.label_smoothing)
        per = F.cross_entropy(out, y, reduction="none", label_smoothing=self.label_smoothing)  # (B,)
        return (per * self._weights(keep, per)).sum()

    def stats(self, out: torch.Tensor, y: torch.Tensor, loss_sum: torch.Tensor,
              keep: torch.Tensor | None = None) -> torch.Tensor:
        C = self.info.num_classes
        label = y.argmax(-1) if y.is_floating_point() else y  # (B,)
        pred = out.argmax(-1)  # (B,)
        if keep is None and self.confusion:
            # every training step comes here: the confusion counted once and the correct predictions
            # read off its diagonal: the same sums as below in fewer kernels (37 against 54 us for an
            # MNIST batch on one CPU thread, issue 14)
            conf = confusion_counts(pred.add(label, alpha=C), C * C)  # (C*C,), row = true class
            s = torch.empty(3 + C * C, dtype=torch.float64, device=out.device)
            s[0] = loss_sum.detach()
            s[1] = conf[:: C + 1].sum()
            s[2] = (out.topk(min(5, C), dim=-1).indices == label[:, None]).any(-1).sum() if self.top5 else 0
            s[3:] = conf
            return s
        w = torch.ones_like(label, dtype=torch.float64) if keep is None else keep.to(label.device, torch.float64)
        parts = [loss_sum.detach().double().reshape(1), ((pred == label) * w).sum().reshape(1)]
        if self.top5:
            top = out.topk(min(5, C), dim=-1).indices  # (B, 5)
            parts.append(((top == label[:, None]).any(-1) * w).sum().reshape(1))
        else:
            parts.append(parts[-1].new_zeros(1))
        if self.confusion:
            parts.append(confusion_counts(label * C + pred, C * C, w).double())
        return torch.cat(parts)

    def metrics(self, sums: list[float], count: int) -> dict[str, Any]:
        if not count:
            return {"loss": None, "accuracy": None}
        out: dict[str, Any] = {"loss": sums[0] / count, "accuracy": sums[1] / count}
        if self.top5:
            out["top5_accuracy"] = sums[2] / count
        if self.confusion:
            C = self.info.num_classes
            conf = torch.tensor(sums[3:], dtype=torch.float64).view(C, C)
            out["macro_f1"] = macro_f1(conf)
            out["confusion"] = conf.round().long().tolist()
        return out

    def present(self, out: torch.Tensor, top_k: int = 3) -> list[dict[str, Any]]:
        probs = F.softmax(out.float(), dim=-1)
        k = max(1, min(top_k, self.info.num_classes))
        p, idx = probs.topk(k, dim=-1)
        classes = self.info.classes
        return [{"top": [{"class": classes[c], "index": int(c), "probability": float(q)}
                         for q, c in zip(p[i].tolist(), idx[i].tolist())]} for i in range(len(out))]

    def describe(self, result: dict[str, Any]) -> str:
        return ", ".join(f"{t['class']} ({t['probability']:.3f})" for t in result["top"])
