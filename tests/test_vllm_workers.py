"""`--generator vllm` on dask: workers that may start vLLM's engine process, each on its own GPU.

Real dask.distributed clusters; the task starts a child process as vLLM's engine does.
"""

from __future__ import annotations

import multiprocessing
import os

import pytest
from typer.testing import CliRunner

from tjepa.errors import TjepaError
from tjepa.pipeline.episode_io import SamplingConfig
from tjepa.pipeline.executor import non_daemonic_workers, run_on_dask, start_local_cluster, vllm_worker_env
from tjepa.pipeline.worker import WorkerOptions


def _start_child() -> int:
    """What vLLM's LLM() does in the worker: start an engine-core child process."""
    child = multiprocessing.get_context("fork").Process(target=os.getpid)
    child.start()
    child.join()
    return child.exitcode


def _env_pin() -> str | None:
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def test_default_workers_cannot_host_vllm_and_are_refused():
    from distributed import Client

    with start_local_cluster(1) as cluster, Client(cluster) as client:
        with pytest.raises(AssertionError, match="daemonic processes are not allowed to have children"):
            client.submit(_start_child, pure=False).result()
        opts = WorkerOptions(encoders=None, sampling=SamplingConfig(), generator="vllm")
        with pytest.raises(TjepaError, match=r"daemonic.*--no-nanny.*DASK_DISTRIBUTED__WORKER__DAEMON=False"):
            run_on_dask([], opts, lambda video, error: None, scheduler=cluster.scheduler_address)


def test_vllm_workers_are_not_daemonic_and_pinned_to_their_gpu():
    from distributed import Client

    assert vllm_worker_env(3, 2) == {"CUDA_VISIBLE_DEVICES": "1"} and vllm_worker_env(0, 0) == {}
    with non_daemonic_workers(), start_local_cluster(2, "vllm", n_gpus=2) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        by_name = {info["name"]: addr for addr, info in client.scheduler_info()["workers"].items()}
        for name, addr in by_name.items():
            assert client.submit(_start_child, pure=False, workers=[addr]).result() == 0
            assert client.submit(_env_pin, pure=False, workers=[addr]).result() == str(name)


def test_cache_refuses_a_vllm_configuration_before_any_row(tiny_models, tmp_path):
    import shutil

    from tjepa.cli import app

    shutil.copytree(tiny_models, tmp_path / "models")
    (tmp_path / "models" / "qwen3vl" / "preprocessor_config.json").unlink()
    args = ["cache", "--videos", str(tmp_path), "--out", str(tmp_path / "s.zarr"), "--generator", "vllm"]
    res = CliRunner().invoke(app, [*args, "--models-dir", str(tmp_path / "models")])
    assert isinstance(res.exception, TjepaError) and "no preprocessor_config.json" in str(res.exception)
    res = CliRunner().invoke(app, [*args, "--models-dir", str(tiny_models), "--past", "2000"])
    assert isinstance(res.exception, TjepaError) and "more than the model's 8192" in str(res.exception)
    assert not (tmp_path / "s.zarr").exists()
