"""What a person watching the run sees: a rich progress bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


_SHORT = {"accuracy": "acc"}  # the display's name for a headline metric (as before tasks: "acc")


def _fmt(v: float | None) -> str:
    """A metric for the display: 4 decimals (or 5 significant digits for large values, e.g. an
    RMSE in dollars), or '-' for an interval in which every step was skipped."""
    if v is None:
        return "-"
    return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.5g}"


class ProgressDisplay:
    """``update()`` is called at log intervals only; on a non-terminal it prints one line each."""

    def __init__(self, total_steps: int, start_step: int = 0, enabled: bool = True):
        self.console = Console(stderr=False)
        self.total = total_steps
        self.enabled = enabled
        self.live = enabled and self.console.is_terminal
        self.bar = None
        if self.live:
            self.bar = Progress(TextColumn("[bold]train"), BarColumn(bar_width=24),
                                TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), TextColumn("eta"),
                                TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                console=self.console, transient=False)
            self.task = self.bar.add_task("train", total=total_steps, completed=start_step, info="")
            self.bar.start()

    def tick(self, step: int) -> None:
        """Advance the bar (host-side only, called every step; rich redraws at its own pace)."""
        if self.bar is not None:
            self.bar.update(self.task, completed=step)

    def update(self, step: int, epoch: float | None, metrics: dict[str, Any], headline: str = "accuracy",
               unit: str = "ex/s") -> None:
        """New metrics at a log interval: refresh the bar's text, or print one plain line; the
        loss and the task's headline metric are shown (``epoch`` None: a run without epochs, such
        as reinforcement learning; ``unit`` names the rate ``metrics['examples_per_sec']``)."""
        shown = f"loss {_fmt(metrics.get('loss'))}"
        if headline != "loss":
            shown += f" {_SHORT.get(headline, headline)} {_fmt(metrics.get(headline))}"
        skipped = f" ({metrics['skipped']} skipped)" if metrics.get("skipped") else ""
        if self.bar is not None:
            info = f"{shown} {metrics['examples_per_sec']:.0f} {unit}{skipped}"
            self.bar.update(self.task, completed=step, info=info)
        elif self.enabled:
            when = f" epoch {epoch:.2f}" if epoch is not None else ""
            print(f"step {step}/{self.total}{when} {shown} lr {metrics['lr']:.3g} "
                  f"{metrics['examples_per_sec']:.0f} {unit}{skipped}", flush=True)

    def message(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(text)
        elif self.enabled:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def results_table(summary: dict[str, Any], title: str = "results") -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in summary.items():
        if isinstance(v, float):  # e.g. an RMSE in dollars: 53,041.2 rather than 5.304e+04
            # below 1e-3 (a small run's kWh) four significant digits, not 0.0000
            v = (f"{v:.4g}" if 0 < abs(v) < 1e-3 else f"{v:.4f}" if abs(v) < 1e4
                 else f"{v:,.1f}" if abs(v) < 1e12 else f"{v:.4g}")
        elif isinstance(v, int) and abs(v) >= 10_000:
            v = f"{v:,}"
        table.add_row(k, str(v))
    return table


def print_table(summary: dict[str, Any], title: str = "results") -> None:
    Console(file=sys.stdout).print(results_table(summary, title))
