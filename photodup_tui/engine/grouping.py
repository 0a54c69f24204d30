"""Groups with verdicts users can trust: exact, near, similar, and why.

The unit of grouping is a *content*: all replicas with the same content hash (byte-identical
copies) travel together.  A group is a *family*: one keeper and what matches the keeper
itself, never only another member (no chaining: A~B and B~C with A!~C cannot put A and C
together via B).  Contents are visited best keeper first (keep rules):

1. ``near``: each unvisited content with unassigned ``near`` neighbours becomes a keeper and
   takes exactly those neighbours (and their byte-identical replicas).
2. ``exact``: byte-identical replicas that joined no near family form their own.
3. ``similar`` edits join the family of the keeper they match: a crop, a border or a mirror
   is shown beside its original and the original's re-encoded copies, marked KEEP.  Only
   single-replica contents join this way (a content with byte-identical copies keeps its own
   exact family, where those copies are deletable without review).
4. ``similar`` groups: the contents left over, keeper first, with their similar neighbours.

A member's verdict (``Member.verdict``) is its own relation to the keeper: byte-identical
(same content hash), near, or similar.  The group's kind is the weakest verdict among the
members the keep rules may mark (exact, or near when any is near); similar members ride
along and a group of only similar members is ``similar``.  Byte-identical and near
non-keepers are pre-marked DELETE; similar ones stay KEEP (rule 6); so do members in a
reference folder (rule 11) and the other half of a RAW+JPEG pair with the keeper unless
settings allow it.  Undecodable files have no features, so they never join by similarity
(rule 7).

Verdicts between two contents (thresholds per model id, see settings.py): ``near`` needs the
near cosine *and* the near pHash distance *and* the same aspect ratio (a re-encode or resize
keeps it, most crops do not) *and*, with a ``verify`` check, the same-picture pixel check
(same framing, exposure and colour: an evenly cut crop, a brightened or a grayscale copy is
demoted to a similar candidate, never pre-marked); ``similar`` needs the similar cosine and, with a ``verify``
check (the scanner always passes one), the same-shot pixel check (sameshot.py): an edit of
the keeper, not another shot of the same scene.  Without embeddings the pHash distances
alone nominate the candidates.
"""

from __future__ import annotations

import bisect
import tempfile
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from photodup_tui.engine.archive import ARCHIVE_LIMIT, archive_arrays, write_matrix
from photodup_tui.engine.keeprules import (
    KeepRules,
    dimensions,
    explain_resave,
    is_raw_jpeg_pair,
    may_be_resave,
)
from photodup_tui.engine.neighbours import (
    EXACT_LIMIT,
    Hits,
    Tick,
    hamming_arrays,
    neighbour_arrays,
)
from photodup_tui.engine.sameshot import SAME_PICTURE_MIN, SAME_SHOT_MIN
from photodup_tui.engine.settings import Thresholds
from photodup_tui.engine.types import Action, Group, Kind, Member, Photo

_KIND_ORDER = {Kind.EXACT: 0, Kind.NEAR: 1, Kind.SIMILAR: 2}
#: A keeper's best similar candidates (by cosine or pHash) get the pixel check, at most this
#: many: a burst of a thousand frames would otherwise ask about every one.
CHECKS_PER_KEEPER = 16
#: While a keeper's near checks run, the next keepers' are started, this many pairs ahead:
#: enough to keep the pixel checks' decoders busy between two keepers.
NEAR_AHEAD_PAIRS = 16


class Verify(Protocol):
    """The pixel checks (``SameShotChecker``)."""

    def prefetch(self, pairs: Sequence[tuple[Photo, Photo]], *, near: bool = False) -> None:
        """Get ready for any of these pairs (e.g. decode thumbnails in parallel)."""

    def __call__(self, pairs: Sequence[tuple[Photo, Photo]]) -> Sequence[float | None]:
        """Same-shot scores (an edit of the other?); None where a pair went unchecked."""

    def near(self, pairs: Sequence[tuple[Photo, Photo]]) -> Sequence[float | None]:
        """Same-picture scores (a re-encode of the other?); None where unchecked."""


class NearAhead(Protocol):
    """Optional on a ``Verify``: start the near checks of pairs the grouping will ask about
    soon, without waiting (``SameShotChecker.near_ahead``)."""

    def __call__(self, pairs: Sequence[tuple[Photo, Photo]]) -> None: ...


class ResaveCheck(Protocol):
    """Optional on a ``Verify``: is the first of each pair a lossless re-save of the second's
    pixels (``SameShotChecker.resaves``)?  None where it could not be told."""

    def __call__(self, pairs: Sequence[tuple[Photo, Photo]]) -> Sequence[bool | None]: ...


class ExpectSimilar(Protocol):
    """Optional on a ``Verify``: told, after the near pairs' prefetch and before their
    checks, how many similar candidate pairs the grouping has found
    (``SameShotChecker.expect_similar``), so that it can get ready for the similar checks
    while the near ones run."""

    def __call__(self, edges: int) -> None: ...


#: ``near`` needs the same aspect ratio within this fraction (pixel rounding of small resizes).
ASPECT_TOLERANCE = 0.02
#: A candidate pair's verdict while pairs are classified as arrays (``_classify``).
_NONE, _NEAR, _SIMILAR = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Match:
    """How one content relates to another."""

    kind: Kind
    phash_distance: int | None = None
    cosine: float | None = None
    same_shot: float | None = None  # the pixel check's score (similar verdicts only)

    def score(self) -> float:
        """Similarity in [0, 1]: cosine when we have one, else pHash agreement."""
        if self.kind is Kind.EXACT:
            return 1.0
        if self.cosine is not None:
            return round(self.cosine, 4)
        if self.phash_distance is not None:
            return round(1.0 - self.phash_distance / 64, 4)
        if self.same_shot is not None:  # nominated by a near copy: the pixels speak
            return round(self.same_shot, 4)
        return 0.0

    def describe(self) -> str:
        if self.kind is Kind.EXACT:
            return "byte-identical"
        parts = []
        if self.phash_distance is not None:
            parts.append(f"pHash distance {self.phash_distance}")
        if self.cosine is not None:
            parts.append(f"cosine {self.cosine:.3f}")
        if self.same_shot is not None:
            parts.append(f"same shot {self.same_shot:.2f}")
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
    exact_limit: int = EXACT_LIMIT,
    cancel: threading.Event | None = None,
    tick: Tick | None = None,
    verify: Verify | None = None,
    archive_limit: int = ARCHIVE_LIMIT,
    archive_dir: Path | None = None,
) -> list[Group]:
    """All duplicate groups among ``photos``; ``embeddings`` by path (any replica's).

    ``verify`` is the same-shot pixel check (``SameShotChecker``): with it, a ``similar``
    verdict also needs the pixels to agree after aligning (an edit, not another shot of the
    scene); without it the features alone decide.  ``cancel`` cuts the neighbour search
    short (the groups then rest on the pairs found so far); ``tick`` is called now and then
    during it, for progress reports.  Above ``archive_limit`` embeddings the neighbour
    search is the archive one (``archive.py``: the matrix on disk in ``archive_dir``, default
    the temp dir, read a pass at a time); below, nothing changes.
    """
    contents = _contents(photos, rules, embeddings)
    search = _Search(exact_limit, cancel, tick, archive_limit, archive_dir)
    edges = _edges(contents, thresholds, search)
    check = _Check(contents, edges, verify)
    assigned: set[int] = set()
    check.prefetch_near()
    check.expect_similar()
    families = _new_families(contents, check.near_to, assigned)  # 1. near, best keeper first
    check.prefer_originals(families)  # the original beats a lossless re-save of its pixels
    for content in contents:  # 2. exact
        if len(content.replicas) > 1 and content.index not in assigned:
            assigned.add(content.index)
            families.append(_Family(content, []))
    families.sort(key=lambda f: f.keeper.index)
    # Only keepers are ever asked about: family keepers, and the contents left over.
    keepers = [f.keeper for f in families]
    keepers += [c for c in contents if c.index not in assigned and len(c.replicas) == 1]
    check.nominate_via(families)
    check.prefetch(keepers, assigned)
    for family in families:  # 3. similar edits join the family of their original
        joining = check.similar_to(family.keeper, assigned)
        assigned.update(other.index for other, _ in joining)
        family.matched.extend(joining)
    singles = [c for c in contents if len(c.replicas) == 1]
    families += _new_families(singles, check.similar_to, assigned)  # 4. similar, what is left
    groups = [_build(f.keeper, f.matched, rules, delete_raw_jpeg_pairs, f.resave) for f in families]
    groups.sort(key=lambda g: (_KIND_ORDER[g.kind], -g.reclaimable, g.keeper_member.photo.path))
    return groups


@dataclass(slots=True)
class _Family:
    keeper: _Content
    matched: list[tuple[_Content, Match]] = field(default_factory=list)
    #: The content the keep rules preferred that turned out to be a lossless re-save of the
    #: keeper's pixels (``_Check.prefer_original``), if any.
    resave: _Content | None = None


def _new_families(
    candidates: Sequence[_Content],
    match: Callable[[_Content, set[int]], list[tuple[_Content, Match]]],
    assigned: set[int],
) -> list[_Family]:
    """Each unassigned candidate (best keeper first) that ``match`` finds unassigned
    partners for becomes a keeper with them; ``assigned`` grows with every family."""
    families = []
    for content in candidates:
        if content.index in assigned:
            continue
        matched = match(content, assigned)
        if matched:
            assigned.add(content.index)
            assigned.update(other.index for other, _ in matched)
            families.append(_Family(content, matched))
    return families


class _Check:
    """Similar candidates of a keeper, confirmed by the pixel check when there is one.

    Only (keeper, candidate) pairs are ever checked, and only when the grouping asks, so a
    family of twelve copies costs eleven checks, not sixty-six.
    """

    def __init__(
        self, contents: list[_Content], edges: list[dict[int, Match]], verify: Verify | None
    ) -> None:
        self.contents = contents
        self.edges = edges
        self.verify = verify
        #: Family keeper -> its near copies, whose similar neighbours are its candidates too.
        self.vias: dict[int, list[_Content]] = {}
        #: Each content's near candidates by index, as first classified (a check that
        #: refutes one turns its edge similar: :meth:`_near_of` reads the edge too).  The
        #: near checks walk these rows once per keeper and again for the keepers ahead:
        #: sorting and filtering every row there each time cost the icons half a second.
        self.near_rows = {
            i: near
            for i, row in enumerate(edges)
            if (near := sorted(j for j, m in row.items() if m.kind is Kind.NEAR))
        }
        #: The contents with near candidates, in the order they may become keepers.
        self.near_order = list(self.near_rows)

    def expect_similar(self) -> None:
        """Tell the checker how many similar candidate pairs there are (each counted once)."""
        expect: ExpectSimilar | None = getattr(self.verify, "expect_similar", None)
        if expect is not None:
            similar = sum(m.kind is Kind.SIMILAR for row in self.edges for m in row.values())
            expect(similar // 2)

    def nominate_via(self, families: Sequence[_Family]) -> None:
        """With the pixel check, a family's near copies nominate similar candidates for its
        keeper too: they are the same picture, and an edit the model puts a hair under the
        similar cosine from the keeper (0.650 vs 0.663 from the JPEG it was made from) is
        still an edit of it.  The same-shot check is always against the keeper itself."""
        if self.verify is None:
            return
        for family in families:
            near = [c for c, m in family.matched if m.kind is Kind.NEAR]
            if near:
                self.vias[family.keeper.index] = near

    def _candidates(self, keeper: _Content, assigned: set[int]) -> list[tuple[_Content, Match]]:
        found: dict[int, tuple[_Content, Match]] = {}
        for via in [keeper, *self.vias.get(keeper.index, [])]:
            for j, match in self.edges[via.index].items():  # strongest first
                other = self.contents[j]
                if j in assigned or j in found or j == keeper.index or len(other.replicas) != 1:
                    continue
                if via is not keeper:  # its features describe the copy, not the keeper
                    match = Match(Kind.SIMILAR)
                if match.kind is Kind.NEAR:
                    # Never proven near to this keeper (it took over from its lossless
                    # re-save, see prefer_original): at most a similar candidate.
                    match = replace(match, kind=Kind.SIMILAR)
                if match.kind is Kind.SIMILAR:
                    found[j] = (other, match)
                    if len(found) == CHECKS_PER_KEEPER:
                        return list(found.values())
        return list(found.values())

    def prefetch(self, keepers: Sequence[_Content], assigned: set[int]) -> None:
        """Hand the checker every pair it may be asked about, so it can work in parallel."""
        if self.verify is None:
            return
        pairs = [
            (keeper.best, other.best)
            for keeper in keepers
            for other, _ in self._candidates(keeper, assigned)
        ]
        if pairs:
            self.verify.prefetch(pairs)

    def prefetch_near(self) -> None:
        if self.verify is None:
            return
        pairs = [
            (self.contents[i].best, self.contents[j].best)
            for i, row in enumerate(self.edges)
            for j, match in row.items()
            if i < j and match.kind is Kind.NEAR
        ]
        if pairs:
            self.verify.prefetch(pairs, near=True)

    def near_to(self, keeper: _Content, assigned: set[int]) -> list[tuple[_Content, Match]]:
        """The keeper's unassigned near candidates that the pixels confirm as re-encodes of
        it; the others become similar candidates (an edit that kept the aspect ratio)."""
        row = self.edges[keeper.index]
        candidates = [(self.contents[j], row[j]) for j in self._near_of(keeper.index, assigned)]
        if self.verify is None or not candidates:
            return candidates
        pairs = [(keeper.best, other.best) for other, _ in candidates]
        ahead: NearAhead | None = getattr(self.verify, "near_ahead", None)
        if ahead is not None:  # this keeper's pairs first, then the next keepers'
            claimed = {keeper.index, *(other.index for other, _ in candidates)}
            ahead([*pairs, *self._next_near(keeper, assigned, claimed)])
        scores = self.verify.near(pairs)
        confirmed = []
        for (other, match), value in zip(candidates, scores, strict=True):
            if value is not None and value >= SAME_PICTURE_MIN:
                confirmed.append((other, match))
            else:
                weaker = replace(match, kind=Kind.SIMILAR)
                self.edges[keeper.index][other.index] = weaker
                self.edges[other.index][keeper.index] = weaker
        return confirmed

    def _next_near(
        self, keeper: _Content, assigned: set[int], claimed: set[int]
    ) -> list[tuple[Photo, Photo]]:
        """The near pairs the next keepers will ask about (up to NEAR_AHEAD_PAIRS), whatever
        this keeper's checks say: a content that may yet join an earlier keeper's family
        (``claimed``: its near candidates, and theirs) is neither a next keeper nor anyone's
        next candidate, so no check started here is wasted."""
        pairs: list[tuple[Photo, Photo]] = []
        start = bisect.bisect_right(self.near_order, keeper.index)
        # Bounded: a walk past contents whose candidates are all taken costs little, but
        # it must not grow with the library.
        for i in self.near_order[start : start + 4 * NEAR_AHEAD_PAIRS]:
            if i in assigned:
                continue
            near = self._near_of(i, assigned)
            if i not in claimed:
                first = self.contents[i].best
                pairs += [(first, self.contents[j].best) for j in near if j not in claimed]
            claimed.add(i)
            claimed.update(near)
            if len(pairs) >= NEAR_AHEAD_PAIRS:
                break
        return pairs

    def _near_of(self, i: int, assigned: set[int]) -> list[int]:
        """Content ``i``'s unassigned near candidates (still near: not refuted), by index."""
        row = self.edges[i]
        return [
            j for j in self.near_rows.get(i, ()) if j not in assigned and row[j].kind is Kind.NEAR
        ]

    def prefer_originals(self, families: Sequence[_Family]) -> None:
        """A keeper that is a lossless re-save (PNG, TIFF) of a near copy's pixels (a JPEG)
        holds nothing the copy does not, and the copy is the original, with its EXIF and
        capture date: the copy becomes the keeper.  The pixels must be equal (decoded at full
        size, ``SameShotChecker.resaves``); the facts only choose whom to ask about.  Every
        family's question goes in one call, so the decoders answer them side by side."""
        resaves: ResaveCheck | None = getattr(self.verify, "resaves", None)
        if resaves is None:
            return
        asked = [
            (family, content, match)
            for family in families
            for content, match in family.matched  # best keeper first
            if match.kind is Kind.NEAR and may_be_resave(family.keeper.best, content.best)
        ]
        if not asked:
            return
        answers = resaves([(family.keeper.best, content.best) for family, content, _ in asked])
        swapped: set[int] = set()
        for (family, content, match), resave in zip(asked, answers, strict=True):
            if resave and id(family) not in swapped:  # the first original found wins
                swapped.add(id(family))
                family.matched.remove((content, match))
                family.matched.insert(0, (family.keeper, match))
                family.resave, family.keeper = family.keeper, content

    def similar_to(self, keeper: _Content, assigned: set[int]) -> list[tuple[_Content, Match]]:
        candidates = self._candidates(keeper, assigned)
        if self.verify is None or not candidates:
            return sorted(candidates, key=lambda cm: cm[0].index)
        scores = self.verify([(keeper.best, other.best) for other, _ in candidates])
        confirmed = [
            (other, replace(match, same_shot=round(value, 4)))
            for (other, match), value in zip(candidates, scores, strict=True)
            if value is not None and value >= SAME_SHOT_MIN
        ]
        return sorted(confirmed, key=lambda cm: cm[0].index)


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
    clusters = [c if len(c) == 1 else rules.rank(c) for c in [*by_hash.values(), *singles]]
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


@dataclass(frozen=True, slots=True)
class _Search:
    """How the neighbour search runs (``group_photos``'s options)."""

    exact_limit: int
    cancel: threading.Event | None
    tick: Tick | None
    archive_limit: int
    archive_dir: Path | None

    def cosines(self, vectors: Sequence[np.ndarray], floor: float) -> Hits:
        if len(vectors) <= self.archive_limit:
            matrix = np.stack(vectors)
            return neighbour_arrays(
                matrix, floor, self.exact_limit, cancel=self.cancel, tick=self.tick
            )
        # An archive: one float16 file instead of a stacked copy in memory.
        with tempfile.TemporaryDirectory(prefix="photodup-", dir=self.archive_dir) as folder:
            matrix = write_matrix(vectors, Path(folder) / "embeddings.f16")
            return archive_arrays(matrix, floor, cancel=self.cancel, tick=self.tick)


def _edges(
    contents: list[_Content], thresholds: Thresholds, search: _Search
) -> list[dict[int, Match]]:
    """For each content, its near/similar neighbours (both directions), strongest first
    (``Match.score``, then lower index): the order a keeper's candidates are checked in.

    Candidate pairs come as arrays and are classified as arrays: a library whose photos
    all look alike has dozens of candidates per photo, and a Python step per pair would
    cost seconds at 20,000 photos."""
    hashes = [_phash(c) for c in contents]
    cosine_floor = min(
        (t for t in (thresholds.near_cosine, thresholds.similar_cosine) if t is not None),
        default=None,
    )
    if cosine_floor is not None:
        with_vectors = [
            c for c in contents if c.embedding is not None and c.best.decodable is not False
        ]
        if len(with_vectors) < 2:
            return [{} for _ in contents]
        vectors = [c.embedding for c in with_vectors if c.embedding is not None]
        a, b, scores = search.cosines(vectors, cosine_floor)
        index = np.array([c.index for c in with_vectors], dtype=np.int64)
        i, j = index[a], index[b]
        cosines: np.ndarray | None = scores.astype(np.float64)  # compared as Python did
        distances = _distances(hashes, i, j)
    else:
        limit = max(
            (t for t in (thresholds.near_phash, thresholds.similar_phash) if t is not None),
            default=None,
        )
        hashed = np.array([c.index for c in contents if hashes[c.index] is not None], np.int64)
        if limit is None or len(hashed) < 2:
            return [{} for _ in contents]
        values = np.array([hashes[k] for k in hashed.tolist()], dtype=np.uint64)
        a, b, distances = hamming_arrays(values, limit, cancel=search.cancel, tick=search.tick)
        i, j = hashed[a], hashed[b]
        cosines = None
    kinds = _classify(thresholds, distances, cosines, _same_shape(contents, i, j))
    return _ranked_edges(len(contents), i, j, kinds, distances, cosines)


def _distances(hashes: list[int | None], i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """pHash distance of each pair, -1 where either photo has no hash."""
    known = np.array([h is not None for h in hashes], dtype=bool)
    values = np.array([h or 0 for h in hashes], dtype=np.uint64)
    distances = np.bitwise_count(values[i] ^ values[j]).astype(np.int64)
    distances[~(known[i] & known[j])] = -1
    return distances


def _same_shape(contents: list[_Content], i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Re-encodes, resizes and re-formats keep the aspect ratio; crops do not.  A pair
    whose pixel size is unknown on either side counts as the same shape (the hashes decide).
    """
    ratio = np.full(len(contents), np.nan)
    for content in contents:
        best = content.best
        if best.width and best.height:
            ratio[content.index] = best.width / best.height
    ra, rb = ratio[i], ratio[j]
    with np.errstate(invalid="ignore"):
        close = np.abs(ra - rb) <= ASPECT_TOLERANCE * np.maximum(ra, rb)
    return close | np.isnan(ra) | np.isnan(rb)


def _classify(
    t: Thresholds, distances: np.ndarray, cosines: np.ndarray | None, same_shape: np.ndarray
) -> np.ndarray:
    """The verdict of each pair: ``_NEAR``, ``_SIMILAR`` or ``_NONE`` (see the module doc)."""
    known = distances >= 0
    if cosines is not None:
        phash_ok = True if t.near_phash is None else known & (distances <= t.near_phash)
        near = np.zeros(len(distances), bool)
        if t.near_cosine is not None:
            near = (cosines >= t.near_cosine) & phash_ok & same_shape
        similar = np.zeros(len(distances), bool)
        if t.similar_cosine is not None:
            similar = ~near & (cosines >= t.similar_cosine)
    else:
        near = np.zeros(len(distances), bool)
        if t.near_phash is not None:
            near = known & (distances <= t.near_phash) & same_shape
        similar = np.zeros(len(distances), bool)
        if t.similar_phash is not None:
            similar = ~near & known & (distances <= t.similar_phash)
    kinds = np.full(len(distances), _NONE, dtype=np.int8)
    kinds[near] = _NEAR
    kinds[similar] = _SIMILAR
    return kinds


def _ranked_edges(
    count: int,
    i: np.ndarray,
    j: np.ndarray,
    kinds: np.ndarray,
    distances: np.ndarray,
    cosines: np.ndarray | None,
) -> list[dict[int, Match]]:
    """Both directions of every matching pair, each row strongest first (then by index)."""
    edges: list[dict[int, Match]] = [{} for _ in range(count)]
    keep = np.flatnonzero(kinds != _NONE)
    if not len(keep):
        return edges
    i, j, kinds, distances = i[keep], j[keep], kinds[keep], distances[keep]
    kind_of = {_NEAR: Kind.NEAR, _SIMILAR: Kind.SIMILAR}
    distance_list = [None if d < 0 else d for d in distances.tolist()]
    unknown: list[float | None] = [None] * len(keep)
    cosine_list = cosines[keep].tolist() if cosines is not None else unknown
    matches = [
        Match(kind_of[k], d, c)
        for k, d, c in zip(kinds.tolist(), distance_list, cosine_list, strict=True)
    ]
    strength = np.array([m.score() for m in matches])  # as the checks rank them
    rows, others = np.concatenate([i, j]), np.concatenate([j, i])
    order = np.lexsort((others, -np.concatenate([strength, strength]), rows))
    pair_of = order % len(keep)
    for row, other, pair in zip(
        rows[order].tolist(), others[order].tolist(), pair_of.tolist(), strict=True
    ):
        edges[row][other] = matches[pair]
    return edges


def _build(
    keeper_content: _Content,
    matched: list[tuple[_Content, Match]],
    rules: KeepRules,
    delete_raw_jpeg_pairs: bool,
    resave: _Content | None = None,
) -> Group:
    keeper = keeper_content.best
    exact = Match(Kind.EXACT)
    relations: list[tuple[Photo, Match]] = [(p, exact) for p in keeper_content.replicas]
    for content, match in matched:
        relations.extend((p, match) for p in content.replicas)
    members: list[Member] = []
    scores: dict[str, float] = {}
    resave_why = explain_resave(resave.best) if resave is not None else ""
    # The keeper is explained against the copies it competes with, not the edits beside it.
    rivals = [p for p, m in relations if p is not keeper and m.kind is not Kind.SIMILAR]
    others = rules.rank(rivals or [p for p, _ in relations if p is not keeper])
    runner_up = others[0] if others else keeper
    for photo, match in relations:
        scores[photo.path] = match.score()
        if photo is keeper:
            why = rules.explain(keeper, runner_up) if resave is None else None
            members.append(Member(photo, Action.KEEP, f"keeper: {why or resave_why}"))
            continue
        resaved = resave is not None and photo in resave.replicas
        member = _member(photo, keeper, match, rules, delete_raw_jpeg_pairs, resaved)
        member.verdict = match.kind
        members.append(member)
    # The kind is what the keep rules may act on: similar members ride along, never marked.
    markable = [m.kind for p, m in relations if p is not keeper and m.kind is not Kind.SIMILAR]
    kind = max(markable, key=_KIND_ORDER.__getitem__) if markable else Kind.SIMILAR
    return Group(
        kind=kind, members=members, reason=_reason(keeper, relations), keeper=0, scores=scores
    )


def _member(
    photo: Photo,
    keeper: Photo,
    match: Match,
    rules: KeepRules,
    delete_raw_jpeg_pairs: bool,
    resaved: bool = False,
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
    if resaved:
        why = "the original (this file is a lossless re-save of its pixels: it holds nothing more)"
    else:
        why = rules.explain(keeper, photo)
    return Member(photo, Action.DELETE, f"{relation}; keeper wins: {why}")


def _reason(keeper: Photo, relations: list[tuple[Photo, Match]]) -> str:
    others = [(p, m) for p, m in relations if p is not keeper]
    similar = [(p, m) for p, m in others if m.kind is Kind.SIMILAR]
    markable = [(p, m) for p, m in others if m.kind is not Kind.SIMILAR]
    told = markable or similar
    inexact = [(p, m) for p, m in told if m.kind is not Kind.EXACT]
    if not inexact:
        text = "byte-identical"
    else:
        photo, match = min(inexact, key=lambda pm: pm[1].score())
        text = f"{match.describe()}, {dimensions(keeper)} vs {dimensions(photo)}"
        if keeper.taken != photo.taken:
            text += f", taken {keeper.taken or 'no date'} vs {photo.taken or 'no date'}"
        elif keeper.taken is not None:
            text += ", same capture time"
        if len(told) > 1:
            text += f" (weakest of {len(told)} matches)"
    if markable and similar:
        edits = "edit" if len(similar) == 1 else "edits"
        text += f"; {len(similar)} similar {edits} beside it, kept"
    return text
