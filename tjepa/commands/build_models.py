"""`tjepa build-models` (placeholder: its owner replaces this file)."""


def build_models() -> None:
    """Not built yet."""
    raise NotImplementedError("tjepa build-models is not implemented yet")
