"""Fresh-process measurements shared by the side-by-side benchmarks (issue 14).

Parent side: :func:`run_child` starts one contestant in a fresh interpreter (any Python: a peer's
own virtual environment too), times the whole process and reads its result line;
:func:`summarize` and :func:`round_ratios` turn rounds into medians, spreads and ratios against
a baseline measured in the same round.

Child side (standard library only, so that every environment can import it): :class:`Phases`
marks the wall and CPU clocks at phase boundaries (imports, set-up, fit) and :func:`emit` prints
the result line that :func:`parse_result` reads back.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

RESULT_PREFIX = "BENCH_RESULT "


class ChildError(RuntimeError):
    """A contestant's process failed or printed no result line; the message has its last output."""


# ---------------------------------------------------------------- child side
class Phases:
    """Wall (``time.perf_counter``) and process CPU (``time.process_time``, all threads) clocks,
    read at each :meth:`mark`. Create it first thing in the child, before the heavy imports."""

    def __init__(self) -> None:
        self._last = (time.perf_counter(), time.process_time())
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}

    def mark(self, name: str) -> None:
        """End phase ``name`` now: its wall and CPU seconds since the previous mark."""
        now = (time.perf_counter(), time.process_time())
        self.seconds[name] = now[0] - self._last[0]
        self.cpu_seconds[name] = now[1] - self._last[1]
        self._last = now

    def result(self) -> dict:
        """{"<phase>_s", "<phase>_cpu_s" for each phase, "peak_rss_mb": the process's peak
        resident memory (ru_maxrss, KiB on Linux)}."""
        out = {f"{k}_s": v for k, v in self.seconds.items()}
        out |= {f"{k}_cpu_s": v for k, v in self.cpu_seconds.items()}
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return out


def emit(result: dict) -> None:
    """Print ``result`` as the child's result line (the last line :func:`parse_result` takes)."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# ---------------------------------------------------------------- parent side
def parse_result(stdout: str) -> dict:
    """The dict of the last line of ``stdout`` that starts with ``RESULT_PREFIX``; ChildError
    when there is none (the child died before it finished)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise ChildError("the child printed no result line")


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_child(argv: Sequence[str], env: dict[str, str] | None = None, timeout: float | None = None,
              cwd: str | Path | None = None) -> dict:
    """Run ``argv`` (a Python and its script) in a fresh process and return its result dict plus
    ``process_s``, the wall seconds of the whole process (interpreter start-up included).

    Raises ChildError, naming the exit status and the end of its stderr, when it fails, times out
    after ``timeout`` seconds or prints no result line."""
    start = time.perf_counter()
    try:
        out = subprocess.run(list(argv), check=False, env=env, capture_output=True, text=True, timeout=timeout,
                             cwd=cwd)
    except subprocess.TimeoutExpired:
        raise ChildError(f"{' '.join(map(str, argv[:2]))} ran past {timeout:.0f} s and was stopped") from None
    except OSError as e:
        raise ChildError(f"could not start {argv[0]}: {e}") from None
    process_s = time.perf_counter() - start
    if out.returncode != 0:
        raise ChildError(f"exit status {out.returncode}: {_tail(out.stderr) or _tail(out.stdout)}")
    try:
        result = parse_result(out.stdout)
    except ChildError:
        raise ChildError(f"no result line; stderr ends: {_tail(out.stderr)}") from None
    return result | {"process_s": process_s}


def child_env(threads: int, **extra: str) -> dict[str, str]:
    """This process's environment with every thread pool of the child set to ``threads``."""
    n = str(threads)
    return dict(os.environ, OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, **extra)


def summarize(values: Sequence[float | None]) -> dict | None:
    """{"median", "min", "max", "n"} of the values that are not None (None when none is)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def round_ratios(values: Sequence[float | None], baseline: Sequence[float | None]) -> list[float | None]:
    """values[i] / baseline[i] per round (each against the baseline measured in the same round);
    None where either is missing or the baseline is 0."""
    return [v / b if v is not None and b else None for v, b in zip(values, baseline, strict=True)]


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (what `uptime` shows): how busy the machine was."""
    return [round(x, 2) for x in os.getloadavg()]
