"""CacheDataset over real zarr stores written with the store contract's exact layout."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
import store_factory as sf  # noqa: E402

from tjepa.cache_schema.bf16 import from_bf16_bits  # noqa: E402
from tjepa.errors import StoreFormatError, TjepaError  # noqa: E402
from tjepa.train.data import CacheDataset, captured_layers, read_index  # noqa: E402

FC = sf.FactoryConfig(n=10, groups=5, layers=(0, 2, 4), keep_tokens=True,
                      status=(1, 1, 0, 1, 2, 1, 1, 1, 1, 1))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return sf.write_store(tmp_path_factory.mktemp("data") / "s.zarr", FC)


def test_item_shapes_dtypes_and_values(store):
    ds = CacheDataset(store)
    g = zarr.open_group(str(store), mode="r")
    assert ds.rows == (0, 1, 3, 5, 6, 7, 8, 9)  # only done rows (2 pending, 4 failed)
    item = ds[2]
    to, tf, tb, p, d = FC.n_past, FC.n_future, FC.tubelet, FC.patches, FC.vjepa_width
    expect = {"vjepa_past": (to // tb, p, d), "vjepa_future": (tf // tb, p, d),
              "prompt_mean": (3, FC.vlm_width), "think_mean": (3, FC.vlm_width),
              "joints_past": (to, 52, 3), "valid_past": (to, 52), "joints_future": (tf, 52, 3),
              "valid_future": (tf, 52), "cam_last": (4, 4), "past_idx": (to,), "future_idx": (tf,), "row": ()}
    assert {k: tuple(v.shape) for k, v in item.items()} == expect
    for k, v in item.items():
        want = torch.bool if k.startswith("valid") else torch.long if k == "row" else torch.float32
        if k.startswith("vjepa_"):
            want = torch.float16  # stored fp16; the model upcasts on its device
        assert v.dtype == want, k
    assert int(item["row"]) == 3
    np.testing.assert_array_equal(item["cam_last"].numpy(), g["targets/cam_past"][3, -1])
    np.testing.assert_array_equal(item["vjepa_past"].numpy(), g["vjepa/past"][3])
    np.testing.assert_array_equal(item["valid_future"].numpy(), g["targets/valid_future"][3])
    assert "prompt_tokens" not in item  # means only unless tokens are asked for


def test_level_subset_and_tokens(store):
    g = zarr.open_group(str(store), mode="r")
    ds = CacheDataset(store, rows=[5, 1], levels=(4, 0), with_tokens=True)
    assert ds.levels == (4, 0) and ds.model_layout()["levels"] == 2
    item = ds[0]
    np.testing.assert_array_equal(item["think_mean"].numpy(), g["vlm/think_mean"][5][[2, 0]])
    np.testing.assert_array_equal(item["prompt_tokens"].numpy(),  # bfloat16 bits decoded to float32
                                  from_bf16_bits(g["vlm/prompt_tokens"][5][[2, 0]]))
    assert item["think_tokens"].shape == (2, FC.max_new_tokens, FC.vlm_width)
    assert item["prompt_len"].dtype == torch.long and int(item["think_len"]) == int(g["vlm/think_len"][5])
    with pytest.raises(TjepaError, match="captured"):
        CacheDataset(store, levels=(0, 3))


def test_preload_matches_lazy_reads(store):
    for rows in ([1, 3, 5, 6], [5, 6, 7]):  # scattered and contiguous rows
        lazy = CacheDataset(store, rows=rows, levels=(2,), with_tokens=True)
        mem = CacheDataset(store, rows=rows, levels=(2,), with_tokens=True, preload=True)
        for i in range(len(rows)):
            a, b = lazy[i], mem[i]
            assert a.keys() == b.keys()
            for k in a:
                assert torch.equal(a[k], b[k]), k


def test_worker_processes_and_pickling(store):
    ds = CacheDataset(store)
    _ = ds[0]  # opens the group in this process
    assert ds._group is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._group is None and torch.equal(clone[1]["vjepa_past"], ds[1]["vjepa_past"])
    serial = list(DataLoader(ds, batch_size=3, num_workers=0))
    parallel = list(DataLoader(ds, batch_size=3, num_workers=2))  # pickling is checked above
    assert len(serial) == len(parallel) == 3
    for a, b in zip(serial, parallel, strict=True):
        assert a["joints_future"].shape[1:] == (FC.n_future, 52, 3)
        for k in a:
            assert torch.equal(a[k], b[k]), k


def test_clear_errors(tmp_path, store):
    plain = sf.write_store(tmp_path / "plain.zarr", sf.FactoryConfig(n=4, groups=2, with_targets=False))
    with pytest.raises(TjepaError, match="no targets"):
        CacheDataset(plain)
    means_only = sf.write_store(tmp_path / "m.zarr", sf.FactoryConfig(n=4, groups=2))
    with pytest.raises(TjepaError, match="no token arrays"):
        CacheDataset(means_only, with_tokens=True)
    with pytest.raises(TjepaError, match="not done"):
        CacheDataset(store, rows=[0, 2])
    with pytest.raises(StoreFormatError):
        CacheDataset(tmp_path / "missing.zarr")
    other = zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    other.attrs["format"] = "something-else"
    with pytest.raises(StoreFormatError, match="not a tjepa"):
        read_index(tmp_path / "other.zarr")


def test_captured_layers_lookup():
    assert captured_layers({"thinker": {"layers": [0, 4, 8]}, "vjepa": {"model": "x"}}) == (0, 4, 8)
    with pytest.raises(StoreFormatError):
        captured_layers({"vjepa": {}})
    with pytest.raises(StoreFormatError):
        captured_layers({"a": {"layers": [1]}, "b": {"layers": [2]}})
