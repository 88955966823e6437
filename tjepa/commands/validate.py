"""`tjepa validate` (placeholder: its owner replaces this file)."""


def validate() -> None:
    """Not built yet."""
    raise NotImplementedError("tjepa validate is not implemented yet")
