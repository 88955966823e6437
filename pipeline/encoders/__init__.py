"""Stage one's encoders: V-JEPA 2 latents and Qwen3-VL "thinker" layer states.

Light to import (no torch): the heavy modules (`vjepa`, `thinker`, `capture`, `preprocess`) load
torch and transformers when they are imported themselves. Entry points live in `presets`:
`resolve_encoders`, `load_encoders`, `encoder_dims`, `build_tiny_models`.
"""
