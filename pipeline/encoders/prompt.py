"""The Qwen3-VL prompt: which chat template, and how the video placeholder is rendered.

Chat template: a checkpoint may carry one beside the tokenizer (`tokenizer_config.json` or
`chat_template.jinja`) and one for the processor (`chat_template.json`). The authors render with the
processor's; when both exist and differ we refuse rather than pick one silently.
`chat_template(tokenizer, model_dir)` returns the template every prompt of tjepa is rendered with
(provenance hashes exactly this string).

Video rendering (`PROMPT_RENDERING`): the template's `<|vision_start|><|video_pad|><|vision_end|>`
is replaced as a whole by one run per temporal group, `<{t:.1f} seconds><|vision_start|>` + pad x n
+ `<|vision_end|>`. That is what Qwen3-VL's processor produced when the model shipped (transformers
4.57, and qwen-vl-utils with transformers 5.2 in the authors' extraction). transformers >= 5.10 and
vLLM replace only the bare `<|video_pad|>` and keep the outer pair, 2 ids more; `vllm_prompt_text`
hands vLLM the template text with a bare pad in place of the triple, so its expansion lands on our
ids exactly (the generator still compares every request's ids with ours).
"""

from __future__ import annotations

import json
from pathlib import Path

from tjepa.errors import TjepaError

# Recorded in the fingerprint: a store's prompts were rendered this way.
PROMPT_RENDERING = "qwen3vl-framed-runs-replace-triple"
PROCESSOR_TEMPLATE = "chat_template.json"


def _tokenizer_template_file(model_dir: Path) -> str:
    cfg = model_dir / "tokenizer_config.json"
    if cfg.is_file() and json.loads(cfg.read_text()).get("chat_template"):
        return "tokenizer_config.json"
    return "chat_template.jinja"


def chat_template(tokenizer, model_dir: str | Path) -> str:
    """The chat template tjepa renders with for the checkpoint in `model_dir` (public: provenance hashes it).

    The processor's `chat_template.json` when the checkpoint ships one, else the tokenizer's own
    (`tokenizer_config.json` / `chat_template.jinja`); a TjepaError naming both files when both
    exist and differ, or when there is none.
    """
    d = Path(model_dir)
    ours = getattr(tokenizer, "chat_template", None) or None
    if ours is None and (d / "chat_template.jinja").is_file():
        ours = (d / "chat_template.jinja").read_text()
    if ours is not None and not isinstance(ours, str):
        raise TjepaError(f"{d}: the tokenizer has named chat templates {sorted(ours)}; tjepa needs one template")
    proc = None
    if (d / PROCESSOR_TEMPLATE).is_file():
        try:
            proc = json.loads((d / PROCESSOR_TEMPLATE).read_text())["chat_template"]
        except (ValueError, KeyError, TypeError) as err:
            raise TjepaError(f"{d / PROCESSOR_TEMPLATE}: not a processor chat template ({err})") from err
    if ours is not None and proc is not None and ours != proc:
        raise TjepaError(
            f"{d}: {_tokenizer_template_file(d)} and {PROCESSOR_TEMPLATE} hold different chat templates; "
            f"the authors render with the processor's ({PROCESSOR_TEMPLATE}): make the two identical"
        )
    template = proc if proc is not None else ours
    if template is None:
        raise TjepaError(f"{d}: no chat template (neither the tokenizer's nor {PROCESSOR_TEMPLATE})")
    return template


def ensure_chat_template(tokenizer, model_dir: str | Path) -> None:
    """Set the tokenizer's template to `chat_template(...)`, so every rendering uses that one."""
    tokenizer.chat_template = chat_template(tokenizer, model_dir)


def _template_text(tokenizer, model_config, prompt: str) -> tuple[str, str, tuple[str, str, str]]:
    """(rendered template, its video placeholder, (start, pad, end) tokens); exactly one placeholder."""
    tok = tokenizer.convert_ids_to_tokens
    start, end = tok(model_config.vision_start_token_id), tok(model_config.vision_end_token_id)
    pad = tok(model_config.video_token_id)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    placeholder = start + pad + end
    if text.count(placeholder) != 1 or text.count(pad) != 1:
        raise TjepaError(f"the chat template rendered {text.count(placeholder)} video placeholders {placeholder!r}, expected 1")
    return text, placeholder, (start, pad, end)


def render_prompt(tokenizer, model_config, prompt: str, timestamps: list[float], tokens_per_group: int) -> str:
    """The chat prompt text with the video placeholder expanded to one framed run per temporal group."""
    text, placeholder, (start, pad, end) = _template_text(tokenizer, model_config, prompt)
    runs = "".join(f"<{t:.1f} seconds>{start}{pad * tokens_per_group}{end}" for t in timestamps)
    return text.replace(placeholder, runs)


def vllm_prompt_text(tokenizer, model_config, prompt: str) -> str:
    """The un-expanded text for vLLM: the triple becomes a bare pad, which vLLM expands into our runs."""
    text, placeholder, (_, pad, _) = _template_text(tokenizer, model_config, prompt)
    return text.replace(placeholder, pad)
