"""The store contract on real zarr: creation, growth, exact round trips, status-last, resume, errors."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import zarr

from tjepa.cache_schema import (
    ARRAYS,
    FeatureStore,
    RowData,
    RowDataError,
    StoreLayout,
    array_specs,
    canonical_json,
    config_diff,
    fingerprint,
)
from tjepa.cache_schema.bf16 import from_bf16_bits, to_bf16_bits
from tjepa.cache_schema.testing import make_store, random_row, small_config, small_layout
from tjepa.cache_schema.validate import validate_store
from tjepa.errors import ConfigMismatchError, StoreFormatError, TjepaError


def assert_rows_equal(a: RowData, b: RowData) -> None:
    for name in RowData.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None, name
        elif isinstance(x, (str, int, float)):
            assert x == pytest.approx(y) if isinstance(x, float) else x == y, name
        else:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)


def padded(layout: StoreLayout, row: RowData) -> RowData:
    """What the store hands back: fps as float32, tokens rounded to bfloat16 (decoded as float32)."""
    def bf16(x):
        return None if x is None else from_bf16_bits(to_bf16_bits(x))

    return replace(row, fps=float(np.float32(row.fps)), prompt_tokens=bf16(row.prompt_tokens),
                   think_tokens=bf16(row.think_tokens))


def test_create_then_open_round_trips_identity(tmp_path):
    layout, cfg = small_layout(), small_config()
    store = FeatureStore.create(tmp_path / "s.zarr", layout, cfg, {"code_version": "x", "models": ("a", "b")})
    assert store.n_rows == 0 and store.n_shards == 0
    again = FeatureStore.open(tmp_path / "s.zarr")
    assert again.layout == layout
    assert again.config == json.loads(canonical_json(cfg))
    assert again.fingerprint == hashlib.sha256(canonical_json(cfg).encode()).hexdigest() == fingerprint(cfg)
    assert again.provenance == {"code_version": "x", "models": ["a", "b"]}
    attrs = zarr.open_group(tmp_path / "s.zarr", mode="r").attrs.asdict()
    assert attrs["format"] == "tjepa-cache" and attrs["version"] == 2
    for spec in array_specs(layout):
        arr = zarr.open_group(tmp_path / "s.zarr", mode="r")[spec.path]
        assert arr.shape == (0, *spec.row_shape(layout))
        assert tuple(arr.metadata.dimension_names) == spec.dims and spec.dims[0] == "video"
    with pytest.raises(TjepaError, match="already exists"):
        FeatureStore.create(tmp_path / "s.zarr", layout, cfg, {})


def test_layout_round_trip_and_optional_arrays():
    full = small_layout(keep_tokens=True, max_prompt_tokens=7)
    assert StoreLayout.from_dict(json.loads(json.dumps(full.to_dict()))) == full
    paths = {s.path for s in array_specs(full)}
    assert {"vlm/prompt_tokens", "vlm/think_tokens", "targets/intrinsics", "thumbs/last_past"} <= paths
    bare = {s.path for s in array_specs(small_layout(with_targets=False, thumb_size=None))}
    assert not any(p.startswith(("targets/", "thumbs/")) for p in bare) and "vlm/prompt_tokens" not in bare
    with pytest.raises(ValueError, match="multiple of tubelet"):
        small_layout(n_past=5)
    with pytest.raises(ValueError, match="unknown StoreLayout keys"):
        StoreLayout.from_dict({**full.to_dict(), "warp": 9})
    assert len({s.path for s in ARRAYS}) == len(ARRAYS)


def test_fingerprint_is_canonical_and_diff_names_keys():
    a = {"b": 1, "a": {"y": (1, 2), "x": "é"}}
    b = {"a": {"x": "é", "y": [1, 2]}, "b": 1}
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint({**a, "b": 2})
    assert config_diff(a, {"a": {"x": "é", "y": [1, 3]}, "c": None}) == [
        "a.y: [1, 2] -> [1, 3]", "b: 1 -> (absent)", "c: (absent) -> null"]
    with pytest.raises(ValueError, match="non-finite"):
        fingerprint({"lr": float("nan")})
    with pytest.raises(TypeError, match="config.f"):
        fingerprint({"f": object()})


def test_add_rows_grows_every_array_and_appends_later(tmp_path):
    layout = small_layout()
    store = FeatureStore.create(tmp_path / "s.zarr", layout, small_config(), {})
    first = store.add_rows(["a.mp4", "b.mp4", "c.mp4"], ["g", "g", "h"], [1, 2, 3], [10.0, 20.0, 30.0])
    assert first.tolist() == [0, 1, 2]
    later = FeatureStore.open(tmp_path / "s.zarr", mode="r+")
    assert later.add_rows(["d.mp4", "e.mp4"], ["h", "i"], [4, 5], [40.0, 50.0]).tolist() == [3, 4]
    reopened = FeatureStore.open(tmp_path / "s.zarr")
    assert reopened.n_rows == 5 and reopened.n_shards == 3
    assert reopened.row_of() == {"a.mp4": 0, "b.mp4": 1, "c.mp4": 2, "d.mp4": 3, "e.mp4": 4}
    assert reopened.status().tolist() == [0] * 5
    group = zarr.open_group(tmp_path / "s.zarr", mode="r")
    for spec in array_specs(layout):
        assert group[spec.path].shape[0] == 5, spec.path
    assert group["index/group"][:].tolist() == ["g", "g", "h", "h", "i"]
    assert group["index/source_mtime"][:].tolist() == [10.0, 20.0, 30.0, 40.0, 50.0]
    assert list(reopened.shard_rows(2)) == [4] and reopened.shard_of(3) == 1
    with pytest.raises(ValueError, match="already have rows"):
        later.add_rows(["a.mp4"], ["g"], [1], [1.0])
    with pytest.raises(ValueError, match="duplicate"):
        later.add_rows(["x", "x"], ["g", "g"], [1, 1], [1.0, 1.0])


@pytest.mark.parametrize("layout", [small_layout(keep_tokens=True, max_prompt_tokens=6),
                                    small_layout(with_targets=False, thumb_size=None)], ids=["full", "bare"])
def test_write_read_round_trip_is_exact(tmp_path, layout):
    rng = np.random.default_rng(1)
    store = FeatureStore.create(tmp_path / "s.zarr", layout, small_config(), {})
    store.add_rows([f"v{i}" for i in range(5)], ["g"] * 5, [1] * 5, [1.0] * 5)
    rows = [random_row(layout, rng, n_frames=30 + i) for i in range(5)]
    store.write_row(3, rows[3])
    store.write_rows([4, 0, 1], [rows[4], rows[0], rows[1]])  # unordered, two contiguous runs
    assert store.status().tolist() == [1, 1, 0, 1, 1]
    reader = FeatureStore.open(tmp_path / "s.zarr")
    for i in (0, 1, 3, 4):
        assert_rows_equal(reader.read_row(i), padded(layout, rows[i]))


def test_plain_video_in_labelled_store_and_unpadded_inputs(tmp_path):
    layout = small_layout(keep_tokens=True, max_prompt_tokens=6)
    rng = np.random.default_rng(2)
    store = FeatureStore.create(tmp_path / "s.zarr", layout, small_config(), {})
    store.add_rows(["v"], ["g"], [1], [1.0])
    row = random_row(layout, rng, targets=False)
    row.think_len = 2
    row.think_ids = np.array([5, 6])  # unpadded
    row.think_tokens = np.ones((layout.levels, 2, layout.vlm_width), np.float32)
    row.prompt_tokens = row.prompt_tokens[:, : row.prompt_len]
    store.write_row(0, row)
    back = store.read_row(0)
    assert back.think_ids.tolist() == [5, 6, -1]
    assert back.think_tokens[:, :2].tolist() == np.ones((layout.levels, 2, layout.vlm_width)).tolist()
    assert not back.think_tokens[:, 2:].any() and back.prompt_tokens.shape[1] == 6
    assert not back.valid_past.any() and not back.valid_future.any()


def test_bad_rows_are_refused_before_anything_is_written(tmp_path):
    layout = small_layout()
    rng = np.random.default_rng(3)
    store = make_store(tmp_path / "s.zarr", layout, n=2, done=0)
    good = random_row(layout, rng)
    cases = {
        "non-finite": replace(good, vjepa_past=np.full_like(good.vjepa_past, np.nan)),
        "sees the future": replace(good, past_idx=good.future_idx - 1),
        "strictly increasing": replace(good, past_idx=good.past_idx[::-1].copy()),
        "shape": replace(good, prompt_mean=good.prompt_mean[:1]),
        "padded": replace(good, think_len=1, think_ids=np.array([3, 4, -1])),
        "overflow": replace(good, vjepa_future=np.full_like(good.vjepa_future, 1e6, dtype=np.float32)),
        "no target arrays": None,
        "integers": replace(good, past_idx=good.past_idx.astype(np.float32)),
    }
    for key, row in cases.items():
        if key == "no target arrays":
            bare = make_store(tmp_path / "bare.zarr", small_layout(with_targets=False), n=1, done=0)
            with pytest.raises(RowDataError, match=key):
                bare.write_row(0, good)
            continue
        with pytest.raises(RowDataError, match=key):
            store.write_rows([0, 1], [good, row])
    assert store.status().tolist() == [0, 0]
    assert np.isnan(store.array("vjepa/past")[0]).all()  # the good row of the batch was not written either


def test_status_is_written_last(tmp_path):
    """A crash between a row's data and its status leaves the row pending: it is still in the work list."""
    layout = small_layout()
    store = make_store(tmp_path / "s.zarr", layout, n=4, done=0)
    sources = {v: (1000 + i, 1.7e9 + i) for v, i in store.row_of().items()}
    # Make the status chunk of shard 1 unwritable by putting a directory where its file goes.
    (tmp_path / "s.zarr" / "index" / "status" / "c" / "1").mkdir(parents=True)
    row = random_row(layout, np.random.default_rng(4))
    with pytest.raises(OSError):
        store.write_rows([2, 3], [row, row])
    np.testing.assert_array_equal(store.array("vjepa/past")[2], row.vjepa_past)  # data is on disk ...
    assert store.status().tolist() == [0, 0, 0, 0]  # ... but the rows do not count
    assert store.work_list(sources) == [0, 1, 2, 3]


def test_work_list_pending_stale_failed_and_retry(tmp_path):
    store = make_store(tmp_path / "s.zarr", n=6, done=4)
    sources = {v: (1000 + i, 1.7e9 + i) for v, i in store.row_of().items()}
    assert store.work_list(sources) == [4, 5]
    store.mark_failed(1, "g1/v1.mp4", "decoder exploded")
    assert store.work_list(sources) == [4, 5]
    assert store.work_list(sources, retry_failed=True) == [1, 4, 5]
    changed = {**sources, "g0/v2.mp4": (1002, 5.0), "g1/v3.mp4": (7, 1.7e9 + 3)}
    assert store.work_list(changed) == [2, 3, 4, 5]
    subset = {k: v for k, v in changed.items() if k in ("g0/v2.mp4", "g0/v4.mp4")}
    assert store.work_list(subset) == [2, 4]  # videos gone from the sources are not work
    assert store.refresh_stale(changed) == [2, 3]
    assert store.status().tolist() == [1, 2, 0, 0, 0, 0]
    assert store.stale_rows(changed) == [] and store.work_list(changed) == [2, 3, 4, 5]
    reopened = FeatureStore.open(tmp_path / "s.zarr")
    assert reopened.array("index/source_size")[3] == 7


def test_mark_failed_writes_ledger_then_status(tmp_path):
    store = make_store(tmp_path / "s.zarr", n=3, done=1)
    store.mark_failed(2, "g0/v2.mp4", "bad hdf5: 3 frames short")
    assert store.status().tolist() == [1, 0, 2]
    records = sorted((tmp_path / "s.zarr" / "failures").glob("*.json"))  # one object per failure
    entry = json.loads(records[-1].read_text())
    assert entry["video"] == "g0/v2.mp4" and entry["row"] == 2 and "3 frames short" in entry["reason"]
    assert entry["time"].endswith("+00:00") and entry["pid"] == os.getpid() and entry["host"]
    with pytest.raises(ValueError, match="holds 'g1/v1.mp4'"):
        store.mark_failed(1, "g0/v2.mp4", "wrong row")
    custom = FeatureStore.open(tmp_path / "s.zarr", "r+", ledger=tmp_path / "elsewhere")
    custom.mark_failed(1, "g1/v1.mp4", "x")
    assert [f.row for f in custom.ledger.read()] == [1]
    assert json.loads(next((tmp_path / "elsewhere").glob("*.json")).read_text())["row"] == 1


def test_config_and_layout_mismatch_name_the_keys(tmp_path):
    cfg = small_config()
    make_store(tmp_path / "s.zarr", n=1, config=cfg)
    other = json.loads(json.dumps(cfg))
    other["vlm"]["layers"] = [0, 4]
    other["vjepa"]["revision"] = "r2"
    with pytest.raises(ConfigMismatchError) as err:
        FeatureStore.open(tmp_path / "s.zarr", expect_config=other)
    msg = str(err.value)
    assert "vlm.layers: [0, 2] -> [0, 4]" in msg and 'vjepa.revision: "r1" -> "r2"' in msg
    assert "2 key(s) differ" in msg and "sampling" not in msg and "vlm.prompt" not in msg
    assert FeatureStore.open(tmp_path / "s.zarr", expect_config=cfg).n_rows == 1
    with pytest.raises(ConfigMismatchError, match="rows_per_shard: 2 -> 4"):
        FeatureStore.open_or_create(tmp_path / "s.zarr", small_layout(rows_per_shard=4), cfg, {})
    again = FeatureStore.open_or_create(tmp_path / "s.zarr", small_layout(), cfg, {"run": 2})
    assert again.n_rows == 1 and again.provenance == {"code_version": "test"}
    assert zarr.open_group(tmp_path / "s.zarr", mode="r").attrs["runs"] == [{"run": 2}]


def test_not_a_store_and_newer_version(tmp_path):
    with pytest.raises(StoreFormatError, match="does not exist"):
        FeatureStore.open(tmp_path / "nope.zarr")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreFormatError, match="not a tjepa store"):
        FeatureStore.open(tmp_path / "empty")
    zarr.open_group(tmp_path / "plain.zarr", mode="w").attrs["format"] = "something-else"
    with pytest.raises(StoreFormatError, match="not a tjepa store.*something-else"):
        FeatureStore.open(tmp_path / "plain.zarr")
    zarr.create_array(tmp_path / "arr.zarr", shape=(2,), dtype="i4")
    with pytest.raises(StoreFormatError, match="not a Zarr v3 group"):
        FeatureStore.open(tmp_path / "arr.zarr")
    make_store(tmp_path / "s.zarr", n=1)
    meta_file = tmp_path / "s.zarr" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["attributes"]["version"] = 3
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(StoreFormatError, match="written by schema v3, this tjepa reads v2: upgrade tjepa"):
        FeatureStore.open(tmp_path / "s.zarr")


def test_a_schema_v1_store_is_refused_naming_store_and_version(tmp_path):
    """v1 kept tokens as float16; v2 reads only v2 and says how to get one."""
    make_store(tmp_path / "old.zarr", n=1)
    meta_file = tmp_path / "old.zarr" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["attributes"]["version"] = 1
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(StoreFormatError, match=r"old\.zarr: written by schema v1, this tjepa reads v2 only.*rebuild"):
        FeatureStore.open(tmp_path / "old.zarr")
    assert "schema v1" in validate_store(tmp_path / "old.zarr")[0]


def test_read_only_open_refuses_writes(tmp_path):
    make_store(tmp_path / "s.zarr", n=2, done=0)
    ro = FeatureStore.open(tmp_path / "s.zarr", mode="r")
    row = random_row(ro.layout, np.random.default_rng(5))
    for call in (lambda: ro.add_rows(["z"], ["g"], [1], [1.0]), lambda: ro.write_row(0, row),
                 lambda: ro.mark_failed(0, "g0/v0.mp4", "x"), lambda: ro.update_source([0], [1], [1.0])):
        with pytest.raises(TjepaError, match=r"read-only \(mode='r'\).*mode='r\+'"):
            call()
    assert ro.status().tolist() == [0, 0]
    with pytest.raises(ValueError, match="mode must be"):
        FeatureStore.open(tmp_path / "s.zarr", mode="w")


def _open_r_plus_as(path: str, uid: int | None, result) -> None:
    if uid is not None:
        os.setgid(uid)
        os.setuid(uid)
    try:
        FeatureStore.open(path, "r+")
        result.put("opened")
    except TjepaError as err:
        result.put(str(err))


def test_unwritable_directory_is_refused_for_r_plus():
    """r+ on a directory this user cannot write fails at open, naming the path.

    Root ignores permission bits, so as root the check runs in a forked child that drops to `nobody`."""
    base = Path(tempfile.mkdtemp(prefix="tjepa-ro-"))
    try:
        os.chmod(base, 0o755)
        make_store(base / "s.zarr", n=1)
        for root, dirs, files in os.walk(base / "s.zarr"):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o555)
            for f in files:
                os.chmod(os.path.join(root, f), 0o444)
        os.chmod(base / "s.zarr", 0o555)
        ctx = mp.get_context("fork")
        result = ctx.Queue()
        child = ctx.Process(target=_open_r_plus_as,
                            args=(str(base / "s.zarr"), 65534 if os.geteuid() == 0 else None, result))
        child.start()
        message = result.get(timeout=60)
        child.join(timeout=60)
        assert message == f"{base / 's.zarr'}: no write permission; cannot open the store for writing " \
                          "(fix the permissions, or open it with mode='r')"
        assert FeatureStore.open(base / "s.zarr", "r").n_rows == 1
    finally:
        for root, dirs, _ in os.walk(base):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
        os.chmod(base, 0o755)
        shutil.rmtree(base)


def _write_shards(path: str, shards: list[int], seed: int) -> None:
    store = FeatureStore.open(path, mode="r+")
    for shard in shards:
        for row in store.shard_rows(shard):  # row by row: read-modify-write inside the owned shard
            store.write_row(row, random_row(store.layout, np.random.default_rng(seed + row)))


def test_two_processes_writing_different_shards_lose_nothing(tmp_path):
    layout = small_layout(rows_per_shard=3)
    store = make_store(tmp_path / "s.zarr", layout, n=12, done=0)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_write_shards, args=(str(tmp_path / "s.zarr"), shards, 100))
             for shards in ([0, 2], [1, 3])]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    reader = FeatureStore.open(tmp_path / "s.zarr")
    assert reader.status().tolist() == [1] * 12
    for row in range(12):
        want = random_row(layout, np.random.default_rng(100 + row))
        assert_rows_equal(reader.read_row(row), padded(layout, want))
    assert store.n_shards == 4


def test_xarray_reads_every_group(tmp_path):
    xr = pytest.importorskip("xarray")
    layout = small_layout(keep_tokens=True, max_prompt_tokens=6)
    store = make_store(tmp_path / "s.zarr", layout, n=5)
    for group in ("index", "vjepa", "vlm", "targets", "thumbs"):
        ds = xr.open_zarr(tmp_path / "s.zarr", group=group, consolidated=False)
        for spec in array_specs(layout):
            if spec.path.startswith(group + "/"):
                var = ds[spec.path.split("/")[1]]
                assert var.dims == spec.dims, spec.path
                np.testing.assert_array_equal(var.values, store.array(spec.path)[:], err_msg=spec.path)
    index = xr.open_zarr(tmp_path / "s.zarr", group="index", consolidated=False)
    assert list(index["video"].values) == [f"g{i % 2}/v{i}.mp4" for i in range(5)]
    tree = xr.open_datatree(tmp_path / "s.zarr", engine="zarr", consolidated=False)
    assert tree["vlm"]["think_text"].shape == (5,)


def test_no_pickles_and_big_arrays_uncompressed(tmp_path):
    make_store(tmp_path / "s.zarr", small_layout(keep_tokens=True, max_prompt_tokens=6), n=2)
    for meta_file in (tmp_path / "s.zarr").rglob("zarr.json"):
        text = meta_file.read_text()
        assert "pickle" not in text and '"object"' not in text, meta_file
    g = zarr.open_group(tmp_path / "s.zarr", mode="r")
    for path in ("vjepa/past", "vjepa/future", "vlm/prompt_tokens", "vlm/think_tokens", "vlm/prompt_mean"):
        assert g[path].compressors == () and g[path].chunks[0] == 1 and g[path].shards[0] == 2, path
    for path in ("index/status", "index/video", "index/past_idx", "vlm/think_ids"):
        assert g[path].compressors and g[path].chunks[0] == 2 and g[path].shards is None, path


def test_readme_table_matches_the_array_table():
    from tjepa.cache_schema.layout import markdown_table

    readme = (Path(__file__).parents[1] / "cache_schema" / "README.md").read_text()
    assert markdown_table() in readme, "regenerate the table in cache_schema/README.md from markdown_table()"


def test_store_without_rows_attribute_counts_every_row(tmp_path):
    """`rows` is our commit marker; a store written by another tool to the contract may lack it."""
    make_store(tmp_path / "s.zarr", n=3, done=2)
    meta_file = tmp_path / "s.zarr" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    del meta["attributes"]["rows"]
    meta_file.write_text(json.dumps(meta))
    store = FeatureStore.open(tmp_path / "s.zarr")
    assert store.n_rows == 3 and store.status().tolist() == [1, 1, 0]


def test_interrupted_add_rows_is_repaired_by_the_next_one(tmp_path):
    """Arrays grown but `rows` not committed (a crash inside add_rows): the next add_rows reuses the rows."""
    store = make_store(tmp_path / "s.zarr", n=2, done=2)
    for spec in store.specs:  # what a crash after the resizes leaves behind
        store.array(spec.path).resize((5, *spec.row_shape(store.layout)))
    reopened = FeatureStore.open(tmp_path / "s.zarr", "r+")
    assert reopened.n_rows == 2 and reopened.row_of() == {"g0/v0.mp4": 0, "g1/v1.mp4": 1}
    assert reopened.add_rows(["new.mp4"], ["g"], [1], [1.0]).tolist() == [2]
    assert reopened.array("vjepa/past").shape[0] == 3 and reopened.status().tolist() == [1, 1, 0]
