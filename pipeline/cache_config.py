"""The settings of one `tjepa cache` run as one typed config, and the CacheJob they resolve to.

`CacheConfig` is plain data (flags, a config file's `cache:` section such as params.yaml's, and
`--set cache.KEY=VALUE` all fill it through tjepa/config_io.py); `job()` loads nothing but resolves
the encoder preset and refuses, before any model loads, a configuration that cannot work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tjepa.config_io import ConfigMixin
from tjepa.errors import ConfigError
from tjepa.pipeline.encoders.vllm_generator import VllmConfig
from tjepa.pipeline.episode_io import SamplingConfig
from tjepa.pipeline.job import CacheJob
from tjepa.pipeline.sources import LAYOUTS
from tjepa.pipeline.video import DECODERS

GENERATORS = ("transformers", "vllm")


@dataclass(frozen=True)
class CacheConfig(ConfigMixin):
    videos: str  # dataset root: an EgoDex tree or any tree of videos
    store: str  # the Zarr store to create or resume: a path or s3://bucket/name.zarr
    models: str = "tiny"  # encoder preset: tiny, pretrained or full-random
    models_dir: str | None = None  # where the preset's weights live (tiny: built there if missing)
    layout: str = "auto"  # how to read `videos`: auto | egodex | videos
    device: str = "auto"
    batch_size: int = 4  # videos per encoder batch
    limit: int | None = None  # at most this many rows
    retry_failed: bool = False
    keep_tokens: bool = False  # also per-token VLM states (cross-attention)
    layers: tuple[int, ...] | None = None  # decoder layers to capture (None: the preset's)
    think_tokens: int | None = None  # thinking tokens to generate (None: the preset's)
    past: int = 32  # observed frames sampled per video
    future: int = 32
    rows_per_shard: int = 8
    window_frames: int = 0  # also encode every run of N sampled frames on its own (0: off)
    dense_window: int = 0  # V-JEPA clip = the N frames before the split; the VLM keeps `past` uniform (0: off)
    workers: int | str = 0  # dask LocalCluster worker processes, or "auto" (one per GPU); 0: in-process
    scheduler: str | None = None  # address of an existing dask scheduler
    decode_workers: int | str = 0  # decode processes per model worker, or "auto"; 0: one prefetch thread
    decoder: str = "pyav"  # pyav | nvdec
    generator: str = "transformers"  # transformers | vllm
    gpu_memory_utilization: float = 0.45  # vllm: the engine's share of GPU memory

    def __post_init__(self) -> None:
        for name, allowed in (("layout", LAYOUTS), ("decoder", DECODERS), ("generator", GENERATORS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}; choose one of {allowed}")
        for name, low in (("batch_size", 1), ("limit", 1), ("think_tokens", 1), ("past", 2), ("future", 2),
                          ("rows_per_shard", 1), ("window_frames", 0), ("dense_window", 0)):
            value = getattr(self, name)
            if value is not None and value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        for name in ("workers", "decode_workers"):
            value = getattr(self, name)
            if isinstance(value, str) and value.strip().isdigit():  # "2" from a flag or --set: the count
                value = int(value)
                object.__setattr__(self, name, value)
            if value != "auto" and (isinstance(value, str) or value < 0):
                raise ValueError(f"{name} must be an integer >= 0 or 'auto', got {value!r}")
        if not 0.05 <= self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in [0.05, 1], got {self.gpu_memory_utilization}")

    def job(self) -> CacheJob:
        """The CacheJob of these settings; a missing decoder, engine or bucket fails here, not per row."""
        from tjepa.cache_schema.storage import locate
        from tjepa.pipeline.encoders.presets import resolve_encoders

        if self.decoder == "nvdec":
            from tjepa.pipeline.video import require_nvdec

            require_nvdec()
        out = locate(self.store)
        out.check_bucket()  # bad credentials or a missing bucket: say so before loading any model
        encoders = resolve_encoders(self.models, models_dir=self.models_dir, layers=self.layers,
                                    keep_tokens=self.keep_tokens, max_new_tokens=self.think_tokens)
        vllm = VllmConfig(gpu_memory_utilization=self.gpu_memory_utilization)
        if self.generator == "vllm":
            from tjepa.pipeline.encoders.vllm_generator import check_vllm_configuration, require_vllm

            check_vllm_configuration(encoders, vllm, self.past)  # fails the configuration, not every row
            if self.scheduler is None:  # remote workers bring their own GPUs
                require_vllm()
        return CacheJob(
            videos=Path(self.videos), out=out, encoders=encoders,
            sampling=SamplingConfig(n_past=self.past, n_future=self.future, window_frames=self.window_frames,
                                    decoder=self.decoder, dense_window=self.dense_window),
            layout=self.layout, batch_size=self.batch_size, device=self.device, generator=self.generator,
            vllm=vllm, rows_per_shard=self.rows_per_shard, limit=self.limit, retry_failed=self.retry_failed,
            workers=self._workers(), decode_workers=self.decode_workers, scheduler=self.scheduler,
        )

    def _workers(self) -> int:
        if self.workers == "auto":
            import torch

            return max(1, torch.cuda.device_count())
        return self.workers


def cache_config(doc: dict) -> CacheConfig:
    """A CacheConfig from a document with one section, `cache` (ConfigError naming what is wrong)."""
    from tjepa.config_io import from_dict, sections

    sec = sections(doc, ("cache",), "cache config")["cache"]
    missing = [k for k in ("videos", "store") if k not in sec]
    if missing:
        raise ConfigError(f"cache: {', '.join(f'cache.{k}' for k in missing)} not set "
                          "(give --videos / --out, or set them in --config)")
    return from_dict(CacheConfig, sec, "cache")
