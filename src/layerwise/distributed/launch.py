"""``layerwise train RECIPE --nproc N``: torchrun's elastic launcher, started in this process.

It is exactly ``torchrun --nproc-per-node N -m layerwise train RECIPE ...`` (the same agent,
rendezvous, restarts and signal handling), with the multi-node flags passed through. A worker
that dies ends the job with one message naming its rank; with ``--max-restarts K`` the agent
starts the workers again and they resume from the run's last checkpoint (see
:func:`elastic_run_dir`).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from layerwise.distributed.parallel import DistributedError


def torchrun_args(nproc: int, worker_argv: list[str], *, nnodes: str = "1", node_rank: int = 0,
                  rdzv_endpoint: str = "", rdzv_id: str = "", max_restarts: int = 0) -> list[str]:
    """torchrun's argument list for ``python -m layerwise <worker_argv>`` on ``nproc`` ranks per node."""
    args = ["--nproc-per-node", str(nproc), "--nnodes", str(nnodes), "--max-restarts", str(max_restarts),
            "--monitor-interval", "0.5"]
    if rdzv_endpoint:
        args += ["--node-rank", str(node_rank), "--rdzv-backend", "c10d", "--rdzv-endpoint", rdzv_endpoint]
        if rdzv_id:
            args += ["--rdzv-id", rdzv_id]
    else:
        if str(nnodes) != "1":
            raise DistributedError(f"--nnodes {nnodes} needs --rdzv-endpoint HOST:PORT (a node every node can "
                                   f"reach, usually the first one) so that the nodes can find each other.")
        args += ["--standalone"]
    return args + ["-m", "layerwise", *worker_argv]


def launch(nproc: int, worker_argv: list[str], run_dir: str = "", **kw) -> int:
    """Run the workers under torchrun's agent and wait; 0 when every rank finished. A failure
    raises :class:`DistributedError` naming the rank(s) that failed first."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(torchrun_args(nproc, worker_argv, **kw))
    try:
        run(args)
    except ChildFailedError as e:
        if _first(e.failures)[1].exitcode == 2:  # the workers refused the config
            from layerwise.config import ConfigError
            raise ConfigError("the processes stopped at the configuration error printed above; fix it "
                              "and launch again.") from None
        raise DistributedError(describe_failures(e.failures, kw.get("max_restarts", 0), run_dir, nproc)) from None
    return 0


def _how(f) -> str:
    code = f.exitcode
    if code is not None and code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _order(failures: dict) -> list:
    """Failures, the cause first: the earliest that was not the agent's SIGTERM."""
    sigterm = -signal.SIGTERM.value
    return sorted(failures.items(), key=lambda kv: (kv[1].exitcode == sigterm, kv[1].timestamp, kv[0]))


def _first(failures: dict):
    return _order(failures)[0]


def describe_failures(failures: dict, max_restarts: int = 0, run_dir: str = "", nproc: int = 0) -> str:
    """One paragraph from torchrun's failure records: the rank that failed first and how; the
    ranks the agent stopped afterwards (SIGTERM) are listed after it."""
    (rank, f), rest = _first(failures), _order(failures)[1:]
    text = f"rank {rank} (local rank {f.local_rank}, pid {f.pid}) {_how(f)}"
    if rest:
        text += "; then " + ", ".join(f"rank {r} {_how(g)}" for r, g in rest)
    restarts = f" after {max_restarts} restart(s)" if max_restarts else ""
    return (f"the distributed job failed{restarts}: {text}. The agent stops the remaining ranks when one fails; "
            f"a rank's own error, if it printed one, is above. Continue from the last checkpoint with "
            f"`layerwise train --resume {run_dir or 'RUN_DIR'} --nproc {nproc or 'N'}` (any number of processes), "
            f"or add --max-restarts K to restart automatically.")


# ---------------------------------------------------------------------------------------- restarts
def restart_count() -> int:
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def _pointer(root: str) -> Path | None:
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    return Path(root) / ".elastic" / run_id if run_id else None


def remember_run_dir(root: str, run_dir: Path) -> None:
    """Rank 0 of an elastic job records its run directory, so that restarted workers find it."""
    p = _pointer(root)
    if p is not None:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(str(Path(run_dir).resolve()))


def forget_run_dir(root: str) -> None:
    """The job finished: its record is no longer needed."""
    p = _pointer(root)
    if p is not None:
        p.unlink(missing_ok=True)
        try:
            p.parent.rmdir()  # only when empty
        except OSError:
            pass


def elastic_run_dir(root: str) -> Path | None:
    """The run directory of this elastic job's earlier attempt, when the agent restarted us."""
    p = _pointer(root)
    if restart_count() == 0 or p is None or not p.is_file():
        return None
    path = Path(p.read_text().strip())
    return path if path.is_dir() else None
