"""cache_schema is the only reader of array paths: StoreReader by field, and no path spelled elsewhere."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import store_factory as sf
import zarr

from tjepa.cache_schema.layout import ARRAYS, PATHS
from tjepa.cache_schema.reader import StoreReader

ROOT = Path(__file__).resolve().parent.parent
CODE = ("pipeline", "train", "eval", "tjepa", "benchmarks", "scripts")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return sf.write_store(tmp_path_factory.mktemp("reader") / "s.zarr", sf.FactoryConfig(n=6, groups=2))


def test_fields_name_every_array_once():
    assert len(PATHS) == len(ARRAYS) and set(PATHS.values()) == {s.path for s in ARRAYS}


def test_reader_reads_by_field_and_pickles(store):
    reader = StoreReader(store)
    g = zarr.open_group(str(store), mode="r")
    assert reader.rows == 6 and reader.layout.n_past == 8 and reader.has_targets
    np.testing.assert_array_equal(reader.read("joints_future", [4, 1]), g[PATHS["joints_future"]].oindex[[4, 1]])
    assert reader.strings("video") == tuple(str(v) for v in g[PATHS["video"]][:].tolist())
    assert reader.read("cam_past", []).shape == (0, *g[PATHS["cam_past"]].shape[1:])
    assert reader.done().all()
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._group is None and np.array_equal(clone.read("past_idx"), reader.read("past_idx"))


def test_no_array_path_outside_cache_schema():
    quoted = re.compile("|".join(rf"[\"'`]{re.escape(p)}[\"'`\[]" for p in PATHS.values()))
    hits = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
            for top in CODE for path in sorted((ROOT / top).rglob("*")) if path.suffix in (".py", ".sh")
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if quoted.search(line)]
    assert not hits, "array paths spelled outside cache_schema:\n" + "\n".join(hits)
