"""`mixed_provenance`: warnings when the done rows of one store were written under different settings.

Greedy thinking tokens in bfloat16 on a GPU can depend on the batch (left padding changes the
rounding), and kernels differ across devices and library versions, so rows written under different
batch sizes, devices or versions may not be comparable bit for bit. `index/run` says which run wrote
each row; the run records (`provenance`, `runs`, with their `workers`) say how.
"""

from __future__ import annotations

import numpy as np

from tjepa.cache_schema.store import DONE, FeatureStore


def _settings(record: dict) -> dict[str, set[str]]:
    """What a run record says about the rows it wrote: each setting -> the values seen."""
    workers = record.get("workers") or []
    out: dict[str, set[str]] = {"batch size": {str(record.get("batch_size", "unknown"))}}
    out["device"] = {f"{w.get('device')} ({w.get('device_name')})" for w in workers} or {str(record.get("device"))}
    for env in [record, *workers]:
        for lib, version in (env.get("libraries") or {}).items():
            out.setdefault(lib, set()).add(str(version))
    return out


def mixed_provenance(store: FeatureStore) -> list[str]:
    """One line per setting whose value differs among the runs (and workers) that wrote done rows."""
    status = store.status()
    run_of_row = np.asarray(store.array("index/run")[: store.n_rows])
    records = store.run_records()
    used = sorted({int(r) for r in run_of_row[status == DONE]})
    seen: dict[str, dict[str, list[int]]] = {}  # setting -> value -> runs
    for run in used:
        if not 0 <= run < len(records):
            return [f"{store.path}: rows name run {run}, but the store records {len(records)} run(s)"]
        for setting, values in _settings(records[run]).items():
            for v in values:
                seen.setdefault(setting, {}).setdefault(v, []).append(run)
    out = []
    for setting, values in seen.items():
        if len(values) > 1:
            counts = {v: int(np.isin(run_of_row[status == DONE], runs).sum()) for v, runs in values.items()}
            parts = ", ".join(f"{v} (runs {runs}, {counts[v]} rows)" for v, runs in values.items())
            out.append(f"rows were written under different {setting}: {parts}")
    if out:
        out.append("bf16 greedy thinking tokens can change with batch composition, device and library versions; "
                   "for rows that reproduce exactly, write a store in one setting with --batch-size 1")
    return out
