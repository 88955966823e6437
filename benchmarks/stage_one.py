"""Benchmark 3: stage one (`tjepa cache` through `pipeline.job.run`) with the tiny models on CPU.

- throughput: in-process vs `workers=2` (a dask LocalCluster), end to end (model loading and cluster
  start included, as a user's run) and steady state (models already loaded);
- where the wall time goes, from the per-unit stage seconds (decode wait, model, write wait);
- decoding: our sampled decode (`decode_frames` of the 64 split indices) vs decoding every frame;
- resident memory of one long in-process job, after 10 and after N videos (decoders are known to leak).
The tiny models make this a measure of the pipeline around the models, not of the models.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import (
    Context,
    Section,
    Table,
    finish_section,
    load_average,
    median,
    met,
    run_child,
    spread,
)

NAME = "stage_one"
EGODEX_FRAMES = 275  # a typical episode: ~9 s at 30 fps (32 past samples at ~7 Hz span half of it)
ARENA_ENV = {"MALLOC_ARENA_MAX": "2"}  # glibc: at most 2 malloc arenas for the process's threads
RSS_TARGET_MIB_PER_VIDEO = 0.25  # "flat": a leaked decoder context or 1080p frame is MiBs per video


@dataclass(frozen=True)
class Params:
    episodes: int  # distinct synthetic episodes (the long set reuses them under other names)
    videos: int  # videos per throughput job
    rss_marks: tuple[int, ...]  # report RSS when these videos are done; the delta is first -> last
    repeats: int
    decode_frames: int  # frames of the 1080p decode test video
    decode_repeats: int
    batch_size: int = 4
    rows_per_shard: int = 4


PARAMS = {
    "full": Params(episodes=12, videos=16, rss_marks=(10, 25, 50, 75, 100), repeats=3, decode_frames=240,
                   decode_repeats=5),
    "quick": Params(episodes=4, videos=8, rss_marks=(10, 20, 30), repeats=1, decode_frames=96, decode_repeats=2,
                    rows_per_shard=2),
    "smoke": Params(episodes=2, videos=2, rss_marks=(1, 2), repeats=1, decode_frames=66, decode_repeats=1,
                    batch_size=1, rows_per_shard=1),
}

# label -> (dask workers, torch intra-op threads in the coordinator process; None = torch's default).
# distributed's nanny starts workers with OMP_NUM_THREADS=1, so each dask worker runs one torch thread.
EXECUTORS = {
    "in-process": (0, None),
    "in-process, 1 torch thread": (0, 1),
    "workers=2 (dask)": (2, None),
}


# ---- data ------------------------------------------------------------------------------------
def synth_set(root: Path, episodes: int) -> Path:
    from tjepa.pipeline.synth import SynthConfig, write_dataset

    out = root / "synth"
    write_dataset(out, SynthConfig(episodes=episodes, seed=0, preview=False))
    return out


def linked_set(src: Path, out: Path, n: int) -> Path:
    """n EgoDex-layout episodes under `out`, hard links to the episodes of `src` under new names."""
    from tjepa.pipeline.sources import discover

    eps = discover(src, "egodex")
    for i in range(n):
        ep = eps[i % len(eps)]
        folder = out / f"task{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        for s, suffix in ((ep.video, ep.video.suffix), (ep.labels, ".hdf5")):
            dst = folder / f"{i // 4}{suffix}"
            if not dst.exists():
                os.link(s, dst)
    return out


# ---- children (fresh processes) ---------------------------------------------------------------
def _job(videos, out, models_dir, **kw):
    from tjepa.pipeline.encoders.presets import resolve_encoders
    from tjepa.pipeline.job import CacheJob

    enc = resolve_encoders("tiny", models_dir=models_dir)
    return CacheJob(videos=Path(videos), out=Path(out), encoders=enc, device="cpu", **kw)


def _summary(s) -> dict:
    return {"seconds": s.seconds, "done": len(s.done), "failed": len(s.failed), "stage": s.stage_seconds}


def throughput_child(videos: str, warm_videos: str, models_dir: str, out: str, workers: int,
                     batch_size: int, rows_per_shard: int, torch_threads: int | None = None) -> dict:
    """End to end (fresh process: models load, cluster starts), then steady state (models loaded)."""
    import torch

    threads = torch.get_num_threads()
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    try:
        return _throughput(videos, warm_videos, models_dir, out, workers, batch_size, rows_per_shard)
    finally:
        torch.set_num_threads(threads)  # matters only when run inline (smoke tests)


def _throughput(videos, warm_videos, models_dir, out, workers, batch_size, rows_per_shard) -> dict:
    from tjepa.pipeline.executor import start_local_cluster
    from tjepa.pipeline.job import run

    out = Path(out)
    kw = dict(batch_size=batch_size, rows_per_shard=rows_per_shard)
    e2e = run(_job(videos, out / "e2e", models_dir, workers=workers, **kw))
    if not workers:
        steady = run(_job(videos, out / "steady", models_dir, **kw))
    else:
        cluster = start_local_cluster(workers)
        try:
            addr = cluster.scheduler_address
            # one unit per video, so that every worker loads its models before the timed job
            run(_job(warm_videos, out / "warm", models_dir, scheduler=addr, batch_size=1, rows_per_shard=1))
            steady = run(_job(videos, out / "steady", models_dir, scheduler=addr, **kw))
        finally:
            cluster.close()
    return {"e2e": _summary(e2e), "steady": _summary(steady)}


def rss_child(videos: str, models_dir: str, out: str, marks: list[int], batch_size: int,
              torch_threads: int | None = None) -> dict:
    """One in-process job; resident memory and open files when the k-th video is reported."""
    import psutil
    import torch

    from tjepa.pipeline.job import run

    if torch_threads is not None:
        torch.set_num_threads(torch_threads)

    from tjepa.pipeline.episode_io import SamplingConfig, load_episode
    from tjepa.pipeline.sources import discover

    proc = psutil.Process()
    decode_rss: dict[str, float] = {}
    for i, ep in enumerate(discover(videos, "egodex")):  # the decoder and label reader alone first
        load_episode(ep, SamplingConfig())
        if i + 1 in marks:
            decode_rss[str(i + 1)] = proc.memory_info().rss / 2**20
    seen = {"n": 0}
    rss: dict[int, float] = {}
    fds: dict[int, int] = {}

    def on_row(video: str, error: str | None) -> None:
        seen["n"] += 1
        if seen["n"] in marks:
            rss[seen["n"]] = proc.memory_info().rss / 2**20
            fds[seen["n"]] = proc.num_fds()

    s = run(_job(videos, out, models_dir, batch_size=batch_size), on_row=on_row)
    return {"rss": {str(k): v for k, v in rss.items()}, "fds": {str(k): v for k, v in fds.items()},
            "decode_rss": decode_rss, "done": len(s.done), "failed": len(s.failed)}


# ---- decode ------------------------------------------------------------------------------------
def decode_video(path: Path, n_frames: int, size=(1920, 1080)) -> Path:
    """A 1080p H.264 clip (EgoDex's size) of a moving textured pattern."""
    from tjepa.pipeline.synth.writer import encode_video

    w, h = size
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    ramp = np.linspace(0, 60, w, dtype=np.float32)[None, :, None]
    frames = (np.clip(np.roll(base, 4 * t, axis=1) * 0.7 + ramp + t % 40, 0, 255).astype(np.uint8)
              for t in range(n_frames))
    encode_video(path, frames, 30, options={"preset": "veryfast", "crf": "23"})
    return path


def decode_all(path: Path, idx: np.ndarray, size) -> np.ndarray:
    """The naive way: every frame to RGB (optionally resized), then pick the wanted ones."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "FRAME"
        frames = [(f.reformat(width=size[0], height=size[1]) if size else f).to_ndarray(format="rgb24")
                  for f in c.decode(s)]
    return np.stack([frames[i] for i in idx])


def measure_decode(path: Path, repeats: int) -> dict[str, list[float]]:
    from tjepa.pipeline.episode_io import decode_size
    from tjepa.pipeline.sampling import causal_split
    from tjepa.pipeline.video import decode_frames, probe

    info = probe(path)
    idx = np.concatenate(causal_split(info.n_frames))
    size = decode_size(info, 292)
    variants = {
        "ours: decode_frames(64 split indices), resized while decoding": lambda: decode_frames(path, idx, size=size),
        "every frame to RGB at 1920x1080, then pick 64": lambda: decode_all(path, idx, None),
        f"every frame to RGB at {size[0]}x{size[1]}, then pick 64": lambda: decode_all(path, idx, size),
    }
    ref = decode_frames(path, idx, size=size)
    if not np.array_equal(ref, decode_all(path, idx, size)):
        raise RuntimeError("sampled decode and full decode disagree on the sampled frames")
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for k, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times | {"_meta": [info.n_frames, len(idx)]}


def memory_verdict(per_video: float, late: float, arena_per_video: float, n: int) -> str:
    """What the RSS figures say (default allocator, and with MALLOC_ARENA_MAX)."""
    target = RSS_TARGET_MIB_PER_VIDEO
    if per_video < target:
        return "Flat."
    if arena_per_video == arena_per_video and abs(arena_per_video) < target:  # not NaN, and flat
        return (f"With MALLOC_ARENA_MAX=2 the same job stays flat ({arena_per_video:+.2f} MiB/video): the growth "
                "is glibc giving each thread that allocates large buffers (decode prefetch, writer, main) its "
                "own arena and fragmenting them, not a leak in our code or the decoder. Setting "
                "MALLOC_ARENA_MAX=2 for `tjepa cache` (and its dask workers) makes stage one flat.")
    if late <= 0:
        return "The growth stops in the second half: warm-up of allocators and per-shape caches rather than a leak."
    return (f"Memory still grows in the second half of this {n}-video run and the arena limit does not stop it "
            "(or was not measured): a leak to find.")


# ---- section -----------------------------------------------------------------------------------
def run(ctx: Context) -> Section:
    t0, load0 = time.perf_counter(), load_average()
    p = PARAMS[ctx.mode]
    root = ctx.subdir(NAME)
    from tjepa.pipeline.encoders.presets import resolve_encoders

    ctx.log(f"stage_one: {p.episodes} synthetic episodes, tiny models")
    synth = synth_set(root, p.episodes)
    models = root / "models"
    resolve_encoders("tiny", models_dir=models)  # builds the tiny models once, here
    n_long = max(p.rss_marks)
    long_set = linked_set(synth, root / "long", n_long)
    tput_set = linked_set(synth, root / "tput", p.videos)
    warm_set = linked_set(synth, root / "warm", 4)

    results: dict[str, list[dict]] = {label: [] for label in EXECUTORS}
    for rep in range(p.repeats):
        for i, (label, (w, threads)) in enumerate(EXECUTORS.items()):
            out = root / f"out-{i}-r{rep}"
            results[label].append(run_child("benchmarks.stage_one:throughput_child", dict(
                videos=str(tput_set), warm_videos=str(warm_set), models_dir=str(models), out=str(out),
                workers=w, batch_size=p.batch_size, rows_per_shard=p.rows_per_shard, torch_threads=threads),
                inline=ctx.inline_children))
            r = results[label][-1]
            ctx.log(f"  stage_one rep {rep + 1}/{p.repeats} {label}: e2e {r['e2e']['seconds']:.1f}s "
                    f"steady {r['steady']['seconds']:.1f}s")
            for kind in ("e2e", "steady"):
                if r[kind]["done"] != p.videos:
                    raise RuntimeError(f"{label} {kind}: {r[kind]['done']} of {p.videos} videos done "
                                       f"({r[kind]['failed']} failed)")
    ctx.log("  stage_one: long job for resident memory")
    rss = run_child("benchmarks.stage_one:rss_child", dict(videos=str(long_set), models_dir=str(models),
                    out=str(root / "out-long"), marks=list(p.rss_marks), batch_size=p.batch_size,
                    torch_threads=None if ctx.inline_children else 1), inline=ctx.inline_children)
    rss_arena = None  # the environment of a child cannot be applied inline (smoke tests)
    if not ctx.inline_children:
        ctx.log(f"  stage_one: the same long job with {ARENA_ENV}")
        rss_arena = run_child("benchmarks.stage_one:rss_child", dict(
            videos=str(long_set), models_dir=str(models), out=str(root / "out-long-arena"), marks=list(p.rss_marks),
            batch_size=p.batch_size, torch_threads=1), env=ARENA_ENV)
    ctx.log("  stage_one: decode")
    video = decode_video(root / "decode_1080p.mp4", p.decode_frames)
    dec = measure_decode(video, p.decode_repeats)
    return finish_section(build_section(p, results, rss, dec, rss_arena), ctx, t0, load0)


def build_section(p: Params, results: dict, rss: dict, dec: dict, rss_arena: dict | None = None) -> Section:
    base_label = next(iter(EXECUTORS))

    def rate(label, kind):
        return p.videos / median([r[kind]["seconds"] for r in results[label]])

    tput_rows = []
    for kind, run_label in (("e2e", "end to end (fresh process)"), ("steady", "steady state (models loaded)")):
        for label in EXECUTORS:
            secs = [r[kind]["seconds"] for r in results[label]]
            tput_rows.append([run_label, label, rate(label, kind), spread(secs),
                              rate(label, kind) / rate(base_label, kind)])
    tput = Table("Videos per second (result: 'x in-process'; rates are CPU context)",
                 ["run", "executor", "videos/s", "wall range s", "x in-process"], tput_rows,
                 note=(f"{p.videos} synthetic EgoDex episodes (128x128, 90-160 frames; {p.episodes} distinct ones "
                       f"hard-linked under new names), batch {p.batch_size}, {p.rows_per_shard} rows per shard. "
                       "End to end includes loading the models (and starting the cluster); steady state runs a "
                       "second job after the models are loaded (dask: on a cluster warmed by a small job). "
                       "'in-process' uses torch's default intra-op threads (one per core), as `tjepa cache` "
                       "does; dask workers get OMP_NUM_THREADS=1 from distributed's nanny."))

    share_rows = []
    for label in EXECUTORS:
        per_run = []  # shares within each run, then the median of each share: they stay consistent
        for r in results[label]:
            st = r["steady"]["stage"]
            tot = st.get("total") or float("nan")
            model, dw, ww = (st.get(k, 0.0) for k in ("model", "decode_wait", "write_wait"))
            per_run.append([tot, model / tot, dw / tot, ww / tot, (tot - model - dw - ww) / tot, 1 - model / tot,
                            st.get("write", 0.0) / tot])
        share_rows.append([label, *(median(col) for col in zip(*per_run, strict=True))])
    share = Table("Where a unit's wall time goes (steady state; shares of the units' total seconds)",
                  ["executor", "unit seconds (summed)", "model", "decode wait", "write wait", "other",
                   "outside model", "writing (overlapped, for reference)"], share_rows,
                  note=("From `JobSummary.stage_seconds` (per-unit seconds summed over units, and over workers "
                        "for dask): decode runs ahead on a prefetch thread and writes run behind on a writer "
                        "thread, so only the waits cost wall time; 'other' is batching, result assembly and "
                        "store opening."))

    n_frames, n_idx = dec.pop("_meta")
    ours_key = next(iter(dec))
    t_ours = median(dec[ours_key])
    dec_rows = [[k, n_idx / median(v), n_frames / median(v), spread(v), median(v) / t_ours] for k, v in dec.items()]
    decode = Table(f"Decoding one 1080p H.264 clip of {n_frames} frames for the {n_idx} split frames "
                   "(result: 'wall x ours')",
                   ["method", "useful frames/s", "decoded frames/s", "wall range s", "wall x ours"], dec_rows,
                   note=("Every method decodes every frame up to the last wanted one (the split reaches the "
                         "last frame), with frame threading; ours converts (and resizes) only the 64 wanted "
                         "frames. The frames ours returns equal the full decode's at the same size."))

    marks = [str(m) for m in p.rss_marks]
    lo, hi = marks[0], marks[-1]
    mid = next(m for m in marks[1:] + [lo] if int(m) >= int(hi) / 2)  # start of the second half
    delta = rss["rss"][hi] - rss["rss"][lo]
    per_video = delta / (int(hi) - int(lo))
    late = rss["rss"][hi] - rss["rss"][mid]
    dec_delta = rss["decode_rss"][hi] - rss["decode_rss"][lo]
    arena = rss_arena["rss"] if rss_arena else {}
    arena_delta = arena[hi] - arena[lo] if arena else float("nan")
    arena_label = "RSS MiB, " + " ".join(f"{k}={v}" for k, v in ARENA_ENV.items())
    mem = Table("Resident memory of one in-process job (psutil RSS when the k-th video is reported)",
                ["after video", "RSS MiB", "open files", arena_label, "RSS MiB, decode + labels only (earlier pass)"],
                [[int(k), rss["rss"][k], rss["fds"][k], arena.get(k, "-"), rss["decode_rss"][k]] for k in marks],
                note=(f"{rss['done']} videos done, {rss['failed']} failed, one torch thread (to keep the run short; "
                      f"memory does not depend on it). Delta {delta:+.1f} MiB from video {lo} to video {hi} "
                      f"({per_video:+.2f} MiB per video); {late:+.1f} MiB over the second half (video {mid} to "
                      f"{hi}). The {arena_label[9:]} column is the same job in another process with glibc "
                      f"limited to 2 malloc arenas{'' if arena else ' (not run in smoke tests)'}. One run each "
                      "(memory is not a timing)."))

    from benchmarks.gpu import PEAK_BF16_TFLOPS, stage_one_flops

    fps_1080 = n_frames / t_ours
    ep_s = EGODEX_FRAMES / fps_1080
    gpu_rate = 0.4 * PEAK_BF16_TFLOPS["H100 SXM"] * 1e12 / stage_one_flops().total
    x = {label: {k: rate(label, k) / rate(base_label, k) for k in ("e2e", "steady")} for label in EXECUTORS}
    dask, one = x["workers=2 (dask)"], x["in-process, 1 torch thread"]
    in_proc_share = share_rows[0]
    findings = [
        f"workers=2 vs in-process: {dask['e2e']:.2f}x end to end, {dask['steady']:.2f}x in steady state; "
        f"in-process with one torch thread: {one['e2e']:.2f}x and {one['steady']:.2f}x. "
        + ("The one-thread run beating the default one means the default in-process run loses to thread "
           "oversubscription (torch's OpenMP threads spin-wait while other processes hold the cores), not to a "
           "lack of parallelism: on a busy CPU machine run `tjepa cache` with OMP_NUM_THREADS=1 or --workers."
           if one["steady"] > 1.5 else
           "On 2 cores the in-process run already keeps both busy (torch's intra-op threads plus the decode "
           "thread), so a second worker process adds start-up (cluster, a second model load) and no "
           "throughput here; workers are for one process per GPU or per machine."),
        f"Outside model compute (steady, in-process): {100 * in_proc_share[6]:.0f}% of unit time "
        f"(decode wait {100 * in_proc_share[3]:.0f}%, write wait {100 * in_proc_share[4]:.0f}%); large by "
        "construction with the tiny models.",
        f"What decoding means next to real encoders: our decode of 1080p H.264 runs at {fps_1080:.0f} decoded "
        f"frames/s here, so an EgoDex episode (~{EGODEX_FRAMES} frames: 32 samples at ~7 Hz over the observed "
        f"half) costs {ep_s:.1f} s of one decode stream, while one H100/H200 at 40% of its FLOP bound would "
        f"encode {gpu_rate:.0f} videos/s: keeping it busy takes ~{gpu_rate * ep_s:.0f} concurrent decode streams. "
        "On a GPU box the CPU decode, not the models, is what limits stage one per GPU unless decoding "
        "moves to the GPU (NVDEC) or gets that many cores; the prefetch thread only hides decode that is "
        "shorter than the model time per video.",
        f"Sampled decode: {dec_rows[1][4]:.1f}x less wall time than converting "
        f"every frame at source size, {dec_rows[2][4]:.1f}x less than converting every frame at the decode "
        "size. Decoding itself is not skipped (H.264 needs every frame up to the last wanted one), so the "
        "gain is the colour conversion and resizing of frames that are not used.",
        f"Resident memory {delta:+.1f} MiB between video {lo} and video {hi} ({per_video:+.2f} MiB/video; "
        f"target < {RSS_TARGET_MIB_PER_VIDEO} MiB/video: {met(per_video < RSS_TARGET_MIB_PER_VIDEO)}), "
        f"{late:+.1f} MiB over the second half; open files {rss['fds'][lo]} -> {rss['fds'][hi]}; decoding and "
        f"reading labels alone (same videos, same process, before the job): {dec_delta:+.1f} MiB. "
        + memory_verdict(per_video, late, arena_delta / (int(hi) - int(lo)), int(hi)),
    ]
    return Section(name=NAME, title="3. Stage one on CPU (tiny models)", intro=__doc__.split("\n", 2)[2].strip(),
                   tables=[tput, share, decode, mem], findings=findings,
                   repeats=f"throughput and shares: {p.repeats} runs per executor; decode: {p.decode_repeats}; "
                           "memory: 1 run")
