"""Decode in worker processes, several videos at once, handed to the model worker in input order.

One decode stream (the prefetch thread) delivers about one EgoDex episode per second; a GPU encodes
tens. Decoding (probe, sampling, labels, resized decode, thumbnail: `episode_io.load_episode`) is
independent per video, so N processes decode N videos in parallel (across videos, nothing to hand
over between frames), each decoder keeping its frame threading, the combination that measured fastest
(BENCHMARKS.md, 3d). At most `depth` videos are in flight (submitted, decoding or decoded and
waiting), so memory stays bounded however long the job is.

Failure isolation matches the thread prefetcher: an exception of one video comes back as that
video's result. A decode process that dies (a crashing decoder) breaks the whole process pool; the
video at the head is then rerun alone in a fresh pool, so only the video that kills a process on
its own is recorded as failed, and the videos in flight with it are decoded again.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Generic, TypeVar

from tjepa.errors import TjepaError

T = TypeVar("T")
R = TypeVar("R")

# One pool per process and size, reused across units (starting processes costs seconds).
_POOLS: dict[int, ProcessPoolExecutor] = {}


class DecodeWorkerDied(RuntimeError):
    """A decode process exited while decoding this video alone (the decoder crashed on it)."""


def _init_decoder_process(owner: int) -> None:
    # torch (thumbnails) would otherwise start a thread per core in every decode process.
    import sys
    import threading
    import time

    os.environ["OMP_NUM_THREADS"] = "1"  # read when torch is first imported (the thumbnail resize)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)

    def watch() -> None:  # a model worker killed without shutdown (dask closing it) leaves no orphans
        while os.getppid() == owner:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="tjepa-decode-owner").start()


def _call(fn: Callable, item):
    """Runs in a decode process: an error that would not unpickle in the parent (which breaks the pool
    and looks like a crash) is sent as a RuntimeError with its type and message instead."""
    import copy

    try:
        return fn(item)
    except Exception as err:
        try:  # deepcopy rebuilds the error through the same __reduce__ that unpickling uses
            copy.deepcopy(err)
        except Exception:
            raise RuntimeError(f"{type(err).__name__}: {err}") from None
        raise


def _new_pool(n_workers: int) -> ProcessPoolExecutor:
    if multiprocessing.current_process().daemon:
        raise TjepaError(
            "--decode-workers needs to start processes, and this worker is a daemonic process (dask starts "
            "workers daemonic by default): set the dask config distributed.worker.daemon to false, or use "
            "--decode-workers 0"
        )
    # spawn: fork would copy the model worker's threads and CUDA state; a forkserver outlived dask
    # workers that were killed (measured: orphaned decode processes). Spawned children are the
    # worker's own and leave with it; their start-up (imports) is paid once per worker process.
    ctx = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx, initializer=_init_decoder_process,
                               initargs=(os.getpid(),))


def get_pool(n_workers: int) -> ProcessPoolExecutor:
    if n_workers not in _POOLS:
        _POOLS[n_workers] = _new_pool(n_workers)
    return _POOLS[n_workers]


def _replace_pool(n_workers: int) -> ProcessPoolExecutor:
    old = _POOLS.pop(n_workers, None)
    if old is not None:
        old.shutdown(wait=False, cancel_futures=True)
    return get_pool(n_workers)


def shutdown_pools() -> None:
    """Stop every decode process of this process's pools."""
    while _POOLS:
        _POOLS.popitem()[1].shutdown(wait=True, cancel_futures=True)


def resolve_decode_workers(value: int | str, sharers: int = 1) -> int:
    """'auto' -> this process's cores (its CPU affinity) shared by `sharers` model workers on the host,
    minus one core left to the model worker itself; an affinity already narrower than the machine
    (a worker pinned to its GPU's cores) is taken as this worker's share. At least 1."""
    if value != "auto":
        n = int(value)
        if n < 0:
            raise TjepaError(f"--decode-workers must be >= 0 or 'auto', got {n}")
        return n
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    pinned = cores < (os.cpu_count() or cores)
    share = cores if pinned else cores // max(1, sharers)
    return max(1, share - 1)


class PoolPrefetcher(Generic[T, R]):
    """Yields (item, result_or_exception) in input order, `fn(item)` computed in decode processes.

    `fn` must be picklable (a module-level function or a functools.partial of one).
    """

    def __init__(self, items: Iterable[T], fn: Callable[[T], R], n_workers: int, depth: int):
        if n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}")
        self.items = iter(list(items))
        self.fn = fn
        self.n_workers = n_workers
        self.depth = max(1, depth)
        self.pool = get_pool(n_workers)
        self.pending: deque[tuple[T, Future]] = deque()

    def _submit(self, item: T) -> Future:
        try:
            return self.pool.submit(_call, self.fn, item)
        except BrokenProcessPool as err:  # broke since the last result: handled when it reaches the head
            fut: Future = Future()
            fut.set_exception(err)
            return fut

    def _fill(self) -> None:
        while len(self.pending) < self.depth:
            item = next(self.items, _END)
            if item is _END:
                return
            self.pending.append((item, self._submit(item)))

    def _result(self, fut: Future, item: T) -> R | BaseException:
        try:
            return fut.result()
        except BrokenProcessPool:
            return self._rerun_alone(item)
        except Exception as err:  # the video's own error, recorded by the consumer
            return err

    def _rerun_alone(self, item: T) -> R | BaseException:
        """The pool broke with `item` at the head: rerun it alone, then resubmit the rest."""
        lost = [it for it, _ in self.pending]
        self.pending.clear()
        self.pool = _replace_pool(self.n_workers)
        try:
            out: R | BaseException = self.pool.submit(_call, self.fn, item).result()
        except BrokenProcessPool:
            out = DecodeWorkerDied("the decode process died while decoding this video alone (decoder crash)")
            self.pool = _replace_pool(self.n_workers)
        except Exception as err:
            out = err
        self.pending.extend((it, self._submit(it)) for it in lost)
        return out

    def __iter__(self) -> Iterator[tuple[T, R | BaseException]]:
        self._fill()
        while self.pending:
            item, fut = self.pending.popleft()
            out = self._result(fut, item)
            self._fill()  # keep the processes busy while the consumer works on this one
            yield item, out

    def close(self) -> None:
        for _, fut in self.pending:
            fut.cancel()
        self.pending.clear()

    def __enter__(self) -> PoolPrefetcher[T, R]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_END = object()
