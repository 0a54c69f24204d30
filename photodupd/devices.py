"""Which device runs the model, and how big its batches are: the choice, without torch.

``[daemon] device`` is ``auto`` (default), ``cpu``, ``cuda`` or ``mps``.  The model backend
asks torch what is there (:func:`photodupd.models.backend.probe_devices`) and this module
decides, so the decision is testable on any machine: auto takes CUDA when torch sees a
CUDA device, Apple's MPS on macOS when it is there, else the CPU; a device asked for by
name that is not there falls back to the CPU and says so (a daemon that would not start
for want of a GPU helps no one).  ``status`` shows the device and the reason.

On CUDA a micro-batch may be larger (a GPU is idle between small batches, and its memory
holds 64 activations of any model photodup ships with room to spare) and the forward pass
runs under float16 autocast (tensor cores; embeddings stay within cosine ~0.999 of
float32).  Neither was verified on a GPU here: this machine has none (README).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

DEVICES: Final = ("auto", "cpu", "cuda", "mps")

#: Smallest micro-batch limit on CUDA.
CUDA_BATCH: Final = 64


@dataclass(frozen=True, slots=True)
class Available:
    """What torch says is there."""

    cuda: bool = False
    cuda_name: str | None = None  # torch.cuda.get_device_name(0)
    mps: bool = False


@dataclass(frozen=True, slots=True)
class DevicePlan:
    """The device, why, and what follows from it."""

    device: str  # "cpu" | "cuda" | "mps"
    why: str
    batch_size: int
    half_compute: bool = False  # forward passes under float16 autocast

    @property
    def is_cpu(self) -> bool:
        return self.device == "cpu"


def choose(requested: str, available: Available, batch_size: int) -> DevicePlan:
    """The device for ``requested`` (one of :data:`DEVICES`) given what is ``available``."""
    if requested not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {requested!r}")
    cuda_label = f"CUDA ({available.cuda_name})" if available.cuda_name else "CUDA"
    if requested == "cpu":
        return DevicePlan("cpu", "device = cpu", batch_size)
    if requested == "cuda":
        if available.cuda:
            return _cuda(f"device = cuda: {cuda_label}", batch_size)
        return DevicePlan(
            "cpu", "device = cuda, but torch sees no CUDA device: the CPU", batch_size
        )
    if requested == "mps":
        if available.mps:
            return DevicePlan("mps", "device = mps: Apple GPU (Metal)", batch_size)
        return DevicePlan("cpu", "device = mps, but torch sees no MPS device: the CPU", batch_size)
    if available.cuda:
        return _cuda(f"auto: {cuda_label} found", batch_size)
    if available.mps:
        return DevicePlan("mps", "auto: Apple GPU (Metal) found", batch_size)
    return DevicePlan("cpu", "auto: no CUDA or MPS device: the CPU", batch_size)


def _cuda(why: str, batch_size: int) -> DevicePlan:
    return DevicePlan("cuda", why, max(batch_size, CUDA_BATCH), half_compute=True)
