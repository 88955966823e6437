"""One line from a `tjepa cache --json` summary: videos/s, per GPU, and the model's wait on decode.

Used by scripts/gpu_check.sh: python scripts/stage_one_rate.py SUMMARY.json LABEL N_GPUS
"""

from __future__ import annotations

import json
import sys


def main(path: str, label: str, n_gpus: str) -> None:
    s = json.load(open(path))
    n = max(1, int(n_gpus))
    stage = s["stage_seconds"]
    wait = stage.get("decode_wait", 0.0) / max(stage.get("total", 0.0), 1e-9)
    print(f"{label}: {s['videos_per_s']:.2f} videos/s, {s['videos_per_s'] / n:.2f} per GPU ({n} GPU), "
          f"decode wait {100 * wait:.0f}% of unit time, {s['this_run']['done']} done, {s['this_run']['failed']} failed")


if __name__ == "__main__":
    main(*sys.argv[1:4])
