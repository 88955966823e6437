"""Check the import contracts of pyproject.toml ([tool.importlinter]) with import-linter.

Why a wrapper: the four stage folders install as `tjepa.<stage>` through setuptools' package-dir
mapping, and grimp (import-linter's graph builder) only walks the directory of the root package, so
it would not see `tjepa.pipeline` & co. We copy the installed package tree, as Python resolves it,
into a temporary directory and run `lint-imports` there. Exit status is lint-imports'.

    python scripts/lint_imports.py        # make lint; tests/test_import_contracts.py runs it too
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("pipeline", "cache_schema", "train", "eval")


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"{name} is not importable: run `make venv` (editable install) first")
    return Path(next(iter(spec.submodule_search_locations)))


def mirror(dest: Path) -> None:
    """tjepa/ as installed: the CLI package with each stage folder copied in as a subpackage."""
    shutil.copytree(package_dir("tjepa"), dest / "tjepa", ignore=shutil.ignore_patterns("__pycache__"))
    for stage in STAGES:
        shutil.copytree(package_dir(f"tjepa.{stage}"), dest / "tjepa" / stage,
                        ignore=shutil.ignore_patterns("__pycache__"))


def lint(tree: Path, **run: object) -> subprocess.CompletedProcess:
    """lint-imports over a mirrored tree, with the contracts of this repository's pyproject.toml."""
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")  # lint-imports reads it from the cwd
    exe = Path(sys.executable).with_name("lint-imports")
    cmd = [str(exe) if exe.exists() else "lint-imports", "--no-cache"]
    return subprocess.run(cmd, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, **run)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="tjepa-lint-imports-") as tmp:
        mirror(Path(tmp))
        return lint(Path(tmp)).returncode


if __name__ == "__main__":
    sys.exit(main())
