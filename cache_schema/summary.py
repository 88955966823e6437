"""`store_summary` (a JSON-ready description of a store) and `render_summary` (the same, with rich)."""

from __future__ import annotations

from pathlib import Path

from tjepa.cache_schema.layout import RAW, array_specs
from tjepa.cache_schema.ledger import LEDGER_DIR
from tjepa.cache_schema.provenance_check import mixed_provenance
from tjepa.cache_schema.storage import Location
from tjepa.cache_schema.store import FeatureStore


def store_summary(path: str | Path | Location) -> dict:
    """Counts, identity, layout, provenance and a per-array table (with compression ratios)."""
    store = FeatureStore.open(path, mode="r")
    info = store.info()
    sizes = store.location.sizes()
    layout = store.layout
    arrays = []
    for spec in array_specs(layout):
        arr = store.array(spec.path)
        # data objects of the array (its own zarr.json excluded)
        stored = sum(n for k, n in sizes.items() if k.startswith(f"{spec.path}/") and k != f"{spec.path}/zarr.json")
        per_row = spec.row_nbytes(layout)
        # Row-chunked arrays hold data only for written rows; block chunks always cover all rows.
        filled = info["done"] if spec.chunking == "row" else store.n_rows
        raw = None if per_row is None else per_row * filled
        arrays.append({
            "path": spec.path,
            "shape": list(arr.shape),
            "dtype": spec.dtype,
            "dims": list(spec.dims),
            "chunks": list(arr.chunks),
            "shards": list(arr.shards) if arr.shards else None,
            "codec": "none" if spec.codec == RAW else spec.codec,
            "stored_bytes": stored,
            "raw_bytes": raw,
            "ratio": round(raw / stored, 3) if raw and stored else None,
        })
    return {
        **info,
        "bytes": sum(sizes.values()),
        "ledger_entries": len(store.ledger.read()),
        "layout": layout.to_dict(),
        "config": store.config,
        "provenance": store.provenance,
        "runs": store._group.attrs.get("runs", []),
        "warnings": mixed_provenance(store),
        "arrays": arrays,
    }


_SHORT = {"float16": "f16", "float32": "f32", "float64": "f64", "int32": "i32", "int64": "i64", "uint8": "u8",
          "zstd3": "zstd", "blosc-zstd3-shuffle": "zstd+shuf"}


def _human(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def _record_line(record: dict) -> str:
    """A run record on one line: libraries as name=version, workers counted (details: --json)."""
    parts = []
    for k, v in record.items():
        if k == "workers":
            parts.append(f"workers={len(v)}")
        elif isinstance(v, dict):
            parts.append(" ".join(f"{name}={ver}" for name, ver in v.items()))
        else:
            parts.append(f"{k}={v}")
    return ", ".join(parts)


def render_summary(summary: dict, console) -> None:
    """Print the summary: a header, layout and provenance, then one table row per array."""
    from rich import box
    from rich.table import Table

    s = summary
    console.print(f"[bold]{s['path']}[/]  tjepa-cache schema v{s['version']}")
    console.print(f"rows {s['rows']}: [green]{s['done']} done[/], [red]{s['failed']} failed[/], "
                  f"[yellow]{s['pending']} pending[/]  ({s['shards']} shards, {_human(s['bytes'])} on disk)")
    console.print(f"fingerprint {s['fingerprint']}")
    if s["ledger_entries"]:
        console.print(f"failure ledger: {s['ledger_entries']} entr{'y' if s['ledger_entries'] == 1 else 'ies'} "
                      f"in {LEDGER_DIR}/")
    console.print("layout " + ", ".join(f"{k}={v}" for k, v in s["layout"].items()))
    console.print("provenance " + _record_line(s["provenance"]), highlight=False)
    if s["runs"]:
        console.print(f"later runs: {len(s['runs'])}")
    for line in s.get("warnings", []):
        console.print(f"[bold yellow]warning:[/] {line}", highlight=False)
    table = Table(title="arrays (chunk: rows per chunk/shard; ratio: raw bytes held / bytes on disk)",
                  box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    for col in ("path", "shape", "type", "chunk", "codec", "on disk", "ratio"):
        table.add_column(col, no_wrap=True, justify="left" if col in ("path", "shape", "type") else "right")
    for a in s["arrays"]:
        layout = f"{a['chunks'][0]}/{a['shards'][0] if a['shards'] else '-'}"
        table.add_row(a["path"], "x".join(map(str, a["shape"])), _SHORT.get(a["dtype"], a["dtype"]), layout,
                      _SHORT.get(a["codec"], a["codec"]), _human(a["stored_bytes"]),
                      f"{a['ratio']:.2f}" if a["ratio"] else "-")
    console.print(table)
