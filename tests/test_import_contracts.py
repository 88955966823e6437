"""The import boundaries of pyproject.toml hold (import-linter), and the check would catch a breach."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "lint_imports.py"


@pytest.fixture(scope="module")
def lint_imports():
    spec = importlib.util.spec_from_file_location("lint_imports", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_contracts_kept(lint_imports, tmp_path):
    lint_imports.mirror(tmp_path)
    res = lint_imports.lint(tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout and "KEPT" in res.stdout


BREACHES = {  # module -> (its import, the contract that must report it)
    "train/sneaky.py": ("from tjepa.eval import report", "train never imports eval"),
    "eval/sneaky.py": ("import tjepa.pipeline.sampling", "eval imports neither pipeline nor the CLI"),
    "cache_schema/sneaky.py": ("from tjepa.train import data", "cache_schema (the store contract) imports no stage"),
    "pipeline/sneaky.py": ("def f():\n    from tjepa.commands import cache", "no stage imports the CLI"),
}


def test_every_breach_is_reported(lint_imports, tmp_path):
    lint_imports.mirror(tmp_path)
    for module, (imports, _) in BREACHES.items():
        (tmp_path / "tjepa" / module).write_text(imports + "\n")
    res = lint_imports.lint(tmp_path, capture_output=True, text=True)
    assert res.returncode != 0
    for _, contract in BREACHES.values():
        assert f"{contract} BROKEN" in res.stdout, (contract, res.stdout)
