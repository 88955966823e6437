"""Flat resident memory in long stage-one jobs: cap glibc's malloc arenas (issue 11.7).

glibc gives each thread that allocates large buffers (the decode prefetch, the writer and the model
thread) its own malloc arena and fragments them: measured +0.57 MiB resident per video over a
100-video job, flat with MALLOC_ARENA_MAX=2 (BENCHMARKS.md, "Stage one: memory of a long job").
`tjepa cache` and every worker process that runs a unit therefore cap the arenas themselves with
mallopt(M_ARENA_MAX), which applies to the threads a unit starts (prefetch, writer). A
MALLOC_ARENA_MAX in the environment is the user's choice and is left alone.
"""

from __future__ import annotations

import ctypes
import os

M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)
ARENAS = 2


def limit_malloc_arenas(n: int = ARENAS) -> bool:
    """Cap glibc malloc arenas at `n` for arenas created from now on; True when the cap was applied.

    Not applied when MALLOC_ARENA_MAX is set (glibc read it at start-up) or when the C library has
    no mallopt (musl, macOS: no per-thread arenas to fragment)."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(M_ARENA_MAX, n) == 1
