"""`tjepa evaluate` (placeholder: its owner replaces this file)."""


def evaluate() -> None:
    """Not built yet."""
    raise NotImplementedError("tjepa evaluate is not implemented yet")
