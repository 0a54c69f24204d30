"""Pixel-check scores are remembered per file identity, and forgotten when the file changes.

The checks (same shot? same picture?) decide verdicts, and ``near`` pre-marks deletions, so
a score cached for a file's old pixels must never answer for its new ones.  The sneaky case
is an in-place edit: same path, same inode, same size; only the mtime tells.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from photodup_tui.engine.cache import Cache, pixel_key
from photodup_tui.engine.sameshot import SAME_PICTURE_MIN, SAME_SHOT_MIN
from photodup_tui.engine.sameshot_check import SameShotChecker
from photodup_tui.engine.types import FileStat, Photo
from tests.photos import make_photo

ONE_SECOND = 1_000_000_000


def on_disk(path: Path) -> Photo:
    """The photo as a scan sees it now."""
    return Photo(str(path), FileStat.of(os.lstat(path)))


def save_bmp(image: Image.Image, path: Path) -> None:
    """BMP: the same dimensions always make the same file size, so an edit keeps the size."""
    image.save(path, "BMP")


def edit_in_place(path: Path, image: Image.Image) -> None:
    """Rewrite the file's bytes through the same inode; the size stays, the mtime moves on."""
    st = os.lstat(path)
    save_bmp(image, path.with_suffix(".tmp"))
    data = path.with_suffix(".tmp").read_bytes()
    assert len(data) == st.st_size
    with open(path, "r+b") as f:
        f.write(data)
    # Set explicitly: a coarse-timestamp filesystem might not move it within one test.
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + ONE_SECOND))
    after = os.lstat(path)
    assert (after.st_ino, after.st_size) == (st.st_ino, st.st_size)


def scores(cache: Cache, a: Photo, b: Photo) -> tuple[float | None, float | None, int]:
    """(same-shot score, same-picture score, thumbnails decoded) from a fresh checker."""
    checker = SameShotChecker(cache, isolate=False)
    [shot] = checker([(a, b)])
    [picture] = checker.near([(a, b)])
    return shot, picture, checker.decoded


def test_the_key_follows_the_file_identity_and_its_mtime(tmp_path: Path) -> None:
    path = tmp_path / "a.bmp"
    save_bmp(make_photo(1, (96, 64)), path)
    before = on_disk(path)
    assert pixel_key(on_disk(path)) == pixel_key(before)
    edit_in_place(path, make_photo(2, (96, 64)))
    assert pixel_key(on_disk(path)) != pixel_key(before)


def test_scores_of_a_file_edited_in_place_are_not_reused(tmp_path: Path) -> None:
    original = make_photo(1)
    a, b = tmp_path / "a.bmp", tmp_path / "b.bmp"
    save_bmp(original, a)
    save_bmp(original, b)  # a copy: the same shot and the same picture
    with Cache(tmp_path / "cache.sqlite") as cache:
        shot, picture, decoded = scores(cache, on_disk(a), on_disk(b))
        assert shot is not None and shot >= SAME_SHOT_MIN
        assert picture is not None and picture >= SAME_PICTURE_MIN
        assert decoded == 2
        # A rescan of unchanged files asks the cache, not the pixels.
        assert scores(cache, on_disk(a), on_disk(b)) == (pytest.approx(shot), picture, 0)

        edit_in_place(b, ImageOps.flip(make_photo(2)))  # another picture, same size
        shot_now, picture_now, decoded_now = scores(cache, on_disk(a), on_disk(b))

    assert decoded_now == 2  # looked at the pixels again
    assert shot_now is not None and shot_now < SAME_SHOT_MIN
    assert picture_now is not None and picture_now < SAME_PICTURE_MIN


def test_scores_are_not_reused_once_the_ctime_moved(tmp_path: Path) -> None:
    """ctime is in the key: a same-size rewrite with its mtime put back (which only ctime
    shows) must never reuse a score.  The price: a rename or chmod also looks again."""
    original = make_photo(3)
    a, b = tmp_path / "a.bmp", tmp_path / "b.bmp"
    save_bmp(original, a)
    save_bmp(ImageOps.mirror(original), b)
    with Cache(tmp_path / "cache.sqlite") as cache:
        shot, _picture, _ = scores(cache, on_disk(a), on_disk(b))
        assert scores(cache, on_disk(a), on_disk(b))[2] == 0  # unchanged: from the cache
        os.chmod(b, 0o644 if os.stat(b).st_mode & 0o777 != 0o644 else 0o600)
        again, _, decoded = scores(cache, on_disk(a), on_disk(b))
    assert decoded == 2 and again == pytest.approx(shot)
