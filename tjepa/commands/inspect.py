"""`tjepa inspect` (placeholder: its owner replaces this file)."""


def inspect() -> None:
    """Not built yet."""
    raise NotImplementedError("tjepa inspect is not implemented yet")
