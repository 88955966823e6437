"""The one device resolver and the one progress-bar factory."""

from __future__ import annotations

import io

import pytest
import torch
from rich.console import Console

from tjepa.devices import resolve_device
from tjepa.errors import TjepaError
from tjepa.progress import progress_bar


def test_device_names_are_resolved_or_refused():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = torch.device("cuda", 1 % max(torch.cuda.device_count(), 1)) if torch.cuda.is_available() \
        else torch.device("cpu")
    assert resolve_device("auto", local_index=1) == expected
    with pytest.raises(TjepaError, match="not a device name"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(TjepaError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_progress_bar_shows_the_rate_in_units_per_second():
    out = io.StringIO()
    bar = progress_bar("caching", "videos", "{task.fields[failed]} failed",
                       console=Console(file=out, force_terminal=False, width=120))
    with bar:
        task = bar.add_task("x", total=4, failed=1)
        bar.update(task, advance=2)
    text = out.getvalue()
    assert "caching" in text and "2/4" in text and "videos/s" in text and "1 failed" in text
