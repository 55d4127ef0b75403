"""GPU energy from NVML's cumulative counter, for benchmarks: joules spent between two readings.

NVML (the library behind nvidia-smi) keeps, per GPU, the energy consumed since the driver was
loaded, in millijoules (``nvmlDeviceGetTotalEnergyConsumption``, Volta and newer). The energy of a
timed region is the difference of two readings, so nothing has to sample power in the background.
The counter is read through ``pynvml`` when it is installed, else straight from
``libnvidia-ml.so.1`` with ctypes (the device image need not have pynvml). Where neither works (no
GPU, no driver, an older GPU) :class:`EnergyMeter` says why in ``reason`` and every reading is None:
a benchmark reports "unavailable" and goes on.

Reference: NVIDIA Management Library API, nvmlDeviceGetTotalEnergyConsumption ("total energy
consumption for this GPU in millijoules (mJ) since the driver was last reloaded").
"""

from __future__ import annotations

import ctypes
import os


class EnergyMeter:
    """Reads one GPU's cumulative energy counter.

    ``EnergyMeter(cuda_index)`` finds the NVML handle of the CUDA device ``cuda_index`` (by its
    PCI bus id when torch reports one, since NVML numbers devices without regard to
    CUDA_VISIBLE_DEVICES). ``read()`` gives joules since the driver loaded, or None when the
    meter is unavailable (``reason`` says why). Never raises after construction.
    """

    def __init__(self, cuda_index: int = 0):
        self.backend: str | None = None
        self.reason = ""
        self._read = None
        try:
            import torch
            if not torch.cuda.is_available():
                self.reason = "no CUDA device"
                return
            bus_id = _pci_bus_id(torch.cuda.get_device_properties(cuda_index))
        except Exception as e:  # noqa: BLE001  torch without CUDA support, a broken driver
            self.reason = f"CUDA unavailable ({e})"
            return
        for backend in (self._pynvml, self._ctypes):
            try:
                self._read = backend(cuda_index, bus_id)
                self.backend = backend.__name__.lstrip("_")
                if self._read() is not None:
                    return
            except Exception as e:  # noqa: BLE001  missing library, missing symbol, NVML error code
                self.reason += f"{backend.__name__.lstrip('_')}: {e}; "
            self._read, self.backend = None, None
        self.reason = self.reason.rstrip("; ") or "NVML gave no energy reading"

    @property
    def available(self) -> bool:
        return self._read is not None

    def read(self) -> float | None:
        """Joules consumed by the GPU since the driver loaded, or None when unavailable."""
        if self._read is None:
            return None
        try:
            return self._read()
        except Exception:  # noqa: BLE001  a reading failing mid-run must not stop the benchmark
            return None

    @staticmethod
    def _pynvml(index: int, bus_id: str | None):
        import pynvml

        pynvml.nvmlInit()
        handle = None
        if bus_id:
            try:
                handle = pynvml.nvmlDeviceGetHandleByPciBusId(bus_id.encode())
            except Exception:  # noqa: BLE001  an NVML error, or a binding that wants another string type
                handle = None
        if handle is None:
            handle = pynvml.nvmlDeviceGetHandleByIndex(_nvml_index(index))
        return lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0  # mJ -> J

    @staticmethod
    def _ctypes(index: int, bus_id: str | None):
        lib = ctypes.CDLL("libnvidia-ml.so.1")

        def check(code: int, what: str) -> None:
            if code != 0:  # NVML_SUCCESS
                raise RuntimeError(f"{what} returned NVML error {code}")

        check(lib.nvmlInit_v2(), "nvmlInit_v2")
        handle = ctypes.c_void_p()
        if not bus_id or lib.nvmlDeviceGetHandleByPciBusId_v2(bus_id.encode(), ctypes.byref(handle)) != 0:
            check(lib.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(_nvml_index(index)), ctypes.byref(handle)),
                  "nvmlDeviceGetHandleByIndex_v2")
        energy = ctypes.c_ulonglong()

        def read() -> float:
            check(lib.nvmlDeviceGetTotalEnergyConsumption(handle, ctypes.byref(energy)),
                  "nvmlDeviceGetTotalEnergyConsumption")
            return energy.value / 1000.0  # mJ -> J

        return read


def _pci_bus_id(props) -> str | None:
    """NVML's PCI bus id string ("00000000:3B:00.0") of a torch device, where torch tells it."""
    bus = getattr(props, "pci_bus_id", None)
    if isinstance(bus, str):
        return bus or None
    dev, dom = getattr(props, "pci_device_id", None), getattr(props, "pci_domain_id", None)
    if isinstance(bus, int) and isinstance(dev, int) and isinstance(dom, int):
        return f"{dom:08X}:{bus:02X}:{dev:02X}.0"
    return None


def _nvml_index(cuda_index: int) -> int:
    """NVML's index of CUDA device ``cuda_index`` when CUDA_VISIBLE_DEVICES lists plain numbers."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if cuda_index < len(visible) and visible[cuda_index].isdigit():
        return int(visible[cuda_index])
    return cuda_index


class EnergyWindow:
    """``with EnergyWindow(meter) as w: ...`` -> ``w.joules`` spent inside (None if unavailable).
    The caller synchronizes the device at both ends so the window holds the GPU work."""

    def __init__(self, meter: EnergyMeter | None):
        self.meter, self.joules = meter, None
        self._start = None

    def __enter__(self):
        self._start = self.meter.read() if self.meter else None
        return self

    def __exit__(self, *exc) -> None:
        end = self.meter.read() if self.meter else None
        if self._start is not None and end is not None:
            self.joules = end - self._start


def driver_version() -> str | None:
    """The NVIDIA driver's version from NVML (pynvml or ctypes), or None where NVML is absent."""
    try:
        import pynvml

        pynvml.nvmlInit()
        v = pynvml.nvmlSystemGetDriverVersion()
        return v.decode() if isinstance(v, bytes) else v
    except Exception:  # noqa: BLE001, S110  no pynvml, or no driver: try the library itself
        pass
    try:
        lib = ctypes.CDLL("libnvidia-ml.so.1")
        if lib.nvmlInit_v2() != 0:
            return None
        buf = ctypes.create_string_buffer(96)
        return buf.value.decode() if lib.nvmlSystemGetDriverVersion(buf, ctypes.c_uint(96)) == 0 else None
    except Exception:  # noqa: BLE001  no NVML on this machine
        return None
