"""dsm.allocator: after keep_freed_memory(), a large block comes from the heap instead of its own mmap."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

PROBE = """
import ctypes, sys
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
from dsm.allocator import keep_freed_memory
said = keep_freed_memory() if sys.argv[1] == "tune" else "untouched"
before = libc.mallinfo2().hblks
block = libc.malloc(64 << 20)  # above glibc's largest dynamic mmap threshold (32 MiB)
print(libc.mallinfo2().hblks - before, said, sep="|")
"""

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)


def _probe(mode: str, **env: str) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "DSM_MALLOC")) and k != "LD_PRELOAD"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env=clean | env, capture_output=True, text=True, check=True
    ).stdout.strip()
    mapped, said = out.split("|")
    return int(mapped), said


@glibc
def test_large_blocks_come_from_the_heap_once_tuned() -> None:
    assert _probe("untouched")[0] == 1  # glibc's default: a 64 MiB block is its own mapping
    mapped, said = _probe("tune")
    assert mapped == 0 and said.startswith("glibc, freed memory kept")


@glibc
def test_off_switch_and_user_settings_leave_glibc_alone() -> None:
    mapped, said = _probe("tune", DSM_MALLOC_TUNING="0")
    assert mapped == 1 and "DSM_MALLOC_TUNING=0" in said
    mapped, said = _probe("tune", MALLOC_TRIM_THRESHOLD_="262144")
    assert mapped == 1 and "MALLOC_TRIM_THRESHOLD_" in said
