"""V-JEPA 2 encoder: uint8 clips -> fp16 latents [B, T/tubelet, patches, width].

The features are the encoder's `last_hidden_state` with `skip_predictor=True`, i.e. AFTER the
encoder's final LayerNorm (HF's `hidden_states[-1]` is before it). The cache job calls `encode`
separately for the past and the future clips: two independent forwards, so no observed latent can
depend on a future frame.
"""

from __future__ import annotations

import numpy as np
import torch

from tjepa.pipeline.encoders.preprocess import vjepa_batch


class VJepaEncoder:
    def __init__(self, model, cfg, device: str = "cpu"):
        mc = model.config
        # RoPE positions derive from config.crop_size: a different input size would run silently wrong.
        assert mc.crop_size == cfg.crop_size, f"model crop_size {mc.crop_size} != configured input {cfg.crop_size}"
        self.model = model.eval()
        self.cfg = cfg
        self.device = torch.device(device)
        self.tubelet = int(mc.tubelet_size)
        self.grid = cfg.crop_size // int(mc.patch_size)
        self.width = int(mc.hidden_size)

    @classmethod
    def load(cls, cfg, device: str = "cpu") -> VJepaEncoder:
        from transformers import VJEPA2Model

        model = VJEPA2Model.from_pretrained(
            cfg.vjepa_path, dtype=getattr(torch, cfg.dtype), attn_implementation="sdpa"
        )
        return cls(model.to(device), cfg, device)

    @torch.inference_mode()
    def encode(self, clips: list[np.ndarray]) -> np.ndarray:
        """uint8 clips [T, H, W, 3] (same T) -> float16 [B, T / tubelet, grid**2, width]."""
        t = clips[0].shape[0]
        if t % self.tubelet:
            raise ValueError(f"clip length {t} is not a multiple of the tubelet size {self.tubelet}")
        cfg = self.cfg
        x = vjepa_batch(clips, cfg.crop_size, cfg.resize_short, cfg.vjepa_mean, cfg.vjepa_std)
        assert x.shape[-1] == self.model.config.crop_size  # input resolution == the model's crop_size
        x = x.to(self.device, dtype=self.model.dtype)
        out = self.model(pixel_values_videos=x, skip_predictor=True).last_hidden_state  # [B, N, D], after LN
        b = out.shape[0]
        # Tokens come out of the tubelet conv flattened as (t, h, w).
        out = out.reshape(b, t // self.tubelet, self.grid * self.grid, self.width)
        return out.to(torch.float16).cpu().numpy()
