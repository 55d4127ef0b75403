"""CPU training speed: what the allocator does with the activations freed after every step.

glibc's malloc serves blocks above a threshold (128 KiB, raised dynamically up to 32 MiB) with
their own mmap and gives them back to the OS when freed, and trims the heap's free top. A conv
net's activations are such blocks, allocated and freed every micro-batch, so every step faults
hundreds of MiB of fresh zero pages back in. Keeping freed memory in the process instead (what
jemalloc and tcmalloc do, and what PyTorch's CPU performance guide suggests preloading them for)
removes that: on the 2-core VM, convnet-half steps of 256 images went from 1.5M to 0.14M page
faults and from 2.3-2.7 to 2.1-2.2 s per 1024 images (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest allowed value on 64-bit: blocks below are reused
_TRIM_THRESHOLD = 2**31 - 1  # never give the heap's free top back to the OS

_done = False


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed blocks up to 32 MiB for reuse instead of unmapping them.

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
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) & bool(libc.mallopt(_M_TRIM_THRESHOLD,
                                                                                         _TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False
    _done = ok
    return ok
