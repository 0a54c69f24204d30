"""What ``photodup-ctl doctor`` shows the daemon, and what it expects back (torch-free).

* The **probe photo**: ``data/probe-chelsea.jpg``, 224x224, cut from scikit-image's
  ``chelsea`` (CC0, Stefan van der Walt): a tabby cat.  The built-in model must put it in
  an ImageNet cat class (the ``probe`` op), and every model's embedding of it must stay
  within :attr:`ProbeValues.min_cosine` of the stored one (the ``features`` op).
* The **stored probe values**: ``data/probe.json`` for the built-in model (computed once
  with the real weights: ``python -m tests.daemon.probe_values``), and for other models
  (CLIP weights photodup cannot ship) what ``photodup-ctl doctor --record-probe`` recorded
  in the state dir once the user trusted the model.  Embeddings are stored in float16.
* The **format samples**: one small picture in every format the decoders take, made here
  with Pillow (and pillow-heif), a DNG shipped in ``data/`` (writing one takes a TIFF
  writer of its own), and a decompression bomb: a PNG whose header claims 400 megapixels.

Nothing here imports numpy or Pillow until a sample is made, so ``photodup-ctl`` stays
instant for ``status`` and ``ping``.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from photodupd import paths

DATA: Final = Path(__file__).with_name("data")
PROBE_PHOTO: Final = DATA / "probe-chelsea.jpg"
SHIPPED_VALUES: Final = DATA / "probe.json"
PROBE_DNG: Final = DATA / "probe.dng"
#: Cosine an embedding of the probe photo must reach against the stored one.  Decoders and
#: CPUs differ in the last bits (libjpeg versions, float order).  Measured with the built-in
#: model: the stored float16 values 0.99994, the photo re-encoded as JPEG 0.9989; a
#: preprocessing mistake falls well below (mirrored 0.95, a shifted crop 0.93, red and blue
#: swapped 0.91), and so does another photo (below 0.2).  tests/daemon/test_probe.py.
MIN_COSINE: Final = 0.99
#: The bomb's claimed size: far above the decoder's 89.5-megapixel limit.
BOMB_SIDE: Final = 20_000


class ProbeValuesError(Exception):
    """A probe-values file that cannot be read or written; the message says which."""


@dataclass(frozen=True, slots=True)
class ProbeValues:
    """What one model must make of the probe photo."""

    model_id: str
    embedding: tuple[float, ...]  # L2-normalised
    min_cosine: float = MIN_COSINE
    #: ImageNet classes its top class must be among (models with a classifier head).
    classes: frozenset[int] | None = None
    class_name: str | None = None
    source: str = "shipped"  # or the file it was recorded in

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "embedding_f16": encode_f16(self.embedding),
            "min_cosine": self.min_cosine,
        }
        if self.classes is not None:
            document["classes"] = sorted(self.classes)
            document["class_name"] = self.class_name
        return document

    @classmethod
    def from_json(cls, model_id: str, document: Any, source: str) -> ProbeValues:
        if not isinstance(document, dict) or not isinstance(document.get("embedding_f16"), str):
            raise ProbeValuesError(f"{source}: no embedding for {model_id}")
        classes = document.get("classes")
        return cls(
            model_id=model_id,
            embedding=tuple(decode_f16(document["embedding_f16"])),
            min_cosine=float(document.get("min_cosine", MIN_COSINE)),
            classes=frozenset(int(c) for c in classes) if isinstance(classes, list) else None,
            class_name=document.get("class_name"),
            source=source,
        )


def probe_photo() -> bytes:
    return PROBE_PHOTO.read_bytes()


def encode_f16(vector: Iterable[float]) -> str:
    values = list(vector)
    return base64.b64encode(struct.pack(f"<{len(values)}e", *values)).decode("ascii")


def decode_f16(text: str) -> list[float]:
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 2}e", raw))


def embedding_of(data: bytes) -> list[float]:
    """A ``features`` embedding (float32 little-endian) as numbers."""
    return list(struct.unpack(f"<{len(data) // 4}f", data))


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity; 0 for vectors of different lengths or a zero vector."""
    if len(a) != len(b):
        return 0.0
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b, strict=True)) / norm if norm else 0.0


def recorded_values_file() -> Path:
    return paths.state_dir() / "probe-values.json"


def _read_values(path: Path, source: str) -> dict[str, ProbeValues]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ProbeValuesError(f"cannot read {path}: {exc}") from None
    models = document.get("models") if isinstance(document, dict) else None
    if not isinstance(models, dict):
        raise ProbeValuesError(f"{path}: no 'models' table")
    return {
        model_id: ProbeValues.from_json(model_id, entry, source)
        for model_id, entry in models.items()
    }


def shipped_values() -> dict[str, ProbeValues]:
    return _read_values(SHIPPED_VALUES, "shipped")


def values_for(model_id: str, recorded: Path | None = None) -> ProbeValues | None:
    """The stored probe values of ``model_id``: shipped ones first, then recorded ones."""
    shipped = shipped_values().get(model_id)
    if shipped is not None:
        return shipped
    path = recorded if recorded is not None else recorded_values_file()
    return _read_values(path, str(path)).get(model_id)


def record(model_id: str, embedding: Sequence[float], recorded: Path | None = None) -> Path:
    """Store ``model_id``'s embedding of the probe photo (``doctor --record-probe``); later
    runs check the model against it.  Written whole under a temporary name, then renamed."""
    path = recorded if recorded is not None else recorded_values_file()
    existing = _read_values(path, str(path))
    existing[model_id] = ProbeValues(model_id, tuple(embedding), source=str(path))
    document = {"models": {key: value.to_json() for key, value in sorted(existing.items())}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    except OSError as exc:
        raise ProbeValuesError(f"cannot write {path}: {exc}") from None
    return path


# --------------------------------------------------------------------------- format samples


@dataclass(frozen=True, slots=True)
class Sample:
    """One small image for the decoders, and what they must say of it."""

    label: str  # what the doctor's table calls it
    data: bytes
    format: str  # the format a features reply must report
    extra: str | None = None  # the optional install it needs ("raw"), else None


def format_samples() -> tuple[list[Sample], list[str]]:
    """A sample of every format the decoders take, and why any could not be made here
    (Pillow without an AVIF encoder, say: then that format is not checked)."""
    from PIL import Image, features

    picture = _picture(Image)
    samples: list[Sample] = []
    missing: list[str] = []
    for label, fmt, reported, options in (
        ("JPEG", "JPEG", "JPEG", {"quality": 90}),
        ("PNG", "PNG", "PNG", {}),
        ("WebP", "WEBP", "WEBP", {"quality": 90}),
        ("GIF", "GIF", "GIF", {}),
        ("TIFF", "TIFF", "TIFF", {}),
        ("BMP", "BMP", "BMP", {}),
    ):
        samples.append(Sample(label, _encode(picture, fmt, options), reported))
    samples.append(Sample("HEIC", _heic(picture), "HEIF"))
    if features.check("avif"):
        samples.append(Sample("AVIF", _encode(picture, "AVIF", {"quality": 90}), "AVIF"))
    else:
        missing.append("AVIF (this Pillow has no AVIF encoder to make a sample)")
    samples.append(Sample("RAW (DNG)", PROBE_DNG.read_bytes(), "RAW", extra="raw"))
    return samples, missing


def bomb() -> bytes:
    """A PNG whose header claims BOMB_SIDE x BOMB_SIDE pixels and holds almost none: a
    decoder that trusted it would allocate gigabytes; photodupd must answer ``too_large``."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", BOMB_SIDE, BOMB_SIDE, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _picture(image_module: Any) -> Any:
    """A 64x48 picture with some structure (a flat one compresses to nothing)."""
    picture = image_module.new("RGB", (64, 48))
    picture.putdata(
        [((x * 4) % 256, (y * 5) % 256, ((x + y) * 3) % 256) for y in range(48) for x in range(64)]
    )
    return picture


def _encode(picture: Any, fmt: str, options: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _heic(picture: Any) -> bytes:
    import pillow_heif

    buffer = io.BytesIO()
    pillow_heif.from_pillow(picture).save(buffer, quality=90)
    return buffer.getvalue()
