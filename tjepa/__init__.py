"""tjepa: ThinkJEPA made practical (feature cache + fast predictor trainer).

Kept import-light on purpose: `tjepa --help` must not pay for torch or transformers.
"""

__version__ = "0.1.0"
