"""Benchmark 5 (GPU): stage one videos/s per GPU with real-size random-weight encoders vs the FLOP
bound, and stage-two training samples/s at the paper preset vs the reference's ~7 samples/s/GPU.

Without CUDA this section prints the FLOP arithmetic and says what needs a GPU. With CUDA:
- stage one: `tjepa build-models --preset full-random` (unless TJEPA_BENCH_MODELS points at a built
  directory), a synthetic set, `pipeline.job.run` in-process on the GPU (a warm-up job, then the timed one);
- stage two: ThinkJEPA at the paper preset, batch 16, AdamW, fp16 autocast with a grad scaler (as the
  reference trains), for each attention implementation. Peak TFLOP/s: TJEPA_BENCH_PEAK_TFLOPS or the
  table below (dense bf16, from NVIDIA's data sheets).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import Context, Section, Table, finish_section, load_average, median, spread

NAME = "gpu"
REFERENCE_SAMPLES_PER_S = 7.0  # ~7 h for 200 epochs of ~1,800 videos on two H200s (docs/method.md)
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.5, "A100": 312.0}


# ---- FLOP arithmetic (forward FLOPs; a multiply-add counts 2) --------------------------------------
def block_flops(tokens: float, width: int, mlp_width: int, ctx: float, gated: bool = False,
                kv_width: int | None = None) -> float:
    """One transformer block over `tokens` tokens attending to `ctx` keys each (mean)."""
    kv = width if kv_width is None else kv_width
    attn_proj = 2 * width * (2 * width + 2 * kv)  # q, o (width x width) + k, v (width x kv)
    mlp = 2 * width * mlp_width * (3 if gated else 2)
    attn = 4 * ctx * width  # scores and weighted sum
    return tokens * (attn_proj + mlp + attn)


@dataclass(frozen=True)
class StageOneFlops:
    vjepa: float  # both clips
    vision: float  # Qwen3-VL vision tower incl. mergers
    prefill: float  # the generate() prefill over the prompt
    decode: float  # 15 single-token steps (+ lm_head on 16 positions)
    capture: float  # recorded during generation: one more one-position step for the last token (no lm_head)
    teacher_forced: float = 0.0  # what a separate capture forward over prompt + 16 tokens costs (--generator vllm)

    @property
    def total(self) -> float:
        return self.vjepa + self.vision + self.prefill + self.decode + self.capture


def stage_one_flops(prompt_tokens: float = 1150, new_tokens: int = 16, frames: int = 32, size: int = 256) -> StageOneFlops:
    # V-JEPA 2 ViT-L: patch 16, tubelet 2, width 1024, MLP 4096, 24 blocks; full attention over the clip.
    n = (frames // 2) * (size // 16) ** 2  # 4,096 tokens per clip
    embed = 2 * n * (2 * 16 * 16 * 3) * 1024
    vjepa = 2 * (24 * block_flops(n, 1024, 4096, ctx=n) + embed)
    # Qwen3-VL vision: patch 16, temporal patch 2, width 1024, MLP 4096, 24 blocks; attention within
    # each temporal group (256 patches); 1 merger + 3 DeepStack mergers (4096 -> 4096 -> 2048) on n/4 tokens.
    merger = 2 * (n // 4) * (4096 * 4096 + 4096 * 2048)
    vision = 24 * block_flops(n, 1024, 4096, ctx=(size // 16) ** 2) + 2 * n * (2 * 16 * 16 * 3) * 1024 + 4 * merger
    # Qwen3-VL-2B text: width 2048 (16 q heads, 8 kv heads of 128), gated MLP 6144, 28 layers, vocab 151,936.
    lm_head = 2 * 2048 * 151936

    def llm(tokens: float, ctx: float) -> float:
        return 28 * block_flops(tokens, 2048, 6144, ctx=ctx, gated=True, kv_width=1024)

    s = prompt_tokens
    prefill = llm(s, s / 2) + lm_head
    decode = sum(llm(1, s + k) for k in range(1, new_tokens)) + (new_tokens - 1) * lm_head
    capture = llm(1, s + new_tokens)
    teacher_forced = llm(s + new_tokens, (s + new_tokens) / 2)
    return StageOneFlops(vjepa, vision, prefill, decode, capture, teacher_forced)


def stage_two_flops(frames: int = 64, patches: int = 256, width: int = 384, depth: int = 12,
                    vjepa_width: int = 1024, head_width: int = 1024) -> tuple[float, float]:
    """(forward, forward+backward) FLOPs of one paper-preset training sample; frame-causal attention
    counted as computed by a causal kernel (a query of frame f sees f+1 frames)."""
    n = frames * patches
    mean_ctx = (frames + 1) / 2 * patches
    blocks = depth * block_flops(n, width, 4 * width, ctx=mean_ctx)
    io = 2 * (n // 2) * vjepa_width * width * 2  # input projection (past) + output projection (future)
    head = 2 * (frames // 2 + 1) * patches * vjepa_width * 2 * head_width  # head's K/V over its input frames
    fwd = blocks + io + head
    return fwd, 3 * fwd  # backward ~ 2x forward


def peak_tflops(device_name: str) -> tuple[float | None, str]:
    env = os.environ.get("TJEPA_BENCH_PEAK_TFLOPS")
    if env:
        return float(env), "TJEPA_BENCH_PEAK_TFLOPS"
    name = device_name.upper()
    if "H200" in name:
        return PEAK_BF16_TFLOPS["H200"], "H200"
    if "H100" in name:
        key = "H100 PCIe" if "PCIE" in name else "H100 NVL" if "NVL" in name else "H100 SXM"
        return PEAK_BF16_TFLOPS[key], key
    if "A100" in name:
        return PEAK_BF16_TFLOPS["A100"], "A100"
    return None, "unknown GPU: set TJEPA_BENCH_PEAK_TFLOPS"


def arithmetic_text(prompt_tokens: float = 1150) -> str:
    """The sums behind the tables, written out."""
    f, (fwd, train) = stage_one_flops(prompt_tokens), stage_two_flops()
    s, peak = prompt_tokens, PEAK_BF16_TFLOPS["H100 SXM"]
    llm_tok = 2 * 2048 * (2 * 2048 + 2 * 1024) + 3 * 2 * 2048 * 6144
    return "\n".join([
        "Arithmetic (forward FLOPs, multiply-add = 2):",
        f"- V-JEPA 2 ViT-L: 2 clips x 24 layers x 4,096 tokens x (24 x 1024^2 + 4 x 4,096 x 1024) + patch "
        f"embedding = {f.vjepa / 1e12:.2f} TFLOP",
        f"- Qwen3-VL vision: 24 layers x 4,096 patches x (24 x 1024^2 + 4 x 256 x 1024) + 4 mergers x 1,024 x "
        f"2 x (4096^2 + 4096 x 2048) = {f.vision / 1e12:.2f} TFLOP",
        f"- Qwen3-VL-2B text, per token and layer {llm_tok / 1e6:.0f} MFLOP of projections and gated MLP + 4 x "
        f"context x 2048 attention; lm_head 2 x 2048 x 151,936 = {2 * 2048 * 151936 / 1e9:.2f} GFLOP per "
        f"position: prefill of {s:,.0f} tokens {f.prefill / 1e12:.2f} TFLOP, 15 decode steps "
        f"{f.decode / 1e12:.3f} TFLOP; the layers are recorded during generation, plus one one-position step "
        f"for the last token {f.capture / 1e9:.1f} GFLOP (a separate capture forward over {s + 16:,.0f} tokens, "
        f"what ids from vLLM still need, would add {f.teacher_forced / 1e12:.2f} TFLOP: "
        f"{(f.total + f.teacher_forced) / 1e12:.1f} TFLOP per video)",
        f"- Total {f.total / 1e12:.1f} TFLOP per video. Dense bf16 peak: H100 SXM and H200 989.4 TFLOP/s, "
        f"H100 PCIe 756.5 -> at most {peak * 1e12 / f.total:.0f} videos/s per H100 SXM/H200 at 100% utilisation "
        f"({0.4 * peak * 1e12 / f.total:.0f} at a good 40%).",
        f"- Stage two, paper preset, one sample: 12 blocks x 16,384 tokens x (12 x 384^2 + 4 x 8,320 x 384) + "
        f"projections and head = {fwd / 1e12:.2f} TFLOP forward, {train / 1e12:.2f} TFLOP forward+backward -> at "
        f"most {peak * 1e12 / train:.0f} samples/s per GPU; the reference's ~{REFERENCE_SAMPLES_PER_S:.0f} "
        f"samples/s is {100 * REFERENCE_SAMPLES_PER_S * train / (peak * 1e12):.1f}% of that.",
    ])


def arithmetic_tables(prompt_tokens: float = 1150) -> list[Table]:
    f = stage_one_flops(prompt_tokens)
    parts = [("V-JEPA 2 ViT-L, 2 clips x 4,096 tokens x 24 layers (width 1024)", f.vjepa),
             ("Qwen3-VL vision tower, 4,096 patches x 24 layers (width 1024) + 4 mergers", f.vision),
             (f"Qwen3-VL-2B prefill, {prompt_tokens:,.0f} tokens x 28 layers (width 2048)", f.prefill),
             ("15 decode steps (+ lm_head on 16 positions)", f.decode),
             ("hidden-state capture: recorded during generation + 1 step for the last token", f.capture),
             ("total per video", f.total)]
    rows = [[k, v / 1e12] + [PEAK_BF16_TFLOPS[g] * 1e12 / f.total if k == "total per video" else "" for g in
                              ("H100 SXM", "H200")] for k, v in parts]
    one = Table("Stage one: forward FLOPs per video and the videos/s they allow at 100% of peak",
                ["part", "TFLOP", "bound videos/s, H100 SXM (989 TFLOP/s)", "bound videos/s, H200 (989 TFLOP/s)"],
                rows,
                note=("Per token and block: 2 x (4 w^2 projections + 2 w m MLP, 3 w m if gated) + 4 x context x w "
                      "attention; Qwen3-VL text uses grouped KV (k, v: 2048 -> 1024) and a gated MLP. Vision attention "
                      "is within each 2-frame group (256 patches); V-JEPA attends over the whole 4,096-token clip. "
                      "The decode steps are memory-bound in practice (each reads the 4 GB of bf16 weights), so the "
                      "FLOP bound is optimistic for them; batching videos amortises that read."))
    fwd, train = stage_two_flops()
    rows2 = [["forward", fwd / 1e12, ""], ["forward + backward (training step)", train / 1e12, ""]]
    for g in ("H100 SXM", "H200"):
        bound = PEAK_BF16_TFLOPS[g] * 1e12 / train
        rows2.append([f"bound samples/s on {g} at 100% of peak", bound, f"reference ~{REFERENCE_SAMPLES_PER_S:.0f} "
                      f"samples/s = {100 * REFERENCE_SAMPLES_PER_S / bound:.1f}% of it"])
    two = Table("Stage two: FLOPs per training sample at the paper preset (16,384 tokens, width 384, depth 12)",
                ["quantity", "TFLOP or samples/s", "note"], rows2,
                note=("Blocks: 12 x (12 w^2 per token + 4 x mean context x w), mean context (64 + 1) / 2 frames x 256 "
                      "patches (frame-causal); plus the 1024 <-> 384 projections and the head's K/V over 33 frames. "
                      "Backward counted as 2x forward. A dense 16,384^2 mask computes twice the attention FLOPs."))
    return [one, two]


# ---- measurements (any device; CUDA for figures) ------------------------------------------------
def measure_stage_two(device: str, preset: str = "paper", batch: int = 16, impls=("flex", "sdpa_per_frame", "dense"),
                      warmup: int = 3, steps: int = 10, amp: str = "float16") -> dict[str, dict]:
    """Training-step time per attention implementation: {impl: {"step_s": [...], "peak_gib": x} | {"error": msg}}."""
    import torch

    from tjepa.train.config import preset as make_preset
    from tjepa.train.model import ThinkJEPA, random_batch

    dev = torch.device(device)
    dtype = getattr(torch, amp)
    out: dict[str, dict] = {}
    for impl in impls:
        model = opt = data = None
        try:
            torch.manual_seed(0)
            cfg = make_preset(preset, attention=impl)
            model = ThinkJEPA(cfg).to(dev).train()
            opt = torch.optim.AdamW(model.param_groups(1e-3, 1e-4, 1e-4))
            scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16 and dev.type == "cuda")
            data = {k: v.to(dev) for k, v in random_batch(cfg, batch).items()}
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            times = []
            for i in range(warmup + steps):
                t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                with torch.autocast(dev.type, dtype=dtype):
                    loss = model.loss(data, model(data))["total"]
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
            out[impl] = {"step_s": times, "batch": batch,
                         "peak_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None}
        except (torch.OutOfMemoryError, RuntimeError, NotImplementedError) as err:
            out[impl] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}", "batch": batch}
        finally:
            del model, opt, data
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    return out


def measure_stage_one(videos: Path, warm_videos: Path, models_dir: Path, out: Path, preset: str, device: str,
                      batch_size: int = 8) -> dict:
    """A warm-up job (loads the models), then the timed job; plus the mean prompt length it stored."""
    import numpy as np

    from tjepa.cache_schema.reader import StoreReader
    from tjepa.pipeline.encoders.presets import resolve_encoders
    from tjepa.pipeline.job import CacheJob, run

    enc = resolve_encoders(preset, models_dir=models_dir)
    kw = dict(encoders=enc, device=device, batch_size=batch_size, rows_per_shard=batch_size)
    run(CacheJob(videos=warm_videos, out=out / "warm", **kw))
    s = run(CacheJob(videos=videos, out=out / "timed", **kw))
    if s.failed:
        raise RuntimeError(f"stage one on {device}: {len(s.failed)} videos failed, e.g. {s.failed[0]}")
    prompt_len = float(np.mean(StoreReader(out / "timed").read("prompt_len")))
    return {"seconds": s.seconds, "done": len(s.done), "stage": s.stage_seconds, "prompt_len": prompt_len}


def full_random_models(ctx: Context) -> Path:
    env = os.environ.get("TJEPA_BENCH_MODELS")
    if env:
        return Path(env)
    out = ctx.workdir / "models-full-random"
    if not (out / "tjepa-models.json").is_file():
        ctx.log(f"  gpu: building full-random models in {out} (several GB)")
        subprocess.run([sys.executable, "-m", "tjepa", "build-models", "--preset", "full-random", "--out", str(out)],
                       check=True)
    return out


# ---- section -------------------------------------------------------------------------------------
def run(ctx: Context) -> Section:
    import torch

    t0, load0 = time.perf_counter(), load_average()
    if not torch.cuda.is_available():
        return finish_section(cpu_section(), ctx, t0, load0)
    return finish_section(cuda_section(ctx), ctx, t0, load0)


def cpu_section() -> Section:
    return Section(
        name=NAME, title="5. GPU: stage one vs the FLOP bound, stage two vs the reference",
        intro=__doc__.split("\n", 2)[2].strip() + "\n\n" + arithmetic_text(), tables=arithmetic_tables(),
        findings=["No CUDA device on this machine: only the arithmetic above. The measured part (videos/s per "
                  "GPU with the full-random encoders, training samples/s at the paper preset per attention "
                  "implementation) needs a GPU: run `python -m benchmarks --only gpu` there."],
        repeats="none: no timings without a GPU, arithmetic only")


def cuda_section(ctx: Context) -> Section:
    import torch

    from benchmarks.stage_one import linked_set
    from tjepa.pipeline.synth import SynthConfig, write_dataset

    name = torch.cuda.get_device_name(0)
    peak, peak_src = peak_tflops(name)
    quick = ctx.mode != "full"
    root = ctx.subdir(NAME)
    synth = root / "synth"
    write_dataset(synth, SynthConfig(episodes=8, seed=0, width=256, height=256, preview=False))
    n_videos = 16 if quick else 64
    videos, warm = linked_set(synth, root / "videos", n_videos), linked_set(synth, root / "warm", 8)
    models = full_random_models(ctx)
    ctx.log("  gpu: stage one")
    one = measure_stage_one(videos, warm, models, root / "out", "full-random", "cuda", batch_size=8)
    ctx.log("  gpu: stage two")
    two = measure_stage_two("cuda", steps=5 if quick else 20)
    f = stage_one_flops(one["prompt_len"])
    rate = one["done"] / one["seconds"]
    tables = arithmetic_tables(one["prompt_len"])
    rows = [["stage one, full-random encoders, in-process, batch 8", rate, "videos/s",
             peak * 1e12 / f.total if peak else "-", rate * f.total / (peak * 1e12) if peak else "-"]]
    fwd_bwd = stage_two_flops()[1]
    for impl, r in two.items():
        if "error" in r:
            rows.append([f"stage two, paper preset, {impl}, batch {r['batch']}", "-", r["error"], "-", "-"])
            continue
        sps = r["batch"] / median(r["step_s"])
        rows.append([f"stage two, paper preset, {impl}, batch {r['batch']} (peak {r['peak_gib']:.1f} GiB; step "
                     f"range {spread(r['step_s'])} s)", sps, f"samples/s = {sps / REFERENCE_SAMPLES_PER_S:.1f}x the "
                     f"reference", peak * 1e12 / fwd_bwd if peak else "-",
                     sps * fwd_bwd / (peak * 1e12) if peak else "-"])
    tables.insert(0, Table(f"Measured on {name} (peak {peak or '?'} TFLOP/s from {peak_src})",
                           ["what", "rate", "unit / vs reference", "FLOP bound", "fraction of bound"], rows,
                           note=(f"Stage one: {one['done']} synthetic 256x256 videos after a warm-up job (models "
                                 f"loaded); mean prompt {one['prompt_len']:.0f} tokens (the offline tokenizer is "
                                 f"byte-level, so the text part is longer than with Qwen's). Stage seconds: "
                                 + ", ".join(f"{k} {v:.1f}" for k, v in one["stage"].items()) + ".")))
    best = max((r["batch"] / median(r["step_s"]) for r in two.values() if "step_s" in r), default=float("nan"))
    findings = [f"Stage one: {rate:.2f} videos/s per GPU, {100 * rate * f.total / (peak * 1e12):.0f}% of the FLOP "
                "bound." if peak else f"Stage one: {rate:.2f} videos/s per GPU.",
                f"Stage two: best {best:.1f} samples/s per GPU vs the reference's ~{REFERENCE_SAMPLES_PER_S:.0f} "
                f"({best / REFERENCE_SAMPLES_PER_S:.1f}x)."]
    return Section(name=NAME, title="5. GPU: stage one vs the FLOP bound, stage two vs the reference",
                   intro=__doc__.split("\n", 2)[2].strip() + "\n\n" + arithmetic_text(one["prompt_len"]),
                   tables=tables, findings=findings,
                   repeats=f"stage one: 1 timed job of {one['done']} videos; stage two: "
                           f"{5 if quick else 20} steps after 3 warm-up")
