"""Metric accumulation on the device, the metrics.jsonl log, TensorBoard and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


class Accumulator:
    """Sums of loss and correct predictions kept as device tensors; the example count on the host.

    Adding never syncs with the host (no ``.item()``, no host-to-device copy); ``read()`` does, and
    the Trainer calls it only at log intervals, so the GPU is never stalled by a per-step read.
    """

    def __init__(self, device: torch.device, reduce=None):
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss_sum, correct
        self.count = 0
        self.reduce = reduce  # e.g. Parallel.sum: totals over the data-parallel ranks

    def add(self, loss_sum: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, count: int | None = None) -> None:
        """logits (N, C) and targets y: (N,) class ids or (N, C) soft targets (mixup, cutmix),
        whose argmax counts as the label. N is examples, or tokens for a language model. Targets
        of -100 (padding) are never correct; ``count`` then gives the real targets (default N)."""
        label = y.argmax(-1) if y.is_floating_point() else y
        correct = (logits.argmax(-1) == label).sum()
        self.sums += torch.stack([loss_sum.detach().double(), correct.double()])
        self.count += len(y) if count is None else count

    def totals(self) -> tuple[torch.Tensor, int]:
        """(sums, count) over every rank (a collective when ``reduce`` is set: all ranks call it)."""
        if self.reduce is None:
            return self.sums, self.count
        both = self.reduce(torch.cat([self.sums, self.sums.new_tensor([self.count])]))
        return both[:2], int(round(both[2].item()))

    def read(self, reset: bool = True) -> dict[str, float]:
        sums, n = self.totals()
        loss, correct = sums.tolist()
        if reset:
            self.sums.zero_()
            self.count = 0
        return {"loss": loss / max(n, 1), "accuracy": correct / max(n, 1), "examples": n}

    def state_dict(self) -> dict:
        return {"sums": self.sums, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.sums.copy_(state["sums"])
        self.count = int(state["count"])


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
        """On resume: keep the records up to the checkpoint's step, drop the ones it will redo."""
        if self.enabled and self.path.is_file():
            keep = [r for r in map(json.loads, self.path.read_text().splitlines()) if r["step"] <= step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in keep))
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
        if train and key in train[0]:
            ax.plot([r["step"] for r in train], [r[key] for r in train], label="train")
        if test and key in test[0]:
            ax.plot([r["step"] for r in test], [r[key] for r in test], "o-", label="test")
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
