"""`validate_store`: everything the store promises, checked; returns the problems (empty = valid).

Structure (format, version, fingerprint, every array's shape/dtype/dimension names/chunking), then
per row: status values, failed rows recorded in the ledger, and for done rows finite features and
targets, causal frame indices, lengths within bounds and -1 padding consistent with think_len.
Rows are read one shard at a time, so memory stays at one shard of every array.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from tjepa.cache_schema.fingerprint import fingerprint
from tjepa.cache_schema.layout import ArraySpec, StoreLayout, array_specs, spec_by_path
from tjepa.cache_schema.ledger import ledger_for
from tjepa.cache_schema.rowdata import causality_problem, think_ids_problem
from tjepa.cache_schema.storage import Location, locate, open_zarr
from tjepa.cache_schema.store import DONE, FAILED, read_root_attrs
from tjepa.errors import StoreFormatError

FLOAT_FEATURES = ("vjepa/past", "vjepa/future", "vlm/prompt_mean", "vlm/think_mean", "vlm/prompt_tokens",
                  "vlm/think_tokens", "targets/cam_past", "targets/cam_future", "targets/intrinsics")


def _structure_problems(arr, spec: ArraySpec, layout: StoreLayout, rows: int) -> tuple[list[str], bool]:
    """Problems with one array's metadata, and whether its data can still be checked row by row."""
    want_shape = (rows, *spec.row_shape(layout))
    if tuple(arr.shape[1:]) != want_shape[1:] or arr.shape[0] < rows:
        return [f"{spec.path}: shape {tuple(arr.shape)}, expected {want_shape}"], False
    if spec.dtype == "str":
        if arr.dtype.kind != "T":
            return [f"{spec.path}: dtype {arr.dtype}, expected variable-length string"], False
    elif arr.dtype != np.dtype(spec.stored_dtype):
        return [f"{spec.path}: dtype {arr.dtype}, expected {spec.stored_dtype}"], False
    elif spec.dtype != spec.stored_dtype and arr.attrs.get("dtype") != spec.dtype:
        return [f"{spec.path}: attribute dtype {arr.attrs.get('dtype')!r}, expected {spec.dtype!r} "
                f"(its {spec.stored_dtype} values are {spec.dtype} bit patterns)"], False
    out = []
    dims = tuple(arr.metadata.dimension_names or ())
    if dims != spec.dims:
        out.append(f"{spec.path}: dimension names {dims}, expected {spec.dims}")
    if tuple(arr.chunks) != spec.chunks(layout) or (tuple(arr.shards) if arr.shards else None) != spec.shards(layout):
        out.append(f"{spec.path}: chunks {arr.chunks} / shards {arr.shards}, expected {spec.chunks(layout)} / "
                   f"{spec.shards(layout)} (shard-aligned chunking is what makes concurrent writers safe)")
    return out, True


def validate_store(path: str | Path | Location, full: bool = True, progress: Callable[[int, int], None] | None = None,
                   ledger: str | Path | None = None) -> list[str]:
    """Problems found in the store at `path` (empty list: valid).

    `full=False` skips per-row data checks; `ledger`: the failure ledger if not STORE/failures/.
    """
    import zarr

    path = locate(path)
    try:
        attrs = read_root_attrs(path)
    except StoreFormatError as err:
        return [str(err)]
    problems: list[str] = []
    try:
        if fingerprint(attrs["config"]) != attrs["fingerprint"]:
            problems.append("root: fingerprint attribute does not match sha256 of the canonical config")
    except (TypeError, ValueError) as err:
        problems.append(f"root: config cannot be fingerprinted ({err})")
    try:
        layout = StoreLayout.from_dict(attrs["layout"])
    except (TypeError, ValueError) as err:
        return [*problems, f"root: unreadable layout attribute ({err})"]
    rows = attrs["rows"]
    if not isinstance(rows, int) or rows < 0:
        return [*problems, f"root: rows attribute {rows!r} is not a count"]

    group = open_zarr(path, mode="r")
    arrays = {}
    longer = []  # grown but not committed: an interrupted add_rows, repaired by the next one
    for spec in array_specs(layout):
        try:
            arr = group[spec.path]
        except KeyError:
            problems.append(f"{spec.path}: missing")
            continue
        if not isinstance(arr, zarr.Array):
            problems.append(f"{spec.path}: is a group, expected an array")
            continue
        issues, usable = _structure_problems(arr, spec, layout, rows)
        problems += issues
        if usable:
            arrays[spec.path] = arr
            if arr.shape[0] > rows:
                longer.append(spec.path)
    if longer:
        problems.append(f"{len(longer)} array(s) (e.g. {longer[0]}) extend beyond the {rows} committed rows: "
                        "an interrupted add_rows; the next `tjepa cache` run on this store repairs it")
    if "index/status" not in arrays or "index/video" not in arrays:
        return problems

    videos = [str(v) for v in arrays["index/video"][:rows]]
    status = np.asarray(arrays["index/status"][:rows])
    bad = np.nonzero(~np.isin(status, (0, 1, 2)))[0]
    if bad.size:
        problems.append(f"index/status: {bad.size} row(s) with values outside {{0,1,2}}, e.g. row {bad[0]} = "
                        f"{status[bad[0]]}")
    empty = [i for i, v in enumerate(videos) if not v]
    if empty:
        problems.append(f"index/video: {len(empty)} row(s) without a video id, e.g. row {empty[0]}")
    if len(set(videos)) != len(videos):
        problems.append("index/video: duplicate video ids")
    failed = np.nonzero(status == FAILED)[0]
    if failed.size:
        book = ledger_for(path, ledger)
        recorded = book.latest()
        missing = [videos[i] for i in failed if videos[i] not in recorded]
        if missing:
            problems.append(f"{book.path}: {len(missing)} failed row(s) have no ledger entry, e.g. {missing[0]!r}")
    if full:
        problems += _check_rows(arrays, layout, videos, status, progress)
    return problems


def _check_rows(arrays: dict, layout: StoreLayout, videos: list[str], status: np.ndarray,
                progress: Callable[[int, int], None] | None) -> list[str]:
    problems: list[str] = []
    rps, n = layout.rows_per_shard, len(videos)
    n_shards = -(-n // rps)

    specs = spec_by_path(layout)

    def column(name: str, start: int, stop: int):  # decoded: bfloat16 bits are checked as floats
        return specs[name].decode(np.asarray(arrays[name][start:stop])) if name in arrays else None

    for shard in range(n_shards):
        start, stop = shard * rps, min((shard + 1) * rps, n)
        done = np.nonzero(status[start:stop] == DONE)[0]
        if done.size:
            block = {name: column(name, start, stop) for name in arrays
                     if name not in ("index/video", "index/group", "vlm/think_text")}  # strings: nothing to check
            for j in done:
                for msg in _row_problems(block, int(j), layout):
                    problems.append(f"row {start + j} ({videos[start + j]}): {msg}")
        if progress is not None:
            progress(shard + 1, n_shards)
    return problems


def _row_problems(block: dict, j: int, layout: StoreLayout) -> list[str]:
    out = []
    for name in FLOAT_FEATURES:
        if block.get(name) is not None:
            bad = int((~np.isfinite(block[name][j])).sum())
            if bad:
                out.append(f"{name} has {bad} non-finite value(s)")
    for side in ("past", "future"):
        joints, valid = block.get(f"targets/joints_{side}"), block.get(f"targets/valid_{side}")
        if joints is not None and valid is not None:
            bad = int((valid[j] & ~np.isfinite(joints[j]).all(-1)).sum())
            if bad:
                out.append(f"targets/joints_{side} has {bad} valid joint(s) with non-finite values")
    n_frames = block.get("index/n_frames")
    past, future = block.get("index/past_idx"), block.get("index/future_idx")
    if n_frames is not None and past is not None and future is not None:
        issue = causality_problem(past[j], future[j], int(n_frames[j]))
        if issue:
            out.append(issue)
    fps = block.get("index/fps")
    if fps is not None and not (np.isfinite(fps[j]) and fps[j] > 0):
        out.append(f"index/fps={fps[j]} is not a positive number")
    think_len, ids = block.get("vlm/think_len"), block.get("vlm/think_ids")
    if think_len is not None:
        k = int(think_len[j])
        if not 0 <= k <= layout.max_new_tokens:
            out.append(f"vlm/think_len={k} outside [0, {layout.max_new_tokens}]")
        elif ids is not None:
            issue = think_ids_problem(ids[j], k)
            if issue:
                out.append(issue)
    prompt_len = block.get("vlm/prompt_len")
    if prompt_len is not None:
        cap = layout.max_prompt_tokens if layout.keep_tokens else None
        p = int(prompt_len[j])
        if p < 0 or (cap is not None and p > cap):
            out.append(f"vlm/prompt_len={p} outside [0, {cap if cap is not None else 'inf'}]")
    return out
