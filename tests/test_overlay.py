"""Overlay drawing of `tjepa predict`: joints land where the intrinsics project them, the MP4 is a real
H.264 file PyAV decodes back, the default intrinsics have the documented field of view."""

from __future__ import annotations

import av
import numpy as np
import pytest

from tjepa.cache_schema.joints import JOINT_NAMES
from tjepa.eval import overlay

K = np.array([[40.0, 0.0, 32.0], [0.0, 40.0, 24.0], [0.0, 0.0, 1.0]])  # for a 64 x 48 source
WRIST, TIP = JOINT_NAMES.index("rightHand"), JOINT_NAMES.index("rightIndexFingerTip")


def _hand() -> np.ndarray:
    """Every joint behind the camera (not drawn) except the right wrist and index tip."""
    pts = np.tile([0.0, 0.0, -1.0], (len(JOINT_NAMES), 1))
    pts[WRIST] = [0.0, 0.0, 1.0]  # on the optical axis: the principal point
    pts[TIP] = [0.2, -0.1, 1.0]  # u = 40 * 0.2 + 32 = 40, v = 40 * -0.1 + 24 = 20 (source pixels)
    return pts


def test_projection_by_hand_and_scaled_to_the_frame():
    uv = overlay.project_camera(_hand(), K, (64, 48), (128, 96))  # drawn at twice the source size
    np.testing.assert_allclose(uv[WRIST], [64.0, 48.0])
    np.testing.assert_allclose(uv[TIP], [80.0, 40.0])
    assert np.isnan(uv[0]).all()  # behind the camera


def test_drawn_joints_land_where_the_intrinsics_project_them():
    img = overlay.draw_skeleton(np.zeros((96, 128, 3), np.uint8),
                                overlay.project_camera(_hand(), K, (64, 48), (128, 96)), overlay.FORECAST_RGB)
    for u, v in ((64, 48), (80, 40)):
        assert tuple(img[v, u]) == overlay.FORECAST_RGB
    # the bone wrist -> index metacarpal is not drawn (the metacarpal is behind the camera), so
    # nothing but the two discs is coloured
    ys, xs = np.nonzero(img.any(axis=-1))
    near = [min(abs(x - 64) + abs(y - 48), abs(x - 80) + abs(y - 40)) for x, y in zip(xs, ys, strict=True)]
    assert max(near) <= 4


def test_bones_cover_both_hands():
    assert len(overlay.BONES) == 2 * (4 * 5 + 4 + 1)
    touched = {j for bone in overlay.BONES for j in bone}
    assert touched == set(range(len(JOINT_NAMES)))


def test_default_intrinsics_field_of_view():
    k = overlay.default_intrinsics(200, 100)
    assert k[0, 2] == 100 and k[1, 2] == 50 and k[0, 0] == k[1, 1]
    assert np.degrees(2 * np.arctan(100 / k[0, 0])) == pytest.approx(overlay.DEFAULT_HFOV_DEG)


def test_overlay_mp4_decodes_with_the_forecast_where_projected(tmp_path):
    n_obs, n = 3, 6
    frames = np.full((n, 48, 64, 3), 40, np.uint8)
    fc = np.full((n, len(JOINT_NAMES), 3), np.nan)
    fc[n_obs:] = _hand()
    truth = np.full_like(fc, np.nan)
    truth[:, WRIST] = [0.1, 0.1, 1.0]  # (36, 28) in every frame
    drawn = overlay.overlay_frames(frames, n_obs, fc, truth, K, (64, 48), np.linspace(-0.2, 0.3, n), caption=False)
    assert tuple(drawn[0, 24, 32]) == (40, 40, 40)  # no forecast over observed frames
    assert tuple(drawn[n_obs, 24, 32]) == overlay.FORECAST_RGB and tuple(drawn[0, 28, 36]) == overlay.TRUTH_RGB
    path = overlay.write_mp4(drawn, tmp_path / "o.mp4", fps=10.0)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264"
        back = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(s)])
    assert back.shape == drawn.shape
    # lossy, but the forecast's disc is still orange at the principal point
    np.testing.assert_allclose(back[n_obs:, 23:26, 31:34].mean(axis=(0, 1, 2)), overlay.FORECAST_RGB, atol=45)
    png = overlay.write_summary_png(drawn[-1], overlay.project_camera(fc[n_obs:], K, (64, 48), (64, 48)), None,
                                    [WRIST, TIP], tmp_path / "s.png", title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
