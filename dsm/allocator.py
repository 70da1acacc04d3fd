"""Keep freed tensor memory inside the process when training on a CPU with glibc.

glibc hands blocks above its mmap threshold (128 KiB, growing to at most 32 MiB) back to the kernel when they
are freed, and trims the top of its heap. A training step frees and re-allocates the same activation and
gradient buffers every step, so each step pays the kernel for mapping and zero-filling those pages again
(an epoch row's ``cpu_system_s`` shows it). With the settings below the ``cpu`` recipe trained at 158 instead
of 134 images/s on the 2-core Xeon host (``benchmarks/results/train_throughput_fer2013_48_2threads_isolated.md``).
PyTorch's CPU performance guide gets the same effect by
preloading jemalloc or tcmalloc; this does it with the C library the process already has. It changes where
memory comes from, never what is computed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_KEEP = 1 << 30  # blocks up to 1 GiB come from the heap, and up to 1 GiB of free heap top stays mapped
_SETTINGS = ((_M_MMAP_THRESHOLD, _KEEP), (_M_TRIM_THRESHOLD, _KEEP), (_M_TOP_PAD, 64 << 20))
OFF_ENV = "DSM_MALLOC_TUNING"  # "0" leaves glibc's defaults
_USER_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES", "LD_PRELOAD")

_applied: str | None = None


def keep_freed_memory() -> str:
    """Raise glibc's mmap and trim thresholds for this process, once; returns what the process's allocator is.

    Left alone (and said so in the returned text) where it is not glibc, where the user chose allocator
    settings themselves (glibc's ``MALLOC_*_`` variables, ``GLIBC_TUNABLES``, a preloaded allocator), or where
    ``DSM_MALLOC_TUNING=0``. The text goes into run records, so a run says which allocator it trained with.
    """
    global _applied
    if _applied is not None:
        return _applied
    if os.environ.get(OFF_ENV, "1") == "0":
        _applied = f"glibc defaults ({OFF_ENV}=0)"
    elif chosen := [k for k in _USER_ENV if os.environ.get(k)]:
        _applied = f"left to the user's {', '.join(chosen)}"
    elif platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        _applied = "the platform's default allocator"
    else:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        refused = [p for p, v in _SETTINGS if libc.mallopt(p, v) != 1]
        _applied = "glibc, freed memory kept (mmap and trim thresholds 1 GiB)"
        if refused:
            _applied = f"glibc, mallopt refused parameters {refused}"
    return _applied
