"""regress a field: one value per grid point (and output channel), e.g. u(x, t=1) of a PDE.

A field is one quantity sampled on a grid, not R unrelated target columns, so it is prepared and
measured as a whole:

- **Standardization is global**: one mean and one std over every point of every training target
  (``Regress`` standardizes per column, which for a field would give each grid point its own
  statistics: noisy, tied to one resolution, and wrong for a translation-invariant field). The
  same scalar pair serves any resolution, so a model trained at 256 points answers at 1024.
- **Relative L2 error** ``rel_l2`` = ||u_hat - u||_2 / ||u||_2 per example, averaged over
  examples (the metric of Li et al. 2021, who report 0.0149 for the FNO on Burgers at 256
  points); on a uniform grid the spacing cancels, so it approximates the ratio of L2(0, 1) norms
  at any resolution. It is the headline. RMSE, MAE and R^2 are over all points, in units.
- **Loss** (task.loss): ``mse`` (default: the mean over the grid of the squared standardized
  error, summed over examples, so its size does not grow with the resolution), ``l1``,
  ``huber`` or ``rel_l2`` (the relative L2 error of each example in units, as Li et al. train).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from layerwise.tasks.regress import Regress

FIELD_LOSSES = ("mse", "huber", "l1", "rel_l2")
_TINY = 1e-30  # a target that is zero everywhere: its relative error is its absolute error / 1e-30


class FieldRegress(Regress):
    """Regression of a field (see the module docstring). Outputs (B, C, R) or (B, R); targets
    (B, R) for one output channel (or (B, C, R)), flattened per example."""

    def __init__(self, info: Any, options: Any = None, loss: str = "mse", huber_delta: float = 1.0) -> None:
        if loss not in FIELD_LOSSES:
            from layerwise.choices import unknown_choice_error
            raise unknown_choice_error("task.loss for a field", loss, FIELD_LOSSES)
        super().__init__(info, options, loss="mse" if loss == "rel_l2" else loss, huber_delta=huber_delta)
        self.kind = loss
        self.mean = torch.zeros(1, dtype=torch.float64)
        self.std = torch.ones(1, dtype=torch.float64)
        self.headline, self.higher_is_better = "rel_l2", False

    @property
    def num_outputs(self) -> int:
        return len(self.columns)  # output channels per grid point

    @property
    def stats_size(self) -> int:
        return 7  # loss, sum rel_l2, sse, sae, sum y, sum y^2, points

    def fit(self, y_train: torch.Tensor | None) -> None:
        """One mean and std over every point of every training target (std 0 becomes 1)."""
        y = y_train.double()
        self.low, self.high = y.min().reshape(1), y.max().reshape(1)
        self.mean = y.mean().reshape(1)
        std = y.std(unbiased=False).reshape(1)
        self.std = torch.where(std > 0, std, torch.ones_like(std))

    def check_eval(self, y_eval: torch.Tensor | None) -> list[str]:
        if y_eval is None or not len(y_eval):
            return []
        zero = int((y_eval.reshape(len(y_eval), -1).abs().amax(1) == 0).sum())
        if not zero:
            return []
        return [(f"{zero} of {len(y_eval)} evaluated fields are zero everywhere: their relative L2 error divides by "
                 f"{_TINY:g} and dominates test_rel_l2; look at test_rmse instead.")]

    def state(self) -> dict[str, Any]:
        return super().state() | {"field": True}

    def standardize(self, y: torch.Tensor) -> torch.Tensor:
        m, s = self.mean.to(y.device, torch.float32), self.std.to(y.device, torch.float32)
        return (y.float().reshape(len(y), -1) - m) / s

    def to_units(self, out: torch.Tensor) -> torch.Tensor:
        """Model outputs (B, ...) -> (B, points) in units, float64."""
        return out.double().reshape(len(out), -1) * self.std.to(out.device) + self.mean.to(out.device)

    def _check(self, pred: torch.Tensor, y: torch.Tensor) -> None:
        if pred.shape[1] != y.reshape(len(y), -1).shape[1]:
            raise ValueError(f"the model gives {pred.shape[1]} values per example and the field has "
                             f"{y[0].numel()} points: a field model must output one value per point "
                             f"(e.g. fno or cnn1d).")

    def loss(self, out: torch.Tensor, y: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        pred = self._full(out).reshape(len(out), -1)  # (B, P) standardized
        self._check(pred, y)
        if self.kind == "rel_l2":  # in units: ||pred - y|| / ||y|| per example
            s, m = self.std.to(pred.device, pred.dtype), self.mean.to(pred.device, pred.dtype)
            yy = y.to(pred.dtype).reshape(len(y), -1)
            per = (pred * s + m - yy).norm(dim=1) / yy.norm(dim=1).clamp_min(_TINY)
        else:
            z = self.standardize(y).to(pred.dtype)
            if self.kind == "mse":
                per = (pred - z).square().mean(1)
            elif self.kind == "l1":
                per = (pred - z).abs().mean(1)
            else:
                per = F.huber_loss(pred, z, reduction="none", delta=self.delta).mean(1)
        return per.sum() if keep is None else (per * self._weights(keep, per)).sum()

    def stats(self, out: torch.Tensor, y: torch.Tensor, loss_sum: torch.Tensor,
              keep: torch.Tensor | None = None) -> torch.Tensor:
        yd = y.double().reshape(len(y), -1)  # (B, P) in units
        e = self.to_units(out.detach()) - yd
        w = torch.ones(len(yd), dtype=torch.float64, device=yd.device) if keep is None else \
            keep.to(yd.device, torch.float64)
        rel = e.norm(dim=1) / yd.norm(dim=1).clamp_min(_TINY)  # (B,)
        P = yd.shape[1]
        parts = [(rel * w).sum(), (e.square().sum(1) * w).sum(), (e.abs().sum(1) * w).sum(),
                 (yd.sum(1) * w).sum(), (yd.square().sum(1) * w).sum(), w.sum() * P]
        return torch.stack([loss_sum.detach().double().reshape(()), *parts])

    def metrics(self, sums: list[float], count: int) -> dict[str, Any]:
        if not count:
            return {"loss": None, "rel_l2": None}
        loss, rel, sse, sae, sy, syy, n = sums
        sst = syy - sy * sy / n
        return {"loss": loss / count, "rel_l2": rel / count, "rmse": math.sqrt(max(sse, 0.0) / n), "mae": sae / n,
                "r2": 1.0 - sse / sst if sst > 0 else None}

    def present(self, out: torch.Tensor, top_k: int = 3) -> list[dict[str, Any]]:
        """Each example's predicted field: {"quantity": name, "field": [values at x_j = j / R, in
        units], "points": R}."""
        y = self.to_units(out)
        q = self.columns[0] if len(self.columns) == 1 else "field"
        return [{"quantity": q, "field": [float(v) for v in y[i]], "points": int(y.shape[1])} for i in range(len(y))]

    def describe(self, result: dict[str, Any]) -> str:
        return describe_field(result)


def describe_field(result: dict[str, Any]) -> str:
    """One line for a predicted field: its size and range (the values are in --json)."""
    v = result["field"]
    return (f"{result.get('quantity', 'field')} at {result['points']} points: min {min(v):.6g}, max {max(v):.6g}, "
            f"mean {sum(v) / len(v):.6g} (--json for the values)")
