"""Find the episodes under a dataset root: one `Episode` per video file.

Layouts:
- "egodex": `<task>/<n>.mp4` with labels `<task>/<n>.hdf5`. A video whose HDF5 is missing is still
  listed (labels = the expected path) so the cache job records that failure for that video alone.
  group = the task folder's name (so one task spread over several parts, e.g. `part1/<task>` and
  `part2/<task>`, stays one group and group-disjoint splits cannot leak it).
- "videos": any tree of .mp4/.mov/.mkv/.webm/.avi (suffix case-insensitive); labels None;
  group = the parent folder's path relative to the root ("." for the root itself).
- "auto": "egodex" when MORE THAN HALF of the videos have a sibling `.hdf5`, else "videos"; a mixed
  tree gets a warning saying how many videos lack (or have) labels.

Walking: entries whose name starts with "." are skipped (e.g. macOS `._x.mp4` resource forks, which
are not videos). Symlinked directories ARE followed (datasets are often assembled from links), but
every directory is entered at most once (by device and inode), real paths before links, so link loops
and duplicate links are skipped with a warning naming them. Unreadable directories and broken links are warned about, never
fatal. Ids are POSIX paths relative to the root, never absolute and never containing "..".
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tjepa.errors import InputError
from tjepa.pipeline.video import VIDEO_SUFFIXES

LABEL_SUFFIX = ".hdf5"
LAYOUTS = ("auto", "egodex", "videos")


@dataclass(frozen=True)
class Episode:
    id: str  # POSIX path of the video relative to the root; unique, safe as an output name
    video: Path
    labels: Path | None  # EgoDex HDF5 (may not exist: the cache job reports it); None for plain videos
    group: str  # split group: task folder (egodex) or parent folder (videos)


def discover(root: str | Path, layout: str = "auto") -> list[Episode]:
    """List the episodes under `root`, sorted by id. InputError when there is nothing usable."""
    layout = getattr(layout, "value", layout)  # accept a str Enum from the CLI
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    root = Path(root)
    if not root.exists():
        raise InputError(root, "dataset root does not exist")
    if not root.is_dir():
        raise InputError(root, "dataset root is not a directory")

    videos = sorted(_walk_videos(root), key=lambda rel: rel.as_posix())
    if not videos:
        raise InputError(
            root,
            f"unsupported layout: no video files ({'/'.join(VIDEO_SUFFIXES)}) found; expected EgoDex "
            "<task>/<n>.mp4 with <task>/<n>.hdf5, or any folder tree of videos",
        )
    labelled = [rel for rel in videos if (root / rel.with_suffix(LABEL_SUFFIX)).is_file()]

    if layout == "auto":
        layout = "egodex" if 2 * len(labelled) > len(videos) else "videos"
        if layout == "egodex" and len(labelled) < len(videos):
            warnings.warn(
                f"{root}: EgoDex layout chosen, but {len(videos) - len(labelled)} of {len(videos)} videos have "
                "no sibling .hdf5; they will fail in the cache job",
                stacklevel=2,
            )
        elif layout == "videos" and labelled:
            warnings.warn(
                f"{root}: plain-videos layout chosen (labels for only {len(labelled)} of {len(videos)} videos); "
                "pass layout='egodex' to use the labels",
                stacklevel=2,
            )
    elif layout == "egodex" and not labelled:
        raise InputError(
            root,
            f"unsupported layout: layout 'egodex' but none of the {len(videos)} videos has a sibling "
            ".hdf5 (expected <task>/<n>.mp4 with <task>/<n>.hdf5); use layout 'videos'",
        )

    episodes = []
    for rel in videos:
        parent = rel.parent.as_posix()  # "." at the root
        if layout == "egodex":
            labels: Path | None = root / rel.with_suffix(LABEL_SUFFIX)
            group = rel.parent.name or "."
        else:
            labels, group = None, parent
        episodes.append(Episode(id=rel.as_posix(), video=root / rel, labels=labels, group=group))
    return episodes


def _walk_videos(root: Path) -> list[PurePosixPath]:
    """Relative paths of video files under root, following directory links at most once each."""
    found: list[PurePosixPath] = []
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[Path, PurePosixPath]] = [(root, PurePosixPath("."))]
    # Linked directories are entered only after every real one, so a directory reachable both ways
    # is listed under its real path and the link is the one reported as a duplicate.
    links: list[tuple[Path, PurePosixPath]] = []
    while stack or links:
        if not stack:
            stack.append(links.pop(0))
        directory, rel_dir = stack.pop()
        try:
            st = directory.stat()
        except OSError as err:
            warnings.warn(f"{directory}: cannot stat directory ({err}); skipped", stacklevel=3)
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:
            warnings.warn(
                f"{directory}: directory already visited (symlink loop or duplicate link); skipped",
                stacklevel=3,
            )
            continue
        seen.add(key)
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as err:
            warnings.warn(f"{directory}: cannot list directory ({err}); skipped", stacklevel=3)
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = rel_dir / entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
                is_file = entry.is_file(follow_symlinks=True)
            except OSError as err:
                warnings.warn(f"{entry.path}: cannot stat ({err}); skipped", stacklevel=3)
                continue
            if is_dir:
                (links if entry.is_symlink() else stack).append((Path(entry.path), rel))
            elif is_file:
                if entry.name.lower().endswith(VIDEO_SUFFIXES):
                    found.append(_safe_rel(root, rel))
            elif entry.is_symlink():
                warnings.warn(f"{entry.path}: broken symbolic link; skipped", stacklevel=3)
    return found


def _safe_rel(root: Path, rel: PurePosixPath) -> PurePosixPath:
    # Built from directory entries, so this holds by construction; checked because ids become file names.
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise InputError(root / rel, "unsafe relative path for an episode id")
    return rel
