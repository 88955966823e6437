"""Benchmark: resident memory of one long in-process `tjepa cache` job (issue 11.7), tiny models on CPU.

The same long-job measurement as the stage-one section (`stage_one.rss_child`: psutil RSS when the
k-th video is reported, after a decode-only pass over the same videos), run twice in fresh
processes: as `tjepa cache` runs by default (it caps glibc's malloc arenas at 2 itself,
pipeline/memory.py), and with MALLOC_ARENA_MAX set to glibc's own default of 8 x cores, which is what
the code did before the cap. Growth is measured after a warm-up of the first videos.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from benchmarks.common import Context, Section, Table, finish_section, load_average, met, run_child
from benchmarks.stage_one import linked_set, synth_set

NAME = "stage_one_memory"
TARGET_MIB_PER_VIDEO = 0.05  # issue 11.7: "flat" after warm-up


@dataclass(frozen=True)
class Params:
    episodes: int  # distinct synthetic episodes (hard-linked under new names up to `videos`)
    marks: tuple[int, ...]  # RSS when these videos are done; growth is measured from the first mark
    batch_size: int = 4


PARAMS = {
    "full": Params(episodes=12, marks=(25, 50, 100, 150, 200, 250, 300)),
    "quick": Params(episodes=4, marks=(10, 30, 60)),
    "smoke": Params(episodes=2, marks=(1, 2), batch_size=1),
}


def uncapped_env() -> dict[str, str]:
    """glibc's default arena limit (8 per core on 64-bit): the allocator as it was before the cap."""
    return {"MALLOC_ARENA_MAX": str(8 * (os.cpu_count() or 1))}


def run(ctx: Context) -> Section:
    t0, load0 = time.perf_counter(), load_average()
    p = PARAMS[ctx.mode]
    root = ctx.subdir(NAME)
    from tjepa.pipeline.encoders.presets import resolve_encoders

    synth = synth_set(root, p.episodes)
    models = root / "models"
    resolve_encoders("tiny", models_dir=models)
    videos = linked_set(synth, root / "long", max(p.marks))
    runs = {}
    for label, env in (("default (tjepa caps arenas at 2)", None), ("uncapped (glibc default)", uncapped_env())):
        if env is not None and ctx.inline_children:
            continue  # an environment cannot be applied inline (smoke tests)
        ctx.log(f"  {NAME}: {max(p.marks)} videos, {label}")
        runs[label] = run_child("benchmarks.stage_one:rss_child", dict(
            videos=str(videos), models_dir=str(models), out=str(root / f"out-{len(runs)}"), marks=list(p.marks),
            batch_size=p.batch_size, torch_threads=None if ctx.inline_children else 1), env=env,
            inline=ctx.inline_children, timeout=3600)
    return finish_section(build_section(p, runs), ctx, t0, load0)


def growth(rss: dict[str, float], lo: int, hi: int) -> float:
    return (rss[str(hi)] - rss[str(lo)]) / (hi - lo)


def build_section(p: Params, runs: dict[str, dict]) -> Section:
    marks, lo, hi = list(p.marks), p.marks[0], p.marks[-1]
    mid = next(m for m in marks if m >= hi / 2)
    labels = list(runs)
    table = Table(f"Resident memory (MiB) of one {hi}-video in-process job when the k-th video is reported",
                  ["after video", *labels],
                  [[m, *(runs[label]["rss"][str(m)] for label in labels)] for m in marks],
                  note=(f"psutil RSS; batch {p.batch_size}, one torch thread, {p.episodes} distinct synthetic EgoDex "
                        "episodes hard-linked under new names. Each column is one fresh process (memory is not a "
                        "timing: one run each). " + "; ".join(
                            f"{label}: {runs[label]['done']} done, {runs[label]['failed']} failed" for label in labels)))
    findings = []
    for label in labels:
        r = runs[label]["rss"]
        per, late = growth(r, lo, hi), growth(r, mid, hi)
        findings.append(f"{label}: {per:+.3f} MiB per video from video {lo} to {hi} ({late:+.3f} MiB per video over "
                        f"the second half, video {mid} to {hi}); target < {TARGET_MIB_PER_VIDEO} MiB per video after "
                        f"warm-up: {met(per < TARGET_MIB_PER_VIDEO)}.")
    return Section(name=NAME, title="3b. Stage one: memory of a long job (tiny models, CPU)",
                   intro=__doc__.split("\n", 2)[2].strip(), tables=[table], findings=findings,
                   repeats="1 run per column")
