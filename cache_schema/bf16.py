"""bfloat16 kept as its bit pattern in uint16 (numpy and zarr have no bfloat16 dtype).

bfloat16 is the top half of a float32: the same 8-bit exponent (range up to ~3.39e38), 8 bits of
mantissa. Encoding rounds to nearest, ties to even; decoding is exact (shift the bits back up).
States computed in bfloat16 (real checkpoints on a GPU) therefore round-trip losslessly.
"""

from __future__ import annotations

import numpy as np

BF16_MAX = float(np.frombuffer(np.uint32(0x7F7F0000).tobytes(), np.float32)[0])  # 3.3895e38
_EXPONENT = np.uint16(0x7F80)  # all exponent bits set: inf or NaN


def to_bf16_bits(x) -> np.ndarray:
    """float array -> uint16 bfloat16 bit patterns (round to nearest even). For finite input: callers reject
    NaN and inf first (a NaN with its low bits all set would wrap); values past BF16_MAX round to inf."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    # Adding 0x7FFF plus the lowest kept bit, then truncating, is round-half-to-even on the dropped bits.
    return ((u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)).astype(np.uint16)


def from_bf16_bits(bits) -> np.ndarray:
    """uint16 bfloat16 bit patterns -> float32 (exact)."""
    b = np.asarray(bits)
    if b.dtype != np.uint16:
        raise TypeError(f"bfloat16 bits must be uint16, got {b.dtype}")
    return (b.astype(np.uint32) << np.uint32(16)).view(np.float32)


def count_non_finite_bits(bits: np.ndarray) -> int:
    """How many bit patterns are inf or NaN (exponent all ones)."""
    return int(((np.asarray(bits, np.uint16) & _EXPONENT) == _EXPONENT).sum())
