"""Prompt + generated ids -> captured decoder-layer states -> per-level masked means (and tokens).

This half of the thinker does not care who generated the ids (transformers here, vLLM on a GPU box):
one teacher-forced transformers forward over prompt + generated ids, left-padded across the batch,
records the chosen decoder layers with forward hooks.

Semantics: "layer k" is the output of decoder layer k, the residual stream after it and BEFORE the
final norm, exactly as HF's `output_hidden_states[k + 1]` for every layer but the last (whose HF
entry is after the norm; the hook is not). For the first decoder layers, where Qwen3-VL's DeepStack
adds visual features after the layer, HF (and so we) record the state before that addition; vLLM's
own capture records it after, which is why layers always come from this forward.

All generated tokens are fed back, so every one of the K generated tokens has its states (the
authors' release keeps K - 1: the last sampled token is never fed back). A generated EOS counts as a
generated token; generation stops after it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tjepa.pipeline.encoders.preprocess import QwenVideo


@dataclass(frozen=True)
class ThinkPrompt:
    """One video's prompt: token ids with the video placeholders expanded, and its pixels."""

    ids: torch.Tensor  # int64 [S]
    video: QwenVideo
    text: str  # the rendered prompt (expanded)
    timestamps: tuple[float, ...]  # seconds of each temporal group


@dataclass(frozen=True)
class ThinkResult:
    prompt_mean: np.ndarray  # float32 [L, H]: mean over prompt positions (zeros if none)
    think_mean: np.ndarray  # float32 [L, H]: mean over generated positions (zeros if none)
    prompt_len: int
    think_len: int
    think_ids: np.ndarray  # int32 [K], -1 padded
    think_text: str
    # float32 [L, n, H] (keep_tokens only): the compute dtype's values, never float16 (whose range real
    # activations exceed); the store keeps them as bfloat16 (cache_schema/bf16.py).
    prompt_tokens: np.ndarray | None = None  # [L, prompt_len, H]
    think_tokens: np.ndarray | None = None  # [L, think_len, H]


@dataclass
class Packed:
    input_ids: torch.Tensor  # [B, S] left padded
    attention_mask: torch.Tensor  # [B, S] long
    mm_token_type_ids: torch.Tensor  # [B, S]: 2 at video tokens, else 0
    prompt_mask: torch.Tensor  # [B, S] bool
    think_mask: torch.Tensor  # [B, S] bool
    pixel_values: torch.Tensor  # [sum of rows, patch dim]
    grid_thw: torch.Tensor  # [B, 3]


def pack(prompts: list[ThinkPrompt], generated: list[np.ndarray], pad_id: int, video_token_id: int) -> Packed:
    """Rows `pad... prompt generated`, left padded to one length."""
    seqs = [torch.cat([p.ids, torch.as_tensor(np.asarray(g), dtype=torch.long)]) for p, g in zip(prompts, generated, strict=True)]
    b, s = len(seqs), max(len(x) for x in seqs)
    ids = torch.full((b, s), pad_id, dtype=torch.long)
    att = torch.zeros((b, s), dtype=torch.long)
    pm = torch.zeros((b, s), dtype=torch.bool)
    tm = torch.zeros((b, s), dtype=torch.bool)
    for i, (p, x) in enumerate(zip(prompts, seqs, strict=True)):
        off = s - len(x)
        ids[i, off:] = x
        att[i, off:] = 1
        pm[i, off : off + len(p.ids)] = True
        tm[i, off + len(p.ids) :] = True
    return Packed(
        input_ids=ids,
        attention_mask=att,
        mm_token_type_ids=(ids == video_token_id).long() * 2,
        prompt_mask=pm,
        think_mask=tm,
        pixel_values=torch.cat([p.video.pixel_values for p in prompts]),
        grid_thw=torch.tensor([p.video.grid_thw for p in prompts], dtype=torch.long),
    )


@torch.inference_mode()
def encode_vision(model, prompts: list[ThinkPrompt]):
    """The vision tower's output for a batch of prompts (reusable by generate and the capture forward)."""
    dev = model.device
    pv = torch.cat([p.video.pixel_values for p in prompts]).to(dev)
    grid = torch.tensor([p.video.grid_thw for p in prompts], dtype=torch.long, device=dev)
    return model.model.get_video_features(pv, grid, return_dict=True)


def decoder_layers(model):
    return model.model.language_model.layers


@dataclass
class Captured:
    """A batch's chosen-layer states, reduced: per-row sums over each stream (and the tokens)."""

    prompt_sum: torch.Tensor  # float32 [B, L, H]
    think_sum: torch.Tensor  # float32 [B, L, H]
    prompt_len: list[int]
    think_len: list[int]
    prompt_tokens: list[np.ndarray] | None = None  # per row float32 [L, prompt_len, H]
    think_tokens: list[np.ndarray] | None = None  # per row float32 [L, think_len, H]


def masked_sum(mask: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Sum of h [B, S, H] over the positions where mask [B, S] is set, in fp32."""
    return torch.einsum("bs,bsh->bh", mask.to(h.device, torch.float32), h.float())


def rows_tokens(per_layer: list[torch.Tensor], mask: torch.Tensor) -> list[np.ndarray]:
    """Per row, the float32 states [L, n, H] at the positions of mask [B, S] (per_layer: [B, S, H] each)."""
    mask = mask.cpu()
    return [torch.stack([h[i][mask[i]] for h in per_layer]).float().numpy() for i in range(mask.shape[0])]


def results(captured: Captured, generated: list[np.ndarray], tokenizer, max_new_tokens: int) -> list[ThinkResult]:
    """One ThinkResult per row: masked means (zeros for an empty stream), ids padded with -1, text."""
    out = []
    for i, g in enumerate(generated):
        g = np.asarray(g, dtype=np.int64)
        ids = np.full(max_new_tokens, -1, dtype=np.int32)
        ids[: len(g)] = g
        p_n, t_n = captured.prompt_len[i], captured.think_len[i]
        p_sum, t_sum = captured.prompt_sum[i].cpu(), captured.think_sum[i].cpu()
        p_mean = p_sum / p_n if p_n > 0 else torch.zeros_like(p_sum)
        t_mean = t_sum / t_n if t_n > 0 else torch.zeros_like(t_sum)
        out.append(
            ThinkResult(
                prompt_mean=p_mean.numpy().astype(np.float32),
                think_mean=t_mean.numpy().astype(np.float32),
                prompt_len=int(p_n),
                think_len=int(t_n),
                think_ids=ids,
                think_text=tokenizer.decode(g.tolist(), skip_special_tokens=False),
                prompt_tokens=None if captured.prompt_tokens is None else captured.prompt_tokens[i],
                think_tokens=None if captured.think_tokens is None else captured.think_tokens[i],
            )
        )
    return out


def check_generated(generated: list[np.ndarray], max_new_tokens: int) -> None:
    for g in generated:
        if len(g) > max_new_tokens:
            raise ValueError(f"{len(g)} generated ids exceed max_new_tokens={max_new_tokens}")


@torch.inference_mode()
def capture(
    model,
    tokenizer,
    prompts: list[ThinkPrompt],
    generated: list[np.ndarray],
    layers: tuple[int, ...],
    max_new_tokens: int,
    keep_tokens: bool = False,
    vision=None,
    pad_id: int | None = None,
) -> list[ThinkResult]:
    """One teacher-forced forward over prompt + generated ids; returns one ThinkResult per prompt.

    Used when the ids come from elsewhere (vLLM); transformers' own generation records the states as
    it goes (`stream_capture.py`) and needs no second pass.
    """
    check_generated(generated, max_new_tokens)
    pad_id = tokenizer.pad_token_id if pad_id is None else pad_id
    batch = pack(prompts, generated, pad_id, model.config.video_token_id)
    dev = model.device
    pm, tm = batch.prompt_mask.to(dev), batch.think_mask.to(dev)
    store: dict[int, tuple] = {}

    def make_hook(k: int):
        def hook(_module, _args, output):
            h = output[0] if isinstance(output, tuple) else output
            store[k] = (masked_sum(pm, h), masked_sum(tm, h), h.to("cpu", copy=True) if keep_tokens else None)

        return hook

    blocks = decoder_layers(model)
    handles = [blocks[k].register_forward_hook(make_hook(k)) for k in layers]
    try:
        kwargs = dict(
            input_ids=batch.input_ids.to(dev),
            attention_mask=batch.attention_mask.to(dev),
            mm_token_type_ids=batch.mm_token_type_ids.to(dev),
            video_grid_thw=batch.grid_thw.to(dev),
            use_cache=False,
        )
        if vision is not None:
            kwargs["mm_encoder_outputs"] = {"video": vision}
        else:
            kwargs["pixel_values_videos"] = batch.pixel_values.to(dev)
        model.model(**kwargs)  # the base model: no lm_head over every position
    finally:
        for h in handles:
            h.remove()
    missing = [k for k in layers if k not in store]
    if missing:
        raise RuntimeError(f"decoder layers {missing} were not reached by the forward")
    captured = Captured(
        prompt_sum=torch.stack([store[k][0] for k in layers], 1),
        think_sum=torch.stack([store[k][1] for k in layers], 1),
        prompt_len=batch.prompt_mask.sum(1).tolist(),
        think_len=batch.think_mask.sum(1).tolist(),
    )
    if keep_tokens:
        captured.prompt_tokens = rows_tokens([store[k][2] for k in layers], batch.prompt_mask)
        captured.think_tokens = rows_tokens([store[k][2] for k in layers], batch.think_mask)
    return results(captured, generated, tokenizer, max_new_tokens)
