"""Grouping on constructed features: verdicts, actions, and no chaining."""

from __future__ import annotations

import numpy as np

from photodup_tui.engine.grouping import CHECKS_PER_KEEPER, group_photos
from photodup_tui.engine.keeprules import KeepRules
from photodup_tui.engine.settings import LOCAL_MODEL_ID, ScanSettings, Thresholds
from photodup_tui.engine.types import Action, Group, Kind, Photo
from tests.engine.helpers import angle_for, photo, unit_at

MODEL = Thresholds(near_cosine=0.90, near_phash=10, similar_cosine=0.80, similar_phash=None)
SETTINGS = ScanSettings()
RULES = KeepRules(SETTINGS)


def run(
    photos: list[Photo],
    embeddings: dict[str, np.ndarray] | None = None,
    thresholds: Thresholds = MODEL,
    **options: object,
) -> list[Group]:
    return group_photos(photos, embeddings or {}, thresholds, RULES, **options)  # type: ignore[arg-type]


def paths(group: Group) -> set[str]:
    return {m.photo.path for m in group.members}


def action_of(group: Group, path: str) -> Action:
    return next(m.action for m in group.members if m.photo.path == path)


def test_no_chaining_through_a_middle_photo() -> None:
    step = angle_for(0.93)  # A~B and B~C at cosine 0.93; A~C at cos(2*step) ~ 0.73
    a = photo("/p/a.jpg", width=6000, height=4500)  # best keeper
    b = photo("/p/b.jpg", width=4000, height=3000)
    c = photo("/p/c.jpg", width=2000, height=1500)
    vectors = {"/p/a.jpg": unit_at(0), "/p/b.jpg": unit_at(step), "/p/c.jpg": unit_at(2 * step)}
    assert float(vectors["/p/a.jpg"] @ vectors["/p/c.jpg"]) < 0.80
    groups = run([a, b, c], vectors)
    assert [paths(g) for g in groups] == [{"/p/a.jpg", "/p/b.jpg"}]
    assert groups[0].keeper_member.photo is a


def test_every_member_matches_its_keeper_on_random_data() -> None:
    rng = np.random.default_rng(7)
    photos, vectors = [], {}
    centres = rng.normal(size=(40, 16))
    for i in range(400):
        v = centres[i % 40] + rng.uniform(0.2, 0.8) * rng.normal(size=16)
        path = f"/r/{i:03d}.jpg"
        vectors[path] = (v / np.linalg.norm(v)).astype(np.float32)
        photos.append(
            photo(path, width=int(rng.integers(500, 5000)), phash=int(rng.integers(0, 4)))
        )
    groups = run(photos, vectors)
    assert len(groups) > 10
    seen: set[str] = set()
    for group in groups:
        keeper = group.keeper_member.photo
        for member in group.members:
            assert member.photo.path not in seen  # one group per photo
            seen.add(member.photo.path)
            if member.photo is not keeper:
                cosine = float(vectors[keeper.path] @ vectors[member.photo.path])
                assert cosine >= MODEL.similar_cosine - 1e-6  # type: ignore[operator]
        # The keeper is the best of the copies it competes with; an edit beside them (a
        # bordered copy has more pixels) never takes its place.
        core = [m.photo for m in group.members if m.verdict is not Kind.SIMILAR]
        assert RULES.rank(core)[0] is keeper


def test_exact_group_from_content_hash_alone() -> None:
    a = photo("/p/a.jpg", content_hash="h1", phash=None, decodable=None)
    b = photo("/p/copy/a.jpg", content_hash="h1", phash=None, decodable=None)
    c = photo("/p/c.jpg", content_hash="h2", phash=None, decodable=None)
    (group,) = run([a, b, c])
    assert group.kind is Kind.EXACT
    assert group.reason == "byte-identical"
    assert paths(group) == {"/p/a.jpg", "/p/copy/a.jpg"}
    assert group.keeper_member.photo is a  # shorter path
    assert action_of(group, "/p/copy/a.jpg") is Action.DELETE
    assert group.scores == {"/p/a.jpg": 1.0, "/p/copy/a.jpg": 1.0}


def test_near_delete_and_similar_keep_with_reasons() -> None:
    near_angle, similar_angle = angle_for(0.97), angle_for(0.85)
    keeper = photo("/p/k.jpg", phash=0b0, taken="2021-06-01T12:00:00")
    resized = photo(
        "/p/small.jpg", width=2000, height=1500, phash=0b111, taken="2021-06-01T12:00:00"
    )
    edited = photo("/q/crop.jpg", width=3000, height=2000, phash=(1 << 40) - 1)
    vectors = {
        "/p/k.jpg": unit_at(0),
        "/p/small.jpg": unit_at(near_angle),
        "/q/crop.jpg": unit_at(-similar_angle),
    }
    (near,) = run([keeper, resized], vectors)
    assert near.kind is Kind.NEAR
    assert (
        near.reason == "pHash distance 3, cosine 0.970, 4000x3000 vs 2000x1500, same capture time"
    )
    assert action_of(near, "/p/small.jpg") is Action.DELETE
    assert "higher resolution" in near.members[1].why
    (similar,) = run([keeper, edited], vectors)
    assert similar.kind is Kind.SIMILAR
    assert action_of(similar, "/q/crop.jpg") is Action.KEEP  # rule 6
    assert "cosine 0.850" in similar.reason
    assert "taken 2021-06-01T12:00:00 vs no date" in similar.reason


def test_high_cosine_but_far_phash_is_only_similar() -> None:
    a = photo("/p/a.jpg", phash=0)
    b = photo("/p/b.jpg", phash=(1 << 20) - 1, width=100, height=100)
    vectors = {"/p/a.jpg": unit_at(0), "/p/b.jpg": unit_at(angle_for(0.95))}
    (group,) = run([a, b], vectors)
    assert group.kind is Kind.SIMILAR
    assert all(m.action is Action.KEEP for m in group.members)


def test_undecodable_files_never_group_by_similarity() -> None:
    good = photo("/p/good.jpg")
    bad = photo("/p/bad.jpg", decodable=False, width=None, height=None, phash=0)
    vectors = {"/p/good.jpg": unit_at(0), "/p/bad.jpg": unit_at(0)}
    assert run([good, bad], vectors) == []
    assert run([good, bad], {}, thresholds=ScanSettings().thresholds_for(LOCAL_MODEL_ID)) == []


def test_undecodable_byte_identical_files_still_form_an_exact_group() -> None:
    a = photo("/p/a.jpg", decodable=False, content_hash="h", phash=None)
    b = photo("/p/b.jpg", decodable=False, content_hash="h", phash=None)
    (group,) = run([a, b])
    assert group.kind is Kind.EXACT


def test_near_group_carries_byte_identical_copies_of_its_members() -> None:
    keeper = photo("/p/big.jpg", width=6000, height=4500)
    small = photo("/p/small.jpg", width=1000, height=750, content_hash="s")
    small_copy = photo("/backup/small.jpg", width=1000, height=750, content_hash="s")
    keeper_copy = photo(
        "/backup/big.jpg", width=6000, height=4500, content_hash="content-of-/p/big.jpg"
    )
    vectors = {"/p/big.jpg": unit_at(0), "/p/small.jpg": unit_at(5)}
    groups = run([keeper, small, small_copy, keeper_copy], vectors)
    assert len(groups) == 1
    (group,) = groups
    assert group.kind is Kind.NEAR
    assert group.keeper_member.photo is keeper  # same on every rule but the shorter path
    assert paths(group) == {"/p/big.jpg", "/backup/big.jpg", "/p/small.jpg", "/backup/small.jpg"}
    assert [m.photo for m in group.members if m.action is Action.KEEP] == [keeper]
    whys = {m.photo.path: m.why for m in group.members}
    assert whys["/backup/big.jpg"].startswith("byte-identical to the keeper")
    assert whys["/backup/small.jpg"].startswith("near duplicate of the keeper")


def test_a_similar_edit_joins_its_originals_exact_family_unmarked() -> None:
    a = photo("/p/a.jpg", content_hash="h")
    a_copy = photo("/q/a.jpg", content_hash="h")
    edit = photo("/p/edit.jpg", phash=(1 << 30) - 1)
    vectors = {
        "/p/a.jpg": unit_at(0),
        "/q/a.jpg": unit_at(0),
        "/p/edit.jpg": unit_at(angle_for(0.85)),
    }
    (group,) = run([a, a_copy, edit], vectors)
    # Still an exact group: what the rules may mark is byte-identical; the edit rides along.
    assert group.kind is Kind.EXACT
    assert paths(group) == {"/p/a.jpg", "/q/a.jpg", "/p/edit.jpg"}
    verdicts = {m.photo.path: (m.verdict, m.action) for m in group.members}
    assert verdicts["/q/a.jpg"] == (Kind.EXACT, Action.DELETE)
    assert verdicts["/p/edit.jpg"] == (Kind.SIMILAR, Action.KEEP)
    assert group.reason == "byte-identical; 1 similar edit beside it, kept"


def test_a_content_with_byte_identical_copies_keeps_its_own_exact_group() -> None:
    # Its copies are deletable without review; joining another family as a mere "similar"
    # member would hide that.
    original = photo("/p/a.jpg", width=4000, height=3000)
    edit = photo("/p/edit.jpg", content_hash="e", phash=(1 << 30) - 1)
    edit_copy = photo("/q/edit.jpg", content_hash="e", phash=(1 << 30) - 1)
    vectors = {
        "/p/a.jpg": unit_at(0),
        "/p/edit.jpg": unit_at(angle_for(0.85)),
        "/q/edit.jpg": unit_at(angle_for(0.85)),
    }
    (group,) = run([original, edit, edit_copy], vectors)
    assert group.kind is Kind.EXACT
    verdicts = {m.photo.path: (m.verdict, m.action) for m in group.members}
    assert verdicts == {
        "/p/edit.jpg": (None, Action.KEEP),
        "/q/edit.jpg": (Kind.EXACT, Action.DELETE),
        "/p/a.jpg": (Kind.SIMILAR, Action.KEEP),  # shown beside it, never marked
    }


def test_reference_members_are_never_marked_delete() -> None:
    ref1 = photo("/archive/a.jpg", reference=True, content_hash="h", width=400, height=300)
    ref2 = photo("/archive/old/a.jpg", reference=True, content_hash="h", width=400, height=300)
    big = photo("/inbox/a.jpg", width=6000, height=4500)
    vectors = {"/archive/a.jpg": unit_at(0), "/inbox/a.jpg": unit_at(3)}
    (group,) = run([ref1, ref2, big], vectors)
    assert group.keeper_member.photo is ref1  # reference first, whatever the resolution
    assert action_of(group, "/archive/old/a.jpg") is Action.KEEP
    assert action_of(group, "/inbox/a.jpg") is Action.DELETE


def test_raw_jpeg_pair_is_not_a_delete_pair_unless_asked() -> None:
    raw = photo("/p/IMG_0001.CR2", fmt="TIFF", width=6000, height=4500, size=25_000_000)
    jpg = photo("/p/IMG_0001.JPG", width=6000, height=4500, size=5_000_000)
    elsewhere = photo(
        "/q/IMG_0001.JPG",
        width=6000,
        height=4000,
        size=5_000_000,
        content_hash="content-of-/p/IMG_0001.JPG",
    )
    vectors = {"/p/IMG_0001.CR2": unit_at(0), "/p/IMG_0001.JPG": unit_at(2)}
    (group,) = run([raw, jpg, elsewhere], vectors)
    assert group.keeper_member.photo is raw
    assert action_of(group, "/p/IMG_0001.JPG") is Action.KEEP
    assert "RAW+JPEG" in next(m.why for m in group.members if m.photo is jpg)
    assert action_of(group, "/q/IMG_0001.JPG") is Action.DELETE  # not beside the RAW
    (group,) = run([raw, jpg, elsewhere], vectors, delete_raw_jpeg_pairs=True)
    assert action_of(group, "/p/IMG_0001.JPG") is Action.DELETE


def test_phash_only_thresholds() -> None:
    local = ScanSettings().thresholds_for(LOCAL_MODEL_ID)
    assert (local.near_phash, local.similar_phash) == (8, 12)
    keeper = photo("/p/a.jpg", phash=0)
    near = photo("/p/b.jpg", phash=(1 << 2) - 1, width=100, height=75)  # 2 bits
    similar = photo("/p/c.jpg", phash=(1 << 12) - 1 << 20, width=100, height=100)  # 12 bits
    far = photo("/p/d.jpg", phash=(1 << 13) - 1 << 40, width=100, height=100)  # 13 bits
    groups = run([keeper, near, far], thresholds=local)
    assert [(g.kind, paths(g)) for g in groups] == [(Kind.NEAR, {"/p/a.jpg", "/p/b.jpg"})]
    assert groups[0].reason.startswith("pHash distance 2, 4000x3000 vs 100x75")
    groups = run([keeper, similar, far], thresholds=local)
    assert [(g.kind, paths(g)) for g in groups] == [(Kind.SIMILAR, {"/p/a.jpg", "/p/c.jpg"})]


def test_groups_are_ordered_exact_then_near_then_similar() -> None:
    items = [
        photo("/s/a.jpg", phash=0),
        photo("/s/b.jpg", phash=(1 << 20) - 1, width=10, height=10),
        photo("/n/a.jpg", phash=5 << 50),
        photo("/n/b.jpg", phash=5 << 50, width=40, height=30),
        photo("/e/a.jpg", content_hash="e", phash=None),
        photo("/e/b.jpg", content_hash="e", phash=None),
    ]
    vectors = {
        "/s/a.jpg": unit_at(0),
        "/s/b.jpg": unit_at(angle_for(0.85)),
        "/n/a.jpg": unit_at(90),
        "/n/b.jpg": unit_at(91),
    }
    assert [g.kind for g in run(items, vectors)] == [Kind.EXACT, Kind.NEAR, Kind.SIMILAR]


def test_a_crop_is_never_near_however_close_the_hashes() -> None:
    keeper = photo("/p/full.jpg", width=4000, height=3000, phash=0)
    crop = photo("/p/crop.jpg", width=3000, height=3000, phash=1)
    resized = photo("/p/small.jpg", width=1001, height=750, phash=1)  # rounding: still 4:3
    vectors = {"/p/full.jpg": unit_at(0), "/p/crop.jpg": unit_at(2), "/p/small.jpg": unit_at(1)}
    (group,) = run([keeper, crop, resized], vectors)
    assert group.kind is Kind.NEAR
    verdicts = {m.photo.path: (m.verdict, m.action) for m in group.members}
    assert verdicts["/p/small.jpg"] == (Kind.NEAR, Action.DELETE)
    assert verdicts["/p/crop.jpg"] == (Kind.SIMILAR, Action.KEEP)  # not near anyone
    (group,) = run([keeper, crop], vectors)
    assert group.kind is Kind.SIMILAR
    local = ScanSettings().thresholds_for(LOCAL_MODEL_ID)
    (group,) = run([keeper, crop], thresholds=local)
    assert group.kind is Kind.SIMILAR


class _AllSameShot:
    """The pixel check's stand-in: every pair it is asked about is the same shot."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def prefetch(self, pairs: list[tuple[Photo, Photo]], *, near: bool = False) -> None:
        pass

    def __call__(self, pairs: list[tuple[Photo, Photo]]) -> list[float]:
        self.asked += [(a.path, b.path) for a, b in pairs]
        return [1.0] * len(pairs)

    def near(self, pairs: list[tuple[Photo, Photo]]) -> list[float]:
        return [1.0] * len(pairs)


def test_a_keeper_checks_only_its_strongest_similar_candidates_strongest_first() -> None:
    keeper = photo("/k/keeper.jpg", phash=0)
    cosines = [0.81 + 0.004 * k for k in range(CHECKS_PER_KEEPER + 4)]
    # Each candidate its own shape and a far pHash: similar to the keeper, never near.
    hashes = np.random.default_rng(7).integers(0, 2**63, len(cosines)).tolist()
    candidates = [
        photo(f"/c/{k:02}.jpg", width=100 + 5 * k, height=100, phash=hashes[k])
        for k in range(len(cosines))
    ]
    vectors = {keeper.path: unit_at(0)}
    vectors.update(
        {c.path: unit_at(angle_for(v)) for c, v in zip(candidates, cosines, strict=True)}
    )
    check = _AllSameShot()
    groups = run([keeper, *candidates], vectors, verify=check)
    by_strength = [c.path for _, c in sorted(zip(cosines, candidates, strict=True), reverse=True)]
    asked_for_keeper = [b for a, b in check.asked if a == keeper.path]
    assert asked_for_keeper == by_strength[:CHECKS_PER_KEEPER]
    family = next(g for g in groups if g.keeper_member.photo is keeper)
    assert paths(family) == {keeper.path, *by_strength[:CHECKS_PER_KEEPER]}
    assert all(m.verdict is Kind.SIMILAR for m in family.members[1:])


class _NearAhead:
    """The pixel check's stand-in with ``near_ahead``: near pairs are the same picture but
    those in ``rejected``; it records what was started and what was asked, in order."""

    def __init__(self, rejected: set[frozenset[str]], ahead: bool = True) -> None:
        self.rejected = rejected
        self.events: list[tuple[str, frozenset[str]]] = []
        if ahead:
            self.near_ahead = self._ahead

    def prefetch(self, pairs: list[tuple[Photo, Photo]], *, near: bool = False) -> None:
        pass

    def __call__(self, pairs: list[tuple[Photo, Photo]]) -> list[float]:
        return [0.0] * len(pairs)  # no similar verdicts: only the near families matter

    def _ahead(self, pairs: list[tuple[Photo, Photo]]) -> None:
        self.events += [("start", frozenset((a.path, b.path))) for a, b in pairs]

    def near(self, pairs: list[tuple[Photo, Photo]]) -> list[float]:
        asked = [frozenset((a.path, b.path)) for a, b in pairs]
        self.events += [("ask", pair) for pair in asked]
        return [0.0 if pair in self.rejected else 1.0 for pair in asked]


def near_families() -> tuple[list[Photo], dict[str, np.ndarray], set[frozenset[str]]]:
    """Eight families (a 4000x3000 keeper, two 2000x1500 copies; far apart in features and
    pHash); in the first, the pixels reject one copy, which is near a ninth photo."""
    rng = np.random.default_rng(11)
    photos: list[Photo] = []
    vectors: dict[str, np.ndarray] = {}
    for f in range(8):
        base = rng.normal(size=32)
        h = int(rng.integers(0, 2**63))
        for k, width in enumerate((4000, 2000, 2000)):
            p = photo(f"/f{f}/{k}.jpg", width=width, height=width * 3 // 4, phash=h)
            photos.append(p)
            v = base + 0.01 * rng.normal(size=32)
            vectors[p.path] = (v / np.linalg.norm(v)).astype(np.float32)
    extra = photo("/f0/3.jpg", width=1000, height=750, phash=photos[0].phash)
    photos.append(extra)
    vectors[extra.path] = vectors["/f0/2.jpg"]
    rejected = {frozenset(("/f0/0.jpg", "/f0/2.jpg")), frozenset(("/f0/0.jpg", "/f0/3.jpg"))}
    return photos, vectors, rejected


def test_near_checks_start_ahead_and_none_is_wasted() -> None:
    photos, vectors, rejected = near_families()
    ahead = _NearAhead(rejected)
    groups = run(photos, vectors, verify=ahead)
    started = [pair for kind, pair in ahead.events if kind == "start"]
    asked = [pair for kind, pair in ahead.events if kind == "ask"]
    # The first keeper's own pairs were asked with later keepers' already started ...
    first_ask = next(i for i, (kind, _) in enumerate(ahead.events) if kind == "ask")
    started_before = {pair for kind, pair in ahead.events[:first_ask] if kind == "start"}
    assert {frozenset(("/f1/0.jpg", "/f1/1.jpg")), frozenset(("/f2/0.jpg", "/f2/2.jpg"))} <= (
        started_before
    )
    # ... and every check started was asked for: none was wasted on a photo that joined an
    # earlier family (the rejected copy's own pair with the ninth photo came later).
    assert set(started) <= set(asked)
    assert frozenset(("/f0/2.jpg", "/f0/3.jpg")) in asked
    # The same groups as without the look-ahead.
    plain = run(photos, vectors, verify=_NearAhead(rejected, ahead=False))
    assert [sorted(paths(g)) for g in groups] == [sorted(paths(g)) for g in plain]
    assert {frozenset(paths(g)) for g in groups} >= {
        frozenset({"/f0/0.jpg", "/f0/1.jpg"}),
        frozenset({"/f0/2.jpg", "/f0/3.jpg"}),
    }


class _Expecting(_AllSameShot):
    """The pixel check's stand-in with ``expect_similar``: records what it was told, and
    whether a near check had been asked before."""

    def __init__(self) -> None:
        super().__init__()
        self.told: list[tuple[int, int]] = []
        self.near_asked = 0

    def expect_similar(self, edges: int) -> None:
        self.told.append((edges, self.near_asked))

    def near(self, pairs: list[tuple[Photo, Photo]]) -> list[float]:
        self.near_asked += len(pairs)
        return super().near(pairs)


def test_the_checker_hears_how_many_similar_pairs_there_are_before_the_near_checks() -> None:
    keeper = photo("/k/keeper.jpg", phash=0)
    copy = photo("/k/copy.jpg", phash=0)  # near the keeper
    cosines = [0.81 + 0.004 * k for k in range(6)]
    hashes = np.random.default_rng(3).integers(0, 2**63, len(cosines)).tolist()
    candidates = [
        photo(f"/c/{k:02}.jpg", width=100 + 5 * k, height=100, phash=hashes[k])
        for k in range(len(cosines))
    ]
    vectors = {keeper.path: unit_at(0), copy.path: unit_at(0.01)}
    vectors.update(
        {c.path: unit_at(angle_for(v)) for c, v in zip(candidates, cosines, strict=True)}
    )
    check = _Expecting()
    groups = run([keeper, copy, *candidates], vectors, verify=check)
    assert check.near_asked > 0 and groups
    ((told, near_before),) = check.told
    assert near_before == 0  # told before the near checks
    # The similar pairs among all the photos, each counted once: what the checker may be
    # asked about at most (each of the candidates is similar to the keeper, its copy and
    # the candidates close enough to it).
    vectors_list = [vectors[p.path] for p in [keeper, copy, *candidates]]
    similar = 0
    for i in range(len(vectors_list)):
        for j in range(i + 1, len(vectors_list)):
            cosine = float(vectors_list[i] @ vectors_list[j])
            if i >= 2 or j >= 2:  # not the near pair itself
                similar += cosine >= (MODEL.similar_cosine or 2.0)
    assert told == similar > 0
