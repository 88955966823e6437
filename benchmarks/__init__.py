"""Benchmarks of tjepa: `python -m benchmarks [--quick] [--only NAME...] [--out BENCHMARKS.md]`.

One module per benchmark, each with `run(ctx) -> Section`; `common` holds timing, machine facts and
the markdown; `fixtures` makes the paper-shaped data the loading and disk benchmarks read.
"""

from __future__ import annotations

# name -> module; the order of the report
BENCHMARKS = {
    "loading": "benchmarks.loading",
    "disk": "benchmarks.disk",
    "stage_one": "benchmarks.stage_one",
    "stage_one_memory": "benchmarks.stage_one_memory",
    "tokens": "benchmarks.tokens",
    "stage_one_speed": "benchmarks.stage_one_speed",
    "demo_train": "benchmarks.demo_train",
    "attention": "benchmarks.attention",
    "bucket": "benchmarks.bucket",
    "gpu": "benchmarks.gpu",
}
