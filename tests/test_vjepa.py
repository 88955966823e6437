"""V-JEPA 2 encoder on the tiny random model: shapes, semantics, independence of clips."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tjepa.pipeline.encoders.preprocess import vjepa_batch
from tjepa.pipeline.encoders.presets import encoder_dims, resolve_encoders
from tjepa.pipeline.encoders.vjepa import VJepaEncoder


@pytest.fixture(scope="module")
def enc(tiny_models):
    return VJepaEncoder.load(resolve_encoders("tiny", models_dir=tiny_models))


def _clips(n, t=8, seed=0, h=60, w=80):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_shape_dtype_and_store_dims(enc):
    out = enc.encode(_clips(2, t=32))
    dims = encoder_dims(enc.cfg)
    assert out.shape == (2, 32 // dims["tubelet"], dims["patches"], dims["vjepa_width"]) == (2, 16, 16, 48)
    assert out.dtype == np.float16 and np.isfinite(out).all()


def test_output_is_last_hidden_state_after_the_final_layernorm(enc):
    clip = _clips(1, t=4)
    out = enc.encode(clip)
    x = vjepa_batch(clip, enc.cfg.crop_size, enc.cfg.resize_short, enc.cfg.vjepa_mean, enc.cfg.vjepa_std)
    with torch.no_grad():
        o = enc.model(pixel_values_videos=x, skip_predictor=True, output_hidden_states=True)
        after_ln = enc.model.encoder.layernorm(o.hidden_states[-1])
    flat = torch.from_numpy(out.astype(np.float32)).reshape(1, -1, 48)
    torch.testing.assert_close(flat, after_ln, atol=2e-3, rtol=2e-3)  # fp16 storage
    assert not torch.allclose(flat, o.hidden_states[-1], atol=1e-1)  # not the pre-norm state
    # Token order (t, h, w): token (tubelet 1, patch 5) sits at flat index 1 * 16 + 5.
    torch.testing.assert_close(torch.from_numpy(out[0, 1, 5].astype(np.float32)), after_ln[0, 21], atol=2e-3, rtol=2e-3)


def test_clips_are_encoded_independently(enc):
    past, future, other = _clips(3, t=8, seed=1)
    alone = enc.encode([past])
    with_future = enc.encode([past, future])
    with_other = enc.encode([past, other])
    np.testing.assert_allclose(with_future[0].astype(np.float32), alone[0].astype(np.float32), atol=2e-3)
    np.testing.assert_allclose(with_future[0].astype(np.float32), with_other[0].astype(np.float32), atol=2e-3)
    changed = past.copy()
    changed[-1] = 255 - changed[-1]
    assert not np.allclose(enc.encode([changed])[0], alone[0], atol=1e-2)  # the test can fail


def test_guards(enc):
    with pytest.raises(ValueError, match="tubelet"):
        enc.encode(_clips(1, t=7))
    bad = dataclasses.replace(enc.cfg, crop_size=32)
    with pytest.raises(AssertionError, match="crop_size"):
        VJepaEncoder(enc.model, bad)
