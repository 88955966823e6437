"""`tjepa predict`: forecasts on videos that are not in a store, drawn on the video.

The orchestration lives here because it needs both sides of an import boundary: features are
extracted by stage one's job API (`pipeline.job`, into a temporary store built with exactly the
run's store extraction config, so its fingerprint must equal the run's), the trained model runs
through `train`, and the pictures are drawn by `eval.overlay`.

Per video, DIR/<name>/ gets `forecast.npz` and `forecast.json` (joints in the camera frame of the last
observed frame; in the world frame too when the video has camera poses), `overlay.mp4` (the observed
frames, then the forecast window with the forecast skeletons in orange and, with labels, the true ones
in magenta) and `summary.png`. Exit 3 when some video failed (each with its reason), as `tjepa cache`.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

DISPLAY_WIDTH = 320  # frames of the MP4 / PNG are decoded at this width


class Checkpoint(str, Enum):
    best = "best"
    latest = "latest"


@dataclass(frozen=True)
class Source:
    name: str  # output folder name (unique)
    video: Path
    labels: Path | None


def predict(
    run: Annotated[Path, typer.Option("--run", help="Run directory written by `tjepa train`.")],
    videos: Annotated[list[Path], typer.Option("--videos", help="Video files or directories of them (repeatable); "
                                               "a sibling <name>.hdf5 (EgoDex labels) adds the truth.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory (one folder per video).")],
    cache: Annotated[Path | None, typer.Option(
        "--cache", help="The store the run was trained on (default: the path its config.json records); "
                        "its extraction config is reused exactly.")] = None,
    models_dir: Annotated[Path | None, typer.Option(
        "--models-dir", help="Where the store's encoders live (as for `tjepa cache`).")] = None,
    checkpoint: Annotated[Checkpoint, typer.Option(help="best (selected on val) or latest.")] = Checkpoint.best,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Videos per encoder / model batch.")] = 4,
) -> None:
    """Forecast hand trajectories on new videos; writes npz + JSON forecasts, an MP4 and a PNG per video."""
    raise typer.Exit(run_predict(run, videos, out, cache, models_dir, checkpoint.value, device, batch_size))


# --------------------------------------------------------------------------- configuration


def _store_config(run: Path, cache: Path | None) -> tuple[dict, Path, dict]:
    """(run document, store path, store root attributes); the store must be the run's."""
    from tjepa.cache_schema.store import read_root_attrs
    from tjepa.errors import ConfigMismatchError, InputError
    from tjepa.eval.run_loading import read_run_document

    doc = read_run_document(run)
    store = Path(cache) if cache is not None else Path(doc["store"]["path"])
    if not store.exists():
        raise InputError(store, "the run's feature store is not here; pass --cache STORE (the store the run was "
                                "trained on): predict reuses its extraction config")
    attrs = read_root_attrs(store)
    if attrs["fingerprint"] != doc["store"]["fingerprint"]:
        raise ConfigMismatchError(f"{store}: fingerprint {attrs['fingerprint'][:12]}… is not that of the store "
                                  f"{run} was trained on ({doc['store']['fingerprint'][:12]}…); pass its --cache")
    return doc, store, attrs


def _encoders(stored: dict, models_dir: Path | None, store: Path):
    """The store's encoder config resolved from the models available here; refused unless identical."""
    from tjepa.cache_schema.fingerprint import config_diff
    from tjepa.errors import ConfigMismatchError
    from tjepa.pipeline.encoders.presets import resolve_encoders

    hub = {k: stored[f"{k}_model"] for k in ("vjepa", "qwen") if stored.get(f"{k}_model") not in (None, "local")}
    enc = resolve_encoders(stored["preset"], models_dir=models_dir, layers=tuple(stored["layers"]),
                           vjepa=hub.get("vjepa"), qwen=hub.get("qwen"),
                           vjepa_revision=stored.get("vjepa_revision") if "vjepa" in hub else None,
                           qwen_revision=stored.get("qwen_revision") if "qwen" in hub else None,
                           keep_tokens=bool(stored["keep_tokens"]), max_new_tokens=int(stored["max_new_tokens"]),
                           prompt=stored["prompt"], vlm_frame_size=int(stored["vlm_frame_size"]),
                           dtype=stored["dtype"])
    if enc.to_dict() != stored:
        lines = config_diff(stored, enc.to_dict())
        raise ConfigMismatchError(
            f"the encoders available here differ from those fingerprinted in {store} (stored -> available):\n  "
            + "\n  ".join(lines) + "\nPass --models-dir with the models the store was built with (for a weight "
            "difference), or rebuild the store and retrain with this version (for a setting difference).")
    return enc


def _sampling(stored: dict):
    from tjepa.config_io import from_saved
    from tjepa.pipeline.episode_io import SamplingConfig

    return from_saved(SamplingConfig, stored)  # a key this version does not know: ConfigMismatchError


# --------------------------------------------------------------------------- inputs and extraction


def _sources(paths: list[Path]) -> list[Source]:
    from tjepa.errors import InputError
    from tjepa.pipeline.sources import discover
    from tjepa.pipeline.video import VIDEO_SUFFIXES

    found: list[tuple[str, Path, Path | None]] = []
    for p in paths:
        if p.is_dir():
            found += [(f"{p.name}/{ep.id}", ep.video, ep.video.with_suffix(".hdf5"))
                      for ep in discover(p, "videos")]
        elif p.is_file():
            if p.suffix.lower() not in VIDEO_SUFFIXES:
                raise InputError(p, f"not a video file (expected one of {'/'.join(VIDEO_SUFFIXES)})")
            found.append((p.name, p, p.with_suffix(".hdf5")))
        else:
            raise InputError(p, "no such file or directory")
    out, seen = [], set()
    for rel, video, labels in found:
        labels = labels if labels.is_file() else None
        name = re.sub(r"[^A-Za-z0-9.-]+", "_", str(Path(rel).with_suffix(""))).strip("_") or "video"
        base, k = name, 1
        while name in seen:
            k += 1
            name = f"{base}-{k}"
        seen.add(name)
        out.append(Source(name, video.resolve(), labels.resolve() if labels else None))
    return out


def _extract(sources: list[Source], tmp: Path, encoders, sampling, batch_size: int, device: str,
             stored: dict, console) -> tuple[dict[str, tuple[Path, int]], dict[str, str]]:
    """Cache the sources into temporary stores (one with labels, one without): returns
    {name: (store, row)} of done rows and {name: reason} of failures."""
    from tjepa.cache_schema.fingerprint import config_diff, fingerprint
    from tjepa.cache_schema.ledger import Ledger
    from tjepa.cache_schema.store import FeatureStore
    from tjepa.commands.cache import run_with_progress
    from tjepa.errors import ConfigMismatchError
    from tjepa.pipeline.job import CacheJob, extraction_config

    done, failed = {}, {}
    for kind, group in (("egodex", [s for s in sources if s.labels]), ("videos", [s for s in sources if not s.labels])):
        if not group:
            continue
        root = tmp / kind
        ids = {}
        for k, s in enumerate(group):
            folder = root / f"{k:04d}"
            folder.mkdir(parents=True)
            (folder / s.video.name).symlink_to(s.video)
            if s.labels:
                (folder / s.video.with_suffix(".hdf5").name).symlink_to(s.labels)
            ids[f"{k:04d}/{s.video.name}"] = s.name
        job = CacheJob(videos=root, out=tmp / f"{kind}.zarr", encoders=encoders, sampling=sampling, layout=kind,
                       batch_size=batch_size, device=device)
        cfg = extraction_config(job)
        if fingerprint(cfg) != stored["fingerprint"]:  # the store's own test of "the same features"
            raise ConfigMismatchError("the reproduced extraction config differs from the run's store "
                                      "(stored -> reproduced):\n  " + "\n  ".join(config_diff(stored["config"], cfg)))
        run_with_progress(job, console)
        store = FeatureStore.open(job.out)
        rows = store.row_of()
        status = store.status()
        for video, reason in Ledger.of_store(job.out).latest().items():
            if status[rows[video]] != 1:
                failed[ids[video]] = reason.reason
        for video, row in rows.items():
            if status[row] == 1:
                done[ids[video]] = (job.out, row)
            elif ids[video] not in failed:
                failed[ids[video]] = "not processed (the extraction job stopped before it)"
    return done, failed


# --------------------------------------------------------------------------- forecasting


def _default_anchor(store: Path, run: Path) -> Any:
    """Mean last observed joints (camera frame) over the run's training videos: where an anchored
    model's offsets start on a video without labels, which has no observed hand to start from."""
    import numpy as np

    from tjepa.cache_schema.reader import StoreReader
    from tjepa.train.data import read_index
    from tjepa.train.splits import read_splits

    index = read_index(store)
    rows = np.asarray(read_splits(run, index.videos, index.done).rows("train"))
    reader = StoreReader(store)
    last = reader.read("joints_past", rows)[:, -1].astype(np.float64)  # [N, J, 3] world
    ok = reader.read("valid_past", rows)[:, -1]
    pose = reader.read("cam_past", rows)[:, -1].astype(np.float64)
    cam = np.einsum("nji,nkj->nki", pose[:, :3, :3], last - pose[:, None, :3, 3])  # R^T (p - t)
    return np.where(ok[..., None], cam, 0.0).sum(0) / np.maximum(ok.sum(0), 1)[:, None]


def _forecast(store: Path, rows: list[int], model, doc: dict, device, batch_size: int,
              anchor_cam: Any) -> dict[int, dict[str, Any]]:
    """{row: {cam [Tf, J, 3], world [Tf, J, 3] or None}} from the model over `rows` of `store`."""
    import torch
    from torch.utils.data import DataLoader

    from tjepa.train.data import CacheDataset, to_device

    ds = CacheDataset(store, rows, levels=tuple(doc["levels"]), require_targets=False,
                      with_tokens=model.cfg.conditioning == "crossattn")
    out = {}
    with torch.no_grad():
        for batch in DataLoader(ds, batch_size=batch_size, shuffle=False):
            res = model(to_device(batch, device))
            cam = res.traj_cam.float().cpu().numpy()
            if "cam_last" not in batch and model.cfg.anchor == "last_observed":
                cam = cam + anchor_cam[None, None]
            world = res.traj_world.float().cpu().numpy() if res.traj_world is not None else None
            for i, row in enumerate(batch["row"].tolist()):
                out[row] = {"cam": cam[i], "world": None if world is None else world[i]}
    return out


def _row(store: Path, row: int) -> dict[str, Any]:
    """What drawing one video needs from its row: frame indices, geometry and (labelled) targets."""
    from tjepa.cache_schema.reader import StoreReader

    reader = StoreReader(store)
    fields = ["past_idx", "future_idx", "fps", "width", "height", "n_frames"]
    if reader.has_targets:
        fields += ["joints_past", "joints_future", "valid_past", "valid_future", "cam_past", "cam_future",
                   "intrinsics"]
    return {f: reader.read(f, [row])[0] for f in fields}


def _in_camera(world: Any, pose: Any, valid: Any | None = None) -> Any:
    """World points [T, J, 3] -> each step's camera frame (poses [T, 4, 4]); NaN where invalid."""
    import numpy as np

    w, p = np.asarray(world, np.float64), np.asarray(pose, np.float64)
    cam = np.einsum("tji,tkj->tki", p[:, :3, :3], w - p[:, None, :3, 3])
    return cam if valid is None else np.where(np.asarray(valid)[..., None], cam, np.nan)


def _write_video_outputs(src: Source, r: dict[str, Any], fc: dict[str, Any], out: Path, meta: dict) -> Path:
    """forecast.npz / .json, overlay.mp4 and summary.png of one video."""
    import numpy as np

    from tjepa.cache_schema.joints import JOINT_NAMES
    from tjepa.eval import overlay
    from tjepa.eval.egodex_protocol import KEYPOINTS
    from tjepa.pipeline.video import decode_frames

    labelled = "joints_future" in r
    past_idx, future_idx, fps = r["past_idx"], r["future_idx"], float(r["fps"])
    width, height = int(r["width"]), int(r["height"])
    times = (np.concatenate([past_idx, future_idx]) - past_idx[-1]) / fps
    k_src = r["intrinsics"] if labelled else overlay.default_intrinsics(width, height)
    dw = DISPLAY_WIDTH  # small videos are scaled up too, so skeleton lines stay thin
    dh = max(2, int(round(height * dw / width)) // 2 * 2)
    frames = decode_frames(src.video, np.concatenate([past_idx, future_idx]), size=(dw, dh))
    to, tf, nj = len(past_idx), len(future_idx), len(JOINT_NAMES)
    blank = np.full((to, nj, 3), np.nan)
    if labelled:  # every frame drawn in its own (true) camera
        truth = np.concatenate([_in_camera(r["joints_past"], r["cam_past"], r["valid_past"]),
                                _in_camera(r["joints_future"], r["cam_future"], r["valid_future"])])
        fut = _in_camera(fc["world"], r["cam_future"])
        track_pose = np.repeat(r["cam_future"][-1:], tf, 0)
        tracks = (_in_camera(fc["world"], track_pose), _in_camera(r["joints_future"], track_pose, r["valid_future"]))
    else:  # no poses: the camera is taken to stay where it was at the last observed frame
        truth, fut = None, fc["cam"]
        tracks = (fc["cam"], None)
    drawn = overlay.overlay_frames(frames, to, np.concatenate([blank, fut]), truth, k_src, (width, height), times)
    d = out / src.name
    d.mkdir(parents=True, exist_ok=True)
    span = (future_idx[-1] - past_idx[0] + 1) / fps  # real-time playback of the sampled frames
    overlay.write_mp4(drawn, d / "overlay.mp4", fps=len(drawn) / span)
    uv = [None if t is None else overlay.project_camera(t, k_src, (width, height), (dw, dh)) for t in tracks]
    overlay.write_summary_png(drawn[-1], uv[0], uv[1], KEYPOINTS, d / "summary.png",
                              title=f"{src.name}: forecast (orange)" + (" vs truth (magenta)" if labelled else "")
                              + f", +{times[-1]:.2f} s")
    doc = {**meta, "video": src.video.name, "labels": src.labels.name if src.labels else None,
           "fps": fps, "width": width, "height": height, "past_idx": past_idx, "future_idx": future_idx,
           "times_s": times[to:], "joint_names": list(JOINT_NAMES),
           "frame": "camera frame of the last observed frame (x right, y down, z forward), metres",
           "intrinsics": k_src, "intrinsics_source": "labels" if labelled else
           f"default: centred pinhole, {overlay.DEFAULT_HFOV_DEG:g} degree horizontal field of view",
           "anchor": ("last observed labelled joints" if labelled else "mean last observed joints of the run's "
                      "training videos (no labels)") if meta["anchored"] else "none (absolute positions)",
           "joints_cam": fc["cam"], "joints_world": fc["world"]}
    arrays = {"joints_cam": fc["cam"], "times_s": times[to:], "past_idx": past_idx, "future_idx": future_idx,
              "intrinsics": k_src}
    if labelled:
        arrays.update(joints_world=fc["world"], truth_world=r["joints_future"], truth_valid=r["valid_future"],
                      truth_cam=_in_camera(r["joints_future"], np.repeat(r["cam_past"][-1:], tf, 0)))
        doc["truth_cam"] = np.where(r["valid_future"][..., None], arrays["truth_cam"], np.nan)
    np.savez_compressed(d / "forecast.npz", **arrays)
    from tjepa.eval.report import to_jsonable

    (d / "forecast.json").write_text(json.dumps(to_jsonable(doc), allow_nan=False) + "\n")
    return d


def run_predict(run: Path, videos: list[Path], out: Path, cache: Path | None, models_dir: Path | None,
                checkpoint: str, device: str, batch_size: int) -> int:
    from rich.console import Console

    from tjepa.devices import resolve_device
    from tjepa.errors import TjepaError
    from tjepa.progress import progress_bar
    from tjepa.train.checkpoint import load_run_model

    console = Console(stderr=True, soft_wrap=True)
    doc, store, attrs = _store_config(run, cache)
    encoders = _encoders(attrs["config"]["encoders"], models_dir, store)
    sampling = _sampling(attrs["config"]["sampling"])
    sources = _sources(list(videos))
    dev = resolve_device(device)
    model, ckpt = load_run_model(run, checkpoint, map_location=dev)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".predict-", dir=out))
    failed: dict[str, str] = {}
    try:
        done, failed = _extract(sources, tmp, encoders, sampling, batch_size, str(dev), attrs, console)
        anchored = model.cfg.anchor == "last_observed"
        anchor = _default_anchor(store, run) if anchored and any(not s.labels for s in sources) else None
        preds: dict[str, dict] = {}
        for st in sorted({p for p, _ in done.values()}):
            rows = [r for p, r in done.values() if p == st]
            by_row = _forecast(st, rows, model, doc, dev, batch_size, anchor)
            preds.update({n: by_row[r] for n, (p, r) in done.items() if p == st})
        meta = {"run": run.name, "checkpoint": f"ckpt_{checkpoint}.pt", "epoch": int(ckpt["epoch"]),
                "variant": model.cfg.variant, "fingerprint": attrs["fingerprint"], "anchored": anchored}
        written = []
        bar = progress_bar("[bold]drawing", "videos", console=console)
        with bar:
            task = bar.add_task("draw", total=len(preds))
            for s in sources:
                if s.name not in preds:
                    continue
                try:
                    st, row = done[s.name]
                    written.append(_write_video_outputs(s, _row(st, row), preds[s.name], out, meta))
                except (TjepaError, OSError, ValueError) as err:  # this video fails alone
                    failed[s.name] = f"drawing failed: {err}"
                bar.update(task, advance=1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for s in sources:
        if s.name in failed:
            console.print(f"[red]failed[/] {s.video}: {failed[s.name]}", highlight=False)
    for d in written:
        console.print(f"wrote {d}/ (forecast.npz, forecast.json, overlay.mp4, summary.png)", highlight=False)
    return 3 if failed else 0
