"""Flat memory by default (issue 11.7): stage one caps glibc's malloc arenas itself.

Counted with glibc's own malloc_info (one <heap> per arena) in fresh processes whose threads
allocate like the prefetch / writer / model threads do. The long-job figure is in BENCHMARKS.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import ctypes, re, sys, tempfile, threading
    if sys.argv[1] == "cap":
        from tjepa.pipeline.memory import limit_malloc_arenas
        assert limit_malloc_arenas()
    together = threading.Barrier(6)
    def churn():  # six threads alive at once, each holding arena memory (below the mmap threshold)
        together.wait()
        keep = [bytearray(64 * 1024) for _ in range(64)]
        together.wait()
        del keep[::2]
    threads = [threading.Thread(target=churn) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    path = tempfile.mktemp()
    fp = libc.fopen(path.encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(fp))
    libc.fclose(ctypes.c_void_p(fp))
    print(len(re.findall('<heap nr=', open(path).read())))
""")


def _arenas(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    res = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    return int(res.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc arenas")
def test_limit_malloc_arenas_caps_the_arenas_of_new_threads():
    assert _arenas("default") > 4  # glibc's default: a new arena per allocating thread, up to 8 x cores
    assert _arenas("cap") <= 2


def test_a_user_malloc_arena_max_is_left_alone(monkeypatch):
    from tjepa.pipeline.memory import limit_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False
