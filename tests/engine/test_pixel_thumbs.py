"""The pixel checks' thumbnails come from the decode that feeds the model (issue 14), and
every decode the checks still make runs in isolated decoders (issue 12): the packed form,
the protocol's opt-in, the scan and its cache, and the isolated fallbacks."""

from __future__ import annotations

import shutil
import sqlite3
import struct
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from photodup_tui.engine import sameshot
from photodup_tui.engine.cache import Cache
from photodup_tui.engine.daemon_features import DaemonFeatureSource
from photodup_tui.engine.features import FeatureResult, FeatureSource
from photodup_tui.engine.local_features import LocalFeatureSource
from photodup_tui.engine.sameshot_check import SameShotChecker
from photodup_tui.engine.scan import Scanner
from photodup_tui.engine.settings import ScanSettings
from photodup_tui.engine.types import Photo, ScanResult
from photodupd import imaging, paths, pixelthumb, protocol
from photodupd.client import SyncClient
from photodupd.imagebase import ImageError
from tests.daemon.daemon_proc import DaemonProcess
from tests.engine.helpers import photo
from tests.engine.test_e2e_daemon import library
from tests.engine.test_near_precision import invoice

# ------------------------------------------------------------------------------ packed form


def pictures() -> list[Image.Image]:
    astronaut = Image.fromarray(skimage.data.astronaut())
    rgba = np.array(astronaut.convert("RGBA"))
    rgba[:200, :, 3] = 0  # a transparent band: the alpha plane travels too
    return [
        astronaut,
        Image.fromarray(skimage.data.camera()),  # grayscale
        Image.fromarray(rgba),
        Image.new("RGB", (3, 500), (200, 10, 10)),  # a sliver: 1 x 96 thumbnail
    ]


@pytest.mark.parametrize("index", range(4))
def test_a_packed_thumbnail_unpacks_to_exactly_the_thumbnail(index: int) -> None:
    thumb = pixelthumb.make(pictures()[index])
    back = pixelthumb.unpack(pixelthumb.pack(thumb))
    assert back.gray.dtype == thumb.gray.dtype and np.array_equal(back.gray, thumb.gray)
    assert back.chroma is not None and thumb.chroma is not None
    assert back.chroma.dtype == np.int16 and np.array_equal(back.chroma, thumb.chroma)
    assert (back.alpha is None) == (thumb.alpha is None)
    if thumb.alpha is not None:
        assert back.alpha is not None and np.array_equal(back.alpha, thumb.alpha)
    assert (back.colour, back.flat) == (thumb.colour, thumb.flat)
    assert sameshot.same_picture(back, thumb) == sameshot.same_picture(thumb, thumb)


def malformed() -> dict[str, bytes]:
    good = pixelthumb.pack(pixelthumb.make(pictures()[0]))
    header = struct.Struct("<2sBBHHdd")
    magic, version, flags, h, w, colour, flat = header.unpack_from(good)
    body = good[header.size :]
    planes = zlib.decompress(body)

    def with_header(**fields: object) -> bytes:
        values = dict(magic=magic, version=version, flags=flags, h=h, w=w, c=colour, f=flat)
        values.update(fields)
        return header.pack(*values.values()) + body

    return {
        "empty": b"",
        "header only": good[: header.size],
        "cut short": good[:-10],
        "trailing bytes": good + b"\0",
        "bad magic": with_header(magic=b"XX"),
        "newer version": with_header(version=2),
        "unknown plane": with_header(flags=flags | 8),
        "too tall": with_header(h=97),
        "no pixels": with_header(w=0),
        "bigger than it says": with_header(h=h - 1),
        "nan colour": with_header(c=float("nan")),
        "flat share above 1": with_header(f=1.5),
        # Inflates to 64 MiB: refused after expected + 1 bytes, never inflated in full.
        "zlib bomb": header.pack(magic, version, flags, h, w, colour, flat)
        + zlib.compress(planes + bytes(64 << 20), 9),
        "far too big": good + bytes(pixelthumb.MAX_PACKED),
    }


@pytest.mark.parametrize("case", sorted(malformed()))
def test_unpack_refuses_anything_that_is_not_exactly_a_thumbnail(case: str) -> None:
    with pytest.raises(ImageError):
        pixelthumb.unpack(malformed()[case])


def test_the_decoder_makes_the_thumbnail_from_the_same_decode(tmp_path: Path) -> None:
    """decode(thumb=True): the model's pixels and hash are those of a decode without it (a
    4:3 JPEG drafts to the same scale), and the thumbnail is what the checks made before
    from their own preview decode, within a level or two."""
    path = tmp_path / "a.jpg"
    Image.fromarray(skimage.data.astronaut()).resize((2000, 1500)).save(path, quality=90)
    spec = imaging.PreprocessSpec()
    plain = imaging.decode(str(path), spec=spec)
    both = imaging.decode(str(path), spec=spec, thumb=True)
    assert plain.thumb is None and both.thumb is not None
    assert both.pixels is not None and plain.pixels is not None
    assert np.array_equal(both.pixels, plain.pixels) and both.phash == plain.phash
    thumb = pixelthumb.unpack(both.thumb)
    before = sameshot.thumbnail_from(imaging.load_preview(str(path), 384, alpha=True))
    assert thumb.shape == before.shape
    assert float(np.abs(thumb.gray - before.gray).max()) <= 2.0
    assert sameshot.same_picture(thumb, before) >= 0.99


# ------------------------------------------------------------------------------ the scan


class Counting:
    """Every SameShotChecker a scan makes, to read its counters."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.checkers: list[SameShotChecker] = []
        original = SameShotChecker.__init__
        made = self.checkers

        def init(self: SameShotChecker, *args: object, **kwargs: object) -> None:
            original(self, *args, **kwargs)  # type: ignore[arg-type]
            made.append(self)

        monkeypatch.setattr(SameShotChecker, "__init__", init)

    def totals(self) -> tuple[int, int]:
        """(thumbnails the scans gave, thumbnails decoded for the checks)"""
        return (
            sum(c.received for c in self.checkers),
            sum(c.decoded for c in self.checkers),
        )


def no_decodes_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process must decode nothing: the isolated decoders do, in processes of their own."""

    def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError("an image was decoded in the scanning process")

    monkeypatch.setattr(imaging, "decode", refuse)
    monkeypatch.setattr(imaging, "load_preview", refuse)


class WithoutThumbs:
    """A feature source as an older daemon answers: no thumbnails."""

    def __init__(self, source: FeatureSource) -> None:
        self.source = source
        self.model_id = source.model_id

    def compute(
        self,
        paths: Sequence[str],
        on_result: Callable[[str, FeatureResult], None],
        cancel: threading.Event,
    ) -> None:
        self.source.compute(paths, lambda p, r: on_result(p, replace(r, thumb=None)), cancel)


def scan(source: FeatureSource, root: Path, cache: Cache) -> ScanResult:
    return Scanner(ScanSettings(), source, cache).run(
        [str(root)], lambda _p: None, threading.Event()
    )


def shape(result: ScanResult) -> list[tuple[str, list[tuple[str, str, str]]]]:
    return sorted(
        (
            g.kind.value,
            sorted((m.photo.path, str(m.verdict), m.action.value) for m in g.members),
        )
        for g in result.groups
    )


def forget_checks(cache: Cache) -> None:
    """Drop the stored scores and groupings: the next scan must check its pairs again."""
    db = sqlite3.connect(cache.path)
    with db:
        db.execute("DELETE FROM same_shot")
        db.execute("DELETE FROM groupings")
    db.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One photodupd with the built-in model for this module's tests (a short socket path:
    at most 104 bytes)."""
    runtime = Path(tempfile.mkdtemp(prefix="pdt-"))
    runtime.chmod(0o700)
    process = DaemonProcess(
        runtime / "d.sock", tmp_path_factory.mktemp("daemon"), "--model", "builtin"
    )
    try:
        process.wait_hello(timeout=120)
        process.wait_state("ready", timeout=300)
        yield process
    finally:
        assert process.terminate() == 0, process.output()
        shutil.rmtree(runtime, ignore_errors=True)


@pytest.mark.timeout(600)
def test_a_daemon_scan_decodes_no_thumbnail_here_and_a_rescan_decodes_nothing(
    daemon: DaemonProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "Pictures"
    library(root)
    source = DaemonFeatureSource(daemon.socket_path, start=False)

    # Reference: the same scan with thumbnails made the old way (decoded for the checks).
    counting = Counting(monkeypatch)
    with Cache(tmp_path / "old.sqlite") as cache:
        before = scan(WithoutThumbs(source), root, cache)
    assert counting.totals()[1] > 0

    counting.checkers.clear()
    no_decodes_here(monkeypatch)
    with Cache(tmp_path / "cache.sqlite") as cache:
        first = scan(source, root, cache)
        received, decoded = counting.totals()
        assert decoded == 0 and received > 0  # every thumbnail came with the features
        assert first.groups and shape(first) == shape(before)

        # A rescan: even with every score and grouping forgotten, the cache has the
        # thumbnails; nothing is decoded anywhere.
        forget_checks(cache)
        counting.checkers.clear()
        again = scan(source, root, cache)
        received, decoded = counting.totals()
        assert decoded == 0 and received > 0
        assert shape(again) == shape(first)


@pytest.mark.timeout(300)
def test_the_features_reply_carries_thumbnails_only_when_asked(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    path = tmp_path / "a.jpg"
    Image.fromarray(skimage.data.coffee()).save(path, quality=90)
    items = [{"path": str(path)}, {"path": str(tmp_path / "missing.jpg")}]
    with SyncClient(daemon.socket_path) as client:
        client.connect()
        plain = client.call(protocol.FEATURES, items=items)
        asked = client.call(protocol.FEATURES, items=items, thumbs=True)
        with pytest.raises(protocol.RemoteError, match="bad_request"):
            client.call(protocol.FEATURES, items=items, thumbs="yes")
    assert all("thumb" not in item for item in plain["items"])
    ok, missing = asked["items"]
    assert ok["ok"] and not missing["ok"] and "thumb" not in missing
    assert ok.get("embedding") == plain["items"][0].get("embedding")
    expected = imaging.decode(str(path), spec=imaging.PreprocessSpec(), thumb=True).thumb
    assert ok.get("thumb") == expected


def test_a_cached_photo_without_a_thumbnail_is_decoded_in_the_isolated_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache row from before thumbnails (or an older daemon's answer) has none: the check
    decodes it, never in this process, and keeps it for the next scan."""
    root = tmp_path / "Pictures"
    library(root)
    local = LocalFeatureSource(workers=1)
    counting = Counting(monkeypatch)
    with Cache(tmp_path / "cache.sqlite") as cache:
        first = scan(WithoutThumbs(local), root, cache)
        db = sqlite3.connect(cache.path)
        with db:
            db.execute("DELETE FROM thumbs")  # rows as a version 2 cache has them
        db.close()
        forget_checks(cache)
        counting.checkers.clear()
        no_decodes_here(monkeypatch)
        second = scan(local, root, cache)  # every photo cached: features asked of no one
        received, decoded = counting.totals()
        assert decoded > 0 and received == 0
        assert shape(second) == shape(first) and first.groups
        forget_checks(cache)
        counting.checkers.clear()
        scan(local, root, cache)
        assert counting.totals() == (decoded, 0)  # kept: decoded once


def test_the_checks_decode_under_the_limits_set_for_photodupd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths.config_file().parent.mkdir(parents=True, exist_ok=True)
    paths.config_file().write_text("[daemon]\ndecode_timeout = 7.5\ndecode_memory_mb = 1024\n")
    root = tmp_path / "Pictures"
    library(root)
    counting = Counting(monkeypatch)
    with Cache(tmp_path / "cache.sqlite") as cache:
        scan(LocalFeatureSource(workers=1), root, cache)
    assert counting.checkers
    assert {(c.timeout, c.memory_mb) for c in counting.checkers} == {(7.5, 1024)}


def test_a_version_2_cache_gains_an_empty_thumbs_table(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    Cache(path).close()
    db = sqlite3.connect(path)
    with db:
        db.execute("DROP TABLE thumbs")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        db.execute(
            "INSERT INTO files(path, dev, ino, size, mtime_ns, ctime_ns) VALUES (?, 1, 2, 3, 4, 5)",
            (b"/a.jpg",),
        )
    db.close()
    with Cache(path) as cache:
        assert cache.count() == 1  # migrated in place, not rebuilt
        kept = photo("/a.jpg")
        assert cache.thumbs([kept]) == {}


# ------------------------------------------------------------------------------ isolation


def test_a_detail_check_that_hangs_or_bombs_costs_its_own_pair_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Near pairs of flat pages are proven at full detail, in the isolated decoders: one
    whose decoder hangs (replaced after its timeout) and one that is a decompression bomb
    get no score; the others are answered; this process decodes none of them."""
    page = invoice(1).reduce(2)  # 800 x 600: quick to prove, however loaded the machine
    names = ["ok-a.png", "ok-b.png", "hang-a.png", "hang-b.png", "bomb-a.png"]
    for name in names[:4]:
        page.save(tmp_path / name)
    # 20000 x 20000 pixels of white: a small file, far above the decoder's pixel limit.
    Image.new("1", (20000, 20000), 1).save(tmp_path / "bomb-a.png")
    thumb = pixelthumb.pack(pixelthumb.make(page))

    class Given:
        def thumbs(self, photos: Sequence[Photo]) -> dict[str, bytes]:
            return {p.path: thumb for p in photos}

        def keep(self, made: Sequence[tuple[Photo, bytes]]) -> None:
            raise AssertionError("nothing was decoded, nothing to keep")

    photos = {n: photo(str(tmp_path / n), width=800, height=600) for n in names}
    photos["bomb-a.png"] = photo(str(tmp_path / "bomb-a.png"), width=20000, height=20000)
    pairs = [
        (photos["hang-a.png"], photos["hang-b.png"]),
        (photos["bomb-a.png"], photos["ok-a.png"]),
        (photos["ok-a.png"], photos["ok-b.png"]),
    ]
    no_decodes_here(monkeypatch)
    checker = SameShotChecker(
        thumbs=Given(),
        workers=2,
        timeout=10.0,
        decode_fn="tests.engine.faulty_pixel_jobs:hang_on_marked",
    )
    with checker:
        hung, bomb, same = checker.near(pairs)
        assert checker._decoders is not None
        stats = checker._decoders.stats()
    assert hung is None and bomb is None
    assert same is not None and same >= sameshot.SAME_PICTURE_MIN
    assert stats["timeouts"] == 1 and stats["failed"] == 2
    assert (checker.received, checker.decoded, checker.detailed) == (5, 0, 1)
    assert checker.unanswered == 2
