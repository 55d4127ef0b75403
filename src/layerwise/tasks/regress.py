"""regress: one or more numbers per example, in the target's own units."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from layerwise.tasks.base import Task

LOSSES = ("mse", "huber", "l1")


class Regress(Task):
    """Regression of K target columns. The model predicts *standardized* targets,
    z = (y - mean) / std with the training split's mean and std per column (so one learning rate
    suits a price and a solubility alike); predictions and metrics are mapped back to the target's
    units, y_hat = z_hat * std + mean. With task.target_transform=log the model learns
    standardized log y (y_hat = exp(...)): relative errors weigh alike, as suits prices; with
    task.clip_predictions predictions stay within the training targets' range (capped data).

    Loss (task.loss): ``mse`` (default), ``huber`` (F.huber_loss, task.huber_delta in standard
    deviations) or ``l1``, summed over the columns and examples. Metrics per column, in units:
    RMSE, MAE and R^2 = 1 - SSE / SST (SST around the evaluated set's own mean, as
    scikit-learn's r2_score), all from exact sums; with several columns ``rmse``, ``mae`` and
    ``r2`` are their means over the columns and ``<metric>_<column>`` each column's. Headline:
    RMSE for one column, mean R^2 for several (RMSEs in different units do not average)."""

    name = "regress"
    higher_is_better = False

    def __init__(self, info: Any, options: Any = None, loss: str = "mse", huber_delta: float = 1.0,
                 transform: str = "none", clip: bool = False):
        super().__init__(info, options)
        if transform not in ("none", "log"):
            raise ValueError(f"target transform must be none or log, got {transform!r}")
        self.transform, self.clip = transform, bool(clip)
        self.low = self.high = None  # the training targets' range (units), for clip
        if loss not in LOSSES:
            from layerwise.choices import unknown_choice_error
            raise unknown_choice_error("task.loss for regression", loss, LOSSES)
        self.kind, self.delta = loss, float(huber_delta)
        self.columns = list(info.classes) or [f"y{j}" for j in range(info.num_classes)]
        K = len(self.columns)
        self.mean = torch.zeros(K, dtype=torch.float64)
        self.std = torch.ones(K, dtype=torch.float64)
        self.headline = "rmse" if K == 1 else "r2"
        self.higher_is_better = K > 1

    @property
    def num_outputs(self) -> int:
        return len(self.columns)

    @property
    def stats_size(self) -> int:
        return 1 + 4 * len(self.columns)  # loss, then per column: sum y, sum y^2, sum e^2, sum |e|

    def fit(self, y_train: torch.Tensor | None) -> None:
        """The training split's mean and std per column (std 0 becomes 1), of log y with the log
        transform (which needs every target > 0); its range, for clip."""
        y = y_train.double().reshape(len(y_train), -1)
        self.low, self.high = y.min(0).values, y.max(0).values
        if self.transform == "log":
            if not bool((y > 0).all()):
                from layerwise.config import ConfigError
                raise ConfigError(f"task.target_transform=log needs targets > 0; the training split's smallest is "
                                  f"{float(y.min()):g}. Use task.target_transform=none.")
            y = y.log()
        self.mean = y.mean(0)
        std = y.std(0, unbiased=False)
        self.std = torch.where(std > 0, std, torch.ones_like(std))

    def check_eval(self, y_eval: torch.Tensor | None) -> list[str]:
        """With the log transform, test targets <= 0 have no log: the loss on them (the log clamped
        at 1e-30) is meaningless, while RMSE, MAE and R^2 in units stay right."""
        if self.transform != "log" or y_eval is None or not len(y_eval):
            return []
        bad = int((y_eval.double().reshape(len(y_eval), -1) <= 0).any(1).sum())
        if not bad:
            return []
        return [f"task.target_transform=log: {bad} of {len(y_eval)} evaluated examples have a target <= 0, "
                f"which has no log; the test loss counts them as log 1e-30 and is meaningless (RMSE, MAE and R^2 "
                f"in the target's units are not affected). Use task.target_transform=none to compare losses."]

    def state(self) -> dict[str, Any]:
        return {"columns": self.columns, "mean": self.mean.tolist(), "std": self.std.tolist(), "loss": self.kind,
                "transform": self.transform, "clip": self.clip,
                "range": None if self.low is None else [self.low.tolist(), self.high.tolist()]}

    def load_state(self, state: dict[str, Any]) -> None:
        self.mean = torch.tensor(state["mean"], dtype=torch.float64)
        self.std = torch.tensor(state["std"], dtype=torch.float64)
        self.transform, self.clip = state.get("transform", "none"), bool(state.get("clip", False))
        if state.get("range"):
            self.low, self.high = (torch.tensor(v, dtype=torch.float64) for v in state["range"])

    def standardize(self, y: torch.Tensor) -> torch.Tensor:
        """Targets in units (B, K) -> what the model learns to output."""
        m, s = self.mean.to(y.device, torch.float32), self.std.to(y.device, torch.float32)
        y = y.float().reshape(len(y), -1)
        return ((y.clamp_min(1e-30).log() if self.transform == "log" else y) - m) / s

    def to_units(self, out: torch.Tensor) -> torch.Tensor:
        """Model outputs (B, K) -> predictions in the target's units, float64 (exp of the log with
        the log transform; clamped to the training range with clip)."""
        y = out.double().reshape(len(out), -1) * self.std.to(out.device) + self.mean.to(out.device)
        if self.transform == "log":
            y = y.clamp(max=700.0).exp()
        if self.clip and self.low is not None:
            y = torch.maximum(torch.minimum(y, self.high.to(y.device)), self.low.to(y.device))
        return y

    def loss(self, out: torch.Tensor, y: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        pred = self._full(out).reshape(len(out), -1)
        z = self.standardize(y).to(pred.dtype)
        if self.kind == "mse":
            per = (pred - z).square()
        elif self.kind == "l1":
            per = (pred - z).abs()
        else:
            per = F.huber_loss(pred, z, reduction="none", delta=self.delta)
        per = per.sum(1)  # (B,): summed over the columns
        return per.sum() if keep is None else (per * self._weights(keep, per)).sum()

    def stats(self, out: torch.Tensor, y: torch.Tensor, loss_sum: torch.Tensor,
              keep: torch.Tensor | None = None) -> torch.Tensor:
        yd = y.double().reshape(len(y), -1)  # (B, K) in units
        e = self.to_units(out.detach()) - yd
        w = torch.ones(len(yd), 1, dtype=torch.float64, device=yd.device) if keep is None else \
            keep.to(yd.device, torch.float64)[:, None]
        parts = [(yd * w).sum(0), (yd.square() * w).sum(0), (e.square() * w).sum(0), (e.abs() * w).sum(0)]
        return torch.cat([loss_sum.detach().double().reshape(1), torch.stack(parts, 1).flatten()])

    def metrics(self, sums: list[float], count: int) -> dict[str, Any]:
        if not count:
            return {"loss": None, self.headline: None}
        K, n = len(self.columns), count
        per = torch.tensor(sums[1:], dtype=torch.float64).view(K, 4)  # sum y, sum y^2, sse, sae
        out: dict[str, Any] = {"loss": sums[0] / n}
        rmse, mae, r2 = [], [], []
        for j in range(K):
            sy, syy, sse, sae = per[j].tolist()
            sst = syy - sy * sy / n
            rmse.append(math.sqrt(max(sse, 0.0) / n))
            mae.append(sae / n)
            r2.append(1.0 - sse / sst if sst > 0 else None)
        defined = [v for v in r2 if v is not None]
        out |= {"rmse": sum(rmse) / K, "mae": sum(mae) / K, "r2": sum(defined) / len(defined) if defined else None}
        if K > 1:
            for j, c in enumerate(self.columns):
                out |= {f"rmse_{c}": rmse[j], f"mae_{c}": mae[j], f"r2_{c}": r2[j]}
        return out

    def present(self, out: torch.Tensor, top_k: int = 3) -> list[dict[str, Any]]:
        y = self.to_units(out)
        return [{"values": {c: float(y[i, j]) for j, c in enumerate(self.columns)}} for i in range(len(y))]

    def describe(self, result: dict[str, Any]) -> str:
        return ", ".join(f"{c} = {v:.6g}" for c, v in result["values"].items())
