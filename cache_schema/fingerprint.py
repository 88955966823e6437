"""One canonical serialisation of an extraction config, its sha256, and a readable diff of two configs."""

from __future__ import annotations

import hashlib
import json
from functools import partial
from typing import Any

from tjepa.config_io import config_diff, plain

__all__ = ["canonical_json", "canonicalize", "config_diff", "fingerprint"]

# Plain JSON types only (tuples become lists, Paths strings, dataclasses dicts); anything else raises,
# and so do non-finite floats: NaN != NaN would make a config never match itself.
canonicalize = partial(plain, finite=True)


def canonical_json(config: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 text: equal configs give byte-identical strings."""
    return json.dumps(canonicalize(config), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def fingerprint(config: Any) -> str:
    """sha256 hex digest of the canonical JSON."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()
