"""Metric accumulation on the device, the metrics.jsonl log, TensorBoard and PNG plots."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch


class Accumulator:
    """Sums of loss and correct predictions kept as device tensors; the example count on the host.

    Adding never syncs with the host (no ``.item()``, no host-to-device copy); ``read()`` does, and
    the Trainer calls it only at log intervals, so the GPU is never stalled by a per-step read.

    The Trainer stages each micro-batch of a step (:meth:`stage`) and, once it knows whether the
    step was taken, commits them (:meth:`commit`) or drops them (:meth:`drop`): a skipped step (a non-finite loss or
    gradient, an fp16 overflow) never enters the averages; it is counted apart (``skipped``).
    """

    def __init__(self, device: torch.device, reduce=None):
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss_sum, correct
        self.count = 0
        self.staged = torch.zeros(2, dtype=torch.float64, device=device)  # the step being decided
        self.staged_count = 0
        self.skipped = 0  # steps dropped since the last read
        self.reduce = reduce  # e.g. Parallel.sum: totals over the data-parallel ranks

    def stage(self, loss_sum: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, count: int | None = None) -> None:
        """Hold one micro-batch's sums until :meth:`commit` or :meth:`drop`. logits (N, C) and
        targets y: (N,) class ids or (N, C) soft targets (mixup, cutmix), whose argmax counts as
        the label. N is examples, or tokens for a language model. Targets of -100 (padding) are
        never correct; ``count`` then gives the real targets (default N)."""
        label = y.argmax(-1) if y.is_floating_point() else y
        correct = (logits.argmax(-1) == label).sum()
        self.staged += torch.stack([loss_sum.detach().double(), correct.double()])
        self.staged_count += len(y) if count is None else count

    def commit(self) -> None:
        """Fold the staged micro-batches into the sums (the step was taken)."""
        self.sums += self.staged
        self.count += self.staged_count
        self.staged.zero_()
        self.staged_count = 0

    def drop(self) -> None:
        """Forget the staged micro-batches (the step was skipped) and count the skipped step."""
        self.staged.zero_()
        self.staged_count = 0
        self.skipped += 1

    def add(self, loss_sum: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, count: int | None = None) -> None:
        """:meth:`stage` and :meth:`commit` at once (evaluation, where nothing is skipped)."""
        self.stage(loss_sum, logits, y, count)
        self.commit()

    def totals(self) -> tuple[torch.Tensor, int]:
        """(sums, count) over every rank (a collective when ``reduce`` is set: all ranks call it)."""
        if self.reduce is None:
            return self.sums, self.count
        both = self.reduce(torch.cat([self.sums, self.sums.new_tensor([self.count])]))
        return both[:2], int(round(both[2].item()))

    def read(self, reset: bool = True) -> dict[str, float | None]:
        """Means over the committed examples (None when there are none, e.g. every step of the
        interval was skipped), their count, and the steps skipped since the last read."""
        sums, n = self.totals()
        loss, correct = sums.tolist()
        out = {"loss": loss / n if n else None, "accuracy": correct / n if n else None, "examples": n,
               "skipped": self.skipped}
        if reset:
            self.sums.zero_()
            self.count = 0
            self.skipped = 0
        return out

    def state_dict(self) -> dict:
        return {"sums": self.sums, "count": self.count, "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.sums.copy_(state["sums"])
        self.count = int(state["count"])
        self.skipped = int(state.get("skipped", 0))


class MetricsLog:
    """Appends one JSON line per record to metrics.jsonl, mirrors scalars to TensorBoard if present."""

    def __init__(self, path: Path, tensorboard: bool, enabled: bool = True):
        self.path, self.enabled = path, enabled  # disabled: a rank other than 0 of a distributed run
        self.records: list[dict[str, Any]] = []
        self.tb = None
        if tensorboard and enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(path.parent / "tensorboard"))
            except ImportError:  # optional extra: pip install layerwise[tensorboard]
                self.tb = None

    def truncate_after(self, step: int) -> None:
        """On resume: keep the records up to the checkpoint's step, drop the ones it will redo. A
        line that is not a whole record (the process was killed while appending it) is dropped
        with a warning; the file is rewritten atomically."""
        if not (self.enabled and self.path.is_file()):
            return
        from layerwise.train.checkpoint import atomic_write

        keep, torn = [], 0
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                r = json.loads(line)
                if r["step"] <= step:
                    keep.append(r)
            except (ValueError, TypeError, KeyError):
                torn += line.strip() != ""
        if torn:
            warnings.warn(f"{self.path}: dropped {torn} incomplete line(s), as a run killed while writing "
                          f"leaves; the records of the steps it redoes are written again", stacklevel=2)
        atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in keep).encode())
        self.records = keep

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.records.append(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k not in ("step", "kind") and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{record.get('kind', 'train')}/{k}", v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def plot_metrics(records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """loss.png, accuracy.png and lr.png from the metric records (train and test curves)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    train = [r for r in records if r.get("kind") == "train"]
    test = [r for r in records if r.get("kind") == "test"]
    written = []
    for key, label in (("loss", "cross-entropy loss"), ("accuracy", "accuracy"), ("lr", "learning rate")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for rows, style, label in ((train, "-", "train"), (test, "o-", "test")):
            rows = [r for r in rows if r.get(key) is not None]  # an interval of skipped steps has none
            if rows:
                ax.plot([r["step"] for r in rows], [r[key] for r in rows], style, label=label)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(label)
        if key == "loss":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        fig.tight_layout()
        path = out_dir / f"{key}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
