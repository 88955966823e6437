"""Synthetic EgoDex-format data with a known 3-D scene (see `scene` for the task and conventions)."""

from tjepa.pipeline.synth.config import SynthConfig
from tjepa.pipeline.synth.scene import EpisodeScene, make_episode, project
from tjepa.pipeline.synth.writer import write_dataset

__all__ = ["EpisodeScene", "SynthConfig", "make_episode", "project", "write_dataset"]
