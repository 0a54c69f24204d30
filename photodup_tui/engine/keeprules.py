"""Which copy to keep: an ordered list of rules, each able to break the tie left by the ones
before it, and a sentence saying which rule decided.

Two rules come before the configurable list and cannot be turned off: a decodable file beats
an undecodable one (rule 7), and the full path breaks any tie left at the end, so the choice
never depends on the order the disk listed files.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from photodup_tui.engine.settings import KEEP_RULES, ScanSettings
from photodup_tui.engine.types import Photo
from photodup_tui.engine.walk import RAW_EXTENSIONS, has_raw_suffix
from photodupd.humanize import human_size

JPEG_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})


def pixels(photo: Photo) -> int:
    return (photo.width or 0) * (photo.height or 0)


def dimensions(photo: Photo) -> str:
    if photo.width is None or photo.height is None:
        return "unknown size"
    return f"{photo.width}x{photo.height}"


def format_name(photo: Photo) -> str:
    """Pillow's format name, or RAW for camera raw files whatever decoded their preview."""
    if has_raw_suffix(photo.path):
        return "RAW"
    if photo.format:
        return photo.format.upper()
    ext = os.path.splitext(photo.path)[1].lower().lstrip(".")
    return {"jpg": "JPEG", "jpe": "JPEG", "jfif": "JPEG", "tif": "TIFF", "heic": "HEIF"}.get(
        ext, ext.upper()
    )


#: Formats that store pixels exactly, and formats that lose some: a lossless file with the
#: very pixels of a lossy one was made from it (the other way round the pixels would differ).
LOSSLESS_FORMATS = frozenset({"PNG", "TIFF", "BMP"})
LOSSY_FORMATS = frozenset({"JPEG", "MPO", "HEIF", "AVIF", "WEBP"})


def may_be_resave(lossless: Photo, original: Photo) -> bool:
    """Whether ``lossless`` could be a lossless re-save of ``original``'s pixels, judged on
    the facts alone (the pixels decide, see ``SameShotChecker.resaves``): a PNG/TIFF/BMP of
    a JPEG/HEIF/WebP... of the very same size, and not kept in a reference folder that the
    original is not in (rule 11 comes first)."""
    return (
        format_name(lossless) in LOSSLESS_FORMATS
        and format_name(original) in LOSSY_FORMATS
        and lossless.width is not None
        and (lossless.width, lossless.height) == (original.width, original.height)
        and original.decodable is not False
        and (original.reference or not lossless.reference)
    )


def explain_resave(resave: Photo) -> str:
    """Why the original beat its lossless re-save (which the rules alone would prefer)."""
    name = os.path.basename(resave.path)
    return f"the original ({name} is a lossless re-save of its pixels: it holds nothing more)"


def is_raw_jpeg_pair(a: Photo, b: Photo) -> bool:
    """IMG_0001.CR2 beside IMG_0001.JPG: the camera wrote both on purpose."""
    dir_a, name_a = os.path.split(a.path)
    dir_b, name_b = os.path.split(b.path)
    if dir_a != dir_b:
        return False
    stem_a, ext_a = os.path.splitext(name_a)
    stem_b, ext_b = os.path.splitext(name_b)
    if stem_a.casefold() != stem_b.casefold():
        return False
    exts = {ext_a.lower(), ext_b.lower()}
    return bool(exts & RAW_EXTENSIONS) and bool(exts & JPEG_EXTENSIONS)


@dataclass(frozen=True)
class _Rule:
    name: str
    key: Callable[[Photo], Any]  # smaller is better
    explain: Callable[[Photo, Photo], str]  # (winner, loser) -> why the winner won


class KeepRules:
    def __init__(self, settings: ScanSettings) -> None:
        self._format_rank = {
            name.upper(): tier
            for tier, names in enumerate(settings.format_priority)
            for name in names
        }
        # Compiled once: a million-photo library asks for a million keys.
        self._prefer = [re.compile(fnmatch.translate(p)).match for p in settings.prefer_paths]
        self._avoid = [re.compile(fnmatch.translate(p)).match for p in settings.avoid_paths]
        self._tiers: dict[tuple[str, str | None], int] = {}
        every = self._all_rules()
        unknown = [name for name in settings.keep_rules if name not in every]
        if unknown:
            raise ValueError(f"unknown keep rules {unknown}; choose from {', '.join(KEEP_RULES)}")
        self.rules: list[_Rule] = [
            _Rule(
                "decodable",
                lambda p: p.decodable is False,
                lambda w, o: "decodable (the other is not)",
            ),
            *(every[name] for name in settings.keep_rules),
            _Rule("path", lambda p: p.path, lambda w, o: "first by path (every rule tied)"),
        ]
        self._keys = [rule.key for rule in self.rules]

    def key(self, photo: Photo) -> tuple[Any, ...]:
        return tuple([key(photo) for key in self._keys])

    def rank(self, photos: Sequence[Photo]) -> list[Photo]:
        """Best keeper first."""
        return sorted(photos, key=self.key)

    def explain(self, winner: Photo, loser: Photo) -> str:
        """The first rule that prefers ``winner`` over ``loser``, as a short phrase."""
        for rule in self.rules:
            if rule.key(winner) != rule.key(loser):
                return rule.explain(winner, loser)
        return "identical on every rule"

    def _format_tier(self, photo: Photo) -> int:
        # format_name depends only on the extension and the decoded format: memoised on them.
        seen = (os.path.splitext(photo.path)[1].lower(), photo.format)
        tier = self._tiers.get(seen)
        if tier is None:
            tier = self._format_rank.get(format_name(photo), len(self._format_rank) + 1)
            self._tiers[seen] = tier
        return tier

    def _pattern_key(self, photo: Photo) -> tuple[int, int]:
        path = photo.path
        preferred = next(
            (i for i, match in enumerate(self._prefer) if match(path)), len(self._prefer)
        )
        avoided = any(match(path) for match in self._avoid)
        return (preferred, int(avoided))

    def _all_rules(self) -> dict[str, _Rule]:
        return {
            "reference": _Rule(
                "reference", lambda p: not p.reference, lambda w, o: "in a reference folder"
            ),
            "resolution": _Rule(
                "resolution",
                lambda p: -pixels(p),
                lambda w, o: f"higher resolution ({dimensions(w)} vs {dimensions(o)})",
            ),
            "file_size": _Rule(
                "file_size",
                lambda p: -p.stat.size,
                lambda w, o: (
                    f"larger file ({human_size(w.stat.size)} vs {human_size(o.stat.size)})"
                ),
            ),
            "format": _Rule(
                "format",
                self._format_tier,
                lambda w, o: f"preferred format ({format_name(w)} over {format_name(o)})",
            ),
            "exif": _Rule(
                "exif",
                lambda p: -p.exif_fields,
                lambda w, o: f"richer EXIF ({w.exif_fields} vs {o.exif_fields} tags)",
            ),
            "oldest": _Rule(
                "oldest",
                lambda p: (p.taken is None, p.taken or "", p.stat.mtime_ns),
                _explain_oldest,
            ),
            "path_patterns": _Rule(
                "path_patterns", self._pattern_key, lambda w, o: "preferred path pattern"
            ),
            "shorter_path": _Rule(
                "shorter_path",
                lambda p: (p.path.count(os.sep), len(p.path)),
                lambda w, o: "shorter path",
            ),
        }


def _explain_oldest(winner: Photo, loser: Photo) -> str:
    if winner.taken is not None and winner.taken != loser.taken:
        return f"taken earlier ({winner.taken} vs {loser.taken or 'no date'})"
    return "older file"
