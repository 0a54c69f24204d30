"""Quality benchmark: does photodup find the copies personal libraries gather, and only them?

Usage::

    python bench/quality.py [--out bench/results/quality.md] [--keep DIR] [--no-grid]

The labelled set is built from the real photographs scikit-image ships (``skimage.data``):
each becomes an "original" JPEG plus the copies a personal library gathers (byte-identical
copy, downscale, JPEG q40, WebP, PNG, EXIF-rotated, 8% crop, white border, brightness +35%,
grayscale, mirror).  Every pair of files made from the same photograph is a positive; every
pair from two photographs is a negative, including the similar-looking ones (the stereo
motorcycle pair, the brick/grass/gravel textures, the two scanned text pages).

Systems, on the same files in the same run:

* photodup with the built-in model, through a real photodupd and the engine's ``Scanner``;
* photodup ``--no-model`` (perceptual hashes, ``LocalFeatureSource``);
* imagededup's ``PHash`` with its default ``max_distance_threshold=10``.

photodup is scored two ways.  *Pair verdicts*: the engine's verdict for each pair of files on
its own (``group_photos`` on the two files), i.e. what the features and thresholds can tell
apart.  *Groups*: two files count as found when the scan put them in the same group, i.e. what
the user is shown.  Each has a "near or exact" tier (what pre-marks deletions) and an "any"
tier that adds ``similar`` (only ever shown).  imagededup gives pairs directly.

The grid search re-runs the engine's rule over threshold grids on the same features and
reports the best settings (precision target first) with the evidence.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hard_negatives
from _common import (
    Daemon,
    emit,
    isolated_environment,
    machine_line,
    markdown_table,
    quiet_imagededup,
    say,
    scan,
    verdict,
)

from photodup_tui.engine.cache import Cache
from photodup_tui.engine.grouping import group_photos
from photodup_tui.engine.keeprules import KeepRules
from photodup_tui.engine.local_features import LocalFeatureSource
from photodup_tui.engine.sameshot_check import SameShotChecker
from photodup_tui.engine.scan import ScanResult
from photodup_tui.engine.settings import ScanSettings, Thresholds
from photodup_tui.engine.types import Action, Group, Kind, Photo
from tests.photos import exif_bytes, store_with_orientation

#: The photographs of skimage.data (no drawings, masks, charts or tiny crops).
PHOTOGRAPHS = (
    "astronaut",
    "brick",
    "camera",
    "cell",
    "chelsea",
    "clock",  # a motion-blurred clock
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "motorcycle_left",
    "motorcycle_right",
    "page",
    "retina",
    "rocket",
    "text",
)

TARGET_PRECISION = 0.995
TARGET_F1 = 0.99
TARGET_EDIT_RECALL = 0.95
#: Files pre-marked DELETE that are not re-encodes of their keeper (groups only).
TARGET_WRONG_MARKS = 0
#: (original, re-encode/resize) pairs judged near or exact.
TARGET_NEAR_RECALL = 0.99

Pair = frozenset[str]
NEAR_OR_EXACT = frozenset({Kind.EXACT, Kind.NEAR})
ANY_KIND = frozenset({Kind.EXACT, Kind.NEAR, Kind.SIMILAR})


# ------------------------------------------------------------------------------ the set


@dataclass(frozen=True)
class Item:
    path: Path
    original: str  # the skimage photograph it was made from
    edit: str  # "original" or the edit kind


def _load(name: str) -> Image.Image:
    import skimage.data

    if name.startswith("motorcycle_"):
        left, right, _disparity = skimage.data.stereo_motorcycle()
        pixels = left if name.endswith("left") else right
    else:
        pixels = getattr(skimage.data, name)()
    image = Image.fromarray(np.asarray(pixels))
    return image.convert("L") if image.mode != "RGB" else image


def _jpeg(image: Image.Image, path: Path, quality: int = 90, **params: object) -> None:
    image.save(path, "JPEG", quality=quality, **params)


def _crop(image: Image.Image) -> Image.Image:
    """8% of each dimension cut away, unevenly (5% left/top, 3% right/bottom), as people crop."""
    w, h = image.size
    return image.crop((round(0.05 * w), round(0.05 * h), round(0.97 * w), round(0.97 * h)))


def _border(image: Image.Image) -> Image.Image:
    side = max(4, round(0.06 * min(image.size)))
    fill = 255 if image.mode == "L" else (255, 255, 255)
    return ImageOps.expand(image, border=side, fill=fill)


def _exif_rotated(image: Image.Image, path: Path) -> None:
    """Pixels stored turned, with the orientation tag (6) that makes a viewer show them upright."""
    _jpeg(store_with_orientation(image, 6), path, quality=95, exif=exif_bytes(orientation=6))


def _no_write(image: Image.Image, path: Path) -> None:
    """The byte-identical copy is copied from the original file, not re-encoded."""


Writer = Callable[[Image.Image, Path], None]

#: edit kind -> (file extension, writer, the tier the design gives it).  Re-encodes, resizes,
#: re-formats and re-tags are ``near``; edits, crops and mirrors are ``similar`` (DESIGN.md).
EDITS: dict[str, tuple[str, Writer, str]] = {
    "copy": (".jpg", _no_write, "exact"),
    "downscale": (".jpg", lambda im, p: _jpeg(im.reduce(2), p, 90), "near"),
    "jpeg_q40": (".jpg", lambda im, p: _jpeg(im, p, 40), "near"),
    "webp": (".webp", lambda im, p: im.save(p, "WEBP", quality=80), "near"),
    "png": (".png", lambda im, p: im.save(p, "PNG"), "near"),
    "exif_rotated": (".jpg", _exif_rotated, "near"),
    "crop_8pc": (".jpg", lambda im, p: _jpeg(_crop(im), p, 90), "similar"),
    "white_border": (".jpg", lambda im, p: _jpeg(_border(im), p, 90), "similar"),
    "brightness_35pc": (
        ".jpg",
        lambda im, p: _jpeg(ImageEnhance.Brightness(im).enhance(1.35), p, 90),
        "similar",
    ),
    "grayscale": (".jpg", lambda im, p: _jpeg(im.convert("L"), p, 90), "similar"),
    "mirror": (".jpg", lambda im, p: _jpeg(ImageOps.mirror(im), p, 90), "similar"),
}
NEAR_CLASS = {"original"} | {edit for edit, (_, _, tier) in EDITS.items() if tier != "similar"}


def build_set(folder: Path) -> list[Item]:
    """The labelled files, flat in ``folder`` (imagededup scans one folder)."""
    items = []
    for name in PHOTOGRAPHS:
        image = _load(name)
        original = folder / f"{name}.jpg"
        _jpeg(image, original, quality=95)  # what a camera or phone would have written
        items.append(Item(original, name, "original"))
        for edit, (suffix, write, _tier) in EDITS.items():
            if edit == "grayscale" and image.mode == "L":
                continue  # a grey photo's "grayscale copy" would be just a re-encode
            path = folder / f"{name}__{edit}{suffix}"
            if edit == "copy":
                shutil.copyfile(original, path)
            else:
                write(image, path)
            items.append(Item(path, name, edit))
    return items


# ------------------------------------------------------------------------------ metrics


@dataclass(frozen=True)
class Truth:
    items: list[Item]
    positives: set[Pair]  # same photograph
    near_positives: set[Pair]  # same photograph, both files original or near-class copies
    originals: dict[str, str]  # photograph -> the original file's path
    near_class: frozenset[str] = frozenset(NEAR_CLASS)  # copy kinds that are re-encodes

    @classmethod
    def of(cls, items: Sequence[Any], near_class: Iterable[str] = NEAR_CLASS) -> Truth:
        """``items``: this module's or ``hard_negatives``' (path, original, edit) records."""
        kinds = frozenset(near_class)
        positives, near = set(), set()
        for a, b in itertools.combinations(items, 2):
            if a.original == b.original:
                pair = frozenset((str(a.path), str(b.path)))
                positives.add(pair)
                if a.edit in kinds and b.edit in kinds:
                    near.add(pair)
        originals = {i.original: str(i.path) for i in items if i.edit == "original"}
        return cls(list(items), positives, near, originals, kinds)

    def wrong_marks(self, groups: Iterable[Group]) -> list[str]:
        """DELETE marks that are wrong: the file is not a re-encode of its group's keeper
        (another picture, or an edit of it), as "file (keeper)"."""
        edit_of = {str(i.path): i for i in self.items}
        wrong = []
        for group in groups:
            keeper = edit_of[group.keeper_member.photo.path]
            for member in group.members:
                if member.action is not Action.DELETE:
                    continue
                item = edit_of[member.photo.path]
                if not (
                    item.original == keeper.original
                    and item.edit in self.near_class
                    and keeper.edit in self.near_class
                ):
                    wrong.append(f"{item.path.name} ({keeper.path.name})")
        return wrong

    def near_recall(self, near_pairs: set[Pair]) -> float:
        """Of every (original, re-encoded copy) pair, the share judged near or exact."""
        wanted = [
            frozenset((self.originals[i.original], str(i.path)))
            for i in self.items
            if i.edit != "original" and i.edit in self.near_class
        ]
        return sum(pair in near_pairs for pair in wanted) / len(wanted) if wanted else 1.0

    @property
    def total_pairs(self) -> int:
        return len(self.items) * (len(self.items) - 1) // 2


@dataclass(frozen=True)
class Score:
    precision: float
    recall: float
    f1: float
    false_pairs: int
    missed_pairs: int
    by_edit: Mapping[str, float]  # recall of (original, edited copy) pairs per edit kind
    confusions: Mapping[str, int]  # false pairs by "photo A ~ photo B"
    promoted: int  # near tier: same-photo pairs with an edited copy judged near (ignored)
    wrong_marks: int | None = None  # DELETE marks on files that are not re-encodes of the keeper
    near_recall: float | None = None  # (original, re-encode) pairs judged near or exact

    @property
    def worst_edit(self) -> float:
        return min(self.by_edit.values())


def score(predicted: set[Pair], truth: Truth, *, near_only: bool = False) -> Score:
    """Pairwise scores.  ``near_only`` scores a near tier against the near-class pairs and
    ignores same-photo pairs that involve an edit (neither right nor wrong for that tier)."""
    positives = truth.near_positives if near_only else truth.positives
    ignored = truth.positives - positives
    judged = predicted - ignored
    hits = len(judged & positives)
    precision = hits / len(judged) if judged else 1.0
    recall = hits / len(positives)
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    found: dict[str, list[bool]] = defaultdict(list)
    photo_of = {str(i.path): i.original for i in truth.items}
    for item in truth.items:
        if item.edit != "original" and (item.edit in truth.near_class or not near_only):
            pair = frozenset((truth.originals[item.original], str(item.path)))
            found[item.edit].append(pair in predicted)
    confusions = Counter(
        " ~ ".join(sorted({photo_of[p] for p in pair})) for pair in judged - truth.positives
    )
    return Score(
        precision,
        recall,
        f1,
        len(judged - positives),
        len(positives - judged),
        {edit: sum(v) / len(v) for edit, v in found.items()},
        dict(confusions),
        len(predicted & ignored),
    )


def meets_targets(s: Score) -> bool:
    return (
        s.precision >= TARGET_PRECISION
        and s.f1 >= TARGET_F1
        and s.worst_edit >= TARGET_EDIT_RECALL
        and (s.wrong_marks is None or s.wrong_marks <= TARGET_WRONG_MARKS)
        and (s.near_recall is None or s.near_recall >= TARGET_NEAR_RECALL)
    )


# ------------------------------------------------------------------------------ systems


@dataclass
class ProductRun:
    result: ScanResult
    embeddings: dict[str, np.ndarray]  # as the cache gives them back, for every replica
    seconds: float

    @property
    def photos(self) -> list[Photo]:
        return [p for p in self.result.photos if p.error is None]

    @property
    def thresholds(self) -> Thresholds:
        return ScanSettings().thresholds_for(self.result.model_id)


def run_photodup(folder: Path, model: bool) -> ProductRun:
    """A first scan of ``folder`` with a fresh cache, then the features the cache kept."""
    with isolated_environment() as base:
        cache_path = base / "cache.sqlite"
        if model:
            with Daemon(base, "builtin") as daemon:
                source = daemon.source()
                started = time.perf_counter()
                result = scan([folder], source, cache_path)
                seconds = time.perf_counter() - started
        else:
            started = time.perf_counter()
            result = scan([folder], LocalFeatureSource(), cache_path)
            seconds = time.perf_counter() - started
        with Cache(cache_path) as cache:
            cached = cache.lookup(result.photos, result.model_id)
    if result.errors:
        say(f"scan errors: {result.errors[:5]}")
    by_content: dict[str, np.ndarray] = {}
    embeddings: dict[str, np.ndarray] = {}
    for photo in result.photos:
        entry = cached.get(photo.path)
        features = entry.features if entry is not None else None
        if features is not None and features.embedding is not None:
            embeddings[photo.path] = features.embedding
            if photo.content_hash is not None:
                by_content[photo.content_hash] = features.embedding
    # Byte-identical replicas are embedded once (the scanner asks for one representative).
    for photo in result.photos:
        if photo.path not in embeddings and photo.content_hash in by_content:
            embeddings[photo.path] = by_content[photo.content_hash]
    return ProductRun(result, embeddings, seconds)


def run_imagededup(folder: Path) -> tuple[set[Pair], float]:
    from imagededup.methods import PHash

    quiet_imagededup()
    hasher = PHash(verbose=False)
    started = time.perf_counter()
    found = hasher.find_duplicates(image_dir=folder, max_distance_threshold=10)
    seconds = time.perf_counter() - started
    pairs = {
        frozenset((str(folder / name), str(folder / other)))
        for name, others in found.items()
        for other in others
    }
    return pairs, seconds


#: The same-shot pixel check the scanner uses, with thumbnails and scores kept for the run.
CHECKER = SameShotChecker(isolate=False)


def grouped_pairs(groups: Iterable[Group], kinds: frozenset[Kind]) -> set[Pair]:
    """Pairs of files a scan shows together with a verdict in ``kinds``: both in one group,
    each the keeper or related to it by one of ``kinds`` (a similar edit beside a near
    family counts for the "any" tier only)."""
    pairs: set[Pair] = set()
    for group in groups:
        paths = [
            m.photo.path
            for m in group.members
            if (m.verdict or group.kind) in kinds or m is group.keeper_member
        ]
        if len(paths) > 1:
            pairs.update(frozenset(p) for p in itertools.combinations(paths, 2))
    return pairs


def regroup(run: ProductRun, thresholds: Thresholds) -> list[Group]:
    """The engine's grouping again on the features of ``run``, with other thresholds."""
    return group_photos(
        run.photos, run.embeddings, thresholds, KeepRules(ScanSettings()), verify=CHECKER
    )


def at(verdicts: Mapping[Pair, Kind], kinds: frozenset[Kind]) -> set[Pair]:
    return {pair for pair, kind in verdicts.items() if kind in kinds}


# ------------------------------------------------------------------------------ calibration

#: The loosest settings any verdict here uses: pairs further apart never match, so they need
#: no asking (the engine only looks at pairs above its lowest cosine / within its pHash limit).
LOWEST_COSINE = 0.50
HIGHEST_PHASH = 24


class PairFeatures:
    """Every pair's cosine and pHash distance, and the engine's verdict for a pair on its own.

    Verdicts come from ``group_photos`` on the two photos, so the grid search always applies
    the engine's current rule (cosine, pHash, aspect ratio ...), never a copy of it.  Only the
    pairs that the loosest grid setting could match are asked about.
    """

    def __init__(self, run: ProductRun) -> None:
        self.photos = run.photos
        self.embeddings = run.embeddings
        self.paths = [p.path for p in self.photos]
        self.index = {path: i for i, path in enumerate(self.paths)}
        self.rules = KeepRules(ScanSettings())
        hashes = np.array([p.phash or 0 for p in self.photos], dtype=np.uint64)
        self.hashed = np.array([p.phash is not None for p in self.photos])
        self.distance = np.bitwise_count(hashes[:, None] ^ hashes[None, :]).astype(np.int16)
        self.has_embedding = all(p in run.embeddings for p in self.paths)
        self.cosine = None
        if self.has_embedding:
            matrix = np.stack([run.embeddings[p] for p in self.paths])
            self.cosine = matrix @ matrix.T
            reachable = self.cosine >= LOWEST_COSINE - 0.001
        else:
            both = self.hashed[:, None] & self.hashed[None, :]
            reachable = both & (self.distance <= HIGHEST_PHASH)
        contents = [p.content_hash or f"unique:{p.path}" for p in self.photos]
        same_bytes = np.array([[a == b for b in contents] for a in contents])
        rows, cols = np.nonzero(np.triu(reachable | same_bytes, k=1))
        self.candidates = list(zip(rows.tolist(), cols.tolist(), strict=True))

    def verdicts(self, t: Thresholds) -> dict[Pair, Kind]:
        """The engine's verdict on each pair of files judged alone, under ``t``."""
        loosest = [c for c in (t.near_cosine, t.similar_cosine) if c is not None]
        hashes = [h for h in (t.near_phash, t.similar_phash) if h is not None]
        if self.has_embedding and min(loosest, default=1.0) < LOWEST_COSINE:
            raise ValueError(f"cosines under {LOWEST_COSINE} are outside the candidate pairs")
        if not self.has_embedding and max(hashes, default=0) > HIGHEST_PHASH:
            raise ValueError(f"pHash limits over {HIGHEST_PHASH} are outside the candidate pairs")
        found = {}
        for i, j in self.candidates:
            a, b = self.photos[i], self.photos[j]
            groups = group_photos([a, b], self.embeddings, t, self.rules, verify=CHECKER)
            if groups:
                found[frozenset((a.path, b.path))] = groups[0].kind
        return found

    def between(self, a: str, b: str) -> tuple[float | None, int | None]:
        i, j = self.index[a], self.index[b]
        cosine = None if self.cosine is None else float(self.cosine[i, j])
        distance = int(self.distance[i, j]) if self.hashed[i] and self.hashed[j] else None
        return cosine, distance


@dataclass(frozen=True)
class Calibrated:
    thresholds: Thresholds
    near: Score  # near tier against the near-class pairs
    any_kind: Score
    near_frontier: list[tuple[Thresholds, Score]]  # the best near setting per pHash limit
    near_sweep: list[tuple[Thresholds, Score]]  # near_cosine at the best pHash limit
    similar_sweep: list[tuple[Thresholds, Score]]


def _near_strictness(t: Thresholds) -> tuple[float, int]:
    return (t.near_cosine or 0.0, -(t.near_phash if t.near_phash is not None else 64))


def _similar_strictness(t: Thresholds) -> tuple[float, int]:
    return (t.similar_cosine or 0.0, -(t.similar_phash if t.similar_phash is not None else 64))


Ranked = tuple[Thresholds, Score]


def _best(
    scored: Iterable[Ranked], strictness: Callable[[Thresholds], tuple[float, int]]
) -> Ranked:
    """Precision target first, then F1, then the worst edit kind, then precision; ties (common
    on a small set) go to the stricter setting, the safer side."""

    def rank(ts: Ranked) -> tuple[bool, float, float, float, tuple[float, int]]:
        t, s = ts
        return (s.precision >= TARGET_PRECISION, s.f1, s.worst_edit, s.precision, strictness(t))

    return max(scored, key=rank)


def grid_search(features: PairFeatures, truth: Truth, base: Thresholds) -> Calibrated:
    """The best ``near`` setting for re-encodes (the deletion verdict), then the best
    ``similar`` setting for "any kind" on top of it."""
    frontier: list[Ranked] = []
    sweeps: dict[int | None, list[Ranked]] = {}
    if features.has_embedding:
        cosines = [round(float(c), 2) for c in np.arange(0.60, 0.985, 0.01)]
        for limit in [*range(0, 25, 2), None]:
            sweeps[limit] = [
                (t, score(at(features.verdicts(t), NEAR_OR_EXACT), truth, near_only=True))
                for t in (replace(base, near_cosine=c, near_phash=limit) for c in cosines)
            ]
            frontier.append(_best(sweeps[limit], _near_strictness))
    else:
        for limit in range(0, 17):
            t = replace(base, near_phash=limit, similar_phash=None)
            near = at(features.verdicts(t), NEAR_OR_EXACT)
            frontier.append((t, score(near, truth, near_only=True)))
    near_t, near_s = _best(frontier, _near_strictness)
    candidates: list[Thresholds]
    if features.has_embedding:
        steps = np.arange(0.50, 0.955, 0.01)
        candidates = [replace(near_t, similar_cosine=round(float(c), 2)) for c in steps]
    else:
        low = near_t.near_phash or 0
        candidates = [replace(near_t, similar_phash=h) for h in range(low, 25)]
    sweep = [(t, score(at(features.verdicts(t), ANY_KIND), truth)) for t in candidates]
    any_t, any_s = _best(sweep, _similar_strictness)
    return Calibrated(any_t, near_s, any_s, frontier, sweeps.get(near_t.near_phash, []), sweep)


# ------------------------------------------------------------------------------ tables


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def _bold_if(text: str, low: bool) -> str:
    return f"**{text}**" if low else text


Row = tuple[str, Score]


def summary_table(rows: Sequence[Row]) -> str:
    body = []
    for label, s in rows:
        body.append(
            [
                label,
                _fmt(s.precision),
                _fmt(s.recall),
                _fmt(s.f1),
                s.false_pairs,
                s.missed_pairs,
                _bold_if(_fmt(s.worst_edit), s.worst_edit < TARGET_EDIT_RECALL),
                "-"
                if s.wrong_marks is None
                else _bold_if(str(s.wrong_marks), s.wrong_marks > TARGET_WRONG_MARKS),
                "-"
                if s.near_recall is None
                else _bold_if(_fmt(s.near_recall), s.near_recall < TARGET_NEAR_RECALL),
                verdict(meets_targets(s)),
            ]
        )
    header = [
        "system, view, tier",
        "precision",
        "recall",
        "F1",
        "false pairs",
        "missed pairs",
        "worst edit kind",
        "wrong DELETE marks",
        "near recall (re-encodes)",
        "meets targets",
    ]
    return markdown_table(header, body)


def edit_table(rows: Sequence[Row]) -> str:
    body = []
    for edit, (_suffix, _writer, tier) in EDITS.items():
        cells = []
        for _label, s in rows:
            value = s.by_edit.get(edit)
            cells.append(
                "-" if value is None else _bold_if(_fmt(value), value < TARGET_EDIT_RECALL)
            )
        body.append([edit, tier, *cells])
    return markdown_table(["edit kind", "design tier", *(label for label, _ in rows)], body)


def _spread(values: Sequence[float | int | None], digits: int, worst_is_low: bool) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    worst = min(known) if worst_is_low else max(known)
    return f"{worst:.{digits}f} / {statistics.median(known):.{digits}f}"


def distance_table(features: PairFeatures, truth: Truth) -> str:
    """Per edit kind: original-to-copy cosine (lowest / median) and pHash distance (highest /
    median); then the distinct photographs (highest cosine / lowest pHash distance)."""
    rows = []
    for edit in EDITS:
        measured = [
            features.between(truth.originals[i.original], str(i.path))
            for i in truth.items
            if i.edit == edit
        ]
        rows.append(
            [
                edit,
                _spread([c for c, _ in measured], 3, worst_is_low=True),
                _spread([d for _, d in measured], 0, worst_is_low=False),
            ]
        )
    photo_of = {str(i.path): i.original for i in truth.items}
    negatives = [
        (features.between(a, b), photo_of[a], photo_of[b])
        for a, b in itertools.combinations(features.paths, 2)
        if photo_of[a] != photo_of[b]
    ]
    cosines = [c for (c, _), _, _ in negatives if c is not None]
    distances = [d for (_, d), _, _ in negatives if d is not None]
    rows.append(
        [
            "**distinct photos** (every cross-photo pair of files)",
            f"{max(cosines):.3f} / {statistics.median(cosines):.3f} (highest)" if cosines else "-",
            f"{min(distances)} / {statistics.median(distances):.0f} (lowest)" if distances else "-",
        ]
    )
    table = markdown_table(
        ["edit kind", "cosine: lowest / median", "pHash distance: highest / median"], rows
    )
    lines = [table, ""]
    if features.has_embedding:
        closest: dict[str, float] = {}
        for (c, _), a, b in negatives:
            key = " ~ ".join(sorted((a, b)))
            if c is not None and c > closest.get(key, -1.0):
                closest[key] = c
        top = sorted(closest.items(), key=lambda kv: -kv[1])[:4]
        lines.append(
            "Closest distinct photographs (highest cosine over all their files): "
            + ", ".join(f"{k} {v:.3f}" for k, v in top)
            + "."
        )
    nearest: dict[str, int] = {}
    for (_, d), a, b in negatives:
        key = " ~ ".join(sorted((a, b)))
        if d is not None and d < nearest.get(key, 65):
            nearest[key] = d
    top_hash = sorted(nearest.items(), key=lambda kv: kv[1])[:4]
    lines.append(
        "Closest by pHash (lowest distance over all their files): "
        + ", ".join(f"{k} {v}" for k, v in top_hash)
        + "."
    )
    return "\n".join(lines)


def frontier_table(calibrated: Calibrated) -> str:
    rows = []
    for t, s in calibrated.near_frontier:
        rows.append(
            [
                "none" if t.near_phash is None else t.near_phash,
                "-" if t.near_cosine is None else f"{t.near_cosine:.2f}",
                _fmt(s.precision),
                _fmt(s.recall),
                _fmt(s.f1),
                s.promoted,
                _confusions(s),
            ]
        )
    header = [
        "near_phash",
        "best near_cosine",
        "precision",
        "recall",
        "F1",
        "edited copies judged near",
        "false pairs",
    ]
    return markdown_table(header, rows)


def sweep_table(
    sweep: Sequence[Ranked],
    chosen: Thresholds,
    value: Callable[[Thresholds], object],
    every: int,
    near_tier: bool,
) -> str:
    rows = []
    for n, (t, s) in enumerate(sweep):
        if n % every and t != chosen:
            continue
        row: list[object] = [
            f"**{value(t)}**" if t == chosen else value(t),
            _fmt(s.precision),
            _fmt(s.recall),
            _fmt(s.f1),
            _fmt(s.worst_edit),
        ]
        if near_tier:
            row.append(s.promoted)
        rows.append([*row, _confusions(s)])
    header = ["threshold", "precision", "recall", "F1", "worst edit kind"]
    if near_tier:
        header.append("edited copies judged near")
    return markdown_table([*header, "false pairs"], rows)


def _describe(t: Thresholds) -> str:
    return (
        f"near_cosine={t.near_cosine}, near_phash={t.near_phash}, "
        f"similar_cosine={t.similar_cosine}, similar_phash={t.similar_phash}"
    )


def _confusions(s: Score, top: int = 3) -> str:
    """The photograph pairs behind the false pairs, most first."""
    ranked = sorted(s.confusions.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{k} ({v})" for k, v in ranked[:top]) or "none"
    rest = sum(v for _, v in ranked[top:])
    return f"{text} and {rest} more" if rest else text


# ------------------------------------------------------------------------------ main


@dataclass
class Runs:
    truth: Truth
    model: ProductRun
    local: ProductRun
    imagededup_pairs: set[Pair]
    imagededup_seconds: float


def collect(folder: Path) -> Runs:
    say(f"building the labelled set in {folder} ...")
    truth = Truth.of(build_set(folder))
    say("photodup, built-in model, through photodupd ...")
    model_run = run_photodup(folder, model=True)
    say("photodup --no-model ...")
    local_run = run_photodup(folder, model=False)
    say("imagededup PHash ...")
    dedup_pairs, dedup_seconds = run_imagededup(folder)
    return Runs(truth, model_run, local_run, dedup_pairs, dedup_seconds)


def _product_rows(
    name: str, run: ProductRun, t: Thresholds, features: PairFeatures, truth: Truth
) -> tuple[list[Row], list[Row]]:
    """(summary rows, per-edit rows) of one photodup configuration."""
    verdicts = features.verdicts(t)
    pair_near = score(at(verdicts, NEAR_OR_EXACT), truth)
    pair_near = replace(pair_near, near_recall=truth.near_recall(at(verdicts, NEAR_OR_EXACT)))
    pair_any = score(at(verdicts, ANY_KIND), truth)
    group_near, group_any = _group_rows(run, t, truth)
    summary = [
        (f"{name}, pair verdicts, near or exact", pair_near),
        (f"{name}, pair verdicts, any", pair_any),
        (f"{name}, groups, near or exact", group_near),
        (f"{name}, groups, any", group_any),
    ]
    edits = [
        (f"{name}: pairs near", pair_near),
        (f"{name}: pairs any", pair_any),
        (f"{name}: groups any", group_any),
    ]
    return summary, edits


def _group_rows(run: ProductRun, t: Thresholds, truth: Truth) -> tuple[Score, Score]:
    """The groups a scan shows, near-or-exact and any tier, with their DELETE marks."""
    groups = run.result.groups if t == run.thresholds else regroup(run, t)
    near_pairs = grouped_pairs(groups, NEAR_OR_EXACT)
    wrong = len(truth.wrong_marks(groups))
    near = replace(
        score(near_pairs, truth), wrong_marks=wrong, near_recall=truth.near_recall(near_pairs)
    )
    return near, replace(score(grouped_pairs(groups, ANY_KIND), truth), wrong_marks=wrong)


def report(runs: Runs, grid: bool) -> str:
    truth = runs.truth
    model_id, local_id = runs.model.result.model_id, runs.local.result.model_id
    model_features, local_features = PairFeatures(runs.model), PairFeatures(runs.local)
    say("scoring ...")
    summary, edits = _product_rows(
        "built-in", runs.model, runs.model.thresholds, model_features, truth
    )
    local_summary, local_edits = _product_rows(
        "--no-model", runs.local, runs.local.thresholds, local_features, truth
    )
    dedup = score(runs.imagededup_pairs, truth)
    summary += [*local_summary, ("imagededup PHash (distance <= 10)", dedup)]
    edits += [*local_edits[1:], ("imagededup", dedup)]

    lines = [
        f"Quality benchmark: {len(truth.items)} files from {len(truth.originals)} skimage.data "
        f"photographs, {len(truth.positives)} duplicate pairs among {truth.total_pairs} pairs; "
        f"{machine_line()}",
        "",
        f"Defaults: {model_id}: {_describe(runs.model.thresholds)}; {local_id}: "
        f"{_describe(runs.local.thresholds)}.",
        f"Targets: precision >= {TARGET_PRECISION}, F1 >= {TARGET_F1}, every edit kind's recall "
        f">= {TARGET_EDIT_RECALL}.  First scans: built-in model {runs.model.seconds:.1f} s "
        f"(model loaded beforehand), --no-model {runs.local.seconds:.1f} s, imagededup "
        f"{runs.imagededup_seconds:.1f} s.",
        "",
        "Pair verdicts judge each pair alone (what the features and thresholds can tell); "
        "groups count the pairs a scan shows together.  A file is in one group only: its "
        "keeper, the keeper's byte-identical and near copies, and the edits the same-shot "
        "pixel check confirms (shown, never marked).  The near-or-exact tier counts pairs "
        "whose members are both the keeper or near/byte-identical to it.",
        "",
        summary_table(summary),
        "",
        "False pairs at the defaults (built-in, pair verdicts, any): "
        f"{_confusions(summary[1][1])}; imagededup: {_confusions(dedup)}.",
        "",
        "Recall of (original, edited copy) pairs per edit kind (bold: under "
        f"{TARGET_EDIT_RECALL}):",
        "",
        edit_table(edits),
        "",
        f"Distances from each original to its copies ({model_id} cosine, 64-bit pHash):",
        "",
        distance_table(model_features, truth),
    ]
    if grid:
        say("searching the threshold grids ...")
        lines += _grid_report(runs, model_features, local_features)
    return "\n".join(lines)


def _grid_report(
    runs: Runs, model_features: PairFeatures, local_features: PairFeatures
) -> list[str]:
    truth = runs.truth
    best = grid_search(model_features, truth, runs.model.thresholds)
    local_best = grid_search(local_features, truth, runs.local.thresholds)
    summary, edits = _product_rows(
        "built-in, best", runs.model, best.thresholds, model_features, truth
    )
    local_summary, local_edits = _product_rows(
        "--no-model, best", runs.local, local_best.thresholds, local_features, truth
    )
    chosen, local_chosen = best.thresholds, local_best.thresholds
    return [
        "",
        "## Threshold grid search",
        "",
        "The engine's own verdicts (`group_photos` on each pair) over threshold grids, on the "
        "same features.  The near tier is scored on re-encodes only (original, copy, "
        "downscale, JPEG q40, WebP, PNG, EXIF-rotated); same-photo pairs with an edited copy "
        'are left out of its precision and recall and counted as "edited copies judged '
        'near" (the design wants them similar).  Ranking: the precision target, then F1, '
        "then the worst edit kind; ties go to the stricter setting.  The similar threshold is "
        "then chosen on all pairs, the same way.",
        "",
        "Built-in model, near tier: the best near_cosine for each near_phash:",
        "",
        frontier_table(best),
        "",
        f"Built-in model, near tier: near_cosine at near_phash={chosen.near_phash}:",
        "",
        sweep_table(
            best.near_sweep,
            replace(chosen, similar_cosine=runs.model.thresholds.similar_cosine),
            lambda t: t.near_cosine,
            4,
            near_tier=True,
        ),
        "",
        "Built-in model, any tier: similar_cosine on top of the chosen near setting:",
        "",
        sweep_table(best.similar_sweep, chosen, lambda t: t.similar_cosine, 5, near_tier=False),
        "",
        "--no-model, near tier: near_phash:",
        "",
        frontier_table(local_best),
        "",
        "--no-model, any tier: similar_phash on top of the chosen near setting:",
        "",
        sweep_table(
            local_best.similar_sweep, local_chosen, lambda t: t.similar_phash, 2, near_tier=False
        ),
        "",
        f"Best (precision first) for {runs.model.result.model_id}: {_describe(chosen)}.",
        f"Best (precision first) for {runs.local.result.model_id}: {_describe(local_chosen)}.",
        "",
        summary_table([*summary, *local_summary]),
        "",
        edit_table([*edits, *local_edits]),
    ]


def collect_hard(folder: Path) -> Runs:
    say(f"building the hard-negative set in {folder} ...")
    items = hard_negatives.build_set(folder)
    truth = Truth.of(items, {i.edit for i in items})  # every copy there is a re-encode
    say("photodup, built-in model, through photodupd (hard negatives) ...")
    model_run = run_photodup(folder, model=True)
    say("photodup --no-model (hard negatives) ...")
    local_run = run_photodup(folder, model=False)
    say("imagededup PHash (hard negatives) ...")
    dedup_pairs, dedup_seconds = run_imagededup(folder)
    return Runs(truth, model_run, local_run, dedup_pairs, dedup_seconds)


def report_hard(runs: Runs) -> str:
    """The hard-negative set: what a scan shows (groups) and the DELETE marks it makes.

    Every copy here is a re-encode, so a file of one picture pre-marked DELETE beside another
    picture's keeper is a wrong mark; pair verdicts are left out (every pair of one family is
    a near candidate, and each would need its own detail check)."""
    truth = runs.truth
    say("scoring the hard negatives ...")
    rows: list[Row] = []
    wrong: dict[str, list[str]] = {}
    for name, run in (("built-in", runs.model), ("--no-model", runs.local)):
        near, any_kind = _group_rows(run, run.thresholds, truth)
        rows += [(f"{name}, groups, near or exact", near), (f"{name}, groups, any", any_kind)]
        wrong[name] = truth.wrong_marks(run.result.groups)
    dedup = score(runs.imagededup_pairs, truth)
    rows.append(("imagededup PHash (distance <= 10)", dedup))
    families = Counter(i.family for i in truth.items if isinstance(i, hard_negatives.Item))
    lines = [
        "",
        f"## Hard negatives ({len(truth.items)} files, {len(truth.originals)} pictures in "
        f"{len(families)} families: {', '.join(sorted(families))})",
        "",
        "Pictures that differ only where a 96-pixel thumbnail cannot see (transparent "
        "overlays, logos, same-template invoices at 11/16/24 px text, UI screenshots, colour "
        "variants, line art and a blank page with a signature, a photo with a small bar over "
        "an eye or a date stamp), each with its true copies "
        "(JPEG q70-q95, 50%/75% resizes at q70-q90, PNG <-> JPEG, EXIF rotation; transparent "
        "ones as PNG/WebP keeping their alpha).  See bench/hard_negatives.py.  First scans: "
        f"built-in model {runs.model.seconds:.1f} s, --no-model {runs.local.seconds:.1f} s.",
        "",
        summary_table(rows),
        "",
        "False pairs (built-in, groups, any): "
        f"{_confusions(rows[1][1])}; imagededup: {_confusions(dedup)}.",
    ]
    for name, marks in wrong.items():
        shown = ", ".join(marks[:8]) + (f" and {len(marks) - 8} more" if len(marks) > 8 else "")
        lines.append(f"Wrong DELETE marks, {name}: {shown or 'none'}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    parser.add_argument("--keep", type=Path, help="build the labelled sets here and keep them")
    parser.add_argument("--no-grid", action="store_true", help="skip the threshold grid search")
    parser.add_argument(
        "--set",
        choices=("photos", "hard", "both"),
        default="both",
        help="the skimage photo set, the hard-negative set (bench/hard_negatives.py), or both",
    )
    args = parser.parse_args()

    base = args.keep or Path(tempfile.mkdtemp(prefix="photodup-quality-"))
    parts = []
    try:
        if args.set in ("photos", "both"):
            folder = base / "photos"
            folder.mkdir(parents=True, exist_ok=True)
            parts.append(report(collect(folder), grid=not args.no_grid))
        if args.set in ("hard", "both"):
            folder = base / "hard"
            folder.mkdir(parents=True, exist_ok=True)
            parts.append(report_hard(collect_hard(folder)))
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    emit("\n".join(parts), args.out)


if __name__ == "__main__":
    main()
