"""What a checkpoint and the installed libraries must offer before stage one may run on them.

transformers without `mm_encoder_outputs` (silently drops the video features), a checkpoint whose
tokenizer and processor chat templates disagree, the version pins, and the processor configs that
`tjepa build-models` writes (vLLM loads them; they state our preprocessing).
"""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tjepa.errors import TjepaError
from tjepa.pipeline.encoders.builders import CHAT_TEMPLATE, QWEN_DIR, VJEPA_DIR, tiny_configs
from tjepa.pipeline.encoders.compat import accepts_mm_encoder_outputs, check_capture_forward
from tjepa.pipeline.encoders.prompt import chat_template

ROOT = Path(__file__).resolve().parents[1]


def test_transformers_without_mm_encoder_outputs_is_refused():
    def old_forward(self, input_ids=None, pixel_values_videos=None, video_grid_thw=None, **kwargs):
        """transformers < 5.18: the keyword lands in **kwargs and is dropped."""

    def new_forward(self, input_ids=None, mm_encoder_outputs=None, **kwargs):
        """transformers >= 5.18."""

    assert not accepts_mm_encoder_outputs(old_forward) and accepts_mm_encoder_outputs(new_forward)
    with pytest.raises(TjepaError, match=r"transformers 5\.16\.1: .*mm_encoder_outputs.*transformers>=5\.18"):
        check_capture_forward(old_forward, version="5.16.1")
    with pytest.raises(TjepaError, match="silently"):
        check_capture_forward(inspect.signature(old_forward), version="5.17.0")  # a signature works too
    check_capture_forward(new_forward, version="5.18.0")
    check_capture_forward()  # the installed transformers passes (else every capture here would be wrong)


def test_version_pins():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {Requirement(r).name: Requirement(r) for r in project["dependencies"]}
    extra = {Requirement(r).name: Requirement(r) for r in project["optional-dependencies"]["vllm"]}
    for reqs in (base, extra):
        assert "5.17.2" not in reqs["transformers"].specifier and "5.18.0" in reqs["transformers"].specifier
    vllm = extra["vllm"].specifier
    assert {v for v in ("0.30.0", "0.31.1", "0.32.0", "0.33.2", "0.34.0") if v in vllm} == {"0.32.0", "0.33.2"}


@pytest.fixture()
def qwen_dir(tiny_models, tmp_path):
    d = tmp_path / "qwen"
    shutil.copytree(tiny_models / QWEN_DIR, d)
    return d


def _tokenizer(d):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(d)


def test_chat_template_sources(qwen_dir):
    assert chat_template(_tokenizer(qwen_dir), qwen_dir) == CHAT_TEMPLATE  # both shipped, identical
    (qwen_dir / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE + "{# processor #}"}))
    with pytest.raises(TjepaError, match=r"chat_template\.jinja and chat_template\.json hold different chat templates"):
        chat_template(_tokenizer(qwen_dir), qwen_dir)
    (qwen_dir / "chat_template.jinja").unlink()  # only the processor's: used as it is
    assert chat_template(_tokenizer(qwen_dir), qwen_dir) == CHAT_TEMPLATE + "{# processor #}"
    (qwen_dir / "chat_template.json").unlink()
    with pytest.raises(TjepaError, match="no chat template"):
        chat_template(_tokenizer(qwen_dir), qwen_dir)


def test_tokenizer_config_template_conflict_names_it(qwen_dir):
    cfg_path = qwen_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["chat_template"] = "{{ messages }}"
    cfg_path.write_text(json.dumps(cfg))
    (qwen_dir / "chat_template.jinja").unlink()
    with pytest.raises(TjepaError, match=r"tokenizer_config\.json and chat_template\.json"):
        chat_template(_tokenizer(qwen_dir), qwen_dir)


def test_processor_configs_state_our_preprocessing(tiny_models):
    from tjepa.pipeline.encoders.preprocess import IMAGENET_MEAN, IMAGENET_STD, QWEN_MEAN, QWEN_STD
    from tjepa.pipeline.encoders.presets import resolve_encoders

    cfg = resolve_encoders("tiny", models_dir=tiny_models)
    vision = tiny_configs()["qwen"]["vision_config"]
    for name in ("preprocessor_config.json", "video_preprocessor_config.json"):
        p = json.loads((tiny_models / QWEN_DIR / name).read_text())
        assert p["processor_class"] == "Qwen3VLProcessor"
        assert (p["patch_size"], p["temporal_patch_size"], p["merge_size"]) == (
            vision["patch_size"], vision["temporal_patch_size"], vision["spatial_merge_size"])
        assert tuple(p["image_mean"]) == QWEN_MEAN == cfg.vlm_mean and tuple(p["image_std"]) == QWEN_STD == cfg.vlm_std
        assert p["do_rescale"] and p["rescale_factor"] == 1 / 255 and p["do_normalize"]
    video = json.loads((tiny_models / QWEN_DIR / "video_preprocessor_config.json").read_text())
    # frames reach the processor already squashed (preprocess.squash), and already sampled
    assert video["do_resize"] is False and video["do_sample_frames"] is False
    vj = json.loads((tiny_models / VJEPA_DIR / "video_preprocessor_config.json").read_text())
    assert vj["crop_size"] == {"height": cfg.crop_size, "width": cfg.crop_size}
    assert vj["size"] == {"shortest_edge": cfg.resize_short}
    assert tuple(vj["image_mean"]) == IMAGENET_MEAN == cfg.vjepa_mean and tuple(vj["image_std"]) == IMAGENET_STD
