"""`tjepa train` (placeholder: its owner replaces this file)."""


def train() -> None:
    """Not built yet."""
    raise NotImplementedError("tjepa train is not implemented yet")
