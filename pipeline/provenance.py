"""What wrote a store's rows: the run record the coordinator stores, and each worker's environment.

The coordinator records, at creation (`provenance`) and for each later run (`runs`): library
versions, host, requested device, compute dtype, generator and batch size. Each worker reports the
environment it actually computed in (host, resolved device and its name, library versions, sha256
of the chat template its prompts were rendered with); after the job the coordinator adds them to the
run record (`workers`). The `run` index column says which run wrote each row, so `tjepa inspect` can warn when
the rows of one store come from different batch sizes, devices or library versions.
"""

from __future__ import annotations

import datetime
import hashlib
import socket
from importlib import metadata
from pathlib import Path

# distribution name -> key in the record; vllm only when it generated the tokens
LIBRARIES = {"tjepa": "tjepa", "torch": "torch", "transformers": "transformers", "zarr": "zarr", "av": "pyav"}


def library_versions(generator: str) -> dict[str, str]:
    names = dict(LIBRARIES, **({"vllm": "vllm"} if generator == "vllm" else {}))
    out = {}
    for dist, key in names.items():
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = "not installed"
    return out


def device_name(device: str) -> str:
    """The accelerator's name (cuda:k), or the CPU model."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def run_record(job) -> dict:
    """The coordinator's record of one `tjepa cache` run (job: a CacheJob)."""
    import tjepa

    return {
        "code_version": tjepa.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "libraries": library_versions(job.generator),
        "device": job.device,  # as requested; the resolved devices are in `workers`
        "compute_dtype": job.encoders.dtype,
        "hidden_states": "transformers",  # layers are always captured by a transformers forward
        "generator": job.generator,
        "batch_size": job.batch_size,
        "videos_root": str(Path(job.videos).resolve()),
    }


def worker_environment(device: str, generator: str, thinker) -> dict:
    """Where one worker computed its rows; `device` resolved (cuda:1, cpu)."""
    template = thinker.tokenizer.chat_template or ""
    return {
        "host": socket.gethostname(),
        "device": device,
        "device_name": device_name(device),
        "libraries": library_versions(generator),
        "chat_template_sha256": hashlib.sha256(template.encode("utf-8")).hexdigest(),
    }
