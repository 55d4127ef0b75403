"""multilabel: any number of labels per example (a sigmoid per label)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from layerwise.tasks.base import Task


class MultiLabel(Task):
    """Binary cross-entropy of one logit per label (``F.binary_cross_entropy_with_logits``),
    averaged over the labels and summed over the examples; targets (B, L) of 0/1.

    A label is predicted when its probability is at least ``threshold`` (task.threshold, 0.5).
    Metrics: micro-F1 (2 TP / (2 TP + FP + FN) over all labels), macro-F1 (the mean of each
    label's F1, 0 for a label that is neither true nor predicted anywhere, as scikit-learn's
    zero_division=0), exact-match ratio, and, for a whole evaluation, mean average precision
    (scikit-learn's average_precision_score, macro, over the labels with a positive example)."""

    name = "multilabel"
    headline = "micro_f1"
    higher_is_better = True
    collects = True

    def __init__(self, info: Any, options: Any = None, threshold: float = 0.5):
        super().__init__(info, options)
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"task.threshold must be in (0, 1), got {threshold}")
        self.threshold = float(threshold)
        self._logit = math.log(threshold / (1 - threshold))  # p >= t  <=>  logit >= log(t / (1 - t))

    @property
    def stats_size(self) -> int:
        return 2 + 3 * self.info.num_classes  # loss, exact matches, then TP, FP, FN per label

    def state(self) -> dict[str, Any]:
        return {"threshold": self.threshold}  # saved with the model: predict decides as the metrics did

    def load_state(self, state: dict[str, Any]) -> None:
        self.threshold = float(state.get("threshold", self.threshold))
        self._logit = math.log(self.threshold / (1 - self.threshold))

    def loss(self, out: torch.Tensor, y: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        out = self._full(out)
        per = F.binary_cross_entropy_with_logits(out, y.to(out.dtype), reduction="none").mean(1)  # (B,)
        return per.sum() if keep is None else (per * self._weights(keep, per)).sum()

    def stats(self, out: torch.Tensor, y: torch.Tensor, loss_sum: torch.Tensor,
              keep: torch.Tensor | None = None) -> torch.Tensor:
        pred = out >= self._logit  # (B, L)
        true = y > 0.5
        w = torch.ones(len(y), 1, dtype=torch.float64, device=y.device) if keep is None else \
            keep.to(y.device, torch.float64)[:, None]
        tp = ((pred & true) * w).sum(0)
        fp = ((pred & ~true) * w).sum(0)
        fn = ((~pred & true) * w).sum(0)
        exact = ((pred == true).all(1, keepdim=True) * w).sum()
        return torch.cat([loss_sum.detach().double().reshape(1), exact.reshape(1), tp, fp, fn])

    def metrics(self, sums: list[float], count: int) -> dict[str, Any]:
        if not count:
            return {"loss": None, "micro_f1": None}
        L = self.info.num_classes
        tp, fp, fn = (torch.tensor(sums[2 + i * L: 2 + (i + 1) * L], dtype=torch.float64) for i in range(3))
        denom = 2 * tp + fp + fn
        micro = float(2 * tp.sum() / denom.sum()) if float(denom.sum()) > 0 else 0.0
        macro = float(torch.where(denom > 0, 2 * tp / denom.clamp_min(1e-300), torch.zeros_like(tp)).mean())
        return {"loss": sums[0] / count, "micro_f1": micro, "macro_f1": macro, "exact_match": sums[1] / count}

    def final_metrics(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        from sklearn.metrics import average_precision_score

        true = (y > 0.5).cpu().numpy()
        has = true.any(0)
        if not has.any():
            return {"map": None}
        scores = out.float().cpu().numpy()
        return {"map": float(average_precision_score(true[:, has], scores[:, has], average="macro"))}

    def present(self, out: torch.Tensor, top_k: int = 3) -> list[dict[str, Any]]:
        probs = torch.sigmoid(out.float())
        names = self.info.classes
        res = []
        for i in range(len(out)):
            p = probs[i].tolist()
            res.append({"labels": [names[j] for j, q in enumerate(p) if q >= self.threshold],
                        "probabilities": {names[j]: float(q) for j, q in enumerate(p)}})
        return res

    def describe(self, result: dict[str, Any]) -> str:
        probs = result["probabilities"]
        if not result["labels"]:
            best = max(probs, key=probs.get)
            return f"(no label over {self.threshold:g}; most likely {best} {probs[best]:.3f})"
        return ", ".join(f"{name} ({probs[name]:.3f})" for name in result["labels"])
