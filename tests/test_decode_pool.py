"""The decode process pool: input order, bounded in flight, per-video errors, a dying decode process."""

from __future__ import annotations

import os

import pytest

from tjepa.errors import InputError, TjepaError
from tjepa.pipeline.decode_pool import (
    DecodeWorkerDied,
    PoolPrefetcher,
    resolve_decode_workers,
    shutdown_pools,
)


@pytest.fixture(autouse=True, scope="module")
def _stop_pools():
    yield
    shutdown_pools()


def _work(item: int) -> int:
    if item == 3:
        raise ValueError("bad item 3")
    if item == 5:
        os._exit(7)  # a decoder crash takes the whole process down
    return item * item


def test_order_bounds_errors_and_a_dying_process_fail_alone():
    items = list(range(9))
    seen, in_flight = [], []
    with PoolPrefetcher(items, _work, n_workers=2, depth=3) as pf:
        for item, out in pf:
            in_flight.append(len(pf.pending))
            seen.append((item, out))
    assert [i for i, _ in seen] == items
    assert max(in_flight) <= 3
    for item, out in seen:
        if item == 3:
            assert isinstance(out, ValueError) and "bad item 3" in str(out)
        elif item == 5:
            assert isinstance(out, DecodeWorkerDied)
        else:
            assert out == item * item  # videos in flight with the crash are decoded again


def test_a_missing_video_comes_back_as_its_input_error(tmp_path):
    import functools

    from tjepa.pipeline.episode_io import SamplingConfig
    from tjepa.pipeline.sources import Episode
    from tjepa.pipeline.worker import load_item

    ep = Episode(id="t/0.mp4", video=tmp_path / "t" / "0.mp4", labels=None, group="t")
    fn = functools.partial(load_item, sampling=SamplingConfig())
    ((_, out),) = list(PoolPrefetcher([(0, ep)], fn, n_workers=1, depth=1))
    assert isinstance(out, InputError) and "0.mp4" in str(out) and "not found" in str(out)


def test_auto_sizes_from_this_process_cores():
    cores = len(os.sched_getaffinity(0))
    pinned = cores < os.cpu_count()
    assert resolve_decode_workers("auto") == max(1, cores - 1)
    assert resolve_decode_workers("auto", sharers=cores) == (max(1, cores - 1) if pinned else 1)
    assert resolve_decode_workers(3) == 3
    with pytest.raises(TjepaError, match="decode-workers"):
        resolve_decode_workers(-1)
