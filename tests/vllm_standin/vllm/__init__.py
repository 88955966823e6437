"""A stand-in for the parts of vLLM's offline API that `VllmGenerator` uses (vLLM cannot install on CPU).

Written by us from vLLM 0.32/0.33's documented and read behaviour, not copied from it; only the
behaviour tjepa depends on is modelled, and everything else is refused rather than guessed:
- `LLM(model=dir, ...)` loads what `Qwen3VLProcessor.from_pretrained(dir)` needs (tokenizer,
  `preprocessor_config.json`, `video_preprocessor_config.json`: an OSError when one is missing),
  starts an engine-core child process (so a daemonic parent fails as under vLLM), and generates with
  the real transformers model of `dir` so its ids are comparable with tjepa's.
- A text prompt is tokenised as is; each bare `<|video_pad|>` is one video's placeholder and becomes,
  per temporal group, `<{t:.1f} seconds>` (tokenised on its own) + `<|vision_start|>` + pad x n +
  `<|vision_end|>`; tokens around the bare pad (a template's outer start/end pair) are kept.
- Timestamps come from the metadata: frames_indices / fps, padded to the temporal patch size by
  repeating the last index, averaged per group.
- Pixels: HF's video processor on pre-sampled frames with do_resize off (rescale, normalise, repeat
  the last frame to fill a temporal patch, patch-merge order); resizing or sampling is refused.
- `SamplingParams` derives its stop set when constructed (a later `stop_token_ids` assignment is not
  seen); greedy only; EOS (the tokenizer's, plus the generation config's unless
  `generation_config="vllm"`) stops unless `ignore_eos`; stop ids are kept in the output.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__version__ = "0.33.0+tjepa-standin"

_ENGINE_ARGS = {"model", "tokenizer", "dtype", "seed", "gpu_memory_utilization", "max_model_len", "enforce_eager",
                "trust_remote_code", "limit_mm_per_prompt", "generation_config", "enable_chunked_prefill"}


class SamplingParams:
    _FIELDS = {"temperature": 1.0, "max_tokens": 16, "seed": None, "detokenize": True, "stop_token_ids": None,
               "ignore_eos": False, "min_tokens": 0, "skip_special_tokens": True}

    def __init__(self, **kwargs):
        unknown = set(kwargs) - set(self._FIELDS)
        if unknown:
            raise TypeError(f"SamplingParams got unexpected arguments {sorted(unknown)}")
        for k, v in (self._FIELDS | kwargs).items():
            setattr(self, k, v)
        if self.temperature != 0.0:
            raise NotImplementedError("the stand-in models greedy sampling only")
        self.stop_token_ids = list(self.stop_token_ids or [])
        self._all_stop_token_ids = set(self.stop_token_ids)  # derived once, as vLLM does


@dataclass
class CompletionOutput:
    token_ids: list[int]
    finish_reason: str


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)


def video_pixels(video_cfg: dict, frames: np.ndarray, mm_kwargs: dict):
    """HF's Qwen3-VL video processing as configured by `video_cfg` (the checkpoint's JSON)."""
    import torch

    c = video_cfg | mm_kwargs
    if c.get("do_resize", True) or c.get("do_sample_frames", True):
        raise NotImplementedError("the stand-in models pre-sampled, pre-resized frames only")
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # T, C, H, W
    mean = torch.tensor(c["image_mean"]).view(1, 3, 1, 1)
    std = torch.tensor(c["image_std"]).view(1, 3, 1, 1)
    x = (x * c["rescale_factor"] - mean) / std
    tp, p, m = c["temporal_patch_size"], c["patch_size"], c["merge_size"]
    while x.shape[0] % tp:
        x = torch.cat([x, x[-1:]])
    t, ch, h, w = x.shape
    gt, gh, gw = t // tp, h // p, w // p
    x = x.view(gt, tp, ch, gh // m, m, p, gw // m, m, p).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, ch * tp * p * p), (gt, gh, gw)


def _engine_core() -> None:
    """The engine's child process (vLLM runs its engine core in one)."""


class LLM:
    def __init__(self, model: str, **kwargs):
        unknown = set(kwargs) - _ENGINE_ARGS
        if unknown:
            raise TypeError(f"LLM got unexpected engine arguments {sorted(unknown)}")
        if kwargs.get("enable_chunked_prefill") is False:
            warnings.warn("disabling chunked prefill may crash or give wrong outputs", UserWarning, stacklevel=2)
        self.engine_kwargs = dict(kwargs, model=model)
        self.visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.max_model_len = kwargs.get("max_model_len")
        d = Path(model)
        for name in ("preprocessor_config.json", "video_preprocessor_config.json"):
            if not (d / name).is_file():
                raise OSError(f"Can't load the processor for '{model}': no {name} in that directory")
        self.video_cfg = json.loads((d / "video_preprocessor_config.json").read_text())
        import torch
        from transformers import AutoTokenizer, GenerationConfig, Qwen3VLForConditionalGeneration

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        dtype = getattr(torch, kwargs.get("dtype") or "bfloat16")
        self.model = Qwen3VLForConditionalGeneration.from_pretrained(model, dtype=dtype).eval()
        self.eos = {self.tokenizer.eos_token_id}
        if kwargs.get("generation_config", "auto") != "vllm":
            eos = GenerationConfig.from_pretrained(model).eos_token_id
            self.eos |= set(eos if isinstance(eos, list) else [eos])
        child = multiprocessing.get_context("fork").Process(target=_engine_core)
        child.start()  # AssertionError in a daemonic process, as under vLLM
        child.join()

    # --- multimodal processing (the HF processor as vLLM calls it) ---
    def _pixels(self, frames: np.ndarray, mm_kwargs: dict):
        return video_pixels(self.video_cfg, frames, mm_kwargs)

    def _timestamps(self, meta: dict) -> list[float]:
        tp = self.video_cfg["temporal_patch_size"]
        idx = list(meta["frames_indices"])
        while len(idx) % tp:
            idx.append(idx[-1])
        t = [i / meta["fps"] for i in idx]
        return [(t[i] + t[i + tp - 1]) / 2 for i in range(0, len(t), tp)]

    def _expand(self, ids: list[int], videos: list) -> tuple[list[int], list]:
        cfg = self.model.config
        pad, start, end = cfg.video_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id
        if ids.count(pad) != len(videos):
            raise ValueError(f"Failed to apply prompt replacement: {ids.count(pad)} video placeholders for {len(videos)} videos")
        out, processed, k = [], [], 0
        for tok in ids:
            if tok != pad:
                out.append(tok)
                continue
            frames, meta, kw = videos[k]
            k += 1
            pixels, grid = self._pixels(frames, kw)
            n = grid[1] * grid[2] // self.video_cfg["merge_size"] ** 2
            for t in self._timestamps(meta):
                out += self.tokenizer.encode(f"<{t:.1f} seconds>", add_special_tokens=False)
                out += [start] + [pad] * n + [end]
            processed.append((pixels, grid))
        return out, processed

    def _greedy(self, ids: list[int], processed: list, sp: SamplingParams) -> CompletionOutput:
        import torch

        seq = torch.tensor([ids])
        pv = torch.cat([p for p, _ in processed]).to(self.model.dtype)
        grid = torch.tensor([g for _, g in processed])
        out: list[int] = []
        limit = min(sp.max_tokens, (self.max_model_len or 10**9) - len(ids))
        reason = "length"
        with torch.no_grad():
            while len(out) < limit:
                logits = self.model(input_ids=seq, attention_mask=torch.ones_like(seq), pixel_values_videos=pv,
                                    video_grid_thw=grid, mm_token_type_ids=(seq == self.model.config.video_token_id).long() * 2
                                    ).logits[0, -1]
                tok = int(logits.argmax())
                out.append(tok)
                seq = torch.cat([seq, torch.tensor([[tok]])], 1)
                if tok in sp._all_stop_token_ids or (not sp.ignore_eos and tok in self.eos):
                    reason = "stop"
                    break
        return CompletionOutput(token_ids=out, finish_reason=reason)

    def generate(self, prompts, sampling_params=None, use_tqdm=True):
        prompts = prompts if isinstance(prompts, list) else [prompts]
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params or SamplingParams()] * len(prompts)
        results = []
        for req, sp in zip(prompts, params, strict=True):
            ids = self.tokenizer(req["prompt"]).input_ids
            vids = req.get("multi_modal_data", {}).get("video", [])
            vids = vids if isinstance(vids, list) else [vids]
            kw = req.get("mm_processor_kwargs", {})
            ids, processed = self._expand(ids, [(f, m, kw) for f, m in vids])
            if self.max_model_len is not None and len(ids) > self.max_model_len:
                raise ValueError(f"The decoder prompt (length {len(ids)}) is longer than the maximum model length "
                                 f"of {self.max_model_len}")
            results.append(RequestOutput(prompt_token_ids=ids, outputs=[self._greedy(ids, processed, sp)]))
        return results
