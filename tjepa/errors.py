"""Errors shared by every stage. Each names the offending file and says what is wrong."""

from __future__ import annotations

from pathlib import Path


class TjepaError(Exception):
    """Base class: a problem the user can act on (the CLI prints it without a traceback)."""


class InputError(TjepaError):
    """A bad input file: names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # rebuilt from (path, problem), so it survives a trip between processes
        return (type(self), (self.path, self.problem))


class ConfigMismatchError(TjepaError):
    """An existing artefact (store, run) was made with a different configuration."""


class StoreFormatError(TjepaError):
    """A store that is not ours, or of a schema version this code cannot read."""


class StoreError(TjepaError):
    """The store itself cannot be written (disk full, permissions, changed under the job): fatal."""


class ConfigError(TjepaError, ValueError):
    """A configuration value or key the dataclass does not accept (names the key and what it takes)."""
