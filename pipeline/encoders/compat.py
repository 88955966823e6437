"""Library versions that would run silently wrong, refused at load time.

The capture forward hands the precomputed vision features to `Qwen3VLModel.forward` as
`mm_encoder_outputs`. That argument exists from transformers 5.18; older versions take it into
`**kwargs` and drop it, so the forward runs on the raw `<|video_pad|>` embeddings without DeepStack
and raises nothing (measured under 5.16.1: the captured means equal a forward without any video).
We check the signature itself rather than the version string, so a backport or a fork is judged by
what it does.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from tjepa.errors import TjepaError

MIN_TRANSFORMERS = "5.18"


def accepts_mm_encoder_outputs(forward: Callable | inspect.Signature) -> bool:
    """True when `forward` (or its signature) names `mm_encoder_outputs` (a `**kwargs` catch-all does not count)."""
    sig = forward if isinstance(forward, inspect.Signature) else inspect.signature(forward)
    p = sig.parameters.get("mm_encoder_outputs")
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def check_capture_forward(forward: Callable | inspect.Signature | None = None, version: str | None = None) -> None:
    """Refuse a transformers whose Qwen3VLModel.forward would drop `mm_encoder_outputs` (defaults: the installed one)."""
    if forward is None:
        from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLModel

        forward = Qwen3VLModel.forward
    if accepts_mm_encoder_outputs(forward):
        return
    if version is None:
        import transformers

        version = transformers.__version__
    raise TjepaError(
        f"transformers {version}: Qwen3VLModel.forward has no `mm_encoder_outputs` argument, so the layer capture "
        f"would silently run without the video features; install transformers>={MIN_TRANSFORMERS} "
        f"(pip install 'transformers>={MIN_TRANSFORMERS}')"
    )
