"""Compare the transformers and vLLM generators on a GPU box (run by scripts/gpu_check.sh).

    python scripts/compare_generators.py --data DIR --models-dir DIR --preset full-random --out OUT

For the first `--videos` episodes: HF's pixel_values_videos against ours, the prompt ids vLLM built
against ours, the first 16 generated ids, the captured per-level means, and the seconds per video of
each generator (after one warm-up video). Writes OUT/compare_generators.json; exit 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tjepa.pipeline.encoders.presets import resolve_encoders
from tjepa.pipeline.encoders.thinker import Thinker
from tjepa.pipeline.encoders.vllm_generator import VllmConfig, check_pixels, hf_video_pixels
from tjepa.pipeline.episode_io import SamplingConfig, load_episode
from tjepa.pipeline.sources import discover


def _timed(thinker, ep):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    (r,) = thinker.think([ep.past_frames], fps=[ep.info.fps], frame_indices=[ep.past_idx])
    torch.cuda.synchronize()
    return r, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--models-dir", required=True)
    ap.add_argument("--preset", default="full-random")
    ap.add_argument("--videos", type=int, default=2)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    cfg = resolve_encoders(a.preset, models_dir=a.models_dir)
    sampling = SamplingConfig()
    episodes = [load_episode(ep, sampling) for ep in discover(a.data)[: a.videos + 1]]  # +1: warm-up
    with_vllm = Thinker.load(cfg, "cuda", generator="vllm", vllm=VllmConfig(), n_frames=sampling.n_past)
    plain = Thinker(with_vllm.model, with_vllm.tokenizer, cfg, "cuda")
    gen = with_vllm.generator
    report: dict = {"videos": [], "preset": a.preset}
    ok = True

    # HF's processor (what vLLM feeds its model) against ours (what the capture feeds ours).
    ep = episodes[1]
    prompts = plain.prompts([ep.past_frames], [ep.info.fps], [ep.past_idx])
    _, squashed = gen.requests(prompts, [ep.past_frames], plain, [ep.info.fps], [ep.past_idx])
    try:
        check_pixels([p.video for p in prompts], squashed, hf_video_pixels(cfg.qwen_path))
        report["hf_pixels"] = "equal within 1e-4"
    except Exception as err:  # report it and go on: the generator would refuse the same batch
        report["hf_pixels"] = f"MISMATCH: {err}"
        ok = False

    for g in (plain, with_vllm):
        _timed(g, episodes[0])  # warm-up (CUDA kernels, vLLM's first batch)
    for ep in episodes[1:]:
        (p,) = plain.prompts([ep.past_frames], [ep.info.fps], [ep.past_idx])
        requests, _ = gen.requests([p], [ep.past_frames], plain, [ep.info.fps], [ep.past_idx])
        (out,) = gen.llm.generate(requests, gen.sampling_params(plain.eos_ids), use_tqdm=False)
        r_hf, t_hf = _timed(plain, ep)
        r_vl, t_vl = _timed(with_vllm, ep)
        same_prompt = list(out.prompt_token_ids) == p.ids.tolist()
        same_ids = np.array_equal(r_hf.think_ids[:16], r_vl.think_ids[:16])
        d_prompt = float(np.abs(r_hf.prompt_mean - r_vl.prompt_mean).max())
        d_think = float(np.abs(r_hf.think_mean - r_vl.think_mean).max())
        ok &= same_prompt and same_ids
        report["videos"].append({
            "video": ep.episode.id, "prompt_ids_equal": same_prompt, "prompt_len": len(p.ids),
            "vllm_prompt_len": len(out.prompt_token_ids), "first16_ids_equal": bool(same_ids),
            "ids_transformers": r_hf.think_ids[:16].tolist(), "ids_vllm": r_vl.think_ids[:16].tolist(),
            "prompt_mean_max_abs_diff": d_prompt, "think_mean_max_abs_diff": d_think,
            "seconds_transformers": t_hf, "seconds_vllm": t_vl,
        })
        print(f"{ep.episode.id}: prompt ids equal {same_prompt} ({len(p.ids)} vs {len(out.prompt_token_ids)}), "
              f"first 16 ids equal {same_ids}, max |d mean| prompt {d_prompt:.3g} think {d_think:.3g}, "
              f"s/video transformers {t_hf:.3f} vllm {t_vl:.3f}")
    print(f"HF pixels: {report['hf_pixels']}")
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "compare_generators.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
