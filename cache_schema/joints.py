"""The 52 hand joints of the `targets/joints_*` arrays, in the order of their `joint` axis.

Part of the store contract: the writer (`pipeline.egodex`) reads labels by these names, and readers
(eval's pictures and keypoint subsets) index the joint axis with them. Right hand first, then left,
the same 26 joints per hand (docs/method.md, "Supervision").
"""

from __future__ import annotations

_FINGERS = ("Little", "Ring", "Middle", "Index")
_FINGER_PARTS = ("Metacarpal", "Knuckle", "IntermediateBase", "IntermediateTip", "Tip")
_THUMB_PARTS = ("Knuckle", "IntermediateBase", "IntermediateTip", "Tip")


def hand_joint_names(side: str) -> tuple[str, ...]:
    """The 26 joints of one hand ("right" or "left") in the documented order."""
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    names = [f"{side}{f}Finger{p}" for f in _FINGERS for p in _FINGER_PARTS]
    names += [f"{side}Thumb{p}" for p in _THUMB_PARTS]
    names += [f"{side}Hand", f"{side}Forearm"]
    return tuple(names)


JOINT_NAMES: tuple[str, ...] = hand_joint_names("right") + hand_joint_names("left")
N_JOINTS = len(JOINT_NAMES)  # 52
