"""The one image decoder: formats, orientation, hashes, limits and every failure code."""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

import photodupd
from photodupd import imaging
from photodupd.imaging import (
    ALLOWED_FORMATS,
    IMAGE_EXTENSIONS,
    RAW_EXTENSIONS,
    Decoded,
    ImageError,
    PreprocessSpec,
    decode,
    error_for_os_error,
    load_preview,
    phash,
)
from photodupd.protocol import ErrorCode, FeatureItem
from tests.photos import (
    ASCII,
    LONG,
    RATIONAL,
    SHORT,
    claimed_size_file,
    encode,
    exif_bytes,
    hamming,
    jpeg_bytes,
    make_photo,
    raw_exif,
    store_with_orientation,
    write_image,
    write_jpeg,
)

SPEC = PreprocessSpec(size=224, resize=256)
#: Measured over 40 seeds: copies stay <= 6 bits apart, different photos >= 18.
COPY_MAX_BITS = 8
DIFFERENT_MIN_BITS = 14
PROJECT_ROOT = Path(photodupd.__file__).resolve().parent.parent

WRITABLE_FORMATS = ["JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "HEIF"]
if "AVIF" in ALLOWED_FORMATS:
    WRITABLE_FORMATS.append("AVIF")


def code_of(call: object, *args: object, **kwargs: object) -> ErrorCode:
    assert callable(call)
    with pytest.raises(ImageError) as info:
        call(*args, **kwargs)
    return info.value.code


@pytest.fixture(scope="module")
def upright() -> Image.Image:
    return make_photo(11, (640, 480))


@pytest.fixture(scope="module")
def upright_hash(upright: Image.Image) -> int:
    return decode(encode(upright, "PNG"), is_data=True).phash


# --------------------------------------------------------------------------
# Formats


@pytest.mark.parametrize("fmt", WRITABLE_FORMATS)
def test_every_allowed_format_decodes_from_disk_and_from_bytes(
    fmt: str, tmp_path: Path, upright: Image.Image, upright_hash: int
) -> None:
    path = write_image(tmp_path / f"photo.{fmt.lower()}", upright, fmt)
    from_disk = decode(str(path), spec=SPEC)
    from_bytes = decode(path.read_bytes(), is_data=True, spec=SPEC)
    for result in (from_disk, from_bytes):
        assert result.format == fmt
        assert (result.width, result.height) == (640, 480)
        assert result.pixels is not None
        assert result.pixels.shape == (224, 224, 3)
        assert result.pixels.dtype == np.uint8
        assert 0 <= result.phash < 2**64
        # GIF's 256-colour palette is the lossiest; it still stays a copy.
        assert hamming(result.phash, upright_hash) <= COPY_MAX_BITS
    assert from_disk.phash == from_bytes.phash
    assert from_disk.pixels is not None and from_bytes.pixels is not None
    assert np.array_equal(from_disk.pixels, from_bytes.pixels)


def test_path_may_be_bytes_or_pathlike(tmp_path: Path, upright: Image.Image) -> None:
    path = write_jpeg(tmp_path / "caf\udce9.jpg", upright)  # not valid UTF-8 on disk
    assert decode(bytes(path)).width == 640
    assert decode(path).width == 640


def test_camera_jpeg_with_a_second_frame_opens_as_mpo(upright: Image.Image) -> None:
    buffer = io.BytesIO()
    upright.save(buffer, "MPO", save_all=True, append_images=[make_photo(12, (320, 240))])
    result = decode(buffer.getvalue(), is_data=True, spec=SPEC)
    assert result.format == "MPO"
    assert (result.width, result.height) == (640, 480)


def test_no_spec_means_no_pixels_and_the_same_hash(upright: Image.Image) -> None:
    data = jpeg_bytes(make_photo(13, (2000, 1500)))
    without = decode(data, is_data=True)
    with_spec = decode(data, is_data=True, spec=SPEC)
    assert without.pixels is None
    assert without.phash == with_spec.phash  # the cache may store either


def test_model_pixels_match_resize_then_centre_crop(upright: Image.Image) -> None:
    """The one-step box resize equals torchvision's Resize(256) + CenterCrop(224)."""
    photo = make_photo(14, (900, 600))
    result = decode(encode(photo, "PNG"), is_data=True, spec=SPEC)
    resized = photo.resize((int(256 * 900 / 600), 256), Image.Resampling.BICUBIC)
    left, top = round((resized.width - 224) / 2), round((resized.height - 224) / 2)
    reference = np.asarray(resized.crop((left, top, left + 224, top + 224)), dtype=np.float32)
    assert result.pixels is not None
    assert np.abs(result.pixels.astype(np.float32) - reference).mean() < 1.5


def test_extreme_aspect_ratio_builds_no_huge_intermediate() -> None:
    strip = make_photo(15, (20000, 4))  # resize-then-crop would build 1,280,000 x 256
    result = decode(encode(strip, "PNG"), is_data=True, spec=SPEC)
    assert result.pixels is not None and result.pixels.shape == (224, 224, 3)


def test_draft_decoding_keeps_hash_and_pixels() -> None:
    data = jpeg_bytes(make_photo(16, (4000, 3000)), quality=92)
    drafted = decode(data, is_data=True, spec=SPEC)
    full = decode(data, is_data=True, spec=SPEC, draft=False)
    assert (drafted.width, drafted.height) == (full.width, full.height) == (4000, 3000)
    assert hamming(drafted.phash, full.phash) <= 4
    assert drafted.pixels is not None and full.pixels is not None
    diff = np.abs(drafted.pixels.astype(np.int16) - full.pixels.astype(np.int16))
    assert diff.mean() < 4


# --------------------------------------------------------------------------
# Perceptual hash


def test_phash_matches_the_reference_dct_algorithm() -> None:
    """Same bits as imagehash.phash (scipy's DCT-II on a 32x32 Lanczos thumbnail)."""
    from scipy.fft import dct  # type: ignore[import-untyped]

    for seed in range(5):
        photo = make_photo(seed, (320, 240))
        gray = np.asarray(
            photo.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64
        )
        low = dct(dct(gray, axis=0), axis=1)[:8, :8]
        bits = (low > np.median(low)).ravel()
        expected = int("".join("1" if bit else "0" for bit in bits), 2)
        assert phash(photo) == expected


def test_resized_reencoded_copies_are_close_and_other_photos_far(upright_hash: int) -> None:
    original = make_photo(11, (640, 480))
    copies = [
        jpeg_bytes(original.resize((320, 240)), quality=60),
        encode(original.resize((200, 150)), "WEBP", quality=50),
        jpeg_bytes(make_photo(11, (1600, 1200)), quality=75),  # same scene, bigger
    ]
    for data in copies:
        assert hamming(decode(data, is_data=True).phash, upright_hash) <= COPY_MAX_BITS
    for seed in (1, 2, 3, 4):
        other = decode(encode(make_photo(seed, (640, 480)), "PNG"), is_data=True).phash
        assert hamming(other, upright_hash) >= DIFFERENT_MIN_BITS


def test_hamming_counts_bits() -> None:
    assert hamming(0, 0) == 0
    assert hamming(0b1011, 0b0001) == 2
    assert hamming(2**64 - 1, 0) == 64


# --------------------------------------------------------------------------
# EXIF


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(
    orientation: int, tmp_path: Path, upright: Image.Image, upright_hash: int
) -> None:
    stored = store_with_orientation(upright, orientation)
    path = write_jpeg(tmp_path / "rotated.jpg", stored, quality=95, exif_orientation=orientation)
    result = decode(str(path), spec=SPEC)
    assert (result.width, result.height) == (640, 480)
    assert hamming(result.phash, upright_hash) <= 4
    reference = decode(jpeg_bytes(upright, quality=95), is_data=True, spec=SPEC)
    assert result.pixels is not None and reference.pixels is not None
    diff = np.abs(result.pixels.astype(np.int16) - reference.pixels.astype(np.int16))
    assert diff.mean() < 3  # a wrong turn or flip would differ everywhere


def test_exif_facts(upright: Image.Image) -> None:
    exif = exif_bytes(
        orientation=1,
        make="Canon",
        model="Canon EOS 5D",
        taken="2021:06:01 12:30:05",
        offset="+02:00",
        extra={0x0131: "darktable"},
    )
    result = decode(jpeg_bytes(upright, exif=exif), is_data=True)
    assert result.taken == "2021-06-01T12:30:05+02:00"
    assert result.camera == "Canon EOS 5D"
    # Make, Model, Orientation, Software in IFD0; DateTimeOriginal, OffsetTime in the Exif IFD.
    assert result.exif_fields == 6
    plain = decode(jpeg_bytes(upright, exif=exif_bytes(make="NIKON", model="D90")), is_data=True)
    assert plain.camera == "NIKON D90"
    assert plain.taken is None
    bare = decode(jpeg_bytes(upright), is_data=True)
    assert (bare.taken, bare.camera, bare.exif_fields) == (None, None, 0)


def test_tiff_storage_tags_are_not_exif_richness(upright: Image.Image) -> None:
    result = decode(encode(upright, "TIFF", compression="tiff_lzw", dpi=(300, 300)), is_data=True)
    assert result.exif_fields == 0


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF", "HEIF"])
def test_exif_in_other_containers(fmt: str, upright: Image.Image) -> None:
    exif = exif_bytes(orientation=6, make="Apple", model="iPhone 12", taken="2020:01:02 03:04:05")
    result = decode(encode(store_with_orientation(upright, 6), fmt, exif=exif), is_data=True)
    assert (result.width, result.height) == (640, 480)
    assert result.camera == "Apple iPhone 12"
    assert result.taken == "2020-01-02T03:04:05"


MALFORMED_EXIF = {
    # name: (EXIF payload, whether the decoder should still turn the picture)
    "orientation 9": (raw_exif([(0x0112, SHORT, 1, (9).to_bytes(2, "little"))]), False),
    "orientation 0": (raw_exif([(0x0112, SHORT, 1, (0).to_bytes(2, "little"))]), False),
    "orientation 65535": (raw_exif([(0x0112, SHORT, 1, b"\xff\xff")]), False),
    "orientation as text": (raw_exif([(0x0112, ASCII, 2, b"6\0")]), False),
    "orientation 6/0": (raw_exif([(0x0112, RATIONAL, 1, b"\6\0\0\0\0\0\0\0")]), False),
    "orientation of unknown type": (raw_exif([(0x0112, 99, 1, b"\6\0")]), False),
    "orientation past the end": (raw_exif([(0x0112, SHORT, 0x7FFFFFFF, b"\6\0")]), False),
    "zero-denominator resolution": (
        raw_exif(
            [
                (0x011A, RATIONAL, 1, b"\x48\0\0\0\0\0\0\0"),
                (0x011B, RATIONAL, 1, b"\0" * 8),
                (0x0112, SHORT, 1, b"\6\0"),
            ]
        ),
        True,
    ),
    "Exif IFD pointing at itself": (
        raw_exif([(0x8769, LONG, 1, (8).to_bytes(4, "little")), (0x0112, SHORT, 1, b"\6\0")]),
        True,
    ),
    "next IFD loop": (raw_exif([(0x0112, SHORT, 1, b"\6\0")], sub_ifd_offset=8), True),
    "garbage after the header": (b"Exif\0\0II*\0\xff\xff\xff\x7f" + bytes(40), False),
    "not TIFF at all": (b"Exif\0\0" + bytes(range(200)), False),
    "placeholder date": (exif_bytes(taken="0000:00:00 00:00:00", make="\x00\x00"), False),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_EXIF))
def test_malformed_exif_never_fails_a_decode(name: str, upright: Image.Image) -> None:
    payload, turned = MALFORMED_EXIF[name]
    result = decode(jpeg_bytes(upright, exif=payload), is_data=True, spec=SPEC)
    assert (result.width, result.height) == ((480, 640) if turned else (640, 480))
    assert result.taken is None
    assert result.pixels is not None


# --------------------------------------------------------------------------
# Colour modes


def test_sixteen_bit_grayscale_is_scaled_not_clipped() -> None:
    ramp = np.linspace(0, 65535, 256 * 256).reshape(256, 256).astype(np.uint16)
    result = decode(encode(Image.fromarray(ramp), "PNG"), is_data=True, spec=SPEC)
    assert result.pixels is not None
    # Pillow's plain conversion clips at 255 and would give an almost white square.
    assert 100 < result.pixels.mean() < 155


def test_transparency_is_flattened_onto_white(upright: Image.Image) -> None:
    clear = upright.convert("RGBA")
    clear.putalpha(0)
    result = decode(encode(clear, "PNG"), is_data=True, spec=SPEC)
    assert result.pixels is not None
    assert result.pixels.min() == 255


@pytest.mark.parametrize(("mode", "fmt"), [("LAB", "TIFF"), ("CMYK", "JPEG"), ("CMYK", "TIFF")])
def test_other_colour_spaces_decode_close_to_the_rgb_original(
    mode: str, fmt: str, upright: Image.Image, upright_hash: int
) -> None:
    result = decode(encode(upright.convert(mode), fmt), is_data=True, spec=SPEC)
    assert hamming(result.phash, upright_hash) <= COPY_MAX_BITS


# --------------------------------------------------------------------------
# Failures


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP", "HEIF"])
def test_truncated_files_are_truncated_not_grey_filled(fmt: str, tmp_path: Path) -> None:
    full = encode(make_photo(17, (320, 240)), fmt)
    original = tmp_path / f"original.{fmt.lower()}"
    original.write_bytes(full)
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(full[: len(full) * 2 // 3])
    assert decode(str(original)).width == 320  # the intact copy beside it is fine
    assert code_of(decode, str(cut)) == ErrorCode.TRUNCATED
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


BOMB_SCRIPT = """
import json, resource, sys
from photodupd.imaging import ImageError, decode
from tests.photos import claimed_size_file
status = open("/proc/self/status").read()
size_kb = int(status.split("VmSize:")[1].split()[0])
cap = (size_kb + 128 * 1024) * 1024  # 128 MiB above what the interpreter maps now
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
out = {}
for fmt in ("PNG", "GIF", "TIFF", "BMP", "JPEG"):
    for factor in (2.0, 1.2):
        side = int((factor * 89_478_485) ** 0.5) + 1
        try:
            decode(claimed_size_file(fmt, side, side), is_data=True)
            out[f"{fmt} {factor}"] = ["decoded", ""]
        except ImageError as exc:
            out[f"{fmt} {factor}"] = [exc.code.value, exc.message]
print(json.dumps(out))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_headers_claiming_too_many_pixels_are_refused_before_allocating() -> None:
    """PNG/GIF/TIFF/BMP/JPEG headers claiming 2x and 1.2x MAX_IMAGE_PIXELS.

    Runs under an address-space cap only 128 MiB above the interpreter: an
    allocation of the claimed pixels (>= 320 MB) would fail there with "out of
    memory"; the refusal must come from the pixel limit instead.
    """
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", BOMB_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        timeout=60,
        check=True,
    )
    results = json.loads(run.stdout)
    assert len(results) == 10
    for name, (code, message) in results.items():
        assert code == "too_large", (name, message)
        assert "pixels" in message and "memory" not in message, (name, message)


def test_pixel_limit_holds_even_if_pillow_limit_was_disabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    bomb = claimed_size_file("PNG", 10_000, 10_000)  # 1e8 pixels, over the default limit
    assert code_of(decode, bomb, is_data=True) == ErrorCode.TOO_LARGE


def test_bomb_warning_does_not_leak_into_global_warning_filters() -> None:
    import warnings

    before = list(warnings.filters)
    code_of(decode, claimed_size_file("PNG", 10_000, 10_000), is_data=True)
    assert warnings.filters == before


def test_files_over_the_size_cap_are_refused_unread(tmp_path: Path) -> None:
    huge = tmp_path / "huge.jpg"
    with huge.open("wb") as fh:
        fh.truncate(imaging.MAX_FILE_BYTES + 1)  # sparse: costs no disk
    assert code_of(decode, str(huge)) == ErrorCode.TOO_LARGE
    small = write_jpeg(tmp_path / "small.jpg", make_photo(1, (64, 48)))
    assert code_of(imaging.read_image_file, small, max_bytes=100) == ErrorCode.TOO_LARGE


def _psd_header() -> bytes:
    return (
        b"8BPS\x00\x01" + bytes(6) + b"\x00\x03" + (64).to_bytes(4, "big") * 2 + b"\x00\x08\x00\x03"
    )


def _saved(fmt: str, mode: str = "RGB", **params: object) -> bytes:
    buffer = io.BytesIO()
    make_photo(18, (64, 64)).convert(mode).save(buffer, format=fmt, **params)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("PCX", lambda: _saved("PCX")),
        ("ICO", lambda: _saved("ICO")),
        ("PPM", lambda: _saved("PPM")),
        ("QOI", lambda: _saved("QOI")),
        ("SGI", lambda: _saved("SGI")),
        ("JPEG2000", lambda: _saved("JPEG2000")),
        ("DDS", lambda: _saved("DDS")),
        ("PSD", _psd_header),
        ("EPS", lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"),
    ],
)
def test_images_outside_the_allow_list_are_unsupported(name: str, make: object) -> None:
    assert callable(make)
    with pytest.raises(ImageError) as info:
        decode(make(), is_data=True)
    assert info.value.code == ErrorCode.UNSUPPORTED_FORMAT
    assert name in info.value.message


def test_non_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    assert code_of(decode, rng.bytes(4096), is_data=True) == ErrorCode.NOT_AN_IMAGE
    assert code_of(decode, b"just some text\n", is_data=True) == ErrorCode.NOT_AN_IMAGE
    assert code_of(decode, b"", is_data=True) == ErrorCode.NOT_AN_IMAGE
    empty = tmp_path / "empty.jpg"
    empty.touch()
    assert code_of(decode, str(empty)) == ErrorCode.NOT_AN_IMAGE
    assert code_of(decode, str(tmp_path)) == ErrorCode.UNREADABLE
    assert code_of(decode, str(tmp_path / "missing.jpg")) == ErrorCode.NOT_FOUND
    assert code_of(decode, str(empty / "below-a-file.jpg")) == ErrorCode.NOT_FOUND
    assert code_of(decode, "/dev/null") == ErrorCode.UNREADABLE


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    assert code_of(decode, str(fifo)) == ErrorCode.UNREADABLE


@pytest.mark.parametrize(
    ("number", "code"),
    [
        (errno.ENOENT, ErrorCode.NOT_FOUND),
        (errno.ENOTDIR, ErrorCode.NOT_FOUND),
        (errno.EACCES, ErrorCode.PERMISSION_DENIED),
        (errno.EPERM, ErrorCode.PERMISSION_DENIED),
        (errno.EISDIR, ErrorCode.UNREADABLE),
        (errno.EIO, ErrorCode.UNREADABLE),
        (errno.ELOOP, ErrorCode.UNREADABLE),
        (errno.ESTALE, ErrorCode.UNREADABLE),
    ],
)
def test_os_errors_map_to_item_codes(number: int, code: ErrorCode) -> None:
    error = error_for_os_error(OSError(number, os.strerror(number), "/x.jpg"))
    assert error.code == code
    assert os.strerror(number) in error.message


def test_permission_denied_on_a_real_file(tmp_path: Path) -> None:
    locked = write_jpeg(tmp_path / "locked.jpg", make_photo(1, (64, 48)))
    locked.chmod(0)
    if os.geteuid() != 0:
        assert code_of(decode, str(locked)) == ErrorCode.PERMISSION_DENIED
        return
    # Root reads anything; without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH it does not.
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv (util-linux) is missing to drop DAC capabilities")
    script = (
        "import sys\nfrom photodupd.imaging import ImageError, decode\n"
        "try:\n    decode(sys.argv[1])\nexcept ImageError as exc:\n    print(exc.code.value)\n"
    )
    drop_caps = [setpriv, "--bounding-set=-dac_override,-dac_read_search"]
    run = subprocess.run(
        [*drop_caps, sys.executable, "-c", script, str(locked)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        timeout=60,
        check=True,
    )
    assert run.stdout.strip() == ErrorCode.PERMISSION_DENIED.value


def test_load_truncated_images_stays_off_after_import() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# --------------------------------------------------------------------------
# App helpers and picklability


def test_load_preview_is_upright_rgb_and_bounded(tmp_path: Path, upright: Image.Image) -> None:
    path = write_jpeg(
        tmp_path / "p.jpg",
        store_with_orientation(make_photo(19, (3000, 2000)), 6),
        exif_orientation=6,
    )
    preview = load_preview(str(path), 300)
    assert preview.mode == "RGB"
    assert preview.size == (300, 200)  # turned back to landscape, then fitted
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(path.read_bytes()[:5000])
    assert code_of(load_preview, str(cut), 300) == ErrorCode.TRUNCATED
    from_bytes = load_preview(encode(upright, "PNG"), 100, is_data=True)
    assert from_bytes.size == (100, 75)


def test_decoded_and_errors_survive_a_pipe(upright: Image.Image) -> None:
    result = decode(
        jpeg_bytes(upright, exif=exif_bytes(make="X", model="Y")), is_data=True, spec=SPEC
    )
    copy = pickle.loads(pickle.dumps(result))
    assert isinstance(copy, Decoded)
    assert (copy.phash, copy.width, copy.camera) == (result.phash, result.width, "X Y")
    assert copy.pixels is not None and result.pixels is not None
    assert np.array_equal(copy.pixels, result.pixels)
    error = pickle.loads(pickle.dumps(ImageError(ErrorCode.TRUNCATED, "cut")))
    assert (error.code, error.message) == (ErrorCode.TRUNCATED, "cut")


def test_decode_item_reads_paths_and_data(tmp_path: Path, upright: Image.Image) -> None:
    path = write_jpeg(tmp_path / "a.jpg", upright)
    by_path = imaging.decode_item(FeatureItem(path=str(path)), SPEC)
    by_data = imaging.decode_item(FeatureItem(data=path.read_bytes()), SPEC)
    assert by_path.phash == by_data.phash


def test_extension_tables() -> None:
    for table in (IMAGE_EXTENSIONS, RAW_EXTENSIONS):
        assert all(ext.startswith(".") and ext == ext.lower() for ext in table)
    assert not IMAGE_EXTENSIONS & RAW_EXTENSIONS
    assert {".jpg", ".jpeg", ".png", ".heic", ".tif", ".webp"} <= IMAGE_EXTENSIONS
    assert {".cr2", ".nef", ".arw", ".dng"} <= RAW_EXTENSIONS


def test_spec_is_validated() -> None:
    with pytest.raises(ValueError):
        PreprocessSpec(size=300, resize=256)


# --------------------------------------------------------------------------
# Fuzz: decode raises nothing but ImageError


def _seed_files() -> list[bytes]:
    small = make_photo(20, (48, 32))
    exif = exif_bytes(orientation=6, make="Fuzz", taken="2020:01:01 00:00:00")
    return [
        jpeg_bytes(small, exif=exif),
        encode(small, "PNG"),
        encode(small, "GIF"),
        encode(small, "WEBP"),
        encode(small, "TIFF", exif=exif),
        encode(small, "BMP"),
        encode(small, "HEIF"),
    ]


SEEDS = _seed_files()


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "cut"]))
        if kind == "flip":
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[position] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80]))
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[position : position + draw(st.integers(1, 16))]
        elif position > 0:
            del data[position:]
        if not data:
            break
    return bytes(data)


def _decode_or_image_error(data: bytes) -> None:
    # A mutated header may claim tens of megapixels; a lower limit keeps the fuzz quick.
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 4_000_000
    try:
        result = decode(data, is_data=True, spec=SPEC)
    except ImageError as exc:
        assert isinstance(exc.code, ErrorCode)
        assert exc.message and "Traceback" not in exc.message
        return
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    assert result.width > 0 and result.height > 0
    assert result.pixels is not None and result.pixels.shape == (224, 224, 3)
    assert 0 <= result.phash < 2**64


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_images())
def test_fuzz_mutated_images(data: bytes) -> None:
    _decode_or_image_error(data)


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=512),
        st.tuples(
            st.sampled_from([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"II*\x00", b"BM"]),
            st.binary(max_size=512),
        ).map(lambda parts: parts[0] + parts[1]),
    )
)
def test_fuzz_random_bytes(data: bytes) -> None:
    _decode_or_image_error(data)
