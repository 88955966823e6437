"""The reliability suite (`make reliability` = `pytest -m reliability tests/reliability`).

- every module here is marked `reliability` (registered in pyproject, where addopts deselects it
  from a plain `pytest` / `make test` run);
- `figures`: every trial records what it injected and what it found (rows lost, duplicates, ...);
  the totals are printed at the end of the run and written as JSON to $TJEPA_RELIABILITY_FIGURES
  (default: <pytest basetemp>/reliability-figures.json). RELIABILITY.md quotes them.
- `reference`: one uninterrupted `tjepa cache` of the session's synthetic set, which every
  interrupted run must reproduce array for array.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest


class Figures:
    """Trial records, grouped by experiment name."""

    def __init__(self):
        self.records: list[dict] = []

    def record(self, experiment: str, **fields) -> None:
        self.records.append({"experiment": experiment, **fields})

    def totals(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for r in self.records:
            t = out.setdefault(r["experiment"], {"trials": 0})
            t["trials"] += 1
            for k, v in r.items():
                if isinstance(v, bool):
                    t[k] = t.get(k, 0) + int(v)
                elif isinstance(v, int) and k not in ("trial", "seed"):
                    t[k] = t.get(k, 0) + v
        return out


_FIGURES = Figures()


@pytest.fixture(scope="session")
def figures() -> Figures:
    return _FIGURES


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _FIGURES.records:
        return
    path = Path(os.environ.get("TJEPA_RELIABILITY_FIGURES")
                or Path(str(config._tmp_path_factory.getbasetemp())) / "reliability-figures.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"totals": _FIGURES.totals(), "records": _FIGURES.records}, indent=1))
    tr = terminalreporter
    tr.section("reliability figures")
    for name, t in sorted(_FIGURES.totals().items()):
        tr.write_line(f"{name}: " + ", ".join(f"{k}={v}" for k, v in t.items()))
    tr.write_line(f"(all records: {path})")


@dataclass(frozen=True)
class Reference:
    path: Path
    seconds: float  # wall time of the uninterrupted CLI run, start-up included
    videos: tuple[str, ...]


@pytest.fixture(scope="session")
def reference(synth_root, tiny_models, tmp_path_factory) -> Reference:
    from cache_helpers import cache_args
    from reliability_tools import CACHE_EXTRA, run, status_by_video, tjepa_cmd

    out = tmp_path_factory.mktemp("reference") / "store.zarr"
    t0 = time.monotonic()
    res = run(tjepa_cmd(*cache_args(synth_root, out, tiny_models, *CACHE_EXTRA)))
    seconds = time.monotonic() - t0
    assert res.returncode == 0, res.stdout + res.stderr
    status = status_by_video(out)
    assert status and set(status.values()) == {1}
    return Reference(out, seconds, tuple(sorted(status)))
