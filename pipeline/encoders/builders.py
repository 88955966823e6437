"""Random-weight models in transformers' real classes, saved so the production loading path runs offline.

`build_tiny_models(out, seed)` writes `out/vjepa2` (VJEPA2Model), `out/qwen3vl`
(Qwen3VLForConditionalGeneration + tokenizer + generation config) and `out/tjepa-models.json`, all
with `save_pretrained`; loading is then exactly `from_pretrained(dir)`. `build_full_random_models`
does the same at the real sizes (ViT-L V-JEPA 2, Qwen3-VL-2B) for GPU throughput measurements.

Both also write the processor configs a checkpoint ships (`preprocessor_config.json`,
`video_preprocessor_config.json`, the processor's `chat_template.json`): vLLM loads
`Qwen3VLProcessor.from_pretrained(dir)`, and the files state our preprocessing in HF's terms. The Qwen
video processor gets `do_resize: false` because tjepa hands it frames already squashed to the VLM
frame size (`preprocess.squash`); from there HF's rescale, normalise and patchify are ours.

The tokenizer is a byte-level `Qwen2Tokenizer` (the 256 byte symbols, no merges) plus Qwen's special
tokens, with a chat template that renders a video item as `<|vision_start|><|video_pad|><|vision_end|>`
and opens `<think>` for the generation prompt, like Qwen3-VL-*-Thinking's own template.
"""

from __future__ import annotations

import json
from pathlib import Path

MARKER = "tjepa-models.json"
VJEPA_DIR = "vjepa2"
QWEN_DIR = "qwen3vl"

# Byte symbols take ids 0..255; these follow in this order (ids 256..264).
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
)
THINK_TOKENS = ("<think>", "</think>")  # plain added tokens in Qwen's tokenizer, not "special"
_IDS = {tok: 256 + i for i, tok in enumerate(SPECIAL_TOKENS + THINK_TOKENS)}
TOKENIZER_VOCAB = 256 + len(_IDS)

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'video' or 'video' in item -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'image' or 'image' in item -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in item -%}{{- item['text'] -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n<think>\\n' -}}{%- endif -%}"
)


def build_tokenizer():
    """Offline byte-level Qwen2Tokenizer with Qwen's special tokens and a Thinking-style chat template."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = bytes_to_unicode()
    vocab = {symbols[b]: b for b in range(256)} | dict(_IDS)
    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=list(SPECIAL_TOKENS[1:]),
        chat_template=CHAT_TEMPLATE,
    )
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    assert len(tok) == TOKENIZER_VOCAB and tok.convert_tokens_to_ids("</think>") == _IDS["</think>"]
    return tok


def _token_ids() -> dict:
    return {
        "image_token_id": _IDS["<|image_pad|>"],
        "video_token_id": _IDS["<|video_pad|>"],
        "vision_start_token_id": _IDS["<|vision_start|>"],
        "vision_end_token_id": _IDS["<|vision_end|>"],
    }


def tiny_configs() -> dict:
    """Config kwargs of the tiny preset: 8 decoder layers (so 8 captured levels, like the paper)."""
    # A larger init std than HF's 0.02 makes the random models' greedy tokens depend on the input
    # (with 0.02 every prompt decodes to the same repeated token, which would hide bugs).
    vjepa = dict(
        crop_size=64, patch_size=16, tubelet_size=2, frames_per_clip=16, hidden_size=48, num_attention_heads=4,
        num_hidden_layers=2, mlp_ratio=2.0, pred_hidden_size=24, pred_num_attention_heads=4, pred_num_hidden_layers=1,
    )
    text = dict(
        vocab_size=TOKENIZER_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=8, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=8192, initializer_range=0.3,
        rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [4, 2, 2], "mrope_interleaved": True},
        tie_word_embeddings=True,
    )
    vision = dict(
        depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16, temporal_patch_size=2,
        spatial_merge_size=2, out_hidden_size=64, num_position_embeddings=64, deepstack_visual_indexes=[0, 1],
        initializer_range=0.3,
    )
    return {"vjepa": vjepa, "qwen": dict(text_config=text, vision_config=vision, tie_word_embeddings=True, **_token_ids())}


def full_configs() -> dict:
    """Real sizes, written out from the published config.json files (the hub is not reachable here).

    V-JEPA 2 ViT-L fpc64-256: VJEPA2Config's defaults. Qwen3-VL-2B: text 2048 x 28 layers (16 heads,
    8 KV heads, head_dim 128, MLP 6144, M-RoPE [24, 20, 20] interleaved, theta 5e6, vocab 151936, tied
    embeddings); vision tower 24 blocks of width 1024 (16 heads, MLP 4096), patch 16, temporal patch 2,
    merge 2, DeepStack at blocks 5/11/17, output 2048. Special token ids follow our byte-level
    tokenizer (the real vocabulary is not available offline); the embedding keeps the real size.
    """
    vjepa = dict(crop_size=256, patch_size=16, tubelet_size=2, frames_per_clip=64, hidden_size=1024,
                 num_attention_heads=16, num_hidden_layers=24, mlp_ratio=4.0)
    text = dict(
        vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, max_position_embeddings=262144, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [24, 20, 20], "mrope_interleaved": True},
        tie_word_embeddings=True,
    )
    vision = dict(
        depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, patch_size=16, temporal_patch_size=2,
        spatial_merge_size=2, out_hidden_size=2048, num_position_embeddings=2304, deepstack_visual_indexes=[5, 11, 17],
    )
    return {"vjepa": vjepa, "qwen": dict(text_config=text, vision_config=vision, tie_word_embeddings=True, **_token_ids())}


def make_models(configs: dict, seed: int):
    """(VJEPA2Model, Qwen3VLForConditionalGeneration) with seeded random weights, in eval mode."""
    import torch
    from transformers import (
        GenerationConfig,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        VJEPA2Config,
        VJEPA2Model,
    )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vjepa = VJEPA2Model(VJEPA2Config(**configs["vjepa"])).eval()
        qwen = Qwen3VLForConditionalGeneration(Qwen3VLConfig(**configs["qwen"])).eval()
    qwen.generation_config = GenerationConfig(
        eos_token_id=[_IDS["<|im_end|>"], _IDS["<|endoftext|>"]],
        pad_token_id=_IDS["<|endoftext|>"],
        bos_token_id=_IDS["<|endoftext|>"],
        do_sample=False,
    )
    return vjepa, qwen


def processor_configs(configs: dict) -> dict[str, dict[str, dict]]:
    """{model dir: {file name: json}} of the HF processor configs that describe tjepa's preprocessing."""
    from tjepa.pipeline.encoders.preprocess import IMAGENET_MEAN, IMAGENET_STD, QWEN_MEAN, QWEN_STD

    vision = configs["qwen"]["vision_config"]
    geometry = {k: vision[v] for k, v in (("patch_size", "patch_size"), ("temporal_patch_size", "temporal_patch_size"),
                                           ("merge_size", "spatial_merge_size"))}
    common = dict(do_rescale=True, rescale_factor=1 / 255, do_normalize=True, do_convert_rgb=True,
                  image_mean=list(QWEN_MEAN), image_std=list(QWEN_STD), processor_class="Qwen3VLProcessor", **geometry)
    # Pixel budgets are the released Qwen3-VL values; with do_resize false they only bound vLLM's profiling.
    image = dict(common, image_processor_type="Qwen2VLImageProcessorFast", do_resize=True,
                 size={"shortest_edge": 65536, "longest_edge": 16777216})
    video = dict(common, video_processor_type="Qwen3VLVideoProcessor", do_resize=False, do_sample_frames=False,
                 size={"shortest_edge": 4096, "longest_edge": 25165824}, resample=3)  # 3: bicubic, as squash
    crop = configs["vjepa"]["crop_size"]
    vjepa = dict(video_processor_type="VJEPA2VideoProcessor", do_resize=True, size={"shortest_edge": int(crop * 256 / 224)},
                 resample=2, do_center_crop=True, crop_size={"height": crop, "width": crop}, do_rescale=True,
                 rescale_factor=1 / 255, do_normalize=True, image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD))
    return {
        QWEN_DIR: {"preprocessor_config.json": image, "video_preprocessor_config.json": video,
                   "chat_template.json": {"chat_template": CHAT_TEMPLATE}},
        VJEPA_DIR: {"video_preprocessor_config.json": vjepa},
    }


def _save(out: Path, preset: str, seed: int, configs: dict, dtype=None) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vjepa, qwen = make_models(configs, seed)
    if dtype is not None:
        vjepa, qwen = vjepa.to(dtype), qwen.to(dtype)
    vjepa.save_pretrained(out / VJEPA_DIR)
    qwen.save_pretrained(out / QWEN_DIR)
    build_tokenizer().save_pretrained(out / QWEN_DIR)
    for sub, files in processor_configs(configs).items():
        for name, content in files.items():
            (out / sub / name).write_text(json.dumps(content, indent=2) + "\n")
    marker = {"format": "tjepa-models", "preset": preset, "seed": seed, "vjepa": VJEPA_DIR, "qwen": QWEN_DIR}
    (out / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return out


def build_tiny_models(out: str | Path, seed: int = 0) -> Path:
    """Tiny random V-JEPA 2 + Qwen3-VL (+ tokenizer) in `out`; the same seed gives identical files."""
    return _save(Path(out), "tiny", seed, tiny_configs())


def build_full_random_models(out: str | Path, seed: int = 0, dtype: str = "bfloat16") -> Path:
    """Real-size random models (~2.2 B parameters; ~4.5 GB in bfloat16) for throughput measurements."""
    import torch

    return _save(Path(out), "full-random", seed, full_configs(), dtype=getattr(torch, dtype))


def read_marker(models_dir: str | Path) -> dict | None:
    path = Path(models_dir) / MARKER
    return json.loads(path.read_text()) if path.is_file() else None
