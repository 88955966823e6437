"""Smoke runs of every benchmark at tiny sizes: the report's structure, not its figures (no timing asserts)."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` lives at the repository top

from benchmarks import BENCHMARKS  # noqa: E402
from benchmarks.common import Context, Section, machine_info  # noqa: E402


@pytest.fixture(scope="module")
def machine():
    return machine_info()


def smoke_ctx(tmp_path: Path, machine) -> Context:
    return Context(mode="smoke", workdir=tmp_path, command="python -m benchmarks --smoke", machine=machine,
                   inline_children=True, log=lambda msg: None)


def check_section(section: Section, name: str) -> str:
    assert section.name == name and section.tables and section.findings
    assert section.mode == "smoke" and section.date and section.repeats and section.machine
    md = section.markdown()
    assert md.startswith(f"<!-- bench:{name}:start -->") and md.endswith(f"<!-- bench:{name}:end -->")
    assert "Command: `python -m benchmarks --smoke`" in md and f"--only {name}" in md
    for table in section.tables:
        assert table.rows and all(len(row) == len(table.columns) for row in table.rows), table.title
        lines = table.markdown().splitlines()
        assert sum(line.startswith("| ") for line in lines) == len(table.rows) + 2  # header + rule + rows
    return md


def column(table, name: str) -> list:
    i = table.columns.index(name)
    return [row[i] for row in table.rows]


def test_loading_smoke(tmp_path, machine):
    from benchmarks import loading

    section = loading.run(smoke_ctx(tmp_path, machine))
    check_section(section, "loading")
    table = section.tables[0]
    p = loading.PARAMS["smoke"]
    assert len(table.rows) == 2 * len(p.workers) * 4  # cold/warm x workers x loaders
    assert {row[2] for row in table.rows} == {"ours", "ours, store read only", "reference npz", "raw read"}
    assert all(r > 0 and math.isfinite(r) for r in column(table, "samples/s"))
    for row in table.rows:  # each loader against itself is exactly 1
        if row[2] == "reference npz":
            assert row[6] == pytest.approx(1.0)
        if row[2] == "raw read":
            assert row[7] == pytest.approx(1.0)
    assert any("reference" in f and ("met" in f) for f in section.findings)


def test_disk_smoke(tmp_path, machine):
    from benchmarks import disk

    section = disk.run(smoke_ctx(tmp_path, machine))
    check_section(section, "disk")
    rows = {row[0]: row for row in section.tables[0].rows}
    assert rows["reference npz"][3] == pytest.approx(1.0)
    assert rows["ours, keep_tokens"][1] > rows["ours (default: means)"][1]  # tokens cost bytes


@pytest.mark.slow  # two dask clusters start: ~25 s on 2 busy cores
def test_stage_one_smoke(tmp_path, machine, tiny_models):
    from benchmarks import stage_one

    (tmp_path / "stage_one").mkdir()
    os.symlink(tiny_models, tmp_path / "stage_one" / "models")  # reuse the session's tiny models
    section = stage_one.run(smoke_ctx(tmp_path, machine))
    check_section(section, "stage_one")
    tput, share, decode, mem = section.tables
    assert len(tput.rows) == 2 * len(stage_one.EXECUTORS)
    assert all(0 <= x <= 1.0001 for x in column(share, "model"))
    assert column(decode, "wall x ours")[0] == pytest.approx(1.0)
    assert [row[0] for row in mem.rows] == list(stage_one.PARAMS["smoke"].rss_marks)


def test_attention_smoke(tmp_path, machine):
    from benchmarks import attention

    section = attention.run(smoke_ctx(tmp_path, machine))
    check_section(section, "attention")
    rows = section.tables[0].rows
    assert {row[2] for row in rows} == set(attention.IMPLS)
    dense_times = [row[6] for row in rows if row[2] == "dense" and row[4] != "-"]
    assert dense_times and all(t == pytest.approx(1.0) for t in dense_times)


def test_gpu_section_without_cuda(tmp_path, machine):
    import torch

    from benchmarks import gpu

    if torch.cuda.is_available():
        pytest.skip("this test covers the CPU-only report; the CUDA path is the benchmark itself")
    section = gpu.run(smoke_ctx(tmp_path, machine))
    md = check_section(section, "gpu")
    assert "needs a GPU" in md and "TFLOP" in md


def test_gpu_arithmetic():
    from benchmarks import gpu

    f = gpu.stage_one_flops(1150)
    assert f.total == pytest.approx(f.vjepa + f.vision + f.prefill + f.decode + f.capture)
    # V-JEPA by hand: 2 clips x 24 blocks x 4096 tokens x (24 w^2 + 4 x 4096 x w), w = 1024 (+ patch embedding)
    w, n = 1024, 4096
    assert f.vjepa == pytest.approx(2 * 24 * n * (24 * w * w + 4 * n * w), rel=0.01)
    assert gpu.stage_one_flops(2300).prefill > 2 * gpu.stage_one_flops(1150).prefill  # attention is superlinear
    fwd, train = gpu.stage_two_flops()
    assert train == pytest.approx(3 * fwd)
    assert gpu.peak_tflops("NVIDIA H100 PCIe")[0] < gpu.peak_tflops("NVIDIA H100 80GB HBM3")[0]


def test_gpu_measurements_run_on_cpu(tmp_path, synth_root, tiny_models):
    """The GPU section's measuring functions, on CPU with tiny models (their figures need CUDA)."""
    from benchmarks import gpu
    from benchmarks.stage_one import linked_set

    two = gpu.measure_stage_two("cpu", preset="tiny", batch=2, impls=("sdpa_per_frame", "dense"), warmup=0,
                                steps=1, amp="bfloat16")
    assert set(two) == {"sdpa_per_frame", "dense"} and all(len(r["step_s"]) == 1 for r in two.values())
    videos, warm = linked_set(synth_root, tmp_path / "v", 2), linked_set(synth_root, tmp_path / "w", 1)
    one = gpu.measure_stage_one(videos, warm, tiny_models, tmp_path / "out", "tiny", "cpu", batch_size=2)
    assert one["done"] == 2 and one["prompt_len"] > 0


def test_main_writes_and_merges(tmp_path):
    from benchmarks.__main__ import main

    out = tmp_path / "B.md"
    assert main(["--smoke", "--only", "disk", "--out", str(out), "--workdir", str(tmp_path / "w1")]) == 0
    assert main(["--smoke", "--only", "gpu", "--out", str(out), "--workdir", str(tmp_path / "w2")]) == 0
    text = out.read_text()
    assert text.startswith("# tjepa benchmarks")
    assert text.index("<!-- bench:disk:start -->") < text.index("<!-- bench:gpu:start -->")  # report order
    assert text.count("<!-- bench:disk:start -->") == 1
    assert list(BENCHMARKS)[:2] == ["loading", "disk"]


def test_stage_one_memory_smoke(tmp_path, machine, tiny_models):
    from benchmarks import stage_one_memory

    (tmp_path / "stage_one_memory").mkdir()
    os.symlink(tiny_models, tmp_path / "stage_one_memory" / "models")  # reuse the session's tiny models
    section = stage_one_memory.run(smoke_ctx(tmp_path, machine))
    check_section(section, "stage_one_memory")
    assert [row[0] for row in section.tables[0].rows] == list(stage_one_memory.PARAMS["smoke"].marks)
    assert "MiB per video" in section.findings[0]


def test_tokens_smoke(tmp_path, machine):
    from benchmarks import tokens

    section = tokens.run(smoke_ctx(tmp_path, machine))
    check_section(section, "tokens")
    rows = {row[0]: row for row in section.tables[0].rows}
    assert rows["float32"][2] == pytest.approx(1.0) and rows["bfloat16 bits in uint16 (schema v2)"][2] == 0.5
    assert rows["float16 (schema v1)"][7] > 0 and rows["bfloat16 bits in uint16 (schema v2)"][7] == 0


def test_bucket_smoke(tmp_path, machine, s3_server):
    from benchmarks import bucket

    section = bucket.run(smoke_ctx(tmp_path, machine), server=s3_server)
    check_section(section, "bucket")
    names = column(section.tables[0], "source")
    assert names[:2] == [bucket.RAW_WHOLE, bucket.RAW_RANGES]
    assert {f"{where}, {w} workers, epoch {e}" for where in ("bucket", "local") for w in (0, 1)
            for e in (1, 2)} == set(names[2:])


def test_demo_train_smoke(tmp_path, machine):
    from benchmarks import demo_train

    section = demo_train.run(smoke_ctx(tmp_path, machine))
    check_section(section, "demo_train")
    single, par = section.tables
    assert all(float(r) > 0 for r in column(single, "samples/s (median of epochs 2+)"))
    assert column(par, "vs one process") == ["1.00x"]
    assert "top ops" in section.findings[-1]
