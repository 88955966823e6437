"""Where a model's files live, which exact weights they are, and how that is recorded.

A model is named either by a local directory (anything `from_pretrained(dir)` loads) or by a hub id
with an optional revision. Hub ids are resolved to a local snapshot (downloaded when the machine is
online, looked up in the HF cache when `HF_HUB_OFFLINE=1`) and loaded from that directory, so both
paths end in the same `from_pretrained(dir)` call.

Identity for the store fingerprint (`ModelSource.identity`): a hub id is recorded as given with the
commit it resolved to; a local directory is recorded as `"local"` with no revision. Both always carry
the sha256 of the weight files, so the fingerprint never depends on where a directory lives (tests
build tiny models in temporary directories) but always changes when the weights do.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tjepa.errors import InputError, TjepaError

LOCAL = "local"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# Only what from_pretrained needs: configs, weights, tokenizer and template files.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model", "*.tiktoken"]


@dataclass(frozen=True)
class ModelSource:
    path: Path  # local directory to load from
    model: str  # hub id as given, or "local"
    revision: str | None  # resolved commit for hub ids
    sha256: str  # digest of the weight files (see weights_sha256)

    def identity(self) -> dict:
        return {"model": self.model, "revision": self.revision, "sha256": self.sha256}


def _file_sha256(path: Path) -> str:
    # HF cache blobs of LFS files are named by their content sha256: no need to read gigabytes.
    real = path.resolve()
    if path.is_symlink() and _HEX64.match(real.name):
        return real.name
    h = hashlib.sha256()
    with open(real, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def weights_sha256(directory: str | Path) -> str:
    """sha256 over the sorted (file name, file sha256) lines of the weight files of a model directory."""
    directory = Path(directory)
    files = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))
    if not files:
        raise InputError(directory, "no weight files (*.safetensors or *.bin) in this model directory")
    lines = "".join(f"{f.name} {_file_sha256(f)}\n" for f in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def looks_like_path(name: str) -> bool:
    """Hub ids are exactly `org/name`; anything else (or anything that exists on disk) is a path."""
    return name.startswith(("/", ".", "~")) or name.count("/") != 1 or Path(name).expanduser().exists()


def local_source(directory: str | Path) -> ModelSource:
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise InputError(path, "model directory does not exist")
    if not (path / "config.json").is_file():
        raise InputError(path, "not a transformers model directory (no config.json)")
    return ModelSource(path=path.resolve(), model=LOCAL, revision=None, sha256=weights_sha256(path))


def hub_source(repo_id: str, revision: str | None = None, cache_dir: str | Path | None = None, hint: str = "") -> ModelSource:
    """Resolve a hub id to a local snapshot (offline: the HF cache only); a clear TjepaError if absent."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false")
    try:
        path = Path(
            snapshot_download(
                repo_id, revision=revision, cache_dir=cache_dir, local_files_only=offline, allow_patterns=HUB_PATTERNS
            )
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as err:
        rev = f" --revision {revision}" if revision else ""
        name = f"{repo_id}{'@' + revision if revision else ''}"
        what = "is not in the local HF cache (offline: HF_HUB_OFFLINE=1)" if offline else f"could not be fetched ({err})"
        raise TjepaError(
            f"model {name} {what}. Download it where there is internet (`hf download {repo_id}{rev}`) and copy "
            f"the HF cache here (or set HF_HOME), or use a local model directory{' (' + hint + ')' if hint else ''}."
        ) from err
    resolved = path.name if path.parent.name == "snapshots" else revision
    return ModelSource(path=path, model=repo_id, revision=resolved, sha256=weights_sha256(path))


def resolve_source(name: str | Path, revision: str | None = None, cache_dir=None, hint: str = "") -> ModelSource:
    """A local directory (when `name` exists or looks like a path) or a hub id."""
    if isinstance(name, Path) or looks_like_path(str(name)):
        if revision is not None:
            raise TjepaError(f"a revision ({revision}) was given for the local directory {name}: it cannot take effect")
        return local_source(name)
    return hub_source(str(name), revision, cache_dir, hint)
