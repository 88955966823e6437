"""The one device resolver: `auto` / `cpu` / `cuda` / `cuda:N` -> a torch.device that exists here."""

from __future__ import annotations

from tjepa.errors import TjepaError


def resolve_device(name: str, local_index: int = 0):
    """`auto` -> this process's GPU (`local_index` modulo the GPU count: a torchrun local rank or a
    dask worker number) when CUDA is available, else the CPU. Other names are checked: a malformed
    name, CUDA on a machine without it, or a GPU index beyond the count is a TjepaError."""
    import torch

    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", local_index % torch.cuda.device_count())
    try:
        dev = torch.device(name)
    except RuntimeError as err:
        raise TjepaError(f"--device {name!r}: not a device name ({err}); use auto, cpu, cuda or cuda:N") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TjepaError(f"--device {name}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise TjepaError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s)")
    return dev
