"""The same-shot pixel check: edits of one photo pass, another shot of the scene does not."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageEnhance, ImageOps

from photodup_tui.engine import sameshot
from photodup_tui.engine.cache import Cache, pixel_key
from photodup_tui.engine.grouping import group_photos
from photodup_tui.engine.keeprules import KeepRules
from photodup_tui.engine.local_features import LocalFeatureSource
from photodup_tui.engine.sameshot import SAME_SHOT_MIN
from photodup_tui.engine.sameshot_check import (
    METHOD,
    POOL_MIN_PAIRS,
    WARM_POOL_EDGES,
    SameShotChecker,
)
from photodup_tui.engine.scan import Scanner
from photodup_tui.engine.settings import ScanSettings, Thresholds
from photodup_tui.engine.types import Action, Group, Kind, Photo
from tests.engine.helpers import photo, unit_at
from tests.photos import make_photo


def thumb(image: Image.Image) -> sameshot.Thumb:
    return sameshot.thumbnail_from(image)


def crop(image: Image.Image) -> Image.Image:
    w, h = image.size
    return image.crop((round(0.05 * w), round(0.05 * h), round(0.97 * w), round(0.97 * h)))


EDITS = {
    "crop 8%": crop,
    "white border": lambda im: ImageOps.expand(im, border=30, fill=(255, 255, 255)),
    "mirror": ImageOps.mirror,
    "brightness +35%": lambda im: ImageEnhance.Brightness(im).enhance(1.35),
    "grayscale": lambda im: im.convert("L"),
    "half size": lambda im: im.reduce(2),
}


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(skimage.data.astronaut())


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edited_copy_is_the_same_shot(astronaut: Image.Image, edit: str) -> None:
    copy = EDITS[edit](astronaut)
    value = sameshot.score(thumb(astronaut), thumb(copy))
    assert value >= SAME_SHOT_MIN, (edit, value)
    assert sameshot.score(thumb(copy), thumb(astronaut)) == pytest.approx(value)


def test_the_other_half_of_a_stereo_pair_is_another_shot() -> None:
    # The two views differ by parallax: their embeddings (0.93) and pHashes (4 bits) are
    # closer than many edits', but no single alignment makes the pixels agree.
    left, right, _ = skimage.data.stereo_motorcycle()
    a, b = thumb(Image.fromarray(left)), thumb(Image.fromarray(right))
    assert sameshot.score(a, b) < SAME_SHOT_MIN - 0.02
    assert sameshot.score(a, thumb(Image.fromarray(left).reduce(2))) >= SAME_SHOT_MIN


def test_unrelated_photos_score_low(astronaut: Image.Image) -> None:
    coffee = Image.fromarray(skimage.data.coffee())
    assert sameshot.score(thumb(astronaut), thumb(coffee)) < 0.7


def test_two_smooth_scenes_do_not_align_on_shading_alone() -> None:
    # Gradients and soft blobs, like a sky or a backdrop: once brightness and contrast are
    # normalised, any two ramps correlate; only the detail tells two pictures apart.
    scenes = [thumb(make_photo(seed, (640, 480))) for seed in (1, 2, 4, 10)]
    for i, a in enumerate(scenes):
        for b in scenes[i + 1 :]:
            assert sameshot.score(a, b) < SAME_SHOT_MIN - 0.1
    resized = thumb(make_photo(1, (480, 360)))
    assert sameshot.score(scenes[0], resized) >= SAME_SHOT_MIN


def test_flat_or_tiny_images_say_nothing() -> None:
    flat = sameshot.Thumb(np.full((64, 48), 128, dtype=np.float32), 0.0)
    pixels = np.random.default_rng(1).uniform(0, 255, (64, 48)).astype(np.float32)
    noise = sameshot.Thumb(pixels, 0.0)
    assert sameshot.score(flat, noise) == -1.0
    assert sameshot.score(sameshot.Thumb(pixels[:5, :5], 0.0), noise) == -1.0
    assert sameshot.same_picture(sameshot.Thumb(pixels[:5, :5], 0.0), noise) == -1.0


def centre_crop(image: Image.Image) -> Image.Image:
    """8% cut away evenly: the aspect ratio stays, so shapes and hashes look like a resize."""
    w, h = image.size
    return image.crop((round(0.04 * w), round(0.04 * h), round(0.96 * w), round(0.96 * h)))


NOT_RE_ENCODES = {
    "crop keeping the aspect ratio": centre_crop,
    "mirror": ImageOps.mirror,
    "brightness +35%": lambda im: ImageEnhance.Brightness(im).enhance(1.35),
    "grayscale": lambda im: im.convert("L").convert("RGB"),
    "white border": lambda im: ImageOps.expand(im, border=30, fill=(255, 255, 255)),
}


def reencoded(image: Image.Image, size: tuple[int, int], quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.resize(size, Image.Resampling.LANCZOS).save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def test_a_re_encode_or_resize_is_the_same_picture(astronaut: Image.Image) -> None:
    for size, quality in (((512, 512), 40), ((256, 256), 85), ((300, 300), 95)):
        value = sameshot.same_picture(thumb(astronaut), thumb(reencoded(astronaut, size, quality)))
        assert value >= sameshot.SAME_PICTURE_MIN, (size, quality, value)


@pytest.mark.parametrize("edit", sorted(NOT_RE_ENCODES))
def test_an_edit_is_never_the_same_picture(astronaut: Image.Image, edit: str) -> None:
    # These are what "near" must never be: near pre-marks deletions.
    copy = NOT_RE_ENCODES[edit](astronaut)
    assert sameshot.same_picture(thumb(astronaut), thumb(copy)) < sameshot.SAME_PICTURE_MIN
    assert sameshot.score(thumb(astronaut), thumb(copy)) >= SAME_SHOT_MIN  # but similar


def save(image: Image.Image, path: Path) -> Path:
    image.convert("RGB").save(path, "JPEG", quality=90)
    return path


def test_checker_scores_pairs_and_remembers_them_by_content(
    tmp_path: Path, astronaut: Image.Image
) -> None:
    left, right, _ = skimage.data.stereo_motorcycle()
    files = {
        "orig": save(astronaut, tmp_path / "orig.jpg"),
        "mirror": save(ImageOps.mirror(astronaut), tmp_path / "mirror.jpg"),
        "left": save(Image.fromarray(left), tmp_path / "left.jpg"),
        "right": save(Image.fromarray(right), tmp_path / "right.jpg"),
        "broken": tmp_path / "broken.jpg",
    }
    files["broken"].write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    photos = {k: photo(str(p), content_hash=f"hash-{k}") for k, p in files.items()}
    pairs = [
        (photos["orig"], photos["mirror"]),
        (photos["left"], photos["right"]),
        (photos["orig"], photos["broken"]),
    ]
    with Cache(tmp_path / "cache.sqlite") as cache:
        checker = SameShotChecker(cache, workers=2)  # real worker processes
        mirror, stereo, broken = checker(pairs)
        assert mirror is not None and mirror >= SAME_SHOT_MIN
        assert stereo is not None and stereo < SAME_SHOT_MIN
        assert broken is None  # cannot be checked: no verdict, never a guess
        assert checker.scored == 2
        # Stored by file identity: a rename or a rescan asks nothing again.
        key = (pixel_key(photos["mirror"]), pixel_key(photos["orig"]))
        assert cache.same_shot_scores([key], METHOD) == {key: pytest.approx(mirror)}
        again = SameShotChecker(cache, isolate=False)
        # A rescan announces every candidate pair, the unscored broken one included, but
        # asks only about scored ones: nothing is decoded for a pair never asked about.
        again.prefetch(pairs)
        assert again(pairs[:2]) == [pytest.approx(mirror), pytest.approx(stereo)]
        assert (again.decoded, again.scored) == (0, 0)
        assert again(pairs[2:]) == [None]  # asked: now the announced thumbnails are decoded
        assert again.decoded == 1  # orig (the broken file has none; the rest were scored)


def test_cancel_leaves_pairs_unchecked(tmp_path: Path, astronaut: Image.Image) -> None:
    a = photo(str(save(astronaut, tmp_path / "a.jpg")))
    b = photo(str(save(crop(astronaut), tmp_path / "b.jpg")))
    cancel = threading.Event()
    cancel.set()
    assert SameShotChecker(cancel=cancel, isolate=False)([(a, b)]) == [None]


def test_grouping_keeps_a_similar_verdict_only_when_the_pixels_agree() -> None:
    keeper = photo("/p/a.jpg", phash=0)
    edit = photo("/p/edit.jpg", phash=(1 << 20) - 1, width=3000, height=3000)
    burst = photo("/p/burst.jpg", phash=((1 << 30) - 1) << 30, width=3000, height=2000)
    vectors = {"/p/a.jpg": unit_at(0), "/p/edit.jpg": unit_at(20), "/p/burst.jpg": unit_at(15)}
    asked: list[set[str]] = []

    class Verify:
        def __init__(self) -> None:
            self.prefetched: list[tuple[Photo, Photo]] = []

        def prefetch(self, pairs: Sequence[tuple[Photo, Photo]], *, near: bool = False) -> None:
            self.prefetched.extend(pairs)

        def near(self, pairs: Sequence[tuple[Photo, Photo]]) -> list[float | None]:
            return [0.99 for _ in pairs]

        def __call__(self, pairs: Sequence[tuple[Photo, Photo]]) -> list[float | None]:
            out: list[float | None] = []
            for a, b in pairs:
                asked.append({a.path, b.path})
                out.append(0.97 if "/p/edit.jpg" in (a.path, b.path) else 0.70)
            return out

    verify = Verify()

    thresholds = Thresholds(0.95, 2, 0.65, None)
    rules = KeepRules(ScanSettings())
    (group,) = group_photos([keeper, edit, burst], vectors, thresholds, rules, verify=verify)
    assert group.kind is Kind.SIMILAR
    assert {m.photo.path for m in group.members} == {"/p/a.jpg", "/p/edit.jpg"}
    assert "same shot 0.97" in group.reason
    assert {"/p/a.jpg", "/p/burst.jpg"} in asked
    # Only keeper-candidate pairs are ever scored, never edit ~ burst.
    assert {"/p/edit.jpg", "/p/burst.jpg"} not in asked
    assert len(verify.prefetched) >= len(asked)
    # Without the check the features alone decide: the burst frame joins.
    (group,) = group_photos([keeper, edit, burst], vectors, thresholds, rules)
    assert len(group.members) == 3


def test_grouping_demotes_a_near_candidate_the_pixels_reject() -> None:
    # Same aspect ratio, pHash 1 bit apart, cosine 0.999: a centred crop looks exactly like a
    # resize to the features.  The pixel check says otherwise, so it is never pre-marked.
    keeper = photo("/p/a.jpg", width=4000, height=3000, phash=0)
    resized = photo("/p/small.jpg", width=2000, height=1500, phash=1)
    crop = photo("/p/crop.jpg", width=3680, height=2760, phash=1)
    vectors = {"/p/a.jpg": unit_at(0), "/p/small.jpg": unit_at(1), "/p/crop.jpg": unit_at(2)}

    class Verify:
        def prefetch(self, pairs: Sequence[tuple[Photo, Photo]], *, near: bool = False) -> None:
            pass

        def near(self, pairs: Sequence[tuple[Photo, Photo]]) -> list[float | None]:
            return [0.5 if "/p/crop.jpg" in (a.path, b.path) else 0.99 for a, b in pairs]

        def __call__(self, pairs: Sequence[tuple[Photo, Photo]]) -> list[float | None]:
            return [0.95 for _ in pairs]

    thresholds = Thresholds(0.95, 2, 0.65, None)
    rules = KeepRules(ScanSettings())
    (group,) = group_photos([keeper, resized, crop], vectors, thresholds, rules, verify=Verify())
    verdicts = {m.photo.path: (m.verdict, m.action) for m in group.members}
    assert verdicts == {
        "/p/a.jpg": (None, Action.KEEP),
        "/p/small.jpg": (Kind.NEAR, Action.DELETE),
        "/p/crop.jpg": (Kind.SIMILAR, Action.KEEP),
    }


def test_a_scan_never_pre_marks_an_aspect_keeping_crop(
    tmp_path: Path, astronaut: Image.Image
) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    save(astronaut, root / "astronaut.png")
    save(centre_crop(astronaut), root / "astronaut_crop.jpg")
    save(astronaut.resize((256, 256)), root / "astronaut_small.jpg")
    with Cache(tmp_path / "cache.sqlite") as cache:
        scanner = Scanner(ScanSettings(), LocalFeatureSource(workers=1), cache)
        result = scanner.run([str(root)], lambda _: None, threading.Event())
    (group,) = result.groups
    actions = {Path(m.photo.path).name: m.action for m in group.members}
    assert actions["astronaut_small.jpg"] is Action.DELETE
    assert actions["astronaut_crop.jpg"] is Action.KEEP


def test_a_scan_shows_an_edit_but_not_the_other_stereo_view(
    tmp_path: Path, astronaut: Image.Image
) -> None:
    left, right, _ = skimage.data.stereo_motorcycle()
    root = tmp_path / "photos"
    root.mkdir()
    save(astronaut, root / "astronaut.jpg")
    save(ImageEnhance.Brightness(astronaut).enhance(1.35), root / "astronaut_bright.jpg")
    save(Image.fromarray(left), root / "left.jpg")
    save(Image.fromarray(right), root / "right.jpg")
    with Cache(tmp_path / "cache.sqlite") as cache:
        scanner = Scanner(ScanSettings(), LocalFeatureSource(workers=1), cache)
        result = scanner.run([str(root)], lambda _: None, threading.Event())
    found = [{Path(m.photo.path).name for m in g.members} for g in result.groups]
    assert {"astronaut.jpg", "astronaut_bright.jpg"} in found
    assert not any("left.jpg" in names for names in found)


def test_a_rescan_decodes_and_compares_nothing_again(
    tmp_path: Path, astronaut: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sizes differ, so the exact tier does not hash these files in full before grouping:
    # the scores are remembered by file identity.
    root = tmp_path / "photos"
    root.mkdir()
    save(astronaut, root / "astronaut.jpg")
    save(ImageEnhance.Brightness(astronaut).enhance(1.35), root / "bright.jpg")
    save(astronaut.resize((256, 256)), root / "small.jpg")
    asked: list[list[str]] = []
    original = SameShotChecker._thumbnails

    def recording(
        self: SameShotChecker, photos: list[Photo], announce: bool = False
    ) -> dict[str, sameshot.Thumb]:
        if photos:
            asked.append([p.path for p in photos])
        return original(self, photos, announce)

    monkeypatch.setattr(SameShotChecker, "_thumbnails", recording)
    with Cache(tmp_path / "cache.sqlite") as cache:
        scanner = Scanner(ScanSettings(), LocalFeatureSource(workers=1), cache)
        first = scanner.run([str(root)], lambda _: None, threading.Event())
        assert asked
        asked.clear()
        again = Scanner(ScanSettings(), LocalFeatureSource(workers=1), cache)
        second = again.run([str(root)], lambda _: None, threading.Event())
    assert asked == []

    def shape(groups: list[Group]) -> list[list[tuple[str, Action]]]:
        return [sorted((m.photo.path, m.action) for m in g.members) for g in groups]

    assert shape(second.groups) == shape(first.groups) and first.groups


def test_scores_computed_by_the_worker_pool_equal_those_computed_here(
    tmp_path: Path, astronaut: Image.Image
) -> None:
    """Enough pairs at once go to the scoring workers; their scores are the very scores the
    check computes in this process, and close() stops the workers."""
    edits = [astronaut, ImageOps.mirror(astronaut), crop(astronaut), astronaut.rotate(3)]
    left, right, _ = skimage.data.stereo_motorcycle()
    edits += [Image.fromarray(left), Image.fromarray(right)]
    photos = [
        photo(str(save(image, tmp_path / f"{i}.jpg")), content_hash=f"hash-{i}")
        for i, image in enumerate(edits)
    ]
    pairs = [(photos[0], other) for other in photos[1:]] + [(photos[4], photos[5])]
    assert len(pairs) >= POOL_MIN_PAIRS
    with SameShotChecker(workers=2, pool_after=0) as pooled:
        from_pool = pooled(pairs)
        workers = pooled._scorers
        assert workers is not None  # the pool did the scoring
        processes = list(workers._processes.values())
    assert pooled._scorers is None and not any(p.is_alive() for p in processes)
    here = SameShotChecker(isolate=False)(pairs)
    assert from_pool == here
    assert all(score is not None for score in from_pool)
    assert from_pool[0] is not None and from_pool[0] >= SAME_SHOT_MIN  # its mirror


def test_a_few_pairs_are_scored_here_without_starting_the_pool(
    tmp_path: Path, astronaut: Image.Image
) -> None:
    """Starting the scoring workers costs about a second: a scan that asks a few pairs (a
    camera's photos) scores them here; the pool starts once enough work has been seen."""
    edits = [astronaut, ImageOps.mirror(astronaut), crop(astronaut), astronaut.rotate(3)]
    photos = [
        photo(str(save(image, tmp_path / f"{i}.jpg")), content_hash=f"hash-{i}")
        for i, image in enumerate(edits)
    ]
    pairs = [(photos[0], other) for other in photos[1:]] + [(photos[1], photos[2])]
    assert len(pairs) >= POOL_MIN_PAIRS
    with SameShotChecker(workers=2, pool_after=len(pairs)) as checker:
        first = checker(pairs)
        assert checker._scorers is None  # scored here
        again = [(b, a) for a, b in pairs]  # asked the other way round: new to the pool rule
        checker.pool_after = 0
        checker._checks[METHOD].computed.clear()
        assert checker(again) == first
        assert checker._scorers is not None  # enough work seen: the pool took over


def test_many_similar_candidates_start_the_pool_before_any_pair_is_asked(
    tmp_path: Path, astronaut: Image.Image
) -> None:
    """Told of enough similar candidate pairs (before the near checks), the checker starts
    its scoring workers at once, and scores in them from the first pair asked, with the
    same scores as here; told of fewer, it starts nothing."""
    edits = [astronaut, ImageOps.mirror(astronaut), crop(astronaut), astronaut.rotate(3)]
    photos = [
        photo(str(save(image, tmp_path / f"{i}.jpg")), content_hash=f"hash-{i}")
        for i, image in enumerate(edits)
    ]
    pairs = [(photos[0], other) for other in photos[1:]] + [(photos[1], photos[2])]
    here = SameShotChecker(isolate=False)(pairs)
    with SameShotChecker(workers=2) as few:
        few.expect_similar(WARM_POOL_EDGES - 1)
        assert few._scorers is None
        assert few(pairs) == here
        assert few._scorers is None  # fewer than pool_after pairs: scored here
    with SameShotChecker(workers=2) as many:
        many.expect_similar(WARM_POOL_EDGES)
        workers = many._scorers
        assert workers is not None
        deadline = time.monotonic() + 60
        while len(workers._processes) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(workers._processes) == 2  # started, before any pair was asked
        assert many(pairs) == here
        assert many._scored_here == 0  # every pair scored in the pool
        assert many.scored == len(pairs)


def test_a_pair_s_cached_score_is_looked_up_once_per_scan(
    tmp_path: Path, astronaut: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prefetch reads the cache for every pair the grouping may ask about; the checks asked
    afterwards, keeper by keeper, do not query it again for the same pairs."""
    images = [astronaut, reencoded(astronaut, (256, 256), 85), ImageOps.mirror(astronaut)]
    photos = [
        photo(str(save(image, tmp_path / f"{i}.jpg")), content_hash=f"hash-{i}")
        for i, image in enumerate(images)
    ]
    near_pairs = [(photos[0], photos[1]), (photos[0], photos[2])]
    queried: list[tuple[str, str]] = []
    real = Cache.same_shot_scores

    def recording(self: Cache, pairs: Sequence[tuple[str, str]], method: str) -> object:
        pairs = list(pairs)
        queried.extend(tuple(sorted(p)) for p in pairs)  # type: ignore[misc]
        return real(self, pairs, method)

    monkeypatch.setattr(Cache, "same_shot_scores", recording)
    with (
        Cache(tmp_path / "cache.sqlite") as cache,
        SameShotChecker(cache, isolate=False) as checker,
    ):
        checker.prefetch(near_pairs, near=True)
        checker.near_ahead(near_pairs)
        first = checker.near(near_pairs[:1])
        second = checker.near(near_pairs)
        assert first[0] is not None and None not in second
        assert sorted(queried) == sorted(
            tuple(sorted((pixel_key(a), pixel_key(b)))) for a, b in near_pairs
        )
        # A second scan (a new checker) reads them from the cache, once each, and scores
        # nothing.
        queried.clear()
        with SameShotChecker(cache, isolate=False) as again:
            assert again.near(near_pairs) == second
            assert again.scored == 0
    assert len(queried) == len(near_pairs)


def test_the_regions_are_compared_only_for_a_pair_the_whole_calls_the_same_picture(
    astronaut: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A look-alike pair that already fails on the whole thumbnail (another picture, a
    mirror) is not the same picture whatever its regions say: they are not compared."""
    compared: list[object] = []
    real = sameshot._region_difference

    def recording(a: sameshot.Thumb, b: sameshot.Thumb, shape: tuple[int, ...]) -> float:
        compared.append(shape)
        return real(a, b, shape)

    monkeypatch.setattr(sameshot, "_region_difference", recording)
    original = thumb(astronaut)
    mirrored = sameshot.same_picture(original, thumb(ImageOps.mirror(astronaut)))
    assert mirrored < sameshot.SAME_PICTURE_MIN and compared == []
    resized = sameshot.same_picture(original, thumb(reencoded(astronaut, (256, 256), 85)))
    assert resized >= sameshot.SAME_PICTURE_MIN and len(compared) == 1


def test_a_rescan_whose_near_scores_are_cached_does_not_start_the_pool_early(
    tmp_path: Path, astronaut: Image.Image
) -> None:
    """When the cache held most of the near pairs prefetched, an earlier scan scored this
    library: its similar pairs are cached too, and starting the workers early would be
    wasted; a first scan with the same pairs starts them."""
    images = [astronaut, reencoded(astronaut, (256, 256), 85), ImageOps.mirror(astronaut)]
    photos = [
        photo(str(save(image, tmp_path / f"{i}.jpg")), content_hash=f"hash-{i}")
        for i, image in enumerate(images)
    ]
    near_pairs = [(photos[0], photos[1]), (photos[0], photos[2])]
    with Cache(tmp_path / "cache.sqlite") as cache:
        with SameShotChecker(cache, workers=2) as first:
            first.prefetch(near_pairs, near=True)
            first.expect_similar(WARM_POOL_EDGES)
            assert first._scorers is not None  # nothing cached: a first scan
            assert None not in first.near(near_pairs)
        with SameShotChecker(cache, workers=2) as rescan:
            rescan.prefetch(near_pairs, near=True)
            rescan.expect_similar(WARM_POOL_EDGES)
            assert rescan._scorers is None
            assert rescan.near(near_pairs) == first.near(near_pairs)
            assert rescan.scored == 0
