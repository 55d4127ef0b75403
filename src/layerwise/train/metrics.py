"""Metric accumulation on the device, the metrics.jsonl log, TensorBoard and PNG plots."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch

# Deferred micro-batches an Accumulator holds before it computes their sums in one call: at most
# this many (and at least once per log interval, evaluation and checkpoint)
MAX_DEFERRED = 64


class Deferred(NamedTuple):
    """One training micro-batch whose metric sums wait for the next log interval: its outputs
    (detached; small, see ``Trainer``), its targets and its summed loss (0-d float32), all as the
    step produced them. The loaders yield fresh tensors for every batch, so nothing here is
    written again before :class:`Accumulator` reads it."""
    out: torch.Tensor
    y: torch.Tensor
    loss_sum: torch.Tensor


class Accumulator:
    """A task's metric sums (a float64 vector, :meth:`layerwise.tasks.Task.stats`) kept on the
    device, and the count of targets (examples or tokens) on the host.

    Adding never syncs with the host (no ``.item()``, no host-to-device copy); ``read()`` does, and
    the Trainer calls it only at log intervals, so the GPU is never stalled by a per-step read.

    The Trainer stages each micro-batch of a step (:meth:`stage`) and, once it knows whether the
    step was taken, commits them (:meth:`commit`) or drops them (:meth:`drop`): a skipped step
    (a non-finite loss or gradient, an fp16 overflow) never enters the averages; it is counted
    apart (``skipped``). When the decision stays on the device (the Trainer's sync-free step),
    :meth:`settle` does either with a device flag, and the taken steps' target count waits on the
    device until the next :meth:`totals` (the skipped steps are counted by the caller, with
    :meth:`count_skipped`, when it reads the flags).
    """

    def __init__(self, size: int, device: torch.device, reduce=None,
                 stats: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None):
        self.sums = torch.zeros(size, dtype=torch.float64, device=device)
        self.count = 0
        self.staged: torch.Tensor | None = None  # (size,) float64: the step being decided
        self.staged_count = 0
        self.skipped = 0  # steps dropped since the last read
        self.reduce = reduce  # e.g. Parallel.sum: totals over the data-parallel ranks
        self._device_count: torch.Tensor | None = None  # int64 targets of steps settled on the device
        self.stats = stats  # the task's stats(out, y, loss_sum), for Deferred micro-batches
        self._staged_deferred: list[Deferred] = []  # the step being decided, deferred
        self._deferred: list[Deferred] = []  # taken, their sums not yet computed
        self._deferred_losses: list[torch.Tensor] = []  # one float64 0-d sum per taken step

    def stage(self, stats: torch.Tensor | Deferred, count: int) -> None:
        """Hold one micro-batch's sums (``count`` targets) until :meth:`commit` or :meth:`drop`;
        a :class:`Deferred` micro-batch's sums are computed later, many at once (the Accumulator
        needs ``stats``)."""
        if isinstance(stats, Deferred):
            if self.stats is None:
                raise ValueError("a Deferred micro-batch needs an Accumulator made with stats=task.stats")
            self._staged_deferred.append(stats)
        else:
            stats = stats.to(torch.float64)  # the sums' dtype (a no-op for the tasks' float64 stats)
            self.staged = stats if self.staged is None else self.staged + stats
        self.staged_count += count

    def commit(self) -> None:
        """Fold the staged micro-batches into the sums (the step was taken)."""
        if self._staged_deferred:
            self._commit_deferred()
        if self.staged is not None:
            self._fold_deferred()  # the float64 sums take the steps in their order
            self.sums += self.staged
        self.count += self.staged_count
        self.staged = None
        self.staged_count = 0

    def _commit_deferred(self) -> None:
        """Keep the staged Deferred micro-batches of a taken step; their step's loss is summed now,
        in the order :meth:`stage` and :meth:`commit` add a tensor's, so that the float64 loss sum
        comes out bit for bit as if the sums had been computed at each step."""
        items, self._staged_deferred = self._staged_deferred, []
        loss = items[0].loss_sum.detach().to(torch.float64)
        for item in items[1:]:
            loss = loss + item.loss_sum.detach().to(torch.float64)
        self._deferred.extend(items)
        self._deferred_losses.append(loss)
        if len(self._deferred) >= MAX_DEFERRED:
            self._fold_deferred()

    def _fold_deferred(self) -> None:
        """Compute the deferred micro-batches' sums in one call of ``stats`` over their
        concatenation (one per kind of batch: targets hard or soft; the sums are additive, whole
        counts exactly in any order) and add them; the
        loss sums are added one step after another, as :meth:`commit` would have (a cumulative
        sum, sequential on the CPU)."""
        if not self._deferred:
            return
        items, losses = self._deferred, self._deferred_losses
        self._deferred, self._deferred_losses = [], []
        kinds: dict[tuple, list[Deferred]] = {}  # one call per kind of batch (hard and soft targets, ...)
        for it in items:
            kinds.setdefault((it.out.dtype, it.out.shape[1:], it.y.dtype, it.y.shape[1:]), []).append(it)
        zero = torch.zeros((), dtype=torch.float32, device=self.sums.device)
        loss = torch.cat([self.sums[:1], torch.stack(losses)]).cumsum(0)[-1]
        for group in kinds.values():
            out = group[0].out if len(group) == 1 else torch.cat([it.out for it in group])
            y = group[0].y if len(group) == 1 else torch.cat([it.y for it in group])
            self.sums += self.stats(out, y, zero).to(torch.float64)  # its loss part is 0
        self.sums[0] = loss

    def drop(self) -> None:
        """Forget the staged micro-batches (the step was skipped) and count the skipped step."""
        self.staged = None
        self._staged_deferred = []
        self.staged_count = 0
        self.skipped += 1

    def settle(self, taken: torch.Tensor) -> None:
        """:meth:`commit` if the 0-d bool device tensor ``taken`` is true, else forget the staged
        micro-batches, without a host sync (a skipped step's NaN never reaches the sums: it is
        selected away, not multiplied by 0). The caller counts a skipped step with
        :meth:`count_skipped` once it has read ``taken``. Deferred micro-batches get their sums
        here (a selection needs them)."""
        if self._staged_deferred:
            items, self._staged_deferred = self._staged_deferred, []
            for item in items:
                vec = self.stats(item.out, item.y, item.loss_sum).to(torch.float64)
                self.staged = vec if self.staged is None else self.staged + vec
        self._fold_deferred()
        if self.staged is not None:
            self.sums += torch.where(taken, self.staged, 0.0)
        if self._device_count is None:
            self._device_count = torch.zeros((), dtype=torch.int64, device=self.sums.device)
        self._device_count.add_(taken.to(torch.int64), alpha=self.staged_count)
        self.staged = None
        self.staged_count = 0

    def count_skipped(self, steps: int = 1) -> None:
        """Count steps that :meth:`settle` left out (their flags were read on the host)."""
        self.skipped += steps

    def add(self, stats: torch.Tensor, count: int) -> None:
        """:meth:`stage` and :meth:`commit` at once (evaluation, where nothing is skipped)."""
        self.stage(stats, count)
        self.commit()

    def _fold_device_count(self) -> None:
        """Move the target count of steps settled on the device to the host (one sync), and the
        deferred micro-batches' sums into ``sums``."""
        self._fold_deferred()
        if self._device_count is not None:
            self.count += int(self._device_count.item())
            self._device_count.zero_()

    def totals(self) -> tuple[torch.Tensor, int]:
        """(sums, count) over every rank (a collective when ``reduce`` is set: all ranks call it)."""
        self._fold_device_count()
        if self.reduce is None:
            return self.sums, self.count
        both = self.reduce(torch.cat([self.sums, self.sums.new_tensor([self.count])]))
        return both[:-1], int(round(both[-1].item()))

    def read(self, reset: bool = True) -> tuple[list[float], int, int]:
        """(sums over every rank, as floats; their target count; steps skipped since the last
        read), the task turns them into metrics."""
        sums, n = self.totals()
        out = (sums.tolist(), n, self.skipped)
        if reset:
            self.sums.zero_()
            self.count = 0
            self.skipped = 0
        return out

    def state_dict(self) -> dict:
        self._fold_device_count()
        return {"sums": self.sums, "count": self.count, "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`. Sums of another layout (a checkpoint of an earlier layerwise,
        which kept loss and correct only) start the interval afresh: they feed one log line, not
        the training."""
        sums = torch.as_tensor(state["sums"], dtype=torch.float64)
        self._device_count = None
        self._staged_deferred, self._deferred, self._deferred_losses = [], [], []
        if sums.shape == self.sums.shape:
            self.sums.copy_(sums)
            self.count = int(state["count"])
        else:
            self.sums.zero_()
            self.count = 0
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


def plot_metrics(records: list[dict[str, Any]], out_dir: Path, headline: str = "accuracy",
                 xlabel: str = "optimizer step", extra: tuple[str, ...] = ()) -> list[Path]:
    """loss.png, <headline>.png (the task's headline metric, e.g. accuracy or rmse), lr.png and
    <key>.png for each of ``extra`` from the metric records (train and test curves), against the
    records' ``step`` (``xlabel`` names its unit)."""
    # The Figure API without pyplot (no backend machinery, no global figure registry) and fixed
    # margins instead of tight_layout, which measured text twice: ~2x faster, paid at the end of
    # every run that keeps run.plots on (issue 14)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogFormatter

    out_dir.mkdir(parents=True, exist_ok=True)
    train = [r for r in records if r.get("kind") == "train"]
    test = [r for r in records if r.get("kind") == "test"]
    written = []
    keys = [("loss", "loss"), (headline, headline.replace("_", " ")), ("lr", "learning rate")]
    keys += [(k, k.replace("_", " ")) for k in extra]
    for key, label in dict.fromkeys(keys):
        fig = Figure(figsize=(6, 4))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        fig.subplots_adjust(left=0.14, right=0.97, bottom=0.13, top=0.96)
        for rows, style, curve in ((train, "-", "train"), (test, "o-", "test")):
            rows = [r for r in rows if r.get(key) is not None]  # an interval of skipped steps has none
            if rows:
                # a single point of a line is drawn as nothing: give it a marker (a run of fewer steps
                # than log_every_steps logs its training loss once)
                ax.plot([r["step"] for r in rows], [r[key] for r in rows], style if len(rows) > 1 else "o-", label=curve)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        if key == "loss" and all(r[key] > 0 for rows in (train, test) for r in rows if r.get(key) is not None):
            ax.set_yscale("log")
            # plain-text labels (0.1, 0.03) chosen as matplotlib's own log labels are: typeset as
            # formulas (mathtext, its default) they took 0.15-0.2 s of a run's three plots (issue 14)
            ax.yaxis.set_major_formatter(LogFormatter())
            ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        path = out_dir / f"{key}.png"
        fig.savefig(path, dpi=100)
        written.append(path)
    return written


def write_confusion(path: Path, confusion: list[list[int]], classes: list[str]) -> None:
    """The confusion matrix as CSV: one row per true class, one column per predicted class, with
    the class names as the first column and the header (counts of test examples)."""
    import csv
    import io

    from layerwise.train.checkpoint import atomic_write

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["true \\ predicted", *classes])
    for name, row in zip(classes, confusion, strict=True):
        w.writerow([name, *row])
    atomic_write(path, buf.getvalue().encode())
