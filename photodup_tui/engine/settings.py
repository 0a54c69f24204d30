"""What a scan looks at and how it judges: defaults < ``[scan]`` table of config.toml < flags.

Thresholds are per model id because every model spreads its cosines differently; the
built-in model's and the no-model ones are calibrated by bench/quality.py.

``[scan]`` keys (all optional)::

    exclude = ["*/node_modules", "*.thumbnail"]   # globs, see walk.py
    include_hidden = false
    min_size = 1                                 # bytes
    raw = true                                   # walk RAW files (.cr2, .nef, .dng ...)
    reference_folders = ["~/Archive"]            # scanned, never targets, win keeper choice
    keep_rules = ["reference", "resolution", "file_size", "format", "exif", "oldest", "shorter_path"]
    format_priority = [["RAW", "HEIF", "AVIF"], ["PNG", "TIFF"], ["JPEG", "MPO"], ["WEBP", "GIF", "BMP"]]
    prefer_paths = ["*/Originals/*"]             # keep rule "path_patterns": earlier = stronger
    avoid_paths = ["*/Downloads/*", "* copy*"]
    delete_raw_jpeg_pairs = false
    exact_search_limit = 5000                    # above: the partitioned search (>= 99% of pairs)

    same_shot_check = true                       # similar needs the pixel check (sameshot.py)

    [scan.thresholds."builtin:efficientnet_lite0/imagenet"]
    near_cosine = 0.80
    near_phash = 8
    similar_cosine = 0.65
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from photodup_tui.engine.neighbours import EXACT_LIMIT
from photodupd import config

#: The model id of the --no-model mode (perceptual hashes computed locally).
LOCAL_MODEL_ID = "local:phash-v1"

#: Every keep rule, in the order they apply by default.
KEEP_RULES = (
    "reference",  # a copy inside a reference folder wins
    "resolution",  # more pixels
    "file_size",  # more bytes (less compression)
    "format",  # original formats over derived ones (format_priority)
    "exif",  # more EXIF tags
    "oldest",  # earliest capture date (EXIF), then earliest mtime
    "path_patterns",  # prefer_paths / avoid_paths
    "shorter_path",  # fewer path components, then fewer characters
)
DEFAULT_FORMAT_PRIORITY: tuple[tuple[str, ...], ...] = (
    ("RAW", "HEIF", "AVIF"),
    ("PNG", "TIFF"),
    ("JPEG", "MPO"),
    ("WEBP", "GIF", "BMP"),
)


class SettingsError(Exception):
    """A bad value in the config file or on the command line; the message says which."""


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When two photos count as ``near`` or ``similar`` for one model.

    With embeddings, ``near`` needs both the cosine and the pHash distance (a re-encode keeps
    the geometry, so the perceptual hash agrees); ``similar`` needs only the cosine.  Without
    embeddings (``local:phash-v1``) only the pHash distances apply.
    """

    near_cosine: float | None = 0.80
    near_phash: int | None = 8
    similar_cosine: float | None = 0.65
    similar_phash: int | None = None


#: The near pHash limit when no pixel check proves a near verdict (see thresholds_for).
UNCHECKED_NEAR_PHASH = 2

DEFAULT_THRESHOLDS: Mapping[str, Thresholds] = {
    # Exact ids first, then families (the part before ":"), then "*".
    # Calibrated on bench/quality.py (both sets): near = candidates the same-picture pixel
    # check proves to be re-encodes (their pHash is within 8 bits: a 50% resize of a flat
    # picture moves it by up to 6, of a photo by up to 4; the stereo pair, at 4, is stopped
    # by the pixels), similar = candidates the same-shot pixel check confirms.
    "builtin:efficientnet_lite0/imagenet": Thresholds(0.80, 8, 0.65, None),
    # CLIP spreads cosines wider; not calibrated here (no weights offline): conservative.
    "clip": Thresholds(0.90, 8, 0.80, None),
    LOCAL_MODEL_ID: Thresholds(None, 8, None, 12),
    "*": Thresholds(0.80, 8, 0.65, None),
}


@dataclass(frozen=True, slots=True)
class ScanSettings:
    exclude: tuple[str, ...] = ()
    include_hidden: bool = False
    min_size: int = 1
    raw: bool = True
    reference_folders: tuple[str, ...] = ()
    keep_rules: tuple[str, ...] = KEEP_RULES
    format_priority: tuple[tuple[str, ...], ...] = DEFAULT_FORMAT_PRIORITY
    prefer_paths: tuple[str, ...] = ()
    avoid_paths: tuple[str, ...] = ()
    delete_raw_jpeg_pairs: bool = False
    exact_search_limit: int = EXACT_LIMIT
    same_shot_check: bool = True
    thresholds: Mapping[str, Thresholds] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))

    def thresholds_for(self, model_id: str) -> Thresholds:
        """The thresholds for ``model_id``.  The default near pHash limit assumes the pixel
        check proves every near verdict; without it (``same_shot_check = false``) a default
        near verdict rests on the features alone, so its pHash distance is held to
        UNCHECKED_NEAR_PHASH bits (thresholds set in the config or by a flag are kept)."""
        family = model_id.split(":", 1)[0]
        found = DEFAULT_THRESHOLDS["*"]
        for key in (model_id, family, "*"):
            if key in self.thresholds:
                found = self.thresholds[key]
                break
        default = any(found is t for t in DEFAULT_THRESHOLDS.values())
        if not self.same_shot_check and default and found.near_phash is not None:
            return replace(found, near_phash=min(found.near_phash, UNCHECKED_NEAR_PHASH))
        return found

    def with_threshold(self, model_id: str, value: float) -> ScanSettings:
        """The ``--threshold`` flag: the ``near`` cosine for a model, or the ``near`` pHash
        distance (bits) when the model has no embeddings."""
        current = self.thresholds_for(model_id)
        if current.near_cosine is None:
            if not (value >= 0 and float(value).is_integer() and value <= 64):
                raise SettingsError(
                    f"--threshold for {model_id} is a pHash distance 0..64, not {value}"
                )
            updated = replace(current, near_phash=int(value))
        else:
            if not 0.0 < value <= 1.0:
                raise SettingsError(
                    f"--threshold for {model_id} is a cosine in (0, 1], not {value}"
                )
            similar = current.similar_cosine
            updated = replace(
                current,
                near_cosine=value,
                similar_cosine=min(similar, value) if similar is not None else None,
            )
        return replace(self, thresholds={**self.thresholds, model_id: updated})


def load(config_file: Path | None = None) -> ScanSettings:
    """Read the ``[scan]`` table; a missing default config file means defaults."""
    try:
        path, table = config.read_table("scan", config_file)
    except config.ConfigError as exc:
        raise SettingsError(str(exc)) from None
    return from_mapping(table, where=str(path))


def from_mapping(table: Mapping[str, Any], where: str = "settings") -> ScanSettings:
    known = {f.name for f in fields(ScanSettings)}
    unknown = set(table) - known
    if unknown:
        raise SettingsError(f"{where}: unknown keys in [scan]: {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, raw in table.items():
        values[name] = _convert(name, raw, where)
    settings = replace(ScanSettings(), **values)
    bad_rules = [r for r in settings.keep_rules if r not in KEEP_RULES]
    if bad_rules:
        raise SettingsError(
            f"{where}: unknown keep rules {bad_rules}; choose from {', '.join(KEEP_RULES)}"
        )
    return settings


def _convert(name: str, raw: Any, where: str) -> Any:
    def fail(expected: str) -> SettingsError:
        return SettingsError(f"{where}: scan.{name} must be {expected}, got {raw!r}")

    if name in ("include_hidden", "raw", "delete_raw_jpeg_pairs", "same_shot_check"):
        if not isinstance(raw, bool):
            raise fail("true or false")
        return raw
    if name in ("min_size", "exact_search_limit"):
        if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
            raise fail("a non-negative integer")
        return raw
    if name in ("exclude", "keep_rules", "prefer_paths", "avoid_paths", "reference_folders"):
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            raise fail("a list of strings")
        if name == "reference_folders":
            return tuple(os.path.expanduser(x) for x in raw)
        return tuple(raw)
    if name == "format_priority":
        if not isinstance(raw, list) or not all(
            isinstance(tier, list) and all(isinstance(x, str) for x in tier) for tier in raw
        ):
            raise fail("a list of lists of format names")
        return tuple(tuple(x.upper() for x in tier) for tier in raw)
    if name == "thresholds":
        if not isinstance(raw, dict):
            raise fail("a table of model ids")
        merged = dict(DEFAULT_THRESHOLDS)
        for model_id, entry in raw.items():
            merged[model_id] = _thresholds(model_id, entry, where)
        return merged
    raise fail("a known value")  # pragma: no cover - every field is handled above


def _thresholds(model_id: str, entry: Any, where: str) -> Thresholds:
    if not isinstance(entry, dict):
        raise SettingsError(f"{where}: scan.thresholds.{model_id!r} must be a table")
    base = DEFAULT_THRESHOLDS.get(model_id, DEFAULT_THRESHOLDS["*"])
    values: dict[str, Any] = {}
    for key, value in entry.items():
        if key in ("near_cosine", "similar_cosine"):
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 1:
                raise SettingsError(f"{where}: {model_id}.{key} must be a cosine in (0, 1]")
            values[key] = float(value)
        elif key in ("near_phash", "similar_phash"):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 64:
                raise SettingsError(f"{where}: {model_id}.{key} must be a bit count 0..64")
            values[key] = value
        else:
            raise SettingsError(f"{where}: unknown threshold {key!r} for {model_id}")
    return replace(base, **values)
