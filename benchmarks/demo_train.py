"""Benchmark: where the demo's training time goes (tiny preset, the demo's store shapes, CPU).

The demo (`make demo`) trains 5 variants x 3 seeds of the tiny preset on 8 + 8 frame slots of 4x4
patches (256 predictor tokens) with `--preload`. This measures, on a random store of those shapes
(`fixtures.write_store`), the real `Trainer` in fresh processes:
- samples/s of one process by batch size and torch threads (is it per-step overhead or per-sample
  compute; does a second thread help?);
- the start-up of a process (imports, store preload, model and optimizer) before its first epoch;
- the combined samples/s of K one-thread processes running side by side (how to run 3 seeds on 2 cores);
- the share of the ops in one process's training step (torch.profiler, self CPU time).
"""

from __future__ import annotations

import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import Context, Section, Table, finish_section, fmt, load_average, run_child
from benchmarks.fixtures import Shapes, make_payloads, write_store

NAME = "demo_train"
# the demo's store: params.yaml cache.past/future = 8, tiny V-JEPA (4x4 patches, width 32), tiny VLM
DEMO = Shapes(n_past=8, n_future=8, patches=16, vjepa_width=32, levels=8, vlm_width=64, max_new_tokens=4,
              prompt_tokens=40, think_tokens=3, thumb=None, rows_per_shard=8)


@dataclass(frozen=True)
class Params:
    rows: int
    epochs: int  # per process; epoch 1 is warm-up, the median is over the others
    single: tuple[tuple[int, int], ...]  # (batch, threads)
    parallel: tuple[int, ...]  # processes side by side, batch 8, one thread each


PARAMS = {
    "full": Params(rows=240, epochs=4, single=((8, 1), (32, 1), (8, 2)), parallel=(1, 2, 3)),
    "quick": Params(rows=120, epochs=3, single=((8, 1), (32, 1), (8, 2)), parallel=(1, 3)),
    "smoke": Params(rows=12, epochs=2, single=((4, 1),), parallel=(1,)),
}


def train_child(store: str, run_dir: str, batch: int, threads: int, epochs: int, t_start: float,
                profile: bool = False) -> dict:
    """One `tjepa train`-like run; returns samples/s per epoch and seconds from `t_start` to epoch 1."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _train(store, run_dir, batch, epochs, t_start, profile)
    finally:  # an inline (smoke) call must not leave the caller's thread count changed
        torch.set_num_threads(before)


def _train(store: str, run_dir: str, batch: int, epochs: int, t_start: float, profile: bool) -> dict:
    from tjepa.train.loop import Trainer
    from tjepa.train.run_config import TrainConfig

    cfg = TrainConfig(preset="tiny", epochs=epochs, batch_size=batch, preload=True, lr_head=0.002,
                      lr_predictor=0.002, fractions=(0.8, 0.1, 0.1))
    trainer = Trainer(cfg, store, run_dir, resume=False, progress=False)
    startup = time.time() - t_start
    rows = trainer.fit()
    out = {"startup_s": startup, "samples_per_s": [r["samples_per_s"] for r in rows]}
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        batches = [b for _, b in zip(range(8), trainer.train_loader, strict=False)]
        model, opt = trainer.model, trainer.opt
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for b in batches:
                loss = trainer.core.loss(b, model(b))["total"]
                opt.zero_grad()
                loss.backward()
                opt.step()
        events = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()]
        total = sum(t for _, t in events)
        out["ops"] = [(k, t / total) for k, t in sorted(events, key=lambda kv: -kv[1])[:8]]
    return out


def _run(ctx: Context, store: Path, tag: str, batch: int, threads: int, epochs: int, profile: bool = False) -> dict:
    return run_child("benchmarks.demo_train:train_child", dict(
        store=str(store), run_dir=str(ctx.subdir(NAME) / f"run-{tag}"), batch=batch, threads=threads,
        epochs=epochs, t_start=time.time(), profile=profile), inline=ctx.inline_children,
        env=None if ctx.inline_children else {"OMP_NUM_THREADS": str(threads)})


def _steady(result: dict) -> float:
    rates = result["samples_per_s"][1:] or result["samples_per_s"]
    return statistics.median(rates)


def _side_by_side(ctx: Context, store: Path, k: int, epochs: int) -> list[dict]:
    """k one-thread training processes started together (threads only wait on their child)."""
    with ThreadPoolExecutor(k) as pool:
        futures = [pool.submit(_run, ctx, store, f"par{k}-{j}", 8, 1, epochs) for j in range(k)]
        return [f.result() for f in futures]


def run(ctx: Context) -> Section:
    t0, load0 = time.perf_counter(), load_average()
    p = PARAMS[ctx.mode]
    store = ctx.subdir(NAME) / "demo.zarr"
    write_store(store, DEMO, p.rows, make_payloads(DEMO, min(p.rows, 32)))
    single = Table("One process", ["batch", "torch threads", "samples/s (median of epochs 2+)", "start-up before epoch 1 (s)"], [])
    profile_ops, rates = None, {}
    for i, (batch, threads) in enumerate(p.single):
        ctx.log(f"  demo_train: batch {batch}, {threads} thread(s)")
        res = _run(ctx, store, f"b{batch}t{threads}", batch, threads, p.epochs, profile=i == 0)
        profile_ops = profile_ops or res.get("ops")
        rates[(batch, threads)] = _steady(res)
        single.rows.append([str(batch), str(threads), fmt(rates[(batch, threads)]), fmt(res["startup_s"])])
    par = Table("Processes side by side", ["processes side by side (batch 8, 1 thread each)", "combined samples/s", "vs one process"], [])
    base, combined_by_k = None, {}
    for k in p.parallel:
        ctx.log(f"  demo_train: {k} process(es) side by side")
        results = _side_by_side(ctx, store, k, p.epochs)
        combined = sum(_steady(r) for r in results)
        base = base or combined
        combined_by_k[k] = combined
        par.rows.append([str(k), fmt(combined), f"{combined / base:.2f}x"])
    findings = [f"{p.rows} rows of the demo's shapes ({DEMO.n_past} + {DEMO.n_future} frame slots, "
                f"{DEMO.patches} patches, V-JEPA width {DEMO.vjepa_width}, {DEMO.levels} VLM levels of width "
                f"{DEMO.vlm_width}); {p.epochs} epochs per process, fractions 0.8/0.1/0.1; "
                f"{os.cpu_count()} CPUs."]
    if (8, 1) in rates and (32, 1) in rates:
        r = rates[(32, 1)] / rates[(8, 1)]
        findings.append(f"Batch 32 vs 8 at one thread: {r:.2f}x the samples/s with 4x fewer steps: the cost is mostly "
                        + ("per sample (compute), not per step." if r < 2 else "per step (overhead), not per sample."))
    if len(combined_by_k) > 1:
        best = max(combined_by_k, key=combined_by_k.get)
        line = (f"Most combined throughput with {best} one-thread processes side by side "
                f"({combined_by_k[best] / base:.2f}x one process)")
        if (8, 1) in rates and (8, 2) in rates:
            line += f"; a second torch thread in one process gave {rates[(8, 2)] / rates[(8, 1)]:.2f}x"
        findings.append(line + ". The demo trains its three seeds as three one-thread processes.")
    if profile_ops:
        findings.append("Self CPU time of one process's training steps (batch 8, 1 thread), top ops: "
                        + ", ".join(f"{k} {share:.0%}" for k, share in profile_ops) + ".")
    section = Section(name=NAME, title="3e. Stage two: the demo's training throughput (tiny preset, CPU)",
                      repeats=f"epochs 2-{p.epochs} of each process (median)", tables=[single, par],
                      findings=findings)
    return finish_section(section, ctx, t0, load0)
