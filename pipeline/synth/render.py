"""Draw one frame of an `EpisodeScene` through its pinhole camera.

Background by ray casting (a checkered table plane and a striped wall, so camera motion is visible);
pads, the cue card and the hands (bones as thick lines, joints as discs, one flat colour per hand)
with PIL, far to near (painter's algorithm). Flat colours without antialiasing keep the pixels under a
projected joint exactly the hand's colour before encoding.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from tjepa.pipeline.synth.scene import (
    CUE_CARD,
    PAD_SIZE,
    PAD_X,
    PAD_Z,
    TABLE_Y,
    WALL_Z,
    EpisodeScene,
    project,
)

HAND_COLOURS = {"right": (255, 215, 0), "left": (0, 220, 235)}  # yellow, cyan
CUE_COLOURS = {"red": (225, 35, 35), "green": (30, 175, 55), "blue": (40, 70, 235)}
_TABLE = ((128, 96, 64), (98, 72, 48))
_WALL = ((190, 190, 182), (150, 150, 144))
_SKY = (120, 130, 150)
BONE_WIDTH = 0.022  # metres, world size of a finger
JOINT_RADIUS = 0.013

# Bones within one hand, as indices into hand_joint_names(side):
# fingers (meta, knuckle, ib, it, tip) at 5f..5f+4, thumb 20..23, wrist 24, forearm 25.
_BONES = tuple(
    [(24, 5 * f) for f in range(4)]
    + [(5 * f + k, 5 * f + k + 1) for f in range(4) for k in range(4)]
    + [(24, 20), (20, 21), (21, 22), (22, 23), (24, 25)]
    + [(1, 6), (6, 11), (11, 16)]  # across the knuckles: a palm outline
)


class Renderer:
    """Renders frames of one episode; caches the per-pixel ray directions."""

    def __init__(self, scene: EpisodeScene, width: int, height: int):
        self.scene, self.width, self.height = scene, width, height
        k = scene.intrinsics.astype(np.float64)
        u, v = np.meshgrid(np.arange(width), np.arange(height))
        rays = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u, float)], -1)
        self._rays = rays.reshape(-1, 3)
        self._focal = float(k[0, 0])

    def frame(self, t: int) -> np.ndarray:
        """uint8 [H, W, 3] RGB image of frame t."""
        scene, cam = self.scene, self.scene.cam[t].astype(np.float64)
        img = Image.fromarray(self._background(cam))
        draw = ImageDraw.Draw(img)
        for k, colour in enumerate(CUE_COLOURS.values()):
            x0, z0 = PAD_X[k] - PAD_SIZE / 2, PAD_Z - PAD_SIZE / 2
            corners = [(x0, z0), (x0 + PAD_SIZE, z0), (x0 + PAD_SIZE, z0 + PAD_SIZE), (x0, z0 + PAD_SIZE)]
            self._polygon(draw, cam, [(x, TABLE_Y + 0.001, z) for x, z in corners], colour)
        if t < scene.cue_frames:
            (x0, y0), (x1, y1), z = CUE_CARD
            card = [(x0, y0, z), (x1, y0, z), (x1, y1, z), (x0, y1, z)]
            self._polygon(draw, cam, card, CUE_COLOURS[scene.cue])
        self._hands(draw, cam, scene.positions[t].astype(np.float64))
        return np.asarray(img)

    def _background(self, cam: np.ndarray) -> np.ndarray:
        rot, centre = cam[:3, :3], cam[:3, 3]
        d = self._rays @ rot.T  # world directions
        with np.errstate(divide="ignore", invalid="ignore"):
            t_table = (TABLE_Y - centre[1]) / d[:, 1]
            t_wall = (WALL_Z - centre[2]) / d[:, 2]
        t_table = np.where(t_table > 0, t_table, np.inf)
        t_wall = np.where(t_wall > 0, t_wall, np.inf)
        out = np.empty((d.shape[0], 3), np.uint8)
        out[:] = _SKY
        on_table = t_table < t_wall
        hit = centre + d * np.where(on_table, t_table, t_wall)[:, None]
        checker = (np.floor(hit[:, 0] / 0.1) + np.floor(hit[:, 2] / 0.1)).astype(np.int64) % 2 == 0
        stripes = np.floor(hit[:, 0] / 0.08).astype(np.int64) % 2 == 0
        finite = np.isfinite(np.minimum(t_table, t_wall))
        for mask, colours, pick in ((on_table, _TABLE, checker), (~on_table, _WALL, stripes)):
            sel = mask & finite
            out[sel & pick] = colours[0]
            out[sel & ~pick] = colours[1]
        return out.reshape(self.height, self.width, 3)

    def _polygon(self, draw: ImageDraw.ImageDraw, cam: np.ndarray, corners, colour) -> None:
        uv, z = project(np.array(corners), cam, self.scene.intrinsics)
        if (z > 0.05).all():
            draw.polygon([tuple(p) for p in uv.tolist()], fill=colour)

    def _hands(self, draw: ImageDraw.ImageDraw, cam: np.ndarray, positions: np.ndarray) -> None:
        uv, z = project(positions, cam, self.scene.intrinsics)
        items = []  # (depth, kind, data, colour)
        for h, side in enumerate(("right", "left")):
            colour, base = HAND_COLOURS[side], 26 * h
            for a, b in _BONES:
                items.append(((z[base + a] + z[base + b]) / 2, 0, (base + a, base + b), colour))
            for j in range(base, base + 26):
                items.append((z[j], 1, j, colour))
        # Far first; at equal depth draw bones before joint discs.
        for depth, kind, data, colour in sorted(items, key=lambda it: (-it[0], it[1])):
            if depth <= 0.05:
                continue
            if kind == 0:
                a, b = data
                width = max(1, int(round(self._focal * BONE_WIDTH / depth)))
                draw.line([tuple(uv[a]), tuple(uv[b])], fill=colour, width=width)
            else:
                r = max(1.0, self._focal * JOINT_RADIUS / depth)
                x, y = uv[data]
                draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
