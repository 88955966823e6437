"""Greedy generation that records the chosen decoder layers as it goes: each position runs once.

`generate` runs the text model over the prompt once (prefill: the prompt stream) and then one
position per step (the thinking stream) on its KV cache. Forward hooks on the chosen decoder layers
keep the prompt sums (and tokens) of the prefill and the one-position state of every step. Generate
never feeds back the last token it samples, so one more one-position step on the returned cache
runs it through the text model (no lm_head): all K generated tokens get their states, as in the
teacher-forced capture (`capture.capture`), whose semantics this keeps exactly (layer k = output of
decoder layer k before the final norm; DeepStack additions come after the hooked layer output, as HF
records them). Rows that stop early keep stepping on pad ids until the batch ends; those positions
are masked out.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from tjepa.pipeline.encoders.capture import (
    Captured,
    ThinkPrompt,
    decoder_layers,
    masked_sum,
    pack,
    rows_tokens,
)


class _Recorder:
    """Forward hooks on the chosen layers (states) and a pre-hook on the text model (positions)."""

    def __init__(self, model, layers: tuple[int, ...], prompt_mask: torch.Tensor, keep_tokens: bool):
        self.layers = layers
        self.prompt_mask = prompt_mask
        self.keep_tokens = keep_tokens
        self.calls = 0  # text-model forwards seen: the prefill, then one per step
        self.positions: torch.Tensor | None = None  # position_ids of the latest call
        self.prompt: dict[int, tuple] = {}
        self.steps: dict[int, list[torch.Tensor]] = {k: [] for k in layers}
        blocks = decoder_layers(model)
        self.handles = [blocks[k].register_forward_hook(self._layer_hook(k)) for k in layers]
        self.handles.append(model.model.language_model.register_forward_pre_hook(self._text_hook, with_kwargs=True))

    def _text_hook(self, _module, _args, kwargs):
        self.calls += 1
        self.positions = kwargs.get("position_ids")

    def _layer_hook(self, k: int):
        def hook(_module, _args, output):
            h = output[0] if isinstance(output, tuple) else output
            if self.calls == 1:  # the prefill: every prompt position at once
                if h.shape[1] != self.prompt_mask.shape[1]:
                    raise RuntimeError(f"prefill saw {h.shape[1]} positions, the prompts have {self.prompt_mask.shape[1]}")
                self.prompt[k] = (masked_sum(self.prompt_mask, h), h.to("cpu", copy=True) if self.keep_tokens else None)
            else:
                if h.shape[1] != 1:
                    raise RuntimeError(f"a decode step saw {h.shape[1]} positions, expected 1")
                self.steps[k].append(h)

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _with_dict_output(generation_config):
    import copy

    cfg = copy.deepcopy(generation_config)
    cfg.return_dict_in_generate = True  # for the returned cache
    return cfg


def _cache_of(out):
    """The KV cache generate returns (`cache` from transformers 5.24, `past_key_values` before)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _step_on_cache(text_model, ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor, cache) -> None:
    """One position per row through the text model on generate's cache (no lm_head)."""
    name = "cache" if "cache" in inspect.signature(text_model.forward).parameters else "past_key_values"
    text_model(input_ids=ids, attention_mask=attention_mask, position_ids=positions, use_cache=True, **{name: cache})


@torch.inference_mode()
def generate_with_capture(
    model,
    prompts: list[ThinkPrompt],
    layers: tuple[int, ...],
    generation_config,
    vision,
    pad_id: int,
    cut,
    keep_tokens: bool = False,
) -> tuple[list[np.ndarray], Captured]:
    """Greedy ids per prompt (`cut(row)` trims each after its EOS) and the captured states."""
    batch = pack(prompts, [np.zeros(0, np.int64)] * len(prompts), pad_id, model.config.video_token_id)
    dev = model.device
    att = batch.attention_mask.to(dev)
    rec = _Recorder(model, layers, batch.prompt_mask.to(dev), keep_tokens)
    try:
        out = model.generate(
            input_ids=batch.input_ids.to(dev),
            attention_mask=att,
            mm_token_type_ids=batch.mm_token_type_ids.to(dev),
            video_grid_thw=batch.grid_thw.to(dev),
            mm_encoder_outputs={"video": vision},
            generation_config=_with_dict_output(generation_config),
        )
        new = out.sequences[:, batch.input_ids.shape[1] :]
        k_max = new.shape[1]
        cache = _cache_of(out)
        if cache is None or rec.positions is None or rec.calls != k_max:
            raise RuntimeError(
                f"generate ran {rec.calls} text-model forwards for {k_max} tokens (or returned no cache / "
                "position ids): this transformers version generates differently; use the teacher-forced capture"
            )
        # The last sampled token was never fed back: one more position, right after the previous one.
        mask = torch.cat([att, att.new_ones(att.shape[0], k_max)], 1)
        _step_on_cache(model.model.language_model, new[:, -1:], mask, rec.positions[..., -1:] + 1, cache)
    finally:
        rec.remove()
    generated = [cut(row) for row in new.cpu().numpy()]
    think_len = [len(g) for g in generated]
    steps = {k: torch.cat(rec.steps[k], 1) for k in layers}  # [B, k_max, H] each
    think_mask = torch.arange(k_max)[None, :] < torch.tensor(think_len)[:, None]
    captured = Captured(
        prompt_sum=torch.stack([rec.prompt[k][0] for k in layers], 1),
        think_sum=torch.stack([masked_sum(think_mask, steps[k]) for k in layers], 1),
        prompt_len=batch.prompt_mask.sum(1).tolist(),
        think_len=think_len,
    )
    if keep_tokens:
        captured.prompt_tokens = rows_tokens([rec.prompt[k][1] for k in layers], batch.prompt_mask)
        captured.think_tokens = rows_tokens([steps[k].to("cpu") for k in layers], think_mask)
    return generated, captured
