"""Energy and carbon of training and evaluation, read from the hardware's counters where it has them.

Three ways to know the joules a run spent, each named in what it reports:

- ``nvml``: an NVIDIA GPU's cumulative energy counter (``nvmlDeviceGetTotalEnergyConsumption``,
  millijoules since the driver loaded; Volta and newer), for the devices this process trains on.
  Read through ``pynvml`` (``pip install 'layerwise[energy]'``, the nvidia-ml-py package), else
  straight from ``libnvidia-ml.so.1`` with ctypes: the driver ships that library, so a GPU
  machine measures without the extra.
- ``rapl``: Intel's Running Average Power Limit counters, which Linux exposes under
  ``/sys/class/powercap`` (AMD Zen CPUs through the same driver, as ``intel-rapl:N``, or
  ``amd-rapl:N`` where a kernel names them so). Only the top-level package zones are summed: their
  sub-zones (core, uncore, dram) are parts of the package's figure and would count twice;
  ``intel-rapl-mmio`` repeats package 0 through another interface and is left out too. A package
  counter (``energy_uj``) wraps at ``max_energy_range_uj`` (about 262 kJ: ~20 minutes at 200 W);
  a reading below the last one is taken as one wrap. The counter covers the whole socket, every
  process on it, not only this one. Many systems let only root read it (since CVE-2020-8694);
  then the estimate below stands in.
- ``estimated``: no counter. The CPU's share is the process's CPU time (every thread, and the
  child processes already reaped, e.g. loader workers of finished epochs) x ``run.cpu_watts_per_core``;
  a GPU without NVML counts ``run.gpu_watts`` for the wall time. Always labelled ``estimated``.

Carbon: grams of CO2 = kWh x ``run.grid_gco2_per_kwh`` (default 480 g/kWh, the world's average
carbon intensity of electricity in 2023, Ember, Global Electricity Review 2024). 1 kWh = 3.6e6 J.

Several processes (DDP and the other strategies): each rank meters its own GPU and its own CPU
time, and the totals are summed over all ranks with one all_reduce when a metrics line or the
summary is written (never per step). RAPL counts a whole node's sockets, so only the node's local
rank 0 reads it (the others would multiply it).

Why not Zeus or CodeCarbon: both read these same counters, but Zeus (0.16) brings amdsmi, httpx,
pydantic and tyro, and CodeCarbon (3.3) two dozen packages (requests, pydantic, typer, ...) and
reports to its web API by default; the counters are a few file reads and one NVML call, which
this module makes itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

POWERCAP = "/sys/class/powercap"  # where Linux exposes RAPL (tests point it at a fake tree)
J_PER_KWH = 3.6e6
# run.cpu_watts_per_core: Intel Xeon Gold 6248's TDP (150 W) over its 20 cores (Intel ARK)
DEFAULT_CPU_WATTS_PER_CORE = 7.5
# run.gpu_watts, for a GPU without NVML: an A100 80GB PCIe's maximum board power (NVIDIA data sheet)
DEFAULT_GPU_WATTS = 300.0
# run.grid_gco2_per_kwh: world average 2023, Ember "Global Electricity Review 2024"
DEFAULT_GRID_GCO2_PER_KWH = 480.0
_ZONE = re.compile(r"^(intel|amd)-rapl:\d+$")  # a top-level zone; sub-zones are intel-rapl:0:1


class RaplSource:
    """The CPU packages' RAPL counters under ``root`` (default :data:`POWERCAP`).

    ``read()`` gives joules since construction, summed over the package zones, counting one
    wrap-around when a counter reads lower than before (read it at least once per wrap period,
    ~262 kJ per package). Raises OSError at construction when there is no readable package zone
    (``reason`` of :func:`rapl_or_reason` says which)."""

    name, method = "cpu", "rapl"

    def __init__(self, root: str | os.PathLike | None = None):
        root = Path(root if root is not None else POWERCAP)
        self.zones: list[tuple[Path, int]] = []  # (energy_uj file, max_energy_range_uj)
        for d in sorted(root.glob("*-rapl:*")):
            name_file = d / "name"
            if not _ZONE.match(d.name) or not name_file.is_file():
                continue
            if not name_file.read_text().strip().startswith("package"):
                continue  # psys covers the platform and would hold the packages again
            self.zones.append((d / "energy_uj", int((d / "max_energy_range_uj").read_text())))
        if not self.zones:
            raise OSError(f"no RAPL package zone under {root}")
        self._last = [self._raw(f) for f, _ in self.zones]  # PermissionError when root-only
        self._joules = 0.0
        self.detail = f"{len(self.zones)} package{'s' if len(self.zones) > 1 else ''}"

    @staticmethod
    def _raw(f: Path) -> int:
        return int(f.read_text())

    def read(self) -> float:
        for i, (f, top) in enumerate(self.zones):
            now = self._raw(f)
            delta = now - self._last[i] if now >= self._last[i] else top - self._last[i] + now
            self._joules += delta * 1e-6  # uJ -> J
            self._last[i] = now
        return self._joules


class NvmlSource:
    """The cumulative energy counters of the CUDA devices ``cuda_indices`` (this process's).

    ``read()`` gives joules since construction. Raises (ImportError, OSError, RuntimeError, or
    pynvml's NVMLError) at construction when NVML cannot read every device: a GPU older than
    Volta, no driver. The device is found by its PCI bus id when torch gives one, since NVML
    numbers devices without regard to CUDA_VISIBLE_DEVICES."""

    name, method = "gpu", "nvml"

    def __init__(self, cuda_indices: list[int], bus_ids: list[str | None] | None = None):
        bus_ids = bus_ids if bus_ids is not None else [_pci_bus_id(i) for i in cuda_indices]
        try:
            readers = [_pynvml_reader(i, b) for i, b in zip(cuda_indices, bus_ids)]
        except ImportError:  # no nvidia-ml-py: the driver's library itself
            readers = [_ctypes_reader(i, b) for i, b in zip(cuda_indices, bus_ids)]
        self._readers = readers
        self._start = [r() for r in readers]
        self.detail = ", ".join(f"cuda:{i}" for i in cuda_indices)

    def read(self) -> float:
        return sum(r() - s for r, s in zip(self._readers, self._start))


class CpuTimeEstimate:
    """Estimated CPU energy: CPU seconds of this process (all threads, plus reaped children) x
    ``watts_per_core``. ``read()`` gives joules since construction."""

    name, method = "cpu", "estimated"

    def __init__(self, watts_per_core: float):
        self.watts = watts_per_core
        self._start = cpu_seconds()
        self.detail = f"CPU time x {watts_per_core:g} W per core"

    def read(self) -> float:
        return (cpu_seconds() - self._start) * self.watts


class GpuTimeEstimate:
    """Estimated GPU energy where NVML cannot be read: wall seconds x ``watts`` x devices."""

    name, method = "gpu", "estimated"

    def __init__(self, watts: float, devices: int = 1):
        self.watts, self.devices = watts, devices
        self._start = time.perf_counter()
        self.detail = f"wall time x {watts:g} W"

    def read(self) -> float:
        return (time.perf_counter() - self._start) * self.watts * self.devices


def cpu_seconds() -> float:
    """CPU seconds of this process (user + system, every thread) and of its reaped children
    (the children only where the ``resource`` module exists: not on Windows)."""
    try:
        import resource
    except ImportError:
        return time.process_time()
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + c.ru_utime + c.ru_stime


def _pci_bus_id(cuda_index: int) -> str | None:
    try:
        import torch

        props = torch.cuda.get_device_properties(cuda_index)
    except Exception:  # noqa: BLE001  no CUDA build, no device: NVML's own numbering
        return None
    bus, dev, dom = (getattr(props, k, None) for k in ("pci_bus_id", "pci_device_id", "pci_domain_id"))
    if isinstance(bus, int) and isinstance(dev, int) and isinstance(dom, int):
        return f"{dom:08X}:{bus:02X}:{dev:02X}.0"
    return bus if isinstance(bus, str) and bus else None


def _nvml_index(cuda_index: int) -> int:
    """NVML's index of CUDA device ``cuda_index`` when CUDA_VISIBLE_DEVICES lists plain numbers."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return int(visible[cuda_index]) if cuda_index < len(visible) and visible[cuda_index].isdigit() else cuda_index


def _pynvml_reader(cuda_index: int, bus_id: str | None):
    import pynvml

    pynvml.nvmlInit()
    handle = None
    if bus_id:
        with contextlib.suppress(Exception):  # an NVML error: fall back to the index
            handle = pynvml.nvmlDeviceGetHandleByPciBusId(bus_id.encode())
    if handle is None:
        handle = pynvml.nvmlDeviceGetHandleByIndex(_nvml_index(cuda_index))
    return lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) * 1e-3  # mJ -> J


def _ctypes_reader(cuda_index: int, bus_id: str | None):
    lib = ctypes.CDLL("libnvidia-ml.so.1")  # OSError without a driver

    def check(code: int, what: str) -> None:
        if code != 0:  # NVML_SUCCESS
            raise RuntimeError(f"{what} returned NVML error {code}")

    check(lib.nvmlInit_v2(), "nvmlInit_v2")
    handle = ctypes.c_void_p()
    if not bus_id or lib.nvmlDeviceGetHandleByPciBusId_v2(bus_id.encode(), ctypes.byref(handle)) != 0:
        check(lib.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(_nvml_index(cuda_index)), ctypes.byref(handle)),
              "nvmlDeviceGetHandleByIndex_v2")
    mj = ctypes.c_ulonglong()

    def read() -> float:
        check(lib.nvmlDeviceGetTotalEnergyConsumption(handle, ctypes.byref(mj)), "nvmlDeviceGetTotalEnergyConsumption")
        return mj.value * 1e-3

    return read


class EnergyMeter:
    """Joules spent since :meth:`start`, per source, each with its method.

    ``EnergyMeter.for_device(device, ...)`` picks the sources (module docstring): RAPL or the CPU
    estimate for the host (none on a node's non-zero local ranks when RAPL is read), NVML or the
    GPU estimate for a CUDA device. ``read()`` -> {"cpu": J, "gpu": J}; ``method`` names them
    ("rapl", "nvml+rapl", "nvml+estimated", "estimated"); ``measured`` is False whenever any part
    is estimated. Reading costs a few file reads and NVML calls: do it at log time, not per step.
    """

    def __init__(self, sources: list[Any], reasons: list[str] = ()):
        self.sources = sources
        self.reasons = list(reasons)  # why a counter was not used (for the run's notes)
        self._base = [0.0] * len(sources)

    @classmethod
    def for_device(cls, device: Any = "cpu", cpu_watts_per_core: float = DEFAULT_CPU_WATTS_PER_CORE,
                   gpu_watts: float = DEFAULT_GPU_WATTS, local_rank: int = 0) -> EnergyMeter:
        """The meter of a process that computes on ``device`` (a torch.device or its name)."""
        sources, reasons = [], []
        try:
            rapl = RaplSource()
            if local_rank == 0:
                sources.append(rapl)
        except (OSError, ValueError) as e:  # no powercap tree, root-only counters, a malformed file
            reasons.append(f"RAPL: {e}")
            sources.append(CpuTimeEstimate(cpu_watts_per_core))
        kind, index = (device.type, device.index) if hasattr(device, "type") else (str(device).split(":")[0], None)
        if kind == "cuda":
            if index is None:
                index = _current_cuda_index()
            try:
                sources.insert(0, NvmlSource([index]))
            except Exception as e:  # noqa: BLE001  no pynvml nor driver library, an old GPU, an NVML error
                reasons.append(f"NVML: {e}")
                sources.insert(0, GpuTimeEstimate(gpu_watts))
        return cls(sources, reasons)

    def start(self) -> EnergyMeter:
        self._base = [s.read() for s in self.sources]
        return self

    def read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for s, b in zip(self.sources, self._base):
            out[s.name] = out.get(s.name, 0.0) + s.read() - b
        return out

    def total(self) -> float:
        return sum(self.read().values())

    @property
    def method(self) -> str:
        return "+".join(dict.fromkeys(s.method for s in self.sources)) or "none"

    @property
    def measured(self) -> bool:
        return all(s.method != "estimated" for s in self.sources)

    def describe(self) -> str:
        """e.g. "gpu: nvml (cuda:0); cpu: estimated (CPU time x 7.5 W per core)"."""
        return "; ".join(f"{s.name}: {s.method} ({s.detail})" for s in self.sources)


def _current_cuda_index() -> int:
    import torch

    return torch.cuda.current_device()


def significant(x: float, digits: int = 6) -> float:
    """``x`` rounded to ``digits`` significant figures (0.0 stays 0.0). Energies span from
    millijoules (a ten-step test run) to gigajoules (a cluster week): a fixed number of decimals
    would erase the small ones and print noise digits on the large ones."""
    return float(f"{x:.{digits}g}")


def carbon_fields(prefix: str, joules: float, grid_gco2_per_kwh: float) -> dict[str, float]:
    """{prefix_j, prefix_kwh, prefix_gco2} of ``joules`` at a grid intensity in gCO2/kWh; the
    joules to 6 significant figures and the kWh and grams computed from that figure, so the three
    fields agree with each other to the last digit shown."""
    j = significant(joules)
    kwh = j / J_PER_KWH
    return {f"{prefix}_j": j, f"{prefix}_kwh": kwh, f"{prefix}_gco2": kwh * grid_gco2_per_kwh}


@contextlib.contextmanager
def metered(device: Any, run_cfg: Any) -> Iterator[dict[str, Any]]:
    """``with metered(device, cfg.run) as e: ...`` fills ``e`` on exit with energy_j/_kwh/_gco2
    and energy_method of the block (empty when ``run_cfg.energy`` is off); for one-shot commands
    such as ``layerwise eval``."""
    out: dict[str, Any] = {}
    if not getattr(run_cfg, "energy", True):
        yield out
        return
    meter = EnergyMeter.for_device(device, run_cfg.cpu_watts_per_core, run_cfg.gpu_watts).start()
    yield out
    out |= carbon_fields("energy", meter.total(), run_cfg.grid_gco2_per_kwh) | {"energy_method": meter.method}


class TrainingEnergy:
    """The energy of a training run, split into training and evaluation, carried across resumes.

    The Trainer calls :meth:`start` when its loop begins, runs every evaluation inside
    ``with energy.phase("eval"):``, and asks :meth:`log_fields` (cumulative joules, for
    metrics.jsonl) and :meth:`summary_fields` (for summary.json and the results table). The
    counters are read only then and at phase changes. With several processes ``par`` (a
    :class:`layerwise.distributed.parallel.Parallel`) sums the ranks' joules with one all_reduce
    per call of those two; a resumed run starts from the sums its checkpoint carried
    (:meth:`state_dict`, rank 0 holds them). ``run_cfg`` is the run section (``run.energy`` off:
    every field is empty and nothing is read)."""

    def __init__(self, run_cfg: Any, device: Any, par: Any = None):
        self.enabled = bool(run_cfg.energy)
        self.grid = run_cfg.grid_gco2_per_kwh
        self.par = par
        self.meter = (EnergyMeter.for_device(device, run_cfg.cpu_watts_per_core, run_cfg.gpu_watts,
                                             getattr(par, "local_rank", 0)) if self.enabled else None)
        self._joules = {"train": 0.0, "eval": 0.0}  # this process's, this session's
        self._carried = {"train": 0.0, "eval": 0.0}  # earlier sessions', all ranks (rank 0 only)
        self._phase, self._last = "train", 0.0
        # training examples (tokens, environment steps) of earlier sessions whose joules are unknown:
        # a checkpoint saved without metering (older layerwise, or run.energy=false) carries none
        self.unmetered_examples = 0

    def start(self) -> None:
        if self.meter is not None:
            self.meter.start()
            self._last = 0.0

    def _settle(self) -> None:
        """Credit the joules since the last reading to the current phase."""
        now = self.meter.total()
        self._joules[self._phase] += now - self._last
        self._last = now

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Credit the energy spent inside to ``name`` ("eval"); nested calls count once."""
        if self.meter is None or name == self._phase:
            yield
            return
        self._settle()
        before, self._phase = self._phase, name
        try:
            yield
        finally:
            self._settle()
            self._phase = before

    def totals(self) -> dict[str, float]:
        """{"train": J, "eval": J} so far, every session and every rank (a collective with ranks)."""
        self._settle()
        mine = [self._joules[k] + self._carried[k] for k in ("train", "eval")]
        if self.par is not None and self.par.enabled and self.par.world_size > 1:
            import torch
            import torch.distributed as dist

            t = torch.tensor(mine, dtype=torch.float64, device=self.par.device)
            self.par.guard(dist.all_reduce, t)
            mine = t.tolist()
        return {"train": mine[0], "eval": mine[1]}

    def log_fields(self) -> dict[str, float]:
        """Cumulative joules for a metrics.jsonl line (collective with ranks: every rank calls it)."""
        if self.meter is None:
            return {}
        t = self.totals()
        return {"energy_train_j": significant(t["train"]), "energy_eval_j": significant(t["eval"])}

    def summary_fields(self, examples_seen: int) -> dict[str, Any]:
        """energy_method, energy_train_j/_kwh/_gco2, energy_per_example_j (training joules per
        training example; per token for a language model), energy_eval_j/_kwh/_gco2,
        grid_gco2_per_kwh and energy_sources (collective with ranks)."""
        if self.meter is None:
            return {}
        t = self.totals()
        metered = max(examples_seen - self.unmetered_examples, 0)
        out = ({"energy_method": self.meter.method} | carbon_fields("energy_train", t["train"], self.grid)
               | {"energy_per_example_j": t["train"] / max(metered, 1)}
               | carbon_fields("energy_eval", t["eval"], self.grid)
               | {"grid_gco2_per_kwh": self.grid, "energy_sources": self.meter.describe()})
        if self.unmetered_examples:
            # the figures cover part of the run: say which part rather than pass it off as the whole
            out |= {"energy_unmetered_examples": self.unmetered_examples,
                    "energy_note": f"the joules of the run's first {self.unmetered_examples} training examples "
                                   f"(tokens for a language model, environment steps for an agent) are unknown: "
                                   f"it resumed from a checkpoint saved without energy metering (an older layerwise, "
                                   f"or run.energy=false); the energy fields cover the {metered} after them"}
        return out

    def state_dict(self) -> dict[str, float] | None:
        """The joules so far over every rank, for a checkpoint (collective with ranks), with
        ``unmetered_examples`` (the examples before them whose joules are unknown); None when
        metering is off (the joules up to that checkpoint are then unknown)."""
        if self.meter is None:
            return None
        return self.totals() | {"unmetered_examples": self.unmetered_examples}

    def load_state_dict(self, state: dict[str, float] | None, examples_seen: int = 0) -> None:
        """Carry a checkpoint's joules (on rank 0; the others' share is in its sums).

        ``examples_seen``: the checkpoint's training examples (tokens; environment steps). A
        checkpoint without joules (saved before energy metering existed, or with run.energy=false)
        leaves those examples' energy unknown: :meth:`summary_fields` then says so and divides the
        joules per example by the examples after it, not by all of them."""
        if not state or "train" not in state:
            self.unmetered_examples = int(examples_seen)
            self._carried = {"train": 0.0, "eval": 0.0}
            return
        self.unmetered_examples = int(state.get("unmetered_examples", 0))
        if self.par is None or self.par.is_rank0:
            self._carried = {k: float(state.get(k, 0.0)) for k in ("train", "eval")}
