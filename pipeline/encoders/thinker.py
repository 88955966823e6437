"""The VLM "thinker": observed frames -> Qwen3-VL prompt -> greedy thinking tokens -> layer states.

Prompt: one user turn holding the video (only the frames passed in: the observed clip) followed by
the prompt text, rendered with the checkpoint's chat template and `add_generation_prompt=True` (the
Thinking template opens `<think>`). Which template, and how the video placeholder becomes one framed
run per temporal group, is `prompt.py`'s business (t = mean time of the group's first and last frame).
`mm_token_type_ids` is 2 at video tokens and 0 elsewhere.

Generation is greedy (do_sample forced off, a clean GenerationConfig so no repetition penalty or
sampling setting of the checkpoint applies) for up to `max_new_tokens`, stopping after EOS. With
transformers' generate the states are recorded during generation (`stream_capture.py`: every prompt
and thinking position runs through the text model once); ids from another generator (vLLM) go
through one teacher-forced capture forward (`capture.capture`). The vision tower runs once per batch.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from tjepa.errors import TjepaError
from tjepa.pipeline.encoders.capture import ThinkPrompt, ThinkResult, capture, encode_vision, pack, results
from tjepa.pipeline.encoders.compat import check_capture_forward
from tjepa.pipeline.encoders.preprocess import group_timestamps, qwen_video
from tjepa.pipeline.encoders.prompt import ensure_chat_template, render_prompt
from tjepa.pipeline.encoders.stream_capture import generate_with_capture

DEFAULT_FPS = 24.0  # what HF's processor assumes for frames without metadata


def prompt_length_bound(cfg, n_frames: int) -> int:
    """Prompt tokens of an n_frames clip whose timestamps stay below 10,000 s (for token storage)."""
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.qwen_path)
    ensure_chat_template(tokenizer, cfg.qwen_path)
    mc = AutoConfig.from_pretrained(cfg.qwen_path)
    vc = mc.vision_config
    groups = -(-n_frames // vc.temporal_patch_size)
    per_group = (cfg.vlm_frame_size // (vc.patch_size * vc.spatial_merge_size)) ** 2
    text = render_prompt(tokenizer, mc, cfg.prompt, [9999.9] * groups, per_group)
    return len(tokenizer(text, add_special_tokens=False).input_ids)


class Thinker:
    def __init__(self, model, tokenizer, cfg, device: str = "cpu", generator=None):
        check_capture_forward(type(model.model).forward)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.device = torch.device(device)
        self.generator = generator  # None: transformers' generate; else has generate_ids(...)
        gc = model.generation_config
        eos = gc.eos_token_id if gc.eos_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]
        pad = gc.pad_token_id if gc.pad_token_id is not None else tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.eos_ids[0])
        n_layers = model.config.text_config.num_hidden_layers
        if max(cfg.layers) >= n_layers:
            raise TjepaError(f"layer {max(cfg.layers)} requested but the model has {n_layers} decoder layers")
        if tokenizer.convert_tokens_to_ids(tokenizer.convert_ids_to_tokens(model.config.video_token_id)) != model.config.video_token_id:
            raise TjepaError("the tokenizer does not know the model's video token id")

    @classmethod
    def load(cls, cfg, device: str = "cpu", generator: str = "transformers", vllm=None, n_frames: int = 32) -> Thinker:
        """`vllm` (a VllmConfig) and `n_frames` (frames per clip) size the vLLM engine."""
        from transformers import AutoTokenizer, Qwen3VLForConditionalGeneration

        model = Qwen3VLForConditionalGeneration.from_pretrained(
            cfg.qwen_path, dtype=getattr(torch, cfg.dtype), attn_implementation="sdpa"
        ).to(device)
        tokenizer = AutoTokenizer.from_pretrained(cfg.qwen_path, trust_remote_code=False)
        ensure_chat_template(tokenizer, cfg.qwen_path)
        gen = None
        if generator == "vllm":
            from tjepa.pipeline.encoders.vllm_generator import VllmGenerator

            gen = VllmGenerator(cfg, vllm, n_frames=n_frames, device=device)
        elif generator != "transformers":
            raise TjepaError(f"unknown generator {generator!r}: transformers or vllm")
        return cls(model, tokenizer, cfg, device, generator=gen)

    def prompts(self, videos: list[np.ndarray], fps=None, frame_indices=None) -> list[ThinkPrompt]:
        """One ThinkPrompt per video. Timestamps are frame_indices / fps (HF's video metadata semantics):
        pass the source fps and the source frame indices of the sampled frames for true times."""
        vc = self.model.config.vision_config
        if fps is None:
            warnings.warn(f"no fps given: Qwen3-VL timestamps assume {DEFAULT_FPS} fps", stacklevel=3)
            fps = [DEFAULT_FPS] * len(videos)
        out = []
        for i, frames in enumerate(videos):
            idx = np.arange(len(frames)) if frame_indices is None else np.asarray(frame_indices[i])
            if len(idx) != len(frames):
                raise ValueError(f"video {i}: {len(idx)} frame indices for {len(frames)} frames")
            video = qwen_video(frames, self.cfg.vlm_frame_size, vc.patch_size, vc.temporal_patch_size,
                               vc.spatial_merge_size, self.cfg.vlm_mean, self.cfg.vlm_std)
            times = group_timestamps(idx, float(fps[i]), vc.temporal_patch_size)
            text = render_prompt(self.tokenizer, self.model.config, self.cfg.prompt, times, video.tokens_per_group)
            ids = torch.tensor(self.tokenizer(text, add_special_tokens=False).input_ids, dtype=torch.long)
            n_video = int((ids == self.model.config.video_token_id).sum())
            if n_video != video.n_tokens:
                raise TjepaError(f"prompt has {n_video} video tokens, the video needs {video.n_tokens}")
            out.append(ThinkPrompt(ids=ids, video=video, text=text, timestamps=tuple(times)))
        return out

    def generation_config(self):
        """Greedy, up to max_new_tokens, stopping after EOS; nothing of the checkpoint's own config."""
        from transformers import GenerationConfig

        return GenerationConfig(
            max_new_tokens=self.cfg.max_new_tokens, do_sample=False, num_beams=1,
            eos_token_id=self.eos_ids, pad_token_id=self.pad_id,
        )

    @torch.inference_mode()
    def generate_ids(self, prompts: list[ThinkPrompt], vision=None) -> list[np.ndarray]:
        """Greedy ids per prompt, up to max_new_tokens, cut after the first EOS (kept)."""
        batch = pack(prompts, [np.zeros(0, np.int64)] * len(prompts), self.pad_id, self.model.config.video_token_id)
        dev = self.model.device
        vision = encode_vision(self.model, prompts) if vision is None else vision
        out = self.model.generate(
            input_ids=batch.input_ids.to(dev),
            attention_mask=batch.attention_mask.to(dev),
            mm_token_type_ids=batch.mm_token_type_ids.to(dev),
            video_grid_thw=batch.grid_thw.to(dev),
            mm_encoder_outputs={"video": vision},
            generation_config=self.generation_config(),
        )
        new = out[:, batch.input_ids.shape[1] :].cpu().numpy()
        return [cut_at_eos(row, self.eos_ids) for row in new]

    def think(self, videos: list[np.ndarray], fps=None, frame_indices=None) -> list[ThinkResult]:
        """uint8 videos [T, H, W, 3] (observed frames only) -> one ThinkResult each."""
        prompts = self.prompts(videos, fps, frame_indices)
        vision = encode_vision(self.model, prompts)
        if self.generator is None:  # the states are recorded while generating: one pass per position
            generated, captured = generate_with_capture(
                self.model, prompts, self.cfg.layers, self.generation_config(), vision, self.pad_id,
                cut=lambda row: cut_at_eos(row, self.eos_ids), keep_tokens=self.cfg.keep_tokens,
            )
            return results(captured, generated, self.tokenizer, self.cfg.max_new_tokens)
        # Another generator hands back ids only: one teacher-forced forward records the states.
        generated = self.generator.generate_ids(prompts, videos, self, fps, frame_indices)
        return capture(
            self.model, self.tokenizer, prompts, generated, self.cfg.layers, self.cfg.max_new_tokens,
            keep_tokens=self.cfg.keep_tokens, vision=vision, pad_id=self.pad_id,
        )


def cut_at_eos(row: np.ndarray, eos_ids: list[int]) -> np.ndarray:
    """Ids up to and including the first EOS (generate pads finished rows after it)."""
    hits = np.flatnonzero(np.isin(row, eos_ids))
    return row[: hits[0] + 1].astype(np.int64) if hits.size else row.astype(np.int64)
