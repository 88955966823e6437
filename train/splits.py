"""Group-disjoint train / val / test splits over the done rows of a store.

How groups are assigned (deterministic from the seed):
1. the distinct groups of the done rows are sorted and shuffled with `numpy.random.default_rng(seed)`;
2. val and test each take `max(1, round(fraction * G))` groups (0 when their fraction is 0), in
   that order from the front of the shuffled list; train takes the rest.
So with G >= 3 groups and positive fractions every split gets at least one group. When a split with a
positive fraction (or train) would get none, `EmptySplitError` names the split and the group count.

Checkpoint selection uses val only; test rows are never read by the trainer (only by evaluation).
`RUN/splits.json` records the seed, fractions, groups and video ids per split, so evaluation and a
resumed run use exactly the same split even if the store gains rows later.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tjepa.atomic import atomic_write_json
from tjepa.errors import InputError, TjepaError

SPLITS = ("train", "val", "test")
SPLITS_FILE = "splits.json"


class EmptySplitError(TjepaError):
    """A split would hold no group."""


@dataclass(frozen=True)
class Splits:
    """Row indices (into the store) and the groups of each split."""

    seed: int
    fractions: tuple[float, float, float]
    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]
    groups: dict[str, tuple[str, ...]]

    def rows(self, name: str) -> tuple[int, ...]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise TjepaError(f"split fractions must be three non-negative numbers summing to 1 "
                         f"(train, val, test), got {tuple(fractions)}")
    if fractions[0] <= 0 or fractions[1] <= 0:
        raise TjepaError(f"train and val fractions must be positive, got {tuple(fractions)}")
    return (float(fractions[0]), float(fractions[1]), float(fractions[2]))


def assign_groups(groups: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1),
                  seed: int = 42) -> dict[str, tuple[str, ...]]:
    """Distinct group names -> {split: sorted groups}; see the module docstring for the rule."""
    fr = _check_fractions(fractions)
    uniq = sorted(set(groups))
    n = len(uniq)
    order = [uniq[i] for i in np.random.default_rng(seed).permutation(n)]
    n_val = max(1, round(fr[1] * n))
    n_test = max(1, round(fr[2] * n)) if fr[2] > 0 else 0
    n_train = n - n_val - n_test
    counts = {"train": n_train, "val": n_val, "test": n_test}
    for name, frac in zip(SPLITS, fr, strict=True):
        if frac > 0 and counts[name] <= 0:
            raise EmptySplitError(
                f"the {name} split would be empty: {n} group(s) cannot fill train/val/test with "
                f"fractions {fr} (each split with a positive fraction needs at least one group; "
                f"use a store with more groups or set that fraction to 0 where allowed)")
    return {"val": tuple(sorted(order[:n_val])), "test": tuple(sorted(order[n_val:n_val + n_test])),
            "train": tuple(sorted(order[n_val + n_test:]))}


def make_splits(row_groups: Sequence[str], done: Sequence[bool] | np.ndarray,
                fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 42) -> Splits:
    """Split the done rows by their group (`row_groups[i]` is the group of store row i)."""
    row_groups = [str(g) for g in row_groups]
    done = np.asarray(done, bool)
    if done.shape != (len(row_groups),):
        raise ValueError(f"done mask {done.shape} does not match {len(row_groups)} rows")
    rows = np.flatnonzero(done)
    if rows.size == 0:
        raise EmptySplitError("the store has no done rows to split (run `tjepa cache` first)")
    by_split = assign_groups([row_groups[i] for i in rows], fractions, seed)
    where = {g: name for name, gs in by_split.items() for g in gs}
    out: dict[str, list[int]] = {name: [] for name in SPLITS}
    for i in rows:
        out[where[row_groups[i]]].append(int(i))
    return Splits(seed=seed, fractions=_check_fractions(fractions), train=tuple(out["train"]),
                  val=tuple(out["val"]), test=tuple(out["test"]), groups=by_split)


def splits_to_json(splits: Splits, videos: Sequence[str]) -> dict:
    """The JSON document of RUN/splits.json (`videos[i]` is the id of store row i)."""
    return {"seed": splits.seed, "fractions": dict(zip(SPLITS, splits.fractions, strict=True)),
            "n_groups": sum(len(g) for g in splits.groups.values()),
            "groups": {k: list(splits.groups[k]) for k in SPLITS},
            "videos": {k: [str(videos[i]) for i in splits.rows(k)] for k in SPLITS}}


def write_splits(run_dir: str | Path, splits: Splits, videos: Sequence[str]) -> Path:
    """Write RUN/splits.json atomically."""
    return atomic_write_json(Path(run_dir) / SPLITS_FILE, splits_to_json(splits, videos))


def read_splits(run_dir: str | Path, videos: Sequence[str], done: Sequence[bool] | np.ndarray) -> Splits:
    """Load RUN/splits.json and map its video ids back to store rows (all must exist and be done)."""
    path = Path(run_dir) / SPLITS_FILE
    try:
        doc = json.loads(path.read_text())
        seed, fractions = int(doc["seed"]), tuple(float(doc["fractions"][k]) for k in SPLITS)
        groups = {k: tuple(doc["groups"][k]) for k in SPLITS}
        ids = {k: list(doc["videos"][k]) for k in SPLITS}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(path, f"not a readable splits file ({err})") from err
    row_of = {str(v): i for i, v in enumerate(videos)}
    done = np.asarray(done, bool)
    rows: dict[str, tuple[int, ...]] = {}
    for k in SPLITS:
        missing = [v for v in ids[k] if v not in row_of or not done[row_of[v]]]
        if missing:
            raise InputError(path, f"{len(missing)} {k} video(s) are not done rows of this store "
                                   f"(first: {missing[0]!r}); was the run made on another store?")
        rows[k] = tuple(row_of[v] for v in ids[k])
    return Splits(seed=seed, fractions=fractions, train=rows["train"], val=rows["val"],
                  test=rows["test"], groups=groups)
