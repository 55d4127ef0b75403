"""The process group, the device mesh and the parallel degrees of one run.

A run is launched as W processes (ranks) by torchrun, by ``layerwise train --nproc N`` (which
starts the same elastic launcher in-process) or by a cluster launcher such as Slurm that sets
RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. The ranks form a 3-D device mesh
(torchtitan's ParallelDims):

    dp_replicate x dp_shard x tp = W

- ``dp_replicate``: data-parallel groups that hold whole copies (DDP), or whole copies of the
  shards (HSDP, with fsdp and dist.dp_replicate > 1);
- ``dp_shard``: data-parallel ranks that shard parameters, gradients and optimizer state (FSDP2);
- ``tp``: ranks that split each transformer block's matrices (tensor parallel, DTensor).

Every data-parallel rank (dp_replicate x dp_shard of them) reads its own share of each batch;
the ranks of one tensor-parallel group read the same examples. :class:`Parallel` owns all of it:
the degrees, the mesh, the ranks, ``is_rank0``, metric reductions, and the translation of a
collective that timed out into an error that names the rank that fell behind.
"""

from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass
from typing import Any

import torch

from layerwise.config import ConfigError

STRATEGIES = ("none", "ddp", "fsdp", "tp", "fsdp+tp")


class DistributedError(RuntimeError):
    """A rank died, hung or could not join; the message names the rank and what to do."""


@dataclass(frozen=True)
class ParallelDims:
    """The parallel degrees of a run; they multiply to the world size (checked on creation)."""

    strategy: str
    world_size: int
    dp_replicate: int = 1
    dp_shard: int = 1
    tp: int = 1

    def __post_init__(self) -> None:
        product = self.dp_replicate * self.dp_shard * self.tp
        if min(self.dp_replicate, self.dp_shard, self.tp) < 1 or product != self.world_size:
            raise ConfigError(
                f"the parallel degrees do not fit the ranks: dist.strategy={self.strategy} asks for "
                f"dp_replicate {self.dp_replicate} x dp_shard {self.dp_shard} x tp {self.tp} = {product} "
                f"ranks, but the run has {self.world_size}. Choose degrees that multiply to "
                f"{self.world_size} (e.g. --dist.tp={_divisor_hint(self.world_size)}) or launch "
                f"{product} processes (--nproc {product}).")

    @classmethod
    def build(cls, strategy: str, world_size: int, tp: int = 0, dp_replicate: int = 1) -> ParallelDims:
        """Degrees for a strategy name (``auto`` = ddp on several ranks, none on one)."""
        if strategy == "auto":
            strategy = "ddp" if world_size > 1 else "none"
        if strategy not in STRATEGIES:
            raise ConfigError(f"dist.strategy must be auto or one of {', '.join(STRATEGIES)}, got '{strategy}'.")
        if strategy == "none":
            if world_size > 1:
                raise ConfigError(f"dist.strategy=none runs one process, but {world_size} were launched. "
                                  f"Use --dist.strategy=ddp (or fsdp, tp, fsdp+tp), or launch one process.")
            return cls("none", 1)
        if strategy != "fsdp" and dp_replicate != 1:
            raise ConfigError(f"dist.dp_replicate={dp_replicate} replicates FSDP shards (HSDP); it needs "
                              f"dist.strategy=fsdp, not {strategy}. Leave it at 1.")
        if strategy in ("ddp", "fsdp") and tp not in (0, 1):
            raise ConfigError(f"dist.tp={tp} needs dist.strategy=tp or fsdp+tp, not {strategy}.")
        if strategy == "ddp":
            return cls(strategy, world_size, dp_replicate=world_size)
        if strategy == "fsdp":
            if world_size % dp_replicate:
                raise ConfigError(f"dist.dp_replicate={dp_replicate} does not divide the {world_size} ranks; "
                                  f"choose a divisor of {world_size}.")
            return cls(strategy, world_size, dp_replicate=dp_replicate, dp_shard=world_size // dp_replicate)
        if strategy == "tp":
            return cls(strategy, world_size, tp=tp or world_size)
        tp = tp or 2  # fsdp+tp
        if tp < 2:
            raise ConfigError("dist.strategy=fsdp+tp needs dist.tp >= 2 (with tp=1 use dist.strategy=fsdp).")
        if world_size % tp:
            cls(strategy, world_size, dp_shard=max(world_size // tp, 1), tp=tp)  # raises the full message
        return cls(strategy, world_size, dp_shard=world_size // tp, tp=tp)

    @property
    def dp(self) -> int:
        """Data-parallel ranks: each reads its own share of a batch."""
        return self.dp_replicate * self.dp_shard

    @property
    def uses_fsdp(self) -> bool:
        return self.strategy in ("fsdp", "fsdp+tp")


def _divisor_hint(world_size: int) -> int:
    return next((d for d in range(2, world_size + 1) if world_size % d == 0), 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _attempt_store(rank: int, world: int, timeout: datetime.timedelta) -> dict[str, Any]:
    """Under torchrun after a restart: the rendezvous store, with keys prefixed by the attempt.

    torchrun's agent keeps one TCP store for all attempts, and the process group's keys (each
    rank's address) are the same in every attempt; a restarted rank could read the address of a
    rank of the attempt before and fail with "connection refused". A prefix per attempt keeps
    the attempts apart. The first attempt (and any other launcher) uses torch's env:// setup.
    """
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if restart == 0:
        return {}
    import torch.distributed as dist

    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # the agent hosts the store
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size=world,
                          is_master=not agent and rank == 0, timeout=timeout, multi_tenant=True)
    return {"store": dist.PrefixStore(f"layerwise/attempt{restart}", store), "rank": rank, "world_size": world}


def launched_ranks() -> int:
    """WORLD_SIZE set by torchrun / Slurm wrappers (1 when started as a plain process)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


class Parallel:
    """The ranks, degrees and device mesh of a run; a single-process run is the trivial case.

    ``Parallel.setup(cfg.dist, device)`` reads the launcher's environment, validates the degrees
    (before any process group exists, so a bad mesh fails at once), joins the process group
    (NCCL on CUDA, gloo on the CPU, with ``dist.timeout``) and builds the mesh.
    """

    def __init__(self, dims: ParallelDims, device: torch.device, rank: int = 0, local_rank: int = 0,
                 mesh: Any = None, timeout: float = 300.0, monitor_group: Any = None):
        self.dims, self.device, self.rank, self.local_rank = dims, device, rank, local_rank
        self.mesh, self.timeout, self._monitor = mesh, timeout, monitor_group
        self.run_dir = None  # set by the Trainer once known, for error messages

    # ------------------------------------------------------------------ creation
    @classmethod
    def setup(cls, dist_cfg: Any, device: torch.device) -> Parallel:
        world = launched_ranks()
        dims = ParallelDims.build(dist_cfg.strategy, world, dist_cfg.tp, dist_cfg.dp_replicate)
        if dims.strategy == "none":
            return cls(dims, device)
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh

        rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":  # one GPU per rank on each node
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        own_env = {}
        if world == 1 and "MASTER_ADDR" not in os.environ:
            # a strategy on one plain process (e.g. fsdp on one GPU): a real one-rank process group
            own_env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0", "WORLD_SIZE": "1"}
            os.environ.update(own_env)
        timeout = datetime.timedelta(seconds=dist_cfg.timeout)
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, timeout=timeout, **_attempt_store(rank, world, timeout))
        # a gloo group beside the main one: after a timeout it still answers monitored_barrier,
        # which names the ranks that did not arrive
        monitor = dist.new_group(backend="gloo", timeout=timeout)
        mesh = init_device_mesh(device.type, (dims.dp_replicate, dims.dp_shard, dims.tp),
                                mesh_dim_names=("dp_replicate", "dp_shard", "tp"))
        par = cls(dims, device, rank, local_rank, mesh, dist_cfg.timeout, monitor)
        par._own_env = list(own_env)  # removed again by close(): the process is as it was
        return par

    # ------------------------------------------------------------------ who am I
    @property
    def enabled(self) -> bool:
        """True when there is a process group (any strategy but none)."""
        return self.mesh is not None

    @property
    def world_size(self) -> int:
        return self.dims.world_size

    @property
    def is_rank0(self) -> bool:
        return self.rank == 0

    @property
    def dp_rank(self) -> int:
        """This rank's index among the data-parallel ranks (which share of each batch it reads)."""
        if not self.enabled:
            return 0
        return self.mesh.get_local_rank("dp_replicate") * self.dims.dp_shard + self.mesh.get_local_rank("dp_shard")

    @property
    def dp_size(self) -> int:
        return self.dims.dp

    def submesh(self, *names: str) -> Any:
        return self.mesh[names[0]] if len(names) == 1 else self.mesh[names]

    # ------------------------------------------------------------------ collectives
    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of ``t`` over the data-parallel ranks (tensor-parallel ranks hold the same values,
        so the world sum is divided by tp)."""
        if not self.enabled or self.world_size == 1:
            return t
        import torch.distributed as dist

        out = t.clone()
        self.guard(dist.all_reduce, out)
        return out / self.dims.tp if self.dims.tp > 1 else out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (e.g. the run directory's path)."""
        if not self.enabled or self.world_size == 1:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_rank0 else None]
        self.guard(dist.broadcast_object_list, box, src=0, group=self._monitor)
        return box[0]

    def barrier(self) -> None:
        if self.enabled and self.world_size > 1:
            import torch.distributed as dist

            self.guard(dist.barrier, group=self._monitor)

    def guard(self, fn, *args, **kwargs):
        """Run a collective; a timeout or a lost peer becomes a :class:`DistributedError`."""
        try:
            return fn(*args, **kwargs)
        except DistributedError:
            raise
        except RuntimeError as e:
            if not is_collective_failure(e):
                raise
            raise self.failure(e) from None

    def failure(self, err: BaseException) -> DistributedError:
        """The error for a collective that failed: asks the monitor group which ranks are missing
        (gloo's monitored_barrier names them) and says how to continue."""
        import torch.distributed as dist

        missing = ""
        if self._monitor is not None:
            for _ in range(2):  # a check that fails without naming ranks is tried once more
                try:
                    dist.monitored_barrier(group=self._monitor, wait_all_ranks=True,
                                           timeout=datetime.timedelta(seconds=min(self.timeout, 30.0)))
                    missing = "every rank answered a check afterwards, so the failure was transient or in the network"
                    break
                except RuntimeError as e:
                    text = str(e)
                    if "failed to pass monitoredBarrier" in text:
                        missing = text.split("]:", 1)[-1].strip().rstrip(".")
                        missing = missing.replace("Ranks", "rank(s)").replace("Rank", "rank")
                        break
                    if self.rank == 0:
                        check = text.strip().splitlines()[0].split("] ", 1)[-1][:120] if text.strip() else ""
                        missing = f"a check of every rank failed too ({check}), so another rank has exited or hung"
                    else:
                        missing = "rank 0 did not answer a check either, so it has probably exited"
                        break
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        first = first.split("] ", 1)[-1][:160]  # gloo prefixes its source file
        return DistributedError(
            f"rank {self.rank}: a collective operation did not complete within dist.timeout={self.timeout:g} s "
            f"or lost its peer ({first}); {missing or 'another rank probably died or hung'}. Look at that "
            f"rank's log for the cause. The run can continue from its last checkpoint with "
            f"`layerwise train --resume {self.run_dir or 'RUN_DIR'} --nproc {self.world_size}` (any number of "
            f"processes works).")

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            for key in getattr(self, "_own_env", []):
                os.environ.pop(key, None)


def is_collective_failure(e: BaseException) -> bool:
    """Does this exception look like a timed-out or broken collective (gloo or NCCL)?"""
    text = str(e).lower()
    name = type(e).__name__
    return name in ("DistBackendError", "DistNetworkError") or any(
        s in text for s in ("timed out", "timeout", "connection closed", "connection reset",
                            "broken pipe", "nccl", "gloo"))
