"""The face every task shows: the objective of a run, apart from the loop that minimizes it.

A task owns what differs between predicting a class, several labels, a number or the next token:

    loss(out, y)            the loss *summed* over the batch's targets (examples, or tokens), so
                            that a step divides once by the targets of all its micro-batches and
                            gradient accumulation is exact for any split (Trainer)
    count(y)                how many targets a batch holds (host-side: no device sync)
    stats(out, y, loss)     a float64 vector of exact sums on the device (no host sync); sums add
                            over batches, micro-batches and ranks
    metrics(sums, count)    the metrics, on the host, from those sums: example- (or token-)
                            weighted, so a short last batch counts by its size
    headline                the metric a run leads with (results table, summary.json, `info`)
    present(out)            what `predict` shows for each example

Targets are prepared by :meth:`Task.fit` on the training split (regression: their mean and
std); :meth:`state` is saved with the model so that `predict` maps outputs back the same way.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

__all__ = ["Task"]


class Task:
    """Base class of the tasks in :mod:`layerwise.tasks` (see the module docstring)."""

    name: ClassVar[str]
    headline: str = "loss"
    higher_is_better: bool = False  # of the headline metric
    collects: bool = False  # evaluation also hands every output to final_metrics (e.g. mAP)
    # the training loop may compute :meth:`stats` once for many micro-batches, concatenated along
    # the batch: only for a task whose sums (the loss apart) are whole counts, so that the sum of
    # the parts and the sums of the whole are equal bit for bit
    defer_stats: bool = False

    def __init__(self, info: Any, options: Any = None):
        self.info = info
        self.options = options

    # --- sizes -------------------------------------------------------------------------------
    @property
    def num_outputs(self) -> int:
        """Outputs the model must have per example (its ``num_classes``)."""
        return self.info.num_classes

    @property
    def stats_size(self) -> int:
        """Length of the :meth:`stats` vector."""
        raise NotImplementedError

    # --- targets -----------------------------------------------------------------------------
    def fit(self, y_train: torch.Tensor | None) -> None:
        """Prepare the targets from the training split (nothing by default)."""

    def member_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """An ensemble's training outputs (B, M, ...) with targets (B, ...) -> the mean over its M
        members of each member's :meth:`loss` (summed over the batch's targets, like
        :meth:`loss`): every member learns as if it were alone (Lakshminarayanan et al. 2017),
        rather than the mean of their outputs fitting the targets, which would tie them together."""
        M = out.shape[1]
        return self.loss(out.flatten(0, 1), y.repeat_interleave(M, 0)) / M  # (B*M, ...) member-minor

    def check_eval(self, y_eval: torch.Tensor | None) -> list[str]:
        """Warnings about the evaluated split's targets that make a metric or the loss misleading
        (none by default)."""
        return []

    def state(self) -> dict[str, Any]:
        """JSON-serializable state that :meth:`load_state` restores (saved with the model)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` (e.g. regression's target mean and std)."""

    def count(self, y: torch.Tensor) -> int:
        """Targets in a batch: its examples (token positions for a language model)."""
        return int(y.shape[0])

    # --- the objective -----------------------------------------------------------------------
    def loss(self, out: torch.Tensor, y: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """The loss summed over the batch's targets, float32; ``keep`` (B,) bool leaves examples
        out (evaluation's padding on several ranks)."""
        raise NotImplementedError

    def stats(self, out: torch.Tensor, y: torch.Tensor, loss_sum: torch.Tensor,
              keep: torch.Tensor | None = None) -> torch.Tensor:
        """(stats_size,) float64 sums of one batch, on the device."""
        raise NotImplementedError

    def metrics(self, sums: list[float], count: int) -> dict[str, Any]:
        """Metrics from summed :meth:`stats` over ``count`` targets; None where undefined."""
        raise NotImplementedError

    def final_metrics(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """Metrics that need every output of an evaluation at once (``collects``)."""
        return {}

    def scalars(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The metrics that go into metrics.jsonl and summary.json: numbers, not arrays."""
        return {k: v for k, v in metrics.items() if v is None or isinstance(v, (int, float))}

    # --- predictions -------------------------------------------------------------------------
    def present(self, out: torch.Tensor, top_k: int = 3) -> list[dict[str, Any]]:
        """What `predict` reports for each example of a batch of outputs (JSON-able dicts)."""
        raise NotImplementedError

    def describe(self, result: dict[str, Any]) -> str:
        """One line of text for a :meth:`present` result."""
        raise NotImplementedError

    # --- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _full(t: torch.Tensor) -> torch.Tensor:
        """Outputs at full precision for the loss: half precision (bf16/fp16 autocast) becomes
        float32; float32 and float64 stay as they are."""
        return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t

    @staticmethod
    def _weights(keep: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
        return None if keep is None else keep.to(like.device, like.dtype)
