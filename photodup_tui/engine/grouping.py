"""Groups with verdicts users can trust: exact, near, similar, and why.

The unit of grouping is a *content*: all replicas with the same content hash (byte-identical
copies) travel together.  Then:

1. ``near`` pass: contents are visited best keeper first (keep rules); each unvisited content
   with unassigned ``near`` neighbours becomes a keeper and takes exactly those neighbours.
   Every member therefore matches the keeper itself, never only another member (no
   chaining: A~B and B~C with A!~C cannot put A and C together via B).
2. ``similar`` pass: the same over the contents left that have a single replica, with
   ``similar`` edges.  Byte-identical copies are settled first (step 3), so a photo is never
   in two groups and a similar group never holds anything pre-marked for deletion.
3. ``exact``: byte-identical replicas that joined no near group form their own group.

A member's verdict is its own relation to the keeper: byte-identical (same content hash),
near, or similar; the group's kind is the weakest verdict in it (a near group may hold
byte-identical copies of its members).  Byte-identical and near non-keepers are pre-marked
DELETE; similar ones stay KEEP (rule 6); so do members in a reference folder (rule 11) and
the other half of a RAW+JPEG pair with the keeper unless settings allow it.
Undecodable files have no features, so they never join by similarity (rule 7).

Verdicts between two contents (thresholds per model id, see settings.py): ``near`` needs the
near cosine *and* the near pHash distance *and* the same aspect ratio (a re-encode or resize
keeps it, a crop does not); ``similar`` needs the similar cosine.  Without embeddings the
pHash distances alone decide.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from photodup_tui.engine.keeprules import KeepRules, dimensions, is_raw_jpeg_pair
from photodup_tui.engine.neighbours import (
    EXACT_LIMIT,
    Tick,
    hamming,
    hamming_pairs,
    neighbours,
)
from photodup_tui.engine.settings import Thresholds
from photodup_tui.engine.types import Action, Group, Kind, Member, Photo

_KIND_ORDER = {Kind.EXACT: 0, Kind.NEAR: 1, Kind.SIMILAR: 2}
#: ``near`` needs the same aspect ratio within this fraction (pixel rounding of small resizes).
ASPECT_TOLERANCE = 0.02


@dataclass(frozen=True, slots=True)
class Match:
    """How one content relates to another."""

    kind: Kind
    phash_distance: int | None = None
    cosine: float | None = None

    def score(self) -> float:
        """Similarity in [0, 1]: cosine when we have one, else pHash agreement."""
        if self.kind is Kind.EXACT:
            return 1.0
        if self.cosine is not None:
            return round(self.cosine, 4)
        if self.phash_distance is not None:
            return round(1.0 - self.phash_distance / 64, 4)
        return 0.0

    def describe(self) -> str:
        if self.kind is Kind.EXACT:
            return "byte-identical"
        parts = []
        if self.phash_distance is not None:
            parts.append(f"pHash distance {self.phash_distance}")
        if self.cosine is not None:
            parts.append(f"cosine {self.cosine:.3f}")
        return ", ".join(parts)


class _Content:
    """Byte-identical replicas; the first is the best keeper among them."""

    __slots__ = ("embedding", "index", "replicas")

    def __init__(self, index: int, replicas: list[Photo]) -> None:
        self.index = index
        self.replicas = replicas
        self.embedding: np.ndarray | None = None

    @property
    def best(self) -> Photo:
        return self.replicas[0]


def group_photos(
    photos: Sequence[Photo],
    embeddings: Mapping[str, np.ndarray],
    thresholds: Thresholds,
    rules: KeepRules,
    *,
    delete_raw_jpeg_pairs: bool = False,
    k: int = 32,
    exact_limit: int = EXACT_LIMIT,
    cancel: threading.Event | None = None,
    tick: Tick | None = None,
) -> list[Group]:
    """All duplicate groups among ``photos``; ``embeddings`` by path (any replica's).

    ``cancel`` cuts the neighbour search short (the groups then rest on the pairs found so
    far); ``tick`` is called now and then during it, for progress reports.
    """
    contents = _contents(photos, rules, embeddings)
    edges = _edges(contents, thresholds, k, exact_limit, cancel, tick)
    assigned: set[int] = set()
    groups: list[Group] = []
    for kind in (Kind.NEAR, Kind.SIMILAR):
        if kind is Kind.SIMILAR:
            # Byte-identical copies settle as an exact group first (deletable without review);
            # their similar matches show up once the copies are gone.
            assigned.update(c.index for c in contents if len(c.replicas) > 1)
        for content in contents:  # best keeper first
            if content.index in assigned:
                continue
            matched = [
                (contents[j], match)
                for j, match in sorted(edges[content.index].items())
                if match.kind is kind and j not in assigned
            ]
            if not matched:
                continue
            assigned.add(content.index)
            assigned.update(other.index for other, _ in matched)
            groups.append(_build(content, matched, rules, delete_raw_jpeg_pairs))
    grouped = {m.photo.path for g in groups for m in g.members}
    for content in contents:
        if len(content.replicas) > 1 and content.best.path not in grouped:
            groups.append(_build(content, [], rules, delete_raw_jpeg_pairs))
    groups.sort(key=lambda g: (_KIND_ORDER[g.kind], -g.reclaimable, g.keeper_member.photo.path))
    return groups


def _contents(
    photos: Sequence[Photo], rules: KeepRules, embeddings: Mapping[str, np.ndarray]
) -> list[_Content]:
    by_hash: dict[str, list[Photo]] = defaultdict(list)
    singles: list[list[Photo]] = []
    for photo in photos:
        if photo.content_hash is None:
            singles.append([photo])
        else:
            by_hash[photo.content_hash].append(photo)
    clusters = [rules.rank(c) for c in [*by_hash.values(), *singles]]
    clusters.sort(key=lambda c: rules.key(c[0]))
    contents = [_Content(i, c) for i, c in enumerate(clusters)]
    for content in contents:
        content.embedding = next(
            (embeddings[p.path] for p in content.replicas if p.path in embeddings), None
        )
    return contents


def _phash(content: _Content) -> int | None:
    # Only decodable files carry features (rule 7): nothing else may match by similarity.
    return next(
        (p.phash for p in content.replicas if p.phash is not None and p.decodable is not False),
        None,
    )


def _edges(
    contents: list[_Content],
    thresholds: Thresholds,
    k: int,
    exact_limit: int,
    cancel: threading.Event | None,
    tick: Tick | None,
) -> list[dict[int, Match]]:
    """For each content, its near/similar neighbours (both directions)."""
    edges: list[dict[int, Match]] = [{} for _ in contents]
    hashes = [_phash(c) for c in contents]
    cosine_floor = min(
        (t for t in (thresholds.near_cosine, thresholds.similar_cosine) if t is not None),
        default=None,
    )
    if cosine_floor is not None:
        with_vectors = [
            c for c in contents if c.embedding is not None and c.best.decodable is not False
        ]
        if len(with_vectors) > 1:
            matrix = np.stack([c.embedding for c in with_vectors if c.embedding is not None])
            pairs = neighbours(matrix, cosine_floor, k, exact_limit, cancel=cancel, tick=tick)
            for a, b, cosine in pairs:
                i, j = with_vectors[a].index, with_vectors[b].index
                ha, hb = hashes[i], hashes[j]
                distance = hamming(ha, hb) if ha is not None and hb is not None else None
                shape = _same_shape(contents[i].best, contents[j].best)
                match = _classify(thresholds, distance, cosine, shape)
                if match is not None:
                    edges[i][j] = edges[j][i] = match
        return edges
    limit = max(
        (t for t in (thresholds.near_phash, thresholds.similar_phash) if t is not None),
        default=None,
    )
    if limit is None:
        return edges
    hashed = [c.index for c in contents if hashes[c.index] is not None]
    values = np.array([hashes[i] for i in hashed], dtype=np.uint64)
    for a, b, distance in hamming_pairs(values, limit, cancel=cancel, tick=tick):
        i, j = hashed[a], hashed[b]
        match = _classify(
            thresholds, distance, None, _same_shape(contents[i].best, contents[j].best)
        )
        if match is not None:
            edges[i][j] = edges[j][i] = match
    return edges


def _same_shape(a: Photo, b: Photo) -> bool:
    """Re-encodes, resizes and re-formats keep the aspect ratio; crops do not."""
    if not (a.width and a.height and b.width and b.height):
        return True  # unknown: let the hashes decide
    ratio_a, ratio_b = a.width / a.height, b.width / b.height
    return abs(ratio_a - ratio_b) <= ASPECT_TOLERANCE * max(ratio_a, ratio_b)


def _classify(
    t: Thresholds, distance: int | None, cosine: float | None, same_shape: bool
) -> Match | None:
    if cosine is not None:
        phash_ok = t.near_phash is None or (distance is not None and distance <= t.near_phash)
        if t.near_cosine is not None and cosine >= t.near_cosine and phash_ok and same_shape:
            return Match(Kind.NEAR, distance, cosine)
        if t.similar_cosine is not None and cosine >= t.similar_cosine:
            return Match(Kind.SIMILAR, distance, cosine)
        return None
    if distance is None:
        return None
    if t.near_phash is not None and distance <= t.near_phash and same_shape:
        return Match(Kind.NEAR, distance, None)
    if t.similar_phash is not None and distance <= t.similar_phash:
        return Match(Kind.SIMILAR, distance, None)
    return None


def _build(
    keeper_content: _Content,
    matched: list[tuple[_Content, Match]],
    rules: KeepRules,
    delete_raw_jpeg_pairs: bool,
) -> Group:
    keeper = keeper_content.best
    exact = Match(Kind.EXACT)
    relations: list[tuple[Photo, Match]] = [(p, exact) for p in keeper_content.replicas]
    for content, match in matched:
        relations.extend((p, match) for p in content.replicas)
    members: list[Member] = []
    scores: dict[str, float] = {}
    others = rules.rank([p for p, _ in relations if p is not keeper])
    runner_up = others[0] if others else keeper
    for photo, match in relations:
        scores[photo.path] = match.score()
        if photo is keeper:
            members.append(
                Member(photo, Action.KEEP, f"keeper: {rules.explain(keeper, runner_up)}")
            )
            continue
        members.append(_member(photo, keeper, match, rules, delete_raw_jpeg_pairs))
    kind = max((m for _, m in relations), key=lambda m: _KIND_ORDER[m.kind]).kind
    return Group(
        kind=kind, members=members, reason=_reason(keeper, relations), keeper=0, scores=scores
    )


def _member(
    photo: Photo, keeper: Photo, match: Match, rules: KeepRules, delete_raw_jpeg_pairs: bool
) -> Member:
    relation = match.describe()
    if match.kind is Kind.EXACT:
        relation = "byte-identical to the keeper"
    elif match.kind is Kind.NEAR:
        relation = f"near duplicate of the keeper ({relation})"
    else:
        relation = f"similar to the keeper ({relation})"
    if photo.reference:
        return Member(photo, Action.KEEP, f"{relation}; kept: in a reference folder")
    if match.kind is Kind.SIMILAR:
        return Member(photo, Action.KEEP, f"{relation}; similar photos are only shown, you decide")
    if is_raw_jpeg_pair(photo, keeper) and not delete_raw_jpeg_pairs:
        return Member(photo, Action.KEEP, f"{relation}; kept: RAW+JPEG pair with the keeper")
    return Member(photo, Action.DELETE, f"{relation}; keeper wins: {rules.explain(keeper, photo)}")


def _reason(keeper: Photo, relations: list[tuple[Photo, Match]]) -> str:
    others = [(p, m) for p, m in relations if p is not keeper]
    inexact = [(p, m) for p, m in others if m.kind is not Kind.EXACT]
    if not inexact:
        return "byte-identical"
    photo, match = min(inexact, key=lambda pm: pm[1].score())
    text = f"{match.describe()}, {dimensions(keeper)} vs {dimensions(photo)}"
    if keeper.taken != photo.taken:
        text += f", taken {keeper.taken or 'no date'} vs {photo.taken or 'no date'}"
    elif keeper.taken is not None:
        text += ", same capture time"
    if len(others) > 1:
        text += f" (weakest of {len(others)} matches)"
    return text
