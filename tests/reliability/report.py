"""Render the figures a `make reliability` run wrote (reliability-figures.json) as Markdown tables.

    TJEPA_RELIABILITY_FIGURES=/tmp/rel.json make reliability
    .venv/bin/python tests/reliability/report.py /tmp/rel.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

FAULTS = {  # experiment -> (fault injected, what is counted)
    "cache_sigkill_random": "SIGKILL of `tjepa cache` after a seeded random delay",
    "cache_sigkill_after_commit": "SIGKILL of `tjepa cache` right after the k-th row's status commit",
    "cache_sigkill_dask_coordinator": "SIGKILL of `tjepa cache --workers 2` (the coordinator)",
    "cache_sigkill_during_creation": "SIGKILL of `tjepa cache` while it creates the store",
    "dask_worker_sigkill": "SIGKILL of a busy dask worker (`--scheduler` to a LocalCluster)",
    "train_sigkill_random": "SIGKILL of `tjepa train` after a seeded random delay",
    "train_sigkill_at_checkpoint": "SIGKILL of `tjepa train` inside / between checkpoint writes",
}


def _sum(records, key):
    return sum(int(r.get(key, 0) or 0) for r in records if isinstance(r.get(key), (int, bool)) and r.get(key, 0) >= 0)


def render(doc: dict) -> str:
    by = defaultdict(list)
    for r in doc["records"]:
        by[r["experiment"]].append(r)
    lines = ["| fault | trials | killed | rows done at kill | rows lost | duplicates | rerun/resume ok |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, title in FAULTS.items():
        rs = by.get(name, [])
        if not rs:
            continue
        ok = sum(bool(r.get("rerun_ok", r.get("job_ok", r.get("resume_ok")))) for r in rs)
        lost = _sum(rs, "rows_lost") if name.startswith(("cache", "dask")) else "n/a"
        dup = _sum(rs, "duplicates") if name.startswith(("cache", "dask")) else _sum(rs, "epoch_gaps_or_duplicates")
        lines.append(f"| {title} | {len(rs)} | {_sum(rs, 'killed')} | {_sum(rs, 'done_before_kill')} | {lost} | "
                     f"{dup} | {ok}/{len(rs)} |")
    spread = by.get("cache_sigkill_random", [])
    if spread:
        hist: dict[int, int] = defaultdict(int)
        for r in spread:
            hist[r["done_before_kill"]] += 1
        lines += ["", "Random `tjepa cache` kills by rows already committed at the kill (0 = while starting up, "
                  "creating the store or encoding the first video): "
                  + ", ".join(f"{k} rows: {v}" for k, v in sorted(hist.items()))
                  + f"; delays {min(r['delay_s'] for r in spread)}-{max(r['delay_s'] for r in spread)} s."]
    train = by.get("train_sigkill_random", []) + by.get("train_sigkill_at_checkpoint", [])
    if train:
        lines += ["", f"Training kills: {len(train)}; half-written checkpoints after a kill: "
                  f"{_sum(train, 'half_written_checkpoints')}; metrics.jsonl with a gap or duplicate after resume: "
                  f"{_sum(train, 'epoch_gaps_or_duplicates')}; resumed runs equal to the uninterrupted run: "
                  f"{_sum(train, 'matches_uninterrupted')}/{len(train)}; leftover temp files: "
                  f"{_sum(train, 'leftover_temp_files')}."]
    bad = by.get("bad_input", [])
    if bad:
        lines += ["", "| input | tree | failed alone with a clear reason |", "| --- | --- | --- |"]
        lines += [f"| {r['input']} | {r['tree']} | {'yes' if r['failed_with_clear_reason'] else '**no**'} |"
                  for r in bad]
    awkward = by.get("awkward_input_cached", [])
    if awkward:
        lines += ["", "Awkward but valid inputs cached: " + ", ".join(
            f"{r['input']} ({'done' if r['done'] else '**not done**'})" for r in awkward)]
    enc = by.get("encoder_fault", [])
    if enc:
        lines += ["", "| encoder fault | executor | rows | done | failed (with the reason) | exit | traceback | "
                  "JSON summary | validate |", "| --- | --- | ---: | ---: | ---: | ---: | --- | --- | --- |"]
        lines += [f"| {r['fault']} | {r['executor']} | {r['rows']} | {r['done']} | {r['failed']} "
                  f"({r['failed_with_reason']}) | {r['exit_code']} | {'**yes**' if r['traceback'] else 'no'} | "
                  f"{'ok' if r['json_ok'] else '**missing**'} | {'pass' if r['validate_ok'] else '**fail**'} |"
                  for r in enc]
    other = by.get("disk_error", []) + by.get("safety", [])
    if other:
        lines += ["", "| check | result |", "| --- | --- |"]
        for r in other:
            ok = r.get("clear_error", r.get("passed"))
            lines.append(f"| {r.get('case') or r.get('check')} | {'pass' if ok else '**fail**'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(json.loads(Path(sys.argv[1]).read_text())))
