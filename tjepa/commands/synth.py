"""`tjepa synth` (placeholder: its owner replaces this file)."""


def synth() -> None:
    """Not built yet."""
    raise NotImplementedError("tjepa synth is not implemented yet")
