"""CPU training speed: what the allocator does with the activations freed after every step.

glibc's malloc serves blocks above a threshold (128 KiB, raised dynamically up to 32 MiB) with
their own mmap and gives them back to the OS when freed, and trims the heap's free top. A conv
net's activations are such blocks, allocated and freed every micro-batch, so every step faults
hundreds of MiB of fresh zero pages back in. Keeping freed memory in the process instead (what
jemalloc and tcmalloc do, and what PyTorch's CPU performance guide suggests preloading them for)
removes that: on the 2-core VM, convnet-half micro-batches of 256 went from 2.07 to 1.88 s per
1024 images (benchmarks/cifar_cpu_step.py), and a CIFAR-10 run from 30M page faults and 119 s of
kernel time to 0.26M and 4 s (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
_MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap and are reused (where glibc refuses, 32 MiB)
_TRIM_THRESHOLD = 2**31 - 1  # never give the heap's free top back to the OS

_done = False


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to serve blocks up to 1 GiB from its heap and keep freed memory for
    reuse instead of unmapping or trimming it.

    Once per process; a no-op (returns False) off Linux or without glibc. The cost is that memory
    freed by the training loop stays with the process (it is reused by the next step).
    """
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # glibc only (musl has no mallopt thresholds)  # noqa: B018
        mmap_ok = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) or libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        ok = bool(mmap_ok) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False
    _done = ok
    return ok
