"""Delete marks that are never wrong (issue 13): transparent pictures, documents from one
template, a resize in the right tier, and the original kept over its lossless re-save.

Each scenario runs the real CLI on real files, re-reads the JSON report from disk, and where
it applies the report checks the disk itself: what is still there, what went to the trash.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageDraw, ImageFont

from photodup_tui import cli
from photodup_tui.engine import sameshot
from photodup_tui.engine.report import Report, load_report
from photodup_tui.engine.sameshot_check import SameShotChecker, detail_pair, thumbnail_file
from photodup_tui.engine.settings import ScanSettings
from photodup_tui.engine.types import Action, Photo
from photodupd import imaging
from tests.engine.helpers import photo
from tests.photos import exif_bytes, hamming
from tests.safety.helpers import trash_entries


def scan(lib: Path, tmp_path: Path) -> Report:
    target = tmp_path / "report.json"
    cli.main(["scan", str(lib), "--no-model", "-q", "--json", str(target)])
    return load_report(target)  # re-read from disk


def marks(report: Report) -> dict[str, tuple[str, str]]:
    """name -> (action, the keeper's name), for every member of every group."""
    out = {}
    for group in report.groups:
        keeper = Path(group.keeper_member.photo.path).name
        for member in group.members:
            out[Path(member.photo.path).name] = (member.action.value, keeper)
    return out


def deleted(report: Report) -> set[str]:
    return {name for name, (action, _) in marks(report).items() if action == "delete"}


def apply(report_path: Path) -> None:
    assert cli.main(["apply", str(report_path), "--yes"]) == 0


def trashed(tmp_path: Path) -> set[str]:
    entries = trash_entries(tmp_path / "xdg-data" / "Trash")
    return {Path(os.fsdecode(e.original)).name for e in entries}


# ------------------------------------------------------------------------------ transparency


def overlay(kind: str) -> Image.Image:
    """White RGB everywhere; the picture lives in the alpha channel only."""
    alpha = Image.new("L", (600, 400), 0)
    draw = ImageDraw.Draw(alpha)
    if kind == "frame":
        draw.rectangle((15, 15, 585, 385), outline=230, width=20)
    elif kind == "disc":
        draw.ellipse((150, 50, 450, 350), fill=255)
    elif kind == "stamp":
        draw.text((100, 120), "DRAFT", fill=200, font=ImageFont.load_default(size=130))
    else:
        draw.polygon([(300, 30), (560, 370), (40, 370)], fill=255)
    picture = Image.new("RGB", alpha.size, (255, 255, 255))
    picture.putalpha(alpha)
    return picture


def test_transparent_overlays_are_never_marked_as_copies_of_each_other(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    for kind in ("frame", "disc", "stamp", "triangle"):
        overlay(kind).save(lib / f"{kind}.png")
    overlay("disc").save(lib / "disc-copy.png", optimize=True)  # the same pixels, new bytes
    report = scan(lib, tmp_path)
    # Flattened onto white all four are one blank page (pHash 0, same everything); their
    # transparency is their picture, so only the disc's own copy may be marked.
    assert len(deleted(report)) == 1
    (victim,) = deleted(report)
    assert victim.startswith("disc") and marks(report)[victim][1].startswith("disc")
    apply(tmp_path / "report.json")
    assert {p.name for p in lib.iterdir()} == {"frame.png", "stamp.png", "triangle.png"} | (
        {"disc.png", "disc-copy.png"} - {victim}
    )
    assert trashed(tmp_path) == {victim}


def test_a_transparent_picture_is_not_the_same_picture_as_its_flattened_copy() -> None:
    logo = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    ImageDraw.Draw(logo).ellipse((30, 30, 270, 270), fill=(20, 90, 200, 255))
    flat = Image.new("RGB", logo.size, (255, 255, 255))
    flat.paste(logo, mask=logo)
    a, b = sameshot.thumbnail_from(logo), sameshot.thumbnail_from(flat)
    assert a.alpha is not None and b.alpha is None
    # The flattened copy lost the transparency: not a copy to delete the logo for.
    assert sameshot.same_picture(a, b) < sameshot.SAME_PICTURE_MIN
    resized = sameshot.thumbnail_from(logo.resize((150, 150), Image.Resampling.LANCZOS))
    assert sameshot.same_picture(a, resized) >= sameshot.SAME_PICTURE_MIN


def test_load_preview_keeps_alpha_only_when_asked(tmp_path: Path) -> None:
    overlay("disc").save(tmp_path / "o.png")
    assert imaging.load_preview(str(tmp_path / "o.png"), 64).mode == "RGB"
    kept = imaging.load_preview(str(tmp_path / "o.png"), 64, alpha=True)
    assert kept.mode == "RGBA" and kept.getextrema()[3] == (0, 255)


# ------------------------------------------------------------------------------ documents


def invoice(amounts_seed: int, text_px: int = 16) -> Image.Image:
    """A 1600x1200 invoice of one template; the seed decides every amount."""
    page = Image.new("RGB", (1600, 1200), (255, 255, 255))
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=text_px)
    draw.rectangle((0, 0, 1600, 140), fill=(235, 240, 248))
    draw.text((80, 40), "INVOICE", fill=(30, 40, 80), font=ImageFont.load_default(size=36))
    rng = np.random.default_rng(amounts_seed)
    for row in range(24):
        y = 220 + row * round(text_px * 2.2)
        draw.text((80, y), f"Item {row + 1:02d}  widget, standard", fill=(20, 20, 20), font=font)
        draw.text((1300, y), f"{int(rng.integers(100, 99_999)) / 100:10.2f}", fill=0, font=font)
    return page


def test_two_invoices_from_one_template_are_not_near(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    invoice(1).save(lib / "march.png")
    invoice(5).save(lib / "april.png")  # the same layout, another amount on every line
    invoice(1).save(lib / "march-scan.jpg", quality=85)  # a true copy of march
    hashes = [imaging.decode(str(lib / n)).phash for n in ("march.png", "april.png")]
    assert hamming(*hashes) == 0  # a near candidate under any threshold
    report = scan(lib, tmp_path)
    # One of the two marches goes (the keep rules choose which); april never does.
    (victim,) = deleted(report)
    assert victim in {"march.png", "march-scan.jpg"}
    assert marks(report)[victim][1] in {"march.png", "march-scan.jpg"}
    apply(tmp_path / "report.json")
    assert {p.name for p in lib.iterdir()} == {"march.png", "march-scan.jpg", "april.png"} - {
        victim
    }
    assert trashed(tmp_path) == {victim}


def test_the_detail_check_sees_one_amount_the_thumbnails_cannot(tmp_path: Path) -> None:
    march, april = invoice(1), invoice(5)
    a, b = sameshot.thumbnail_from(march), sameshot.thumbnail_from(april)
    # At 96 pixels the two pages are the same grey texture ...
    assert sameshot.same_picture(a, b) >= sameshot.SAME_PICTURE_MIN  # ... so look closer
    march.save(tmp_path / "march.png")
    april.save(tmp_path / "april.png")
    march.resize((800, 600), Image.Resampling.LANCZOS).save(tmp_path / "half.jpg", quality=85)
    size = sameshot.detail_size((1600, 1200), (1600, 1200))
    different = detail_pair(str(tmp_path / "march.png"), str(tmp_path / "april.png"), size)
    assert different is not None and different < sameshot.SAME_PICTURE_MIN
    half = sameshot.detail_size((1600, 1200), (800, 600))
    same = detail_pair(str(tmp_path / "march.png"), str(tmp_path / "half.jpg"), half)
    assert same is not None and same >= sameshot.SAME_PICTURE_MIN


def test_the_check_apply_re_proves_near_verdicts_with_rejects_two_invoices(
    tmp_path: Path,
) -> None:
    """A saved report's near verdicts are re-proven at apply time by ``checker.near``
    (vetting.py), in worker processes: the detail check runs there too."""
    lib = tmp_path / "lib"
    lib.mkdir()
    invoice(1).save(lib / "march.png")
    invoice(5).save(lib / "april.png")
    march = photo(str(lib / "march.png"), width=1600, height=1200)
    april = photo(str(lib / "april.png"), width=1600, height=1200)
    with SameShotChecker(cache=None, workers=1) as checker:  # as vetting.py calls it
        (value,) = checker.near([(march, april)])
    assert value is not None and value < sameshot.SAME_PICTURE_MIN
    assert checker.detailed == 1


# ------------------------------------------------------------------------------ photos


def marked_photo_set(lib: Path) -> None:
    """A photo (not mostly flat), its re-encode and half-size copy, and a copy with a small
    black box over the face: a third of a thumbnail pixel, seen only at full detail."""
    rng = np.random.default_rng(7)
    big = Image.fromarray(skimage.data.astronaut()).resize((2048, 2048), Image.Resampling.LANCZOS)
    grain = rng.normal(0, 3, (2048, 2048, 3))
    photo_ = Image.fromarray(np.clip(np.asarray(big) + grain, 0, 255).astype(np.uint8))
    photo_.save(lib / "original.jpg", quality=92)
    photo_.save(lib / "q80.jpg", quality=80)
    photo_.resize((1024, 1024), Image.Resampling.LANCZOS).save(lib / "half.jpg", quality=92)
    marked = photo_.copy()
    ImageDraw.Draw(marked).rectangle([800, 400, 820, 406], fill=(0, 0, 0))
    marked.save(lib / "marked.jpg", quality=95)  # the biggest file: the keep rules' favourite


def test_a_photo_with_a_small_mark_is_never_the_keeper_of_its_clean_copies(
    tmp_path: Path,
) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    marked_photo_set(lib)
    thumbs = {n: thumbnail_file(str(lib / n)) for n in ("original.jpg", "marked.jpg")}
    clean, mark = thumbs["original.jpg"], thumbs["marked.jpg"]
    assert clean is not None and mark is not None
    # The thumbnails cannot tell them apart, and the photo is no document: only the full
    # detail check can.
    assert sameshot.same_picture(clean, mark) >= sameshot.SAME_PICTURE_MIN
    assert clean.flat < 0.5
    report = scan(lib, tmp_path)
    assert "marked.jpg" not in deleted(report)
    for name in ("original.jpg", "q80.jpg", "half.jpg"):
        assert marks(report).get(name, ("", ""))[1] != "marked.jpg"
    apply(tmp_path / "report.json")
    left = {p.name for p in lib.iterdir()}
    assert "marked.jpg" in left and left & {"original.jpg", "q80.jpg", "half.jpg"}
    assert "marked.jpg" not in trashed(tmp_path)
    assert left | trashed(tmp_path) == {"original.jpg", "q80.jpg", "half.jpg", "marked.jpg"}


# ------------------------------------------------------------------------------ resizes


def test_a_half_size_resize_at_q85_is_near_and_marked(tmp_path: Path) -> None:
    brick = Image.fromarray(skimage.data.brick())
    lib = tmp_path / "lib"
    lib.mkdir()
    brick.save(lib / "brick.jpg", quality=95)
    small = brick.resize((256, 256), Image.Resampling.LANCZOS)
    small.save(lib / "brick-small.jpg", quality=85)
    hashes = [imaging.decode(str(lib / n)).phash for n in ("brick.jpg", "brick-small.jpg")]
    assert hamming(*hashes) > 2  # beyond the old near limit: it came out similar
    report = scan(lib, tmp_path)
    (group,) = report.groups
    assert group.kind.value == "near"
    assert deleted(report) == {"brick-small.jpg"}


def test_without_the_pixel_check_the_default_near_limit_stays_strict() -> None:
    model = "local:phash-v1"
    assert ScanSettings().thresholds_for(model).near_phash == 8
    assert ScanSettings(same_shot_check=False).thresholds_for(model).near_phash == 2
    flagged = ScanSettings(same_shot_check=False).with_threshold(model, 10)
    assert flagged.thresholds_for(model).near_phash == 10  # the user's own setting stays


# ------------------------------------------------------------------------------ keeper


def camera_jpeg(path: Path) -> Image.Image:
    picture = Image.fromarray(skimage.data.coffee())
    exif = exif_bytes(make="Canon", model="Canon EOS 5D", taken="2019:05:04 10:11:12")
    picture.save(path, "JPEG", quality=90, exif=exif)
    return Image.open(path)


def test_the_original_jpeg_is_kept_over_its_lossless_png_resave(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    decoded = camera_jpeg(lib / "IMG_0001.jpg")
    decoded.save(lib / "IMG_0001-export.png")  # bigger, "better" format, no EXIF
    report = scan(lib, tmp_path)
    (group,) = report.groups
    assert Path(group.keeper_member.photo.path).name == "IMG_0001.jpg"
    victim = next(m for m in group.members if m.action is Action.DELETE)
    assert Path(victim.photo.path).name == "IMG_0001-export.png"
    assert "lossless re-save" in victim.why
    assert "lossless re-save" in group.keeper_member.why
    apply(tmp_path / "report.json")
    assert {p.name for p in lib.iterdir()} == {"IMG_0001.jpg"}
    assert trashed(tmp_path) == {"IMG_0001-export.png"}


def test_a_png_original_is_kept_over_a_jpeg_made_from_it(tmp_path: Path) -> None:
    # The other way round the pixels differ (the JPEG lost some): the rules decide as ever.
    lib = tmp_path / "lib"
    lib.mkdir()
    picture = Image.fromarray(skimage.data.coffee())
    picture.save(lib / "drawing.png")
    picture.save(lib / "drawing.jpg", quality=95)
    (group,) = scan(lib, tmp_path).groups
    assert Path(group.keeper_member.photo.path).name == "drawing.png"
    assert "lossless re-save" not in json.dumps([m.why for m in group.members])


def test_thumbnails_carry_transparency_and_flatness(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    overlay("frame").save(buffer, "PNG")
    (tmp_path / "o.png").write_bytes(buffer.getvalue())
    thumb = thumbnail_file(str(tmp_path / "o.png"))
    assert thumb is not None and thumb.alpha is not None and thumb.flat > 0.9
    coffee = sameshot.thumbnail_from(Image.fromarray(skimage.data.coffee()))
    assert coffee.alpha is None and coffee.flat < 0.5


@pytest.mark.parametrize("seed", [3, 4])
def test_a_blank_page_is_not_the_same_picture_as_one_with_a_signature(seed: int) -> None:
    blank = Image.new("RGB", (1400, 1000), (255, 255, 255))
    signed = blank.copy()
    rng = np.random.default_rng(seed)
    xs = np.linspace(1000, 1200, 60)
    ys = 880 + rng.uniform(8, 14) * np.sin(xs / 9.0)
    ImageDraw.Draw(signed).line(list(zip(xs, ys, strict=True)), fill=(20, 20, 120), width=3)
    assert sameshot.same_detail(blank, signed) < sameshot.SAME_PICTURE_MIN
    assert sameshot.same_detail(signed, signed.copy()) >= sameshot.SAME_PICTURE_MIN


def test_an_edit_stays_beside_the_original_that_took_over_from_its_resave() -> None:
    """The keeper swap must not strand an edit: the brightened copy was a near candidate of
    both files, the pixels rejected it against the PNG only, and it must still be shown
    (similar, kept) beside the original that became the keeper."""
    from photodup_tui.engine.grouping import group_photos
    from photodup_tui.engine.keeprules import KeepRules
    from photodup_tui.engine.settings import Thresholds
    from photodup_tui.engine.types import Kind
    from tests.engine.helpers import unit_at

    png = photo("/p/IMG.png", fmt="PNG", size=900_000)
    jpg = photo("/p/IMG.jpg", size=300_000, exif_fields=12, taken="2019-05-04T10:11:12")
    bright = photo("/p/IMG-bright.jpg", size=250_000, phash=1)
    vectors = {p.path: unit_at(i) for i, p in enumerate((png, jpg, bright))}

    class Verify:
        def prefetch(self, pairs: object, *, near: bool = False) -> None:
            pass

        def near(self, pairs: list[tuple[object, object]]) -> list[float | None]:
            return [0.5 if bright in pair else 0.999 for pair in pairs]

        def __call__(self, pairs: list[tuple[object, object]]) -> list[float | None]:
            return [0.95 for _ in pairs]

        def resaves(self, pairs: list[tuple[object, object]]) -> list[bool | None]:
            return [pair == (png, jpg) for pair in pairs]

    rules = KeepRules(ScanSettings())
    thresholds = Thresholds(0.95, 8, 0.65, None)
    (group,) = group_photos([png, jpg, bright], vectors, thresholds, rules, verify=Verify())
    got = {m.photo.path: (m.action, m.verdict) for m in group.members}
    assert got == {
        "/p/IMG.jpg": (Action.KEEP, None),
        "/p/IMG.png": (Action.DELETE, Kind.NEAR),
        "/p/IMG-bright.jpg": (Action.KEEP, Kind.SIMILAR),
    }


def test_a_near_copy_nominates_an_edit_the_keeper_is_a_hair_too_far_from() -> None:
    """The brightened immunohistochemistry photo sits at cosine 0.650 from the PNG keeper
    (similar needs 0.65) and 0.663 from the JPEG beside it: the family's near copies
    nominate it too, and the same-shot check against the keeper confirms it."""
    from photodup_tui.engine.grouping import group_photos
    from photodup_tui.engine.keeprules import KeepRules
    from photodup_tui.engine.settings import Thresholds
    from photodup_tui.engine.types import Kind
    from tests.engine.helpers import angle_for, unit_at

    png = photo("/p/cells.png", fmt="PNG", size=900_000)
    jpg = photo("/p/cells.jpg", size=300_000)
    edit = photo("/p/cells-bright.jpg", size=280_000, phash=(1 << 20) - 1)
    step = angle_for(0.90)  # png ~ jpg 0.90; jpg ~ edit 0.90; png ~ edit cos(2 step) ~ 0.62
    vectors = {png.path: unit_at(0), jpg.path: unit_at(step), edit.path: unit_at(2 * step)}
    asked: list[set[str]] = []

    class Verify:
        def prefetch(self, pairs: object, *, near: bool = False) -> None:
            pass

        def near(self, pairs: list[tuple[object, object]]) -> list[float | None]:
            return [0.999 for _ in pairs]

        def __call__(self, pairs: list[tuple[Photo, Photo]]) -> list[float | None]:
            asked.extend({a.path, b.path} for a, b in pairs)
            return [0.95 for _ in pairs]

    rules = KeepRules(ScanSettings())
    thresholds = Thresholds(0.85, 8, 0.65, None)
    (group,) = group_photos([png, jpg, edit], vectors, thresholds, rules, verify=Verify())
    got = {m.photo.path: (m.action, m.verdict) for m in group.members}
    assert got == {
        png.path: (Action.KEEP, None),
        jpg.path: (Action.DELETE, Kind.NEAR),
        edit.path: (Action.KEEP, Kind.SIMILAR),
    }
    assert {png.path, edit.path} in asked  # proven against the keeper itself
    # Without the pixel check the features alone decide: no chaining through the copy.
    (alone,) = group_photos([png, jpg, edit], vectors, thresholds, rules)
    assert {m.photo.path for m in alone.members} == {png.path, jpg.path}


def signed_page() -> Image.Image:
    page = Image.new("RGB", (1400, 1000), (255, 255, 255))
    xs = np.linspace(1000, 1200, 60)
    ys = 880 + 12 * np.sin(xs / 9.0)
    ImageDraw.Draw(page).line(list(zip(xs, ys, strict=True)), fill=(20, 20, 120), width=3)
    return page


def test_a_nearly_blank_page_and_its_resize_are_the_same_picture() -> None:
    # Its spread is 2.4 levels: a 75% q70 copy moves it by 0.16, more than 6% of it.
    page = signed_page()
    buffer = io.BytesIO()
    page.resize((1050, 750), Image.Resampling.LANCZOS).save(buffer, "JPEG", quality=70)
    copy = Image.open(io.BytesIO(buffer.getvalue()))
    a, b = sameshot.thumbnail_from(page), sameshot.thumbnail_from(copy)
    assert sameshot.same_picture(a, b) >= sameshot.SAME_PICTURE_MIN
    assert sameshot.same_detail(page.resize((1050, 750)), copy) >= sameshot.SAME_PICTURE_MIN
