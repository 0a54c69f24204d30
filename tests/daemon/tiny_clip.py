"""A tiny open_clip model for tests: a config JSON plus a random weights file.

Real CLIP weights are hundreds of megabytes and need a download; this writes
an architecture small enough to build in well under a second, with random
weights saved the way pretrained files are, so the daemon loads it through
exactly the same ``pretrained=PATH`` code path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

TINY_NAME = "photodup-tiny-vit"
TINY_EMBED_DIM = 32
TINY_IMAGE_SIZE = 64

TINY_CONFIG = {
    "embed_dim": TINY_EMBED_DIM,
    "vision_cfg": {
        "image_size": TINY_IMAGE_SIZE,
        "layers": 2,
        "width": 64,
        "head_width": 32,
        "patch_size": 32,
    },
    "text_cfg": {"context_length": 16, "vocab_size": 512, "width": 32, "heads": 2, "layers": 1},
}


@dataclass(frozen=True)
class TinyClip:
    name: str  # open_clip architecture name (the config file's stem)
    config: Path
    weights: Path


def write_tiny_clip(folder: Path, *, seed: int = 0, fmt: str = "safetensors") -> TinyClip:
    """Write ``<folder>/photodup-tiny-vit.json`` and random weights (safetensors or .bin)."""
    import open_clip
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{TINY_NAME}.json"
    config.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_NAME, pretrained=None)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file

        weights = folder / f"tiny-{seed}.safetensors"
        save_file(state, str(weights))
    else:
        weights = folder / f"tiny-{seed}.bin"
        torch.save(state, weights)
    return TinyClip(TINY_NAME, config, weights)
