"""Model registry contract (torch-free).

The only module that imports torch / open_clip / timm is
``photodupd.models.backend``; everything else talks to a :class:`LoadedModel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from photodupd.imaging import PreprocessSpec


class LoadedModel(Protocol):
    id: str  # e.g. "builtin:efficientnet_lite0/imagenet", "clip:ViT-B-32/laion2b_s34b_b79k"
    dim: int
    spec: PreprocessSpec
    device: str

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """(N, size, size, 3) uint8 RGB -> (N, dim) float32, each row L2-normalised."""
        ...


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """What the user asked for, and what ``auto`` resolved it to, and why."""

    requested: str  # "auto" | "builtin" | "clip:ViT-B-32" | "clip:NAME/TAG"
    resolved: str
    why: str
    weights: str | None = None  # local file for open_clip, if any
    config: str | None = None  # open_clip model config JSON, for custom models
