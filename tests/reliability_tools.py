"""Fault injection and inspection helpers for the reliability suite (tests/reliability) and its quick
version (tests/test_reliability_quick.py).

Everything acts on real processes and real files: `tjepa` runs as a subprocess (the console entry
point users run), is killed with SIGKILL at chosen moments, and the store / run directory it leaves
behind is read back with zarr and torch. Nothing of the product is mocked.

Making a directory unwritable depends on who runs the tests: an ordinary user gets `chmod`; root
ignores permission bits, so it gets `chattr +i` (ext4 and friends), a read-only bind mount in a
private mount namespace (`unshare -m`), or a child process that drops to `nobody` (`setpriv`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PRODUCT_DIRS = ("tjepa", "pipeline", "cache_schema", "train", "eval", "benchmarks")
NOBODY_UID, NOBODY_GID = 65534, 65534
# `tjepa cache` arguments shared by a reference run and every faulted run (batch 1: a commit per video).
CACHE_EXTRA = ("--batch-size", "1")


# ---------------------------------------------------------------- running the CLI
def tjepa_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tjepa", *map(str, args)]


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1",
               TOKENIZERS_PARALLELISM="false", DVC_NO_ANALYTICS="1")
    env.update(extra)
    return env


def run(cmd: list[str], timeout: float = 300, env: dict[str, str] | None = None,
        cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env or cli_env(), cwd=cwd)


def spawn(cmd: list[str], log_dir: Path, name: str = "proc") -> subprocess.Popen:
    """Start `cmd` with stdout/stderr going to files (a pipe nobody reads could block the child)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out = open(log_dir / f"{name}.out", "w")  # noqa: SIM115 (closed by the child's exit; kept tiny)
    err = open(log_dir / f"{name}.err", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=cli_env())
    out.close()
    err.close()
    return proc


def kill_after(proc: subprocess.Popen, delay: float, poll: float = 0.01) -> bool:
    """SIGKILL `proc` `delay` seconds from now; False if it had already exited by then."""
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
    return _kill(proc)


def kill_when(proc: subprocess.Popen, predicate: Callable[[], bool], timeout: float = 300,
              poll: float = 0.0005) -> bool:
    """SIGKILL `proc` as soon as `predicate()` holds; False if it exited (or timed out) first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            hit = predicate()
        except (OSError, ValueError):  # files appear and vanish under our feet
            hit = False
        if hit:
            return _kill(proc)
        time.sleep(poll)
    if proc.poll() is None:  # timed out: do not leave it running
        _kill(proc)
    return False


def _kill(proc: subprocess.Popen) -> bool:
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    proc.wait()
    return proc.returncode == -signal.SIGKILL


# ---------------------------------------------------------------- reading what a run left behind
def status_by_video(store: Path) -> dict[str, int]:
    """{video id: status} of the committed rows; {} when there is no readable store yet."""
    import zarr

    try:
        g = zarr.open_group(str(store), mode="r")
        rows = int(g.attrs["rows"])
        videos = [str(v) for v in g["index/video"][:rows]]
        status = np.asarray(g["index/status"][:rows])
    except Exception:  # noqa: BLE001 (missing, half-created, mid-rename: all mean "no rows yet")
        return {}
    return {v: int(s) for v, s in zip(videos, status, strict=True)}


def video_ids(store: Path) -> list[str]:
    """index/video of the committed rows, duplicates kept."""
    import zarr

    g = zarr.open_group(str(store), mode="r")
    return [str(v) for v in g["index/video"][: int(g.attrs["rows"])]]


def array_paths(store: Path) -> list[str]:
    """Every array of a zarr group, as 'parent/name' paths (sorted)."""
    import zarr

    g = zarr.open_group(str(store), mode="r")
    out = []
    for name, node in g.members(max_depth=None):
        if isinstance(node, zarr.Array):
            out.append(name)
    return sorted(out)


def rows_of(store: Path, path: str) -> dict[str, np.ndarray]:
    import zarr

    g = zarr.open_group(str(store), mode="r")
    rows = int(g.attrs["rows"])
    videos = [str(v) for v in g["index/video"][:rows]]
    data = g[path][:rows]
    return {v: data[i] for i, v in enumerate(videos)}


# Which run wrote a row is provenance, not content: a row redone after a kill is written by a later run.
PROVENANCE_ARRAYS = ("index/run",)


def store_differences(a: Path, b: Path, skip: tuple[str, ...] = ()) -> list[str]:
    """Every (array, video) whose content differs between two stores, rows matched by video id."""
    skip = (*skip, *PROVENANCE_ARRAYS)
    problems = []
    pa, pb = array_paths(a), array_paths(b)
    if pa != pb:
        problems.append(f"array sets differ: {sorted(set(pa) ^ set(pb))}")
    for path in sorted(set(pa) & set(pb)):
        if path in skip:
            continue
        ra, rb = rows_of(a, path), rows_of(b, path)
        if ra.keys() != rb.keys():
            problems.append(f"{path}: videos differ {sorted(set(ra) ^ set(rb))}")
            continue
        for video in ra:
            x, y = np.asarray(ra[video]), np.asarray(rb[video])
            if x.shape != y.shape or x.dtype != y.dtype or not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
                problems.append(f"{path}: differs for {video}")
    return problems


def done_rows_snapshot(store: Path) -> dict[str, dict[str, np.ndarray]]:
    """{video: {array: row}} of every done row (what must survive untouched)."""
    status = status_by_video(store)
    done = [v for v, s in status.items() if s == 1]
    snap: dict[str, dict[str, np.ndarray]] = {v: {} for v in done}
    for path in array_paths(store):
        rows = rows_of(store, path)
        for v in done:
            snap[v][path] = np.asarray(rows[v]).copy()
    return snap


def snapshot_changes(store: Path, snap: dict[str, dict[str, np.ndarray]]) -> list[str]:
    out = []
    for path in {p for arrays in snap.values() for p in arrays}:
        rows = rows_of(store, path)
        for v, arrays in snap.items():
            if v not in rows:
                out.append(f"{v}: row vanished")
            elif not np.array_equal(np.asarray(rows[v]), arrays[path], equal_nan=arrays[path].dtype.kind == "f"):
                out.append(f"{path}: {v} changed")
    return out


def partial_files(root: Path) -> list[Path]:
    """Temp files an interrupted atomic write leaves behind (zarr's *.partial, our .*.tmp<pid>)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and (p.name.endswith(".partial") or ".tmp" in p.name))


def ledger(store: Path) -> list[dict]:
    """The store's failure records, oldest first, as dicts."""
    from tjepa.cache_schema.ledger import Ledger

    return [dict(f.__dict__) for f in Ledger.of_store(store).read()]


# Codecs that only ever carry numbers or UTF-8 text; anything else (a pickle codec, object arrays)
# would let a store execute code or depend on Python objects.
SAFE_CODECS = {"bytes", "blosc", "zstd", "gzip", "crc32c", "transpose", "sharding_indexed", "vlen-utf8"}
SAFE_DTYPES = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
               "float16", "float32", "float64", "string"}


def store_pickle_problems(store: Path) -> list[str]:
    """Every array metadata in the store (zarr.json files) whose codecs or dtype are not plain data."""
    problems = []
    metas = sorted(store.rglob("zarr.json"))
    if not metas:
        return [f"{store}: no zarr.json at all"]
    for meta_file in metas:
        meta = json.loads(meta_file.read_text())
        if meta.get("zarr_format") != 3:
            problems.append(f"{meta_file}: zarr_format {meta.get('zarr_format')!r}")
        if meta.get("node_type") != "array":
            continue
        dtype = meta.get("data_type")
        dname = dtype if isinstance(dtype, str) else (dtype or {}).get("name")
        if dname not in SAFE_DTYPES:
            problems.append(f"{meta_file}: data_type {dtype!r}")
        for name in _codec_names(meta.get("codecs", [])):
            if name not in SAFE_CODECS:
                problems.append(f"{meta_file}: codec {name!r}")
    for p in store.rglob("*"):
        if p.suffix in (".pkl", ".pickle", ".npy", ".npz"):
            problems.append(f"{p}: a {p.suffix} file inside the store")
    return problems


def _codec_names(codecs: list) -> Iterator[str]:
    for c in codecs:
        yield c["name"]
        cfg = c.get("configuration") or {}
        for key in ("codecs", "index_codecs"):
            yield from _codec_names(cfg.get(key, []))


# ---------------------------------------------------------------- unwritable places
def is_root() -> bool:
    return os.geteuid() == 0


def probe_write(directory: Path) -> bool:
    """True if this process can create a file in `directory`."""
    try:
        fd, name = tempfile.mkstemp(dir=directory)
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


@contextlib.contextmanager
def unwritable_dir(path: Path) -> Iterator[str]:
    """Make `path` (a directory) unwritable for this user, yielding how; always undone afterwards.

    Non-root: chmod a-w. Root: `chattr +i` (permission bits do not bind root); the calling test is
    skipped when that is impossible here (root on tmpfs/overlayfs).
    """
    path.mkdir(parents=True, exist_ok=True)
    if not is_root():
        mode = path.stat().st_mode
        path.chmod(0o555)
        try:
            yield "chmod 555"
        finally:
            path.chmod(mode)
        return
    res = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True) \
        if shutil.which("chattr") else None
    if res is None or res.returncode != 0:
        import pytest

        # An environment limit (root on tmpfs/overlayfs), not missing work: the nobody and
        # read-only-mount variants in tests/reliability cover the same errors there.
        pytest.skip(f"root cannot make {path} unwritable here (chattr +i: "
                    f"{res.stderr.strip() if res else 'not installed'})")
    try:
        if probe_write(path):
            raise RuntimeError(f"{path} is still writable after chattr +i")
        yield "chattr +i"
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def readonly_mount_prefix(path: Path) -> list[str]:
    """A command prefix that runs the rest of the command with `path` bind-mounted read-only in a
    private mount namespace (root only; the mount disappears with the command)."""
    script = 'mount --bind -o ro "$1" "$1" || exit 97; shift; exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(path)]


def readonly_mount_works(tmp: Path) -> bool:
    if not is_root() or shutil.which("unshare") is None:
        return False
    d = tmp / "ro-probe"
    d.mkdir(exist_ok=True)
    res = subprocess.run([*readonly_mount_prefix(d), "sh", "-c", f"touch {d}/x"], capture_output=True)
    return res.returncode not in (0, 97) and not (d / "x").exists()


def nobody_prefix() -> list[str]:
    """Run the rest of a command as user `nobody` (root only)."""
    return ["setpriv", f"--reuid={NOBODY_UID}", f"--regid={NOBODY_GID}", "--clear-groups"]


def nobody_env(home: Path) -> dict[str, str]:
    """An environment for a child running as nobody (its HOME does not exist)."""
    return cli_env(HOME=str(home), MPLCONFIGDIR=str(home / "mpl"), HF_HOME=str(home / "hf"),
                   XDG_CACHE_HOME=str(home / "cache"))


@contextlib.contextmanager
def shared_tmp(prefix: str = "tjepa-rel-") -> Iterator[Path]:
    """A world-readable temp dir (pytest's tmp dirs are 0700: `nobody` could not even enter them)."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def open_up(root: Path) -> None:
    """Make a tree readable (and dirs enterable) by everyone."""
    for p in [root, *root.rglob("*")]:
        if p.is_symlink():
            continue
        p.chmod(0o755 if p.is_dir() else 0o644)


# ---------------------------------------------------------------- inputs
def write_evil_module(directory: Path, marker: Path, name: str = "evil_code") -> Path:
    """A Python module that, if anything ever imports it, creates `marker`."""
    src = directory / f"{name}.py"
    src.write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('remote code ran')\n"
        "from transformers import PretrainedConfig, PreTrainedTokenizerFast, PreTrainedModel\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
        "class EvilTokenizer(PreTrainedTokenizerFast):\n    pass\n"
        "class EvilModel(PreTrainedModel):\n    config_class = EvilConfig\n"
    )
    return src


def add_remote_code(model_dir: Path, marker: Path) -> None:
    """Point every config of a saved model at custom code (`auto_map`), as hub repos with
    trust_remote_code do; loading must ignore it."""
    write_evil_module(model_dir, marker)
    for cfg_name, auto in (("config.json", {"AutoConfig": "evil_code.EvilConfig",
                                            "AutoModel": "evil_code.EvilModel",
                                            "AutoModelForImageTextToText": "evil_code.EvilModel"}),
                           ("tokenizer_config.json", {"AutoTokenizer": ["evil_code.EvilTokenizer", None]})):
        f = model_dir / cfg_name
        if f.exists():
            doc = json.loads(f.read_text())
            doc["auto_map"] = auto
            f.write_text(json.dumps(doc, indent=1))


class _PickleBomb:
    """Unpickling this runs `open(marker, 'w')`: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_malicious_checkpoint(path: Path, marker: Path) -> None:
    import torch

    torch.save({"format": "tjepa-checkpoint", "version": 1, "payload": _PickleBomb(marker)}, path)


# ---------------------------------------------------------------- more bad inputs
def write_extra_bad_inputs(videos: Path, good_video: Path) -> dict[str, tuple[Path, str]]:
    """What `write_bad_inputs` lacks, added to its plain-videos tree `videos`.

    Returns {name: (path, outcome)} with outcome "ok" (must be cached), "skipped" (discovery warns
    and lists no row for it) or "loop" (a directory link back to an ancestor: entered at most once).
    """
    from tjepa.pipeline.synth.bad_inputs import numbered_frames
    from tjepa.pipeline.synth.writer import encode_video

    out: dict[str, tuple[Path, str]] = {}
    huge = videos / "huge_1920x1080_66f.mp4"  # enough frames to sample: decoded at a reduced size
    encode_video(huge, numbered_frames(66, 1080, 1920), 30, options={"preset": "ultrafast"})
    out["huge_resolution"] = (huge, "ok")
    odd_name = videos / "clip é (1) ü.mp4"
    shutil.copy2(good_video, odd_name)
    out["unicode_name"] = (odd_name, "ok")
    dangling = videos / "dangling.mp4"
    dangling.symlink_to(videos / "does_not_exist.mp4")
    out["dangling_link"] = (dangling, "skipped")
    loop = videos / "loop"
    loop.symlink_to(videos, target_is_directory=True)
    out["symlink_loop"] = (loop, "loop")
    folder = videos / "folder.mp4"  # a directory with a video suffix
    folder.mkdir()
    out["directory_named_mp4"] = (folder, "skipped")
    return out


# ---------------------------------------------------------------- static safety checks
def product_sources() -> list[Path]:
    return sorted(p for d in PRODUCT_DIRS if (REPO / d).is_dir() for p in (REPO / d).rglob("*.py"))


def unsafe_loading_calls() -> list[str]:
    """Calls in the product code that could run code from a file:
    - any `trust_remote_code=` whose value is not the constant False (no flag exists yet);
    - `torch.load(...)` without `weights_only=True`;
    - `pickle.load(s)`, `np.load(..., allow_pickle=True)`, `dill`/`joblib` loads."""
    import ast

    out = []
    for path in product_sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            kw = {k.arg: k.value for k in node.keywords if k.arg}
            trc = kw.get("trust_remote_code")
            if trc is not None and not (isinstance(trc, ast.Constant) and trc.value is False):
                out.append(f"{where}: trust_remote_code={ast.unparse(trc)}")
            name = ast.unparse(node.func)
            if name == "torch.load":
                wo = kw.get("weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    out.append(f"{where}: torch.load without weights_only=True")
            if name in ("pickle.load", "pickle.loads", "dill.load", "dill.loads", "joblib.load",
                        "cloudpickle.load", "cloudpickle.loads"):
                out.append(f"{where}: {name}")
            if name.endswith("np.load") or name == "numpy.load":
                ap = kw.get("allow_pickle")
                if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                    out.append(f"{where}: np.load(allow_pickle={ast.unparse(ap)})")
    return out


def from_pretrained_calls() -> list[str]:
    """Every `...from_pretrained(` call in the product code (file:line), to show what was checked."""
    import ast

    out = []
    for path in product_sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("from_pretrained"):
                out.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return out
