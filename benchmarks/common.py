"""What every benchmark shares: the run context, timing and medians, machine facts, page-cache
eviction, isolated child processes, and the markdown the report is made of."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MODES = ("full", "quick", "smoke")
COLD_METHODS = ("fadvise", "drop_caches")
_CHILD_MARK = "@@tjepa-bench-result@@"


# ---- machine ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Machine:
    cpu: str
    cores: int  # usable by this process (affinity)
    ram_gib: float
    torch: str
    gpu: str  # "none" or the CUDA device name(s)
    python: str

    def line(self) -> str:
        return (f"{self.cpu}, {self.cores} cores, {self.ram_gib:.1f} GiB RAM, torch {self.torch}, "
                f"GPU: {self.gpu}, Python {self.python}")


def machine_info() -> Machine:
    import psutil
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = "none"
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        gpu = f"{len(names)} x {names[0]}" if len(set(names)) == 1 else ", ".join(names)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return Machine(cpu=cpu, cores=cores, ram_gib=psutil.virtual_memory().total / 2**30,
                   torch=torch.__version__, gpu=gpu, python=platform.python_version())


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


# ---- run context -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Context:
    """How this run was asked for. `mode` picks each benchmark's sizes (smoke: tests only)."""

    mode: str
    workdir: Path
    command: str  # the exact command line of this run
    machine: Machine
    cold: str = "fadvise"  # how the page cache is emptied before a cold pass
    inline_children: bool = False  # smoke tests: run "child" measurements in this process (faster)
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.cold not in COLD_METHODS:
            raise ValueError(f"cold must be one of {COLD_METHODS}, got {self.cold!r}")

    def subdir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def rerun_command(self, name: str) -> str:
        quick = " --quick" if self.mode == "quick" else ""
        return f"python -m benchmarks{quick} --only {name}"


# ---- timing ----------------------------------------------------------------------------------
def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median(xs: Sequence[float]) -> float:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def spread(xs: Sequence[float]) -> str:
    """min-max of repeats, for the reader to judge the noise."""
    xs = [x for x in xs if x is not None]
    return f"{min(xs):.3g}-{max(xs):.3g}" if xs else "-"


# ---- page cache --------------------------------------------------------------------------------
def all_files(paths: Sequence[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(Path(root) / f for root, _, files in os.walk(p) for f in files)
        elif p.is_file():
            out.append(p)
    return out


def evict(paths: Sequence[Path], method: str) -> None:
    """Make the next read of these files come from the disk, not the page cache.

    fadvise: POSIX_FADV_DONTNEED on every file (touches only these files' pages);
    drop_caches: `echo 3 > /proc/sys/vm/drop_caches` (root; empties the whole machine's cache).
    Dirty pages cannot be dropped, hence the sync first.
    """
    os.sync()
    if method == "drop_caches":
        try:
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        except OSError as err:
            raise RuntimeError(f"cannot write /proc/sys/vm/drop_caches ({err}); use --cold fadvise") from err
        return
    if method != "fadvise":
        raise ValueError(f"unknown eviction method {method!r}")
    for f in all_files(paths):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident_fraction(paths: Sequence[Path]) -> float | None:
    """Share of these files' bytes in the page cache (util-linux `fincore`), None without the tool."""
    files = all_files(paths)
    if not files:
        return None
    try:
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES,SIZE",
                              *map(str, files)], capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    res = size = 0
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2:
            res, size = res + int(parts[0]), size + int(parts[1])
    return res / size if size else None


# ---- child processes ---------------------------------------------------------------------------
def run_child(target: str, kwargs: dict, timeout: float = 1800, inline: bool = False,
              env: dict[str, str] | None = None) -> dict:
    """Call `module:function(**kwargs)` in a fresh Python and return its JSON-able dict result.

    A fresh process gives clean peak-memory figures and cold model caches, like a user's run.
    `inline` calls it in this process instead (smoke tests: structure, not figures); `env` adds
    environment variables to the child (not possible inline).
    """
    if inline and env:
        raise ValueError(f"{target}: cannot apply environment {sorted(env)} to an inline call")
    if inline:
        import importlib

        module, func = target.split(":")
        return json.loads(json.dumps(getattr(importlib.import_module(module), func)(**kwargs)))
    code = ("import json, sys; from benchmarks.common import child_main; child_main(sys.argv[1], sys.argv[2])")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **(env or {}))
    proc = subprocess.run([sys.executable, "-c", code, target, json.dumps(kwargs)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=str(REPO))
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_CHILD_MARK):
            return json.loads(line[len(_CHILD_MARK):])
    raise RuntimeError(f"benchmark child {target} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def child_main(target: str, kwargs_json: str) -> None:
    import importlib

    module, func = target.split(":")
    result = getattr(importlib.import_module(module), func)(**json.loads(kwargs_json))
    print(_CHILD_MARK + json.dumps(result), flush=True)


# ---- report ------------------------------------------------------------------------------------
@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""

    def markdown(self) -> str:
        def cell(v: Any) -> str:
            if isinstance(v, float):
                return fmt(v)
            return str(v).replace("|", "\\|")

        lines = [f"**{self.title}**", "", "| " + " | ".join(self.columns) + " |",
                 "| " + " | ".join("---" for _ in self.columns) + " |"]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in self.rows]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines)


@dataclass
class Section:
    name: str  # the --only name
    title: str
    intro: str = ""
    tables: list[Table] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)  # bullets: results, targets met / not met, limits
    repeats: str = ""  # how many repeats the medians are over (free text: may differ per table)
    mode: str = ""
    command: str = ""
    rerun: str = ""
    machine: str = ""
    date: str = ""
    seconds: float = 0.0
    load: tuple[float, float] = (float("nan"), float("nan"))

    def markdown(self) -> str:
        head = [f"<!-- bench:{self.name}:start -->", f"## {self.title}", "",
                f"- Command: `{self.command}` (this section alone: `{self.rerun}`); mode: **{self.mode}**",
                f"- Machine: {self.machine}",
                f"- Date: {self.date}; section took {self.seconds:.0f} s; 1-min load average "
                f"{self.load[0]:.1f} at start, {self.load[1]:.1f} at end (shared machine)",
                f"- Statistic: medians over repeats ({self.repeats})", ""]
        body = [self.intro, ""] if self.intro else []
        for t in self.tables:
            body += [t.markdown(), ""]
        if self.findings:
            body += ["Findings:", ""] + [f"- {f}" for f in self.findings] + [""]
        return "\n".join(head + body + [f"<!-- bench:{self.name}:end -->"])


def fmt(x: float | None, digits: int = 3) -> str:
    """Three significant digits, no scientific notation for everyday magnitudes."""
    if x is None or (isinstance(x, float) and x != x):
        return "-"
    if x == 0:
        return "0"
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 0.001:
        return f"{x:.{max(0, digits - 1 - int(_floor_log10(ax)))}f}"
    return f"{x:.2e}"


def _floor_log10(x: float) -> int:
    import math

    return math.floor(math.log10(x))


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def met(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def finish_section(section: Section, ctx: Context, t0: float, load0: float) -> Section:
    """Fill in the who/where/when every section carries."""
    section.mode = ctx.mode
    section.command = ctx.command
    section.rerun = ctx.rerun_command(section.name)
    section.machine = ctx.machine.line()
    section.date = now_utc()
    section.seconds = time.perf_counter() - t0
    section.load = (load0, load_average())
    return section
