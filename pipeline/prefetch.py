"""Decode ahead of the encoders on a background thread, so the accelerator never waits on PyAV.

PyAV releases the GIL while decoding, so one thread overlaps decode with model compute. The queue
is bounded: memory stays flat however long the job runs.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_DONE = object()


class Prefetcher(Generic[T, R]):
    """Yields (item, result_or_exception) in input order, computing `fn(item)` up to `depth` ahead."""

    def __init__(self, items: Iterable[T], fn: Callable[[T], R], depth: int = 4):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(list(items), fn), daemon=True)
        self._thread.start()

    def _run(self, items: list[T], fn: Callable[[T], R]) -> None:
        for item in items:
            if self._stop.is_set():
                break
            try:
                out: R | BaseException = fn(item)
            except Exception as err:  # handed to the consumer, which records it per item
                out = err
            self._put((item, out))
        self._put(_DONE)

    def _put(self, value) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(value, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[tuple[T, R | BaseException]]:
        while True:
            value = self._queue.get()
            if value is _DONE:
                return
            yield value

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> Prefetcher[T, R]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
