"""Data shared by every stage of the engine: files, groups, verdicts.

Paths are ``str`` as Python spells them (``os.fsdecode``: undecodable bytes
become surrogate escapes), so any file name round-trips exactly; use
``os.fsencode`` to get the bytes back.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field


class Kind(enum.StrEnum):
    """How sure we are that the members of a group are the same photo."""

    EXACT = "exact"  # byte-identical
    NEAR = "near"  # same picture re-encoded, resized, re-formatted, re-tagged
    SIMILAR = "similar"  # edits: crops, borders, mirrors ...; never auto-selected (rule 6)


class Action(enum.StrEnum):
    KEEP = "keep"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class FileStat:
    """The identity of a file as seen by ``lstat`` at scan time.

    ``(dev, ino)`` is the replica identity (rule 2); the rest is what
    re-verification compares before acting (rule 4).
    """

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStat:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    @property
    def replica(self) -> tuple[int, int]:
        return (self.dev, self.ino)


@dataclass(slots=True)
class Photo:
    """One file found by the walk, with what later stages learn about it."""

    path: str
    stat: FileStat
    content_hash: str | None = None  # full strong hash (hex), set by the exact tier
    width: int | None = None
    height: int | None = None
    format: str | None = None  # Pillow format name: JPEG, PNG, HEIF ...
    phash: int | None = None  # 64-bit perceptual hash
    taken: str | None = None  # EXIF DateTimeOriginal as ISO 8601, if any
    camera: str | None = None
    exif_fields: int = 0  # how many EXIF tags: "richness" for keep rules
    decodable: bool | None = None  # None = not tried; False = undecodable (rule 7)
    error: str | None = None  # why it could not be read or decoded
    reference: bool = False  # inside a reference folder: never a target (rule 11)


@dataclass(slots=True)
class Member:
    photo: Photo
    action: Action = Action.KEEP
    why: str = ""  # why the keep rules chose this action
    #: Its own relation to the group's keeper as the scan found it (None: the keeper, or not
    #: known, as in reports written before it was recorded: then the group's kind applies).
    verdict: Kind | None = None


@dataclass(slots=True)
class Group:
    """Photos that match the group's keeper (``members[keeper]``), never only each other.

    ``kind`` is the weakest verdict among the members the keep rules may mark; ``similar``
    members (edits) may ride along in an exact or near group, never marked by the rules.
    """

    kind: Kind
    members: list[Member]
    reason: str  # human-readable: "byte-identical", "hash distance 2, cosine 0.991" ...
    keeper: int = 0
    scores: dict[str, float] = field(
        default_factory=dict
    )  # per-member similarity to keeper, by path

    @property
    def keeper_member(self) -> Member:
        return self.members[self.keeper]

    @property
    def reclaimable(self) -> int:
        return sum(m.photo.stat.size for m in self.members if m.action is Action.DELETE)


@dataclass(slots=True)
class ScanCounts:
    """What a scan counted on its way: files, bytes, cache use, what it skipped and why."""

    files: int = 0
    bytes: int = 0
    hashed: int = 0
    cache_hits: int = 0
    embedded: int = 0
    feature_requests: int = 0
    groups_reused: bool = False  # an unchanged library: the last scan's grouping, not redone
    symlinks_skipped: int = 0
    aliases_skipped: int = 0  # hard links and repeated/overlapping roots, counted once
    trash_skipped: int = 0
    dismissed: int = 0  # groups hidden by a remembered "not duplicates" / "keep all"
    groups: dict[str, int] = field(default_factory=dict)  # by kind
    reclaimable: int = 0  # bytes in members pre-marked DELETE


@dataclass(slots=True)
class ScanResult:
    """What one scan found: the groups to review, every photo, the files it could not use.
    The UI and the CLI show it; :mod:`photodup_tui.engine.report` writes it down."""

    groups: list[Group]
    photos: list[Photo]
    errors: list[tuple[str, str]]  # (path, reason)
    counts: ScanCounts
    elapsed: float
    model_id: str
    roots: list[str]
    cancelled: bool = False
    warnings: list[str] = field(default_factory=list)  # scan-wide problems, e.g. a lost daemon
