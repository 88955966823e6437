"""PyAV probe/decode: exact frame selection, resize, odd sizes, VFR, WebM counts, errors, no leaks."""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np
import psutil
import pytest

from tjepa.errors import InputError
from tjepa.pipeline.synth.bad_inputs import numbered_frames, read_frame_number
from tjepa.pipeline.synth.writer import encode_video
from tjepa.pipeline.video import decode_frames, probe, validate_for_sampling

N = 75
LOSSLESS = {"preset": "ultrafast", "qp": "0"}


def frame_numbers(frames: np.ndarray) -> list[int]:
    return [read_frame_number(f) for f in frames]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    paths = {
        "mp4": d / "numbered.mp4",
        "odd": d / "odd.mp4",
        "webm": d / "numbered.webm",
        "mkv": d / "numbered.mkv",
        "vfr": d / "vfr.mp4",
        "long_gop": d / "long_gop.mp4",
        "avi": d / "numbered.avi",
        "mov": d / "numbered.mov",
    }
    encode_video(paths["mp4"], numbered_frames(N, 48, 64), 30, options=LOSSLESS)
    encode_video(paths["odd"], numbered_frames(N, 143, 175), 25, codec="mpeg4", options={"qscale": "1"})
    encode_video(
        paths["webm"],
        numbered_frames(N, 48, 64),
        30,
        codec="libvpx-vp9",
        options={"lossless": "1", "deadline": "realtime", "cpu-used": "8"},
        container_format="webm",
    )
    encode_video(paths["mkv"], numbered_frames(N, 48, 64), 24, options=LOSSLESS, container_format="matroska")
    ticks = np.random.default_rng(0).integers(1000, 5000, N)
    pts = [int(v) for v in np.concatenate([[0], np.cumsum(ticks)[:-1]])]
    encode_video(
        paths["vfr"], numbered_frames(N, 48, 64), 30, options=LOSSLESS, pts=pts, time_base=Fraction(1, 90000)
    )
    encode_video(paths["avi"], numbered_frames(N, 48, 64), 30, codec="mpeg4", options={"qscale": "1"})
    encode_video(paths["mov"], numbered_frames(N, 48, 64), 30, options=LOSSLESS)
    # B-frames + long GOP: decode order differs from presentation order.
    encode_video(
        paths["long_gop"],
        numbered_frames(N, 48, 64),
        30,
        options={"preset": "medium", "qp": "0", "bf": "3", "g": "250"},
    )
    return paths


def test_probe_mp4(clips):
    info = probe(clips["mp4"])
    assert (info.n_frames, info.width, info.height, info.codec) == (N, 64, 48, "h264")
    assert info.fps == pytest.approx(30.0) and info.rotation == 0


@pytest.mark.parametrize("kind", ["webm", "mkv"])
def test_frame_count_without_header(clips, kind):
    with av.open(str(clips[kind])) as c:
        assert c.streams.video[0].frames == 0  # the premise: no count in the header
    info = probe(clips[kind])
    assert info.n_frames == N
    assert info.fps == pytest.approx(30.0 if kind == "webm" else 24.0)
    assert probe(clips["mp4"], count_packets=True).n_frames == N


@pytest.mark.parametrize("kind", ["mp4", "webm", "mkv", "vfr", "long_gop", "avi", "mov"])
def test_decode_exact_indices(clips, kind):
    rng = np.random.default_rng(1)
    idx = rng.choice(N, size=20, replace=False)
    idx = np.concatenate([idx, idx[:3], [0, N - 1]])  # unsorted, repeated, both ends
    frames = decode_frames(clips[kind], idx)
    assert frames.dtype == np.uint8 and frames.shape == (len(idx), 48, 64, 3)
    assert frame_numbers(frames) == idx.tolist()


def test_vfr_counts_frames_not_time(clips):
    info = probe(clips["vfr"])
    assert info.n_frames == N and 5 < info.fps < 100
    frames = decode_frames(clips["vfr"], np.arange(N))
    assert frame_numbers(frames) == list(range(N))


def test_resize_during_decode(clips):
    frames = decode_frames(clips["mp4"], [3, 40], size=(40, 24))
    assert frames.shape == (2, 24, 40, 3)
    assert frame_numbers(frames) == [3, 40]
    # The colour bar (top-left, red) survives the resize in place.
    assert frames[0, 0, 0, 0] > 150 and frames[0, 0, 0, 1] < 100


def test_odd_size(clips):
    info = probe(clips["odd"])
    assert (info.width, info.height, info.n_frames) == (175, 143, N)
    assert info.fps == pytest.approx(25.0)
    frames = decode_frames(clips["odd"], [0, 7, 74])
    assert frames.shape == (3, 143, 175, 3)
    assert frame_numbers(frames) == [0, 7, 74]
    small = decode_frames(clips["odd"], [1], size=(87, 71))
    assert small.shape == (1, 71, 87, 3)


def test_truncated_stream_names_index(clips, tmp_path):
    path = tmp_path / "cut.mp4"
    encode_video(
        path, numbered_frames(N, 48, 64), 30, options=LOSSLESS, container_options={"movflags": "faststart"}
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert probe(path).n_frames == N  # the header still claims every frame
    early = decode_frames(path, [0, 5])  # stops before the damage: fine
    assert frame_numbers(early) == [0, 5]
    with pytest.raises(InputError, match=r"truncated.* needed index 74") as info:
        decode_frames(path, [0, 74])
    assert str(path) in str(info.value)
    assert "decodable frames" in str(info.value) or "decoding failed after" in str(info.value)


def test_index_past_end(clips):
    with pytest.raises(InputError, match=f"truncated: has {N} decodable frames, needed index {N}"):
        decode_frames(clips["mp4"], [1, N])


def test_bad_arguments(clips):
    for bad in ([], [-1], [[1, 2]], [0.5]):
        with pytest.raises(ValueError):
            decode_frames(clips["mp4"], bad)
    with pytest.raises(ValueError):
        decode_frames(clips["mp4"], [0], size=(0, 10))


@pytest.mark.parametrize(
    ("content", "phrase"),
    [(b"", "empty file (0 bytes)"), (b"plain text, not a video\n" * 10, "not a readable video")],
)
def test_probe_and_decode_errors(tmp_path, content, phrase):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    for call in (lambda: probe(path), lambda: decode_frames(path, [0])):
        with pytest.raises(InputError) as info:
            call()
        assert str(path) in str(info.value) and phrase.split()[0] in str(info.value)


def test_missing_and_directory(tmp_path):
    with pytest.raises(InputError, match="not found"):
        probe(tmp_path / "nope.mp4")
    with pytest.raises(InputError, match="not a regular file"):
        decode_frames(tmp_path, [0])


def test_validate_for_sampling(clips, tmp_path):
    info = probe(clips["mp4"])
    validate_for_sampling(info, 32, 32, clips["mp4"])  # 75 frames are enough
    with pytest.raises(InputError, match="video has 75 frames, needs at least 80") as err:
        validate_for_sampling(info, 40, 40, clips["mp4"])
    assert str(clips["mp4"]) in str(err.value)


def test_no_file_descriptor_leak(clips):
    proc = psutil.Process(os.getpid())
    decode_frames(clips["mp4"], [0])
    before = proc.num_fds()
    for _ in range(30):
        probe(clips["webm"])
        decode_frames(clips["mp4"], [2, 9])
        with pytest.raises(InputError):
            decode_frames(clips["mp4"], [N + 5])
    assert proc.num_fds() <= before


def test_nvdec_without_torchcodec_or_gpu_is_a_clear_error(tmp_path):
    """This machine has neither torchcodec nor CUDA: the flag says what is missing, before any model loads."""
    from typer.testing import CliRunner

    from tjepa.cli import app
    from tjepa.errors import TjepaError
    from tjepa.pipeline.episode_io import SamplingConfig
    from tjepa.pipeline.video import require_nvdec

    with pytest.raises(TjepaError, match=r"--decoder nvdec needs (torchcodec|a CUDA GPU).*--decoder pyav"):
        require_nvdec()
    res = CliRunner().invoke(app, ["cache", "--videos", str(tmp_path), "--out", str(tmp_path / "s.zarr"),
                                   "--decoder", "nvdec"])
    assert res.exit_code != 0 and not (tmp_path / "s.zarr").exists()
    assert isinstance(res.exception, TjepaError) and "--decoder nvdec needs" in str(res.exception)
    with pytest.raises(Exception, match="decoder='bogus'"):
        SamplingConfig(decoder="bogus")
    assert SamplingConfig(decoder="nvdec").to_dict()["decoder"] == "nvdec"  # other pixels: another fingerprint
