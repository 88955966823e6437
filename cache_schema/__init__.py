"""tjepa.cache_schema: the store contract (schema v1) shared by stage one (writer) and stage two (reader).

Imports nothing from tjepa.pipeline / train / eval. See cache_schema/README.md for the array table.
"""

from __future__ import annotations

from tjepa.cache_schema.fingerprint import canonical_json, config_diff, fingerprint
from tjepa.cache_schema.layout import ARRAYS, ArraySpec, StoreLayout, array_specs
from tjepa.cache_schema.ledger import Failure, Ledger
from tjepa.cache_schema.rowdata import RowData, RowDataError
from tjepa.cache_schema.store import DONE, FAILED, FORMAT, PENDING, SCHEMA_VERSION, FeatureStore

__all__ = [
    "ARRAYS", "ArraySpec", "DONE", "FAILED", "FORMAT", "PENDING", "SCHEMA_VERSION", "Failure", "FeatureStore",
    "Ledger", "RowData", "RowDataError", "StoreLayout", "array_specs", "canonical_json", "config_diff",
    "fingerprint",
]
