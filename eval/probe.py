"""Linear probe of the synthetic cue: which cached features carry the colour that decides the future?

The synthetic task (`tjepa synth`) shows a coloured cue card only in the first quarter of each
episode; the hands later reach the pad of that colour. A multinomial logistic regression on
standardised features, fit on the train + val task groups of the default group-disjoint split and
scored on the held-out test groups, says whether a feature carries the cue linearly (chance 1/3).
This is what decides whether VLM guidance can help a predictor whose dense V-JEPA window starts after
the cue has gone (method.md section 15, docs/method.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tjepa.errors import InputError
from tjepa.eval.report import fmt, md_table, portable_path
from tjepa.train.data import CacheDataset
from tjepa.train.splits import make_splits

# feature name -> (batch key, how to reduce one row to a vector)
FEATURES = {
    "vlm/prompt_mean (all levels)": "prompt_mean",
    "vlm/think_mean (all levels)": "think_mean",
    "vjepa/past (mean over patches, all tubelets)": "vjepa_past",
}


@dataclass(frozen=True)
class ProbeResult:
    feature: str
    store: str
    sampling: str  # "uniform" or "dense window of W frames"
    dims: int
    heldout_acc: float
    train_acc: float
    n_train: int
    n_test: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def read_cues(labels_root: str | Path) -> dict[str, str]:
    """Episode id -> cue colour, from the `synth.json` that `tjepa synth` writes."""
    path = Path(labels_root) / "synth.json"
    try:
        doc = json.loads(path.read_text())
        return {str(ep["id"]): str(ep["cue"]) for ep in doc["episodes"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(path, f"not a readable synth manifest with episode cues ({err})") from err


def _vectors(ds: CacheDataset, key: str) -> np.ndarray:
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=False)
    out = []
    for batch in loader:
        x = batch[key].float()
        if key == "vjepa_past":
            x = x.mean(dim=2)  # [B, tubelets, D]: what each tubelet holds, wherever it is in the frame
        out.append(x.flatten(1).numpy())
    return np.concatenate(out)


def fit_logistic(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float = 1e-2, seed: int = 0):
    """Multinomial logistic regression (L-BFGS) on standardised x; returns a predict function."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    xt = torch.from_numpy((x - mean) / std).double()
    yt = torch.from_numpy(y).long()
    g = torch.Generator().manual_seed(seed)
    w = (0.01 * torch.randn(x.shape[1], n_classes, generator=g, dtype=torch.float64)).requires_grad_()
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + l2 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)

    def predict(z: np.ndarray) -> np.ndarray:
        zt = torch.from_numpy((z - mean) / std).double()
        return (zt @ w.detach() + b.detach()).argmax(1).numpy()

    return predict


def probe_store(store: str | Path, cues: dict[str, str], fractions=(0.8, 0.1, 0.1), split_seed: int = 42,
                features: dict[str, str] | None = None) -> list[ProbeResult]:
    """Probe every feature of one store (see the module docstring)."""
    probe_ds = CacheDataset(store, rows=[])
    index = probe_ds.index
    missing = [v for v, d in zip(index.videos, index.done, strict=True) if d and v not in cues]
    if missing:
        raise InputError(store, f"{len(missing)} video(s) have no cue in the synth manifest (first: {missing[0]}); "
                                f"probe a store made from that synthetic dataset")
    splits = make_splits(index.groups, index.done, fractions, split_seed)
    fit_rows, test_rows = sorted(splits.train + splits.val), list(splits.test)
    colours = sorted({cues[index.videos[r]] for r in fit_rows + test_rows})
    label = {c: i for i, c in enumerate(colours)}
    y_fit = np.array([label[cues[index.videos[r]]] for r in fit_rows])
    y_test = np.array([label[cues[index.videos[r]]] for r in test_rows])
    window = int((index.config.get("sampling") or {}).get("dense_window", 0) or 0)
    sampling = f"dense window of {window} frames" if window else "uniform"
    fit_ds, test_ds = CacheDataset(store, fit_rows), CacheDataset(store, test_rows)
    results = []
    for name, key in (features or FEATURES).items():
        x_fit, x_test = _vectors(fit_ds, key), _vectors(test_ds, key)
        predict = fit_logistic(x_fit, y_fit, len(colours))
        results.append(ProbeResult(name, portable_path(store), sampling, int(x_fit.shape[1]),
                                   float((predict(x_test) == y_test).mean()),
                                   float((predict(x_fit) == y_fit).mean()), len(fit_rows), len(test_rows)))
    return results


def probe_document(results: list[ProbeResult]) -> dict:
    return {"chance": 1 / 3, "results": [r.to_dict() for r in results]}


def read_probe(path: str | Path) -> dict:
    """A probe document written by `tjepa probe`, stores as portable paths (InputError naming the
    file otherwise)."""
    try:
        doc = json.loads(Path(path).read_text())
        results = [ProbeResult(**r) for r in doc["results"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(path, f"not a probe result written by `tjepa probe` ({err})") from err
    # a file from before stores were written portably must not put an absolute path into a report
    return {**doc, "results": [{**r.to_dict(), "store": portable_path(r.store)} for r in results]}


def to_markdown(doc: dict, title: str = "## Linear probe of the cue colour") -> str:
    """The probe table of a probe document, under `title` (`tjepa compare --probe` gives its own)."""
    results = [ProbeResult(**r) for r in doc["results"]]
    chance = fmt(doc.get("chance"), 2)
    rows = [[r.feature, r.sampling, str(r.dims), fmt(r.heldout_acc, 2), chance, fmt(r.train_acc, 2),
             f"{r.n_train} / {r.n_test}"] for r in results]
    return "\n".join([
        title, "",
        "Logistic regression on standardised cached features, fit on the train + val task groups, "
        f"scored on the held-out test groups (chance {chance}). It shows which branch can know the cue.", "",
        md_table(["feature", "V-JEPA sampling", "dims", "held-out acc", "chance", "fit acc", "fit / test videos"],
                 rows),
    ]) + "\n"
