"""Encoder presets, the extraction config they resolve to, and loading.

`resolve_encoders(preset, ...)` -> `EncoderConfig` (cheap: reads config.json files and hashes the
weights; no torch), `load_encoders(cfg, device)` -> `(VJepaEncoder, Thinker)`.

Presets:
- `tiny`: random-weight models built by `build_tiny_models` into `models_dir` (built there when the
  directory has none; default `$TJEPA_HOME/models/tiny-seed0`, TJEPA_HOME defaulting to
  ~/.cache/tjepa). 8 decoder layers, all captured; frames 64 px for the VLM.
- `pretrained`: the paper's checkpoints, by hub id (revision resolved to a commit and recorded) or
  by local directories (`vjepa=`, `qwen=`, or `models_dir/vjepa2` + `models_dir/qwen3vl`).
- `full-random`: real sizes, random weights (`tjepa build-models --preset full-random`), to measure
  throughput on a GPU.

Fingerprint policy (`EncoderConfig.to_dict`): hub ids are recorded as given plus the resolved
commit; local directories as `"local"` (no path); every model also by the sha256 of its weight files.
The directory paths are kept on the config for loading but are not part of `to_dict`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from tjepa.config_io import ConfigMixin
from tjepa.errors import TjepaError
from tjepa.pipeline.encoders.builders import QWEN_DIR, VJEPA_DIR, build_tiny_models, read_marker
from tjepa.pipeline.encoders.prompt import PROMPT_RENDERING
from tjepa.pipeline.encoders.weights import ModelSource, resolve_source

__all__ = ["EncoderConfig", "PRESETS", "resolve_encoders", "load_encoders", "encoder_dims", "build_tiny_models"]

DEFAULT_VJEPA = "facebook/vjepa2-vitl-fpc64-256"
DEFAULT_QWEN = "Qwen/Qwen3-VL-2B-Thinking"
PAPER_LAYERS = (0, 4, 8, 12, 16, 20, 24, 27)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
QWEN_MEAN = (0.5, 0.5, 0.5)
QWEN_STD = (0.5, 0.5, 0.5)

PRESETS = {
    "tiny": dict(layers=tuple(range(8)), vlm_frame_size=64, max_new_tokens=16, dtype="float32"),
    "pretrained": dict(layers=PAPER_LAYERS, vlm_frame_size=256, max_new_tokens=16, dtype="bfloat16"),
    "full-random": dict(layers=PAPER_LAYERS, vlm_frame_size=256, max_new_tokens=16, dtype="bfloat16"),
}
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class EncoderConfig(ConfigMixin):
    """Everything about the encoders that determines the cached features (the fingerprint content)."""

    preset: str
    vjepa_model: str  # hub id or "local"
    vjepa_revision: str | None
    vjepa_sha256: str
    qwen_model: str
    qwen_revision: str | None
    qwen_sha256: str
    layers: tuple[int, ...] = PAPER_LAYERS  # decoder layer indices; output of layer k, before the final norm
    prompt: str = "Describe this video."
    vlm_frame_size: int = 256  # frames squashed to this square for the VLM (no crop)
    max_new_tokens: int = 16
    greedy: bool = True
    crop_size: int = 256  # V-JEPA input resolution (= the model config's crop_size)
    resize_short: int = 292  # int(crop_size * 256 / 224)
    vjepa_mean: tuple[float, float, float] = IMAGENET_MEAN
    vjepa_std: tuple[float, float, float] = IMAGENET_STD
    vlm_mean: tuple[float, float, float] = QWEN_MEAN
    vlm_std: tuple[float, float, float] = QWEN_STD
    keep_tokens: bool = False
    dtype: str = "bfloat16"
    prompt_rendering: str = PROMPT_RENDERING  # how the video placeholder is expanded (prompt.py)
    # Where to load from: not part of the fingerprint (see the module docstring).
    vjepa_path: str = field(default="", compare=False)
    qwen_path: str = field(default="", compare=False)

    def sources(self) -> dict:
        """Load paths (for provenance; not fingerprinted)."""
        return {"vjepa": self.vjepa_path, "qwen": self.qwen_path}


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _mean_std(model_dir: Path, default_mean, default_std) -> tuple[tuple, tuple]:
    """Normalisation from the checkpoint's own (video) preprocessor config when it ships one."""
    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        cfg = _read_json(model_dir / name)
        if "image_mean" in cfg and "image_std" in cfg:
            return tuple(float(v) for v in cfg["image_mean"]), tuple(float(v) for v in cfg["image_std"])
    return tuple(default_mean), tuple(default_std)


def default_models_dir(seed: int = 0) -> Path:
    return Path(os.environ.get("TJEPA_HOME", Path.home() / ".cache" / "tjepa")) / "models" / f"tiny-seed{seed}"


def _tiny_sources(models_dir: Path | None) -> tuple[ModelSource, ModelSource]:
    models_dir = Path(models_dir) if models_dir is not None else default_models_dir()
    marker = read_marker(models_dir)
    if marker is None:
        if models_dir.exists() and any(models_dir.iterdir()):
            raise TjepaError(f"{models_dir}: not empty and has no tjepa-models.json; pass an empty or a built directory")
        build_tiny_models(models_dir, seed=0)
        marker = read_marker(models_dir)
    if marker.get("preset") != "tiny":
        raise TjepaError(f"{models_dir}: holds the {marker.get('preset')!r} preset, not 'tiny'")
    return resolve_source(models_dir / VJEPA_DIR), resolve_source(models_dir / QWEN_DIR)


def _sources(preset, models_dir, vjepa, qwen, vjepa_revision, qwen_revision, cache_dir):
    if preset == "tiny" and vjepa is None and qwen is None:
        return _tiny_sources(models_dir)
    if preset == "full-random" and (vjepa is None or qwen is None):
        if models_dir is None:
            raise TjepaError("the full-random preset needs --models-dir (build it: tjepa build-models --preset full-random)")
        marker = read_marker(models_dir)
        if marker is None or marker.get("preset") != "full-random":
            raise TjepaError(f"{models_dir}: no full-random models here; run `tjepa build-models --preset full-random --out {models_dir}`")
    marker = read_marker(models_dir) if models_dir is not None else None
    if preset == "pretrained" and marker is not None:
        raise TjepaError(f"{models_dir}: holds random-weight {marker.get('preset')!r} models, not pretrained ones")
    defaults = {"vjepa": DEFAULT_VJEPA, "qwen": DEFAULT_QWEN}
    if models_dir is not None:  # local copies in models_dir take the place of the hub ids
        for key, sub in (("vjepa", VJEPA_DIR), ("qwen", QWEN_DIR)):
            if (Path(models_dir) / sub / "config.json").is_file():
                defaults[key] = Path(models_dir) / sub
    hint = f"--models-dir DIR holding DIR/{VJEPA_DIR} and DIR/{QWEN_DIR}"
    v = resolve_source(vjepa if vjepa is not None else defaults["vjepa"], vjepa_revision, cache_dir, hint)
    q = resolve_source(qwen if qwen is not None else defaults["qwen"], qwen_revision, cache_dir, hint)
    return v, q


def resolve_encoders(
    preset: str = "tiny",
    models_dir: str | Path | None = None,
    vjepa: str | Path | None = None,
    qwen: str | Path | None = None,
    layers: tuple[int, ...] | list[int] | None = None,
    keep_tokens: bool = False,
    max_new_tokens: int | None = None,
    *,
    vjepa_revision: str | None = None,
    qwen_revision: str | None = None,
    prompt: str | None = None,
    vlm_frame_size: int | None = None,
    dtype: str | None = None,
    cache_dir: str | Path | None = None,
) -> EncoderConfig:
    """Resolve a preset (plus overrides) to a validated `EncoderConfig`. Never loads the models."""
    if preset not in PRESETS:
        raise TjepaError(f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}")
    base = PRESETS[preset]
    v, q = _sources(preset, models_dir, vjepa, qwen, vjepa_revision, qwen_revision, cache_dir)
    vcfg, qcfg = _read_json(v.path / "config.json"), _read_json(q.path / "config.json")
    text, vision = qcfg.get("text_config", {}), qcfg.get("vision_config", {})
    n_layers = int(text.get("num_hidden_layers", 0))
    layers = tuple(int(k) for k in (layers if layers is not None else base["layers"]))
    if not layers or list(layers) != sorted(set(layers)) or layers[0] < 0 or layers[-1] >= n_layers:
        raise TjepaError(f"layers {list(layers)} must be increasing, distinct and within 0..{n_layers - 1} for {q.path}")
    size = int(vlm_frame_size or base["vlm_frame_size"])
    factor = int(vision.get("patch_size", 16)) * int(vision.get("spatial_merge_size", 2))
    if size <= 0 or size % factor:
        raise TjepaError(f"vlm_frame_size {size} must be a positive multiple of patch*merge = {factor}")
    k = int(max_new_tokens if max_new_tokens is not None else base["max_new_tokens"])
    if k < 1:
        raise TjepaError(f"max_new_tokens must be >= 1, got {k}")
    dtype = dtype or base["dtype"]
    if dtype not in DTYPES:
        raise TjepaError(f"dtype {dtype!r} is not one of {DTYPES}")
    crop = int(vcfg.get("crop_size", 256))
    vmean, vstd = _mean_std(v.path, IMAGENET_MEAN, IMAGENET_STD)
    qmean, qstd = _mean_std(q.path, QWEN_MEAN, QWEN_STD)
    return EncoderConfig(
        preset=preset,
        vjepa_model=v.model, vjepa_revision=v.revision, vjepa_sha256=v.sha256,
        qwen_model=q.model, qwen_revision=q.revision, qwen_sha256=q.sha256,
        layers=layers, prompt=prompt or "Describe this video.", vlm_frame_size=size, max_new_tokens=k,
        crop_size=crop, resize_short=int(crop * 256 / 224),
        vjepa_mean=vmean, vjepa_std=vstd, vlm_mean=qmean, vlm_std=qstd,
        keep_tokens=bool(keep_tokens), dtype=dtype,
        vjepa_path=str(v.path), qwen_path=str(q.path),
    )


def encoder_dims(cfg: EncoderConfig, n_frames: int = 32) -> dict:
    """Feature sizes the store needs, from the model configs (no weights loaded).

    `max_prompt_tokens` (only with keep_tokens) bounds the prompt length of an `n_frames` clip whose
    timestamps stay below 10,000 s.
    """
    vcfg = _read_json(Path(cfg.vjepa_path) / "config.json")
    qcfg = _read_json(Path(cfg.qwen_path) / "config.json")
    dims = {
        "tubelet": int(vcfg["tubelet_size"]),
        "patches": (cfg.crop_size // int(vcfg["patch_size"])) ** 2,
        "vjepa_width": int(vcfg["hidden_size"]),
        "levels": len(cfg.layers),
        "vlm_width": int(qcfg["text_config"]["hidden_size"]),
        "max_new_tokens": cfg.max_new_tokens,
        "keep_tokens": cfg.keep_tokens,
        "max_prompt_tokens": 0,
    }
    if cfg.keep_tokens:
        from tjepa.pipeline.encoders.thinker import prompt_length_bound

        dims["max_prompt_tokens"] = prompt_length_bound(cfg, n_frames)
    return dims


def load_encoders(cfg: EncoderConfig, device: str = "cpu", generator: str = "transformers", vllm=None, n_frames: int = 32):
    """(VJepaEncoder, Thinker) on `device`; `generator` is "transformers" or "vllm" (GPU extra, settings
    `vllm`, a VllmConfig; `n_frames` per clip sizes its engine)."""
    from tjepa.pipeline.encoders.thinker import Thinker
    from tjepa.pipeline.encoders.vjepa import VJepaEncoder

    return VJepaEncoder.load(cfg, device), Thinker.load(cfg, device, generator=generator, vllm=vllm, n_frames=n_frames)
