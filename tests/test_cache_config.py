"""`tjepa cache --config FILE --set cache.KEY=VALUE`: one typed CacheConfig, validated like train's."""

from __future__ import annotations

import pytest
from cache_helpers import copy_tree, run_cli

from tjepa.cache_schema.reader import open_reader
from tjepa.config_io import overrides
from tjepa.errors import ConfigError
from tjepa.pipeline.cache_config import CacheConfig, cache_config


def test_settings_are_typed_and_validated():
    cfg = cache_config({"cache": {"videos": "v", "store": "s.zarr",
                                  **overrides(["cache.past=4", "cache.layers=[0, 2]", "cache.workers=2"])["cache"]}})
    assert (cfg.past, cfg.layers, cfg.workers, cfg.batch_size) == (4, (0, 2), 2, 4)
    with pytest.raises(ConfigError, match=r"\['pst'\].*past"):  # names the key and lists the valid ones
        cache_config({"cache": {"videos": "v", "store": "s", "pst": 4}})
    with pytest.raises(ConfigError, match="cache.past: expected int"):
        cache_config({"cache": {"videos": "v", "store": "s", "past": "four"}})
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        cache_config({"cache": {"videos": "v", "store": "s", "batch_size": 0}})
    with pytest.raises(ConfigError, match="workers must be an integer >= 0 or 'auto'"):
        cache_config({"cache": {"videos": "v", "store": "s", "workers": "many"}})
    with pytest.raises(ConfigError, match="cache.videos not set"):
        cache_config({"cache": {"store": "s"}})
    assert CacheConfig(videos="v", store="s", workers="auto").workers == "auto"


def test_cache_from_a_config_file_and_set(tmp_path, synth_root, tiny_models):
    videos = copy_tree(synth_root, tmp_path / "videos", n=2)
    out = tmp_path / "s.zarr"
    conf = tmp_path / "run.yaml"
    conf.write_text(f"cache:\n  videos: {videos}\n  store: {out}\n  models: tiny\n  models_dir: {tiny_models}\n"
                    "  device: cpu\n  past: 8\n")
    res = run_cli(["cache", "--config", str(conf), "--set", "cache.future=4", "--set", "cache.think_tokens=2"])
    assert res.returncode == 0, res.stderr
    store = open_reader(out)
    assert (store.layout.n_past, store.layout.n_future, store.rows) == (8, 4, 2)  # file, then --set
    assert store.done().all()
    bad = run_cli(["cache", "--config", str(conf), "--set", "cache.past_frames=4"])
    assert bad.returncode != 0 and "past_frames" in bad.stderr and "rows_per_shard" in bad.stderr
    assert "Traceback" not in bad.stderr
