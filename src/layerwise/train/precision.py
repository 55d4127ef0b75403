"""Mixed precision: autocast for bf16/fp16 and gradient scaling for fp16.

bf16 has fp32's exponent range, so it needs no loss scaling and runs on CPU and CUDA alike.
fp16 underflows small gradients without scaling (Micikevicius et al. 2018), so it uses
``torch.amp.GradScaler``, which exists for CUDA; on CPU fp16 autocast is slow and unscaled, so it
is refused rather than silently degraded.
"""

from __future__ import annotations

import contextlib

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class PrecisionError(ValueError):
    pass


def autocast(device_type: str, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=DTYPES[precision])


def grad_scaler(device_type: str, precision: str) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 on CUDA, None otherwise; fp16 elsewhere is refused."""
    if precision != "fp16":
        return None
    if device_type != "cuda":
        raise PrecisionError(
            f"train.precision=fp16 needs a CUDA GPU (it relies on gradient scaling), but the run is on "
            f"'{device_type}'. Use --train.precision=bf16 (works on CPU and GPU) or fp32.")
    return torch.amp.GradScaler("cuda")
