"""`tjepa cache` (placeholder: its owner replaces this file)."""


def cache() -> None:
    """Not built yet."""
    raise NotImplementedError("tjepa cache is not implemented yet")
