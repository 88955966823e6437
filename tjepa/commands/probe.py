"""`tjepa probe`: does a cached feature carry the synthetic cue? (a linear probe, eval/probe.py)"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def probe(
    caches: Annotated[list[Path], typer.Option("--cache", help="Feature store(s) of a `tjepa synth` dataset.")],
    labels: Annotated[Path, typer.Option("--labels", help="The synthetic dataset (its synth.json has the cues).")],
    out: Annotated[Path, typer.Option("--out", help="Write the results as JSON here.")],
    md: Annotated[Path | None, typer.Option("--md", help="Also write a markdown table here.")] = None,
) -> None:
    """Linear probe of the cue colour from VLM means and V-JEPA latents, on held-out task groups."""
    import json

    from rich.console import Console

    from tjepa.eval.probe import probe_document, probe_store, read_cues, to_markdown

    cues = read_cues(labels)
    doc = probe_document([r for store in caches for r in probe_store(store, cues)])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    text = to_markdown(doc)
    if md is not None:
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(text)
    Console().print(text, markup=False, highlight=False)
