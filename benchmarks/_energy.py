"""GPU energy from NVML's cumulative counter, for benchmarks: joules spent between two readings.

NVML (the library behind nvidia-smi) keeps, per GPU, the energy consumed since the driver was
loaded, in millijoules (``nvmlDeviceGetTotalEnergyConsumption``, Volta and newer). The energy of a
timed region is the difference of two readings, so nothing has to sample power in the background.
The counter is read by layerwise's own reader (:class:`layerwise.insight.energy.NvmlSource`:
``pynvml`` when installed, else ``libnvidia-ml.so.1`` through ctypes, the device found by its PCI
bus id). Where it cannot be read (no GPU, no driver, an older GPU) :class:`EnergyMeter` says why in
``reason`` and every reading is None: a benchmark reports "unavailable" and goes on.

Reference: NVIDIA Management Library API, nvmlDeviceGetTotalEnergyConsumption ("total energy
consumption for this GPU in millijoules (mJ) since the driver was last reloaded").
"""

from __future__ import annotations

import ctypes


class EnergyMeter:
    """Reads one GPU's cumulative energy counter, never raising after construction.

    ``EnergyMeter(cuda_index)``: ``read()`` gives joules since construction, or None when the
    meter is unavailable (``reason`` says why); ``backend`` is "nvml" when it reads."""

    def __init__(self, cuda_index: int = 0):
        self.backend: str | None = None
        self.reason = ""
        self._source = None
        try:
            import torch
            if not torch.cuda.is_available():
                self.reason = "no CUDA device"
                return
            from layerwise.insight.energy import NvmlSource

            self._source = NvmlSource([cuda_index])
            self.backend = "nvml"
        except Exception as e:  # noqa: BLE001  torch without CUDA, no pynvml nor driver library, an NVML error
            self.reason = f"NVML: {e}"

    @property
    def available(self) -> bool:
        return self._source is not None

    def read(self) -> float | None:
        """Joules consumed by the GPU since this meter was made, or None when unavailable."""
        if self._source is None:
            return None
        try:
            return self._source.read()
        except Exception:  # noqa: BLE001  a reading failing mid-run must not stop the benchmark
            return None


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
