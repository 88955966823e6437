"""`tjepa compare` (placeholder: its owner replaces this file)."""


def compare() -> None:
    """Not built yet."""
    raise NotImplementedError("tjepa compare is not implemented yet")
