"""Rule 13, issue 11 holes 3 and 6: ``apply`` re-derives what a saved report claims.

A report is a file anyone can edit.  Each attack below hands ``apply`` a report that lies
(a victim outside the scanned roots, a text file, a symlinked folder, a crop whose verdict
was removed or changed, an "exact" file with other bytes) or one written before the user
protected a folder, through ``apply_report`` and through the real ``photodup apply``.  The
dry run must refuse exactly what the real run refuses (rule 12), and the disk is re-read
afterwards: the files are where they were, byte for byte, and the trash holds nothing of
theirs.  Real photos and real edits throughout (a q70 re-encode, an 8% crop).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from photodup_tui import cli
from photodup_tui.engine import report as reports
from photodup_tui.engine.exact import full_hash
from photodup_tui.engine.safedelete import apply_report
from photodup_tui.engine.types import Action, FileStat, Group, Kind, Member, Photo
from tests.photos import make_photo, write_jpeg
from tests.safety.helpers import read, snapshot, trash_entries

#: (dry-run lines, real-run lines) of one ``apply``: "would trash ...", "skipped ...".
Outcome = tuple[list[str], list[str]]
Apply = Callable[..., Outcome]


@pytest.fixture(params=["apply_report", "cli"])
def apply(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> Apply:
    """A dry run, then the real run, of one report, by the API or the real command."""

    def by_api(path: Path) -> Outcome:
        dry = apply_report(path, dry_run=True)
        real = apply_report(path, dry_run=False)
        return dry.lines(), real.lines()

    def by_cli(path: Path) -> Outcome:
        runs = []
        for mode in ("--dry-run", "--yes"):
            capsys.readouterr()
            status = cli.main(["apply", str(path), mode])
            out = capsys.readouterr().out.splitlines()
            skipped = any(line.startswith("skipped") for line in out)
            assert status == (cli.EXIT_APPLY_SKIPPED if skipped else 0)
            runs.append([line for line in out if line.startswith(("would", "trashed", "skip"))])
        return runs[0], runs[1]

    return by_api if request.param == "apply_report" else by_cli


def refusals(lines: list[str]) -> dict[str, str]:
    """Skipped path -> reason, from either entry point's output."""
    out = {}
    for line in lines:
        if line.startswith("skipped "):
            path, reason = line[len("skipped ") :].split(": ", 1)
            out[ast.literal_eval(path)] = reason
    return out


def refused_alike(outcome: Outcome) -> dict[str, str]:
    """The real run's refusals, checked equal to the dry run's (rule 12)."""
    dry, real = outcome
    assert refusals(dry) == refusals(real)
    return refusals(real)


# ---------------------------------------------------------------------- a real library


def photo_file(path: Path, seed: int = 7) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jpeg(path, make_photo(seed, (640, 480)), quality=92)
    return str(path)


def reencode(source: str, path: Path, quality: int = 70) -> str:
    """A real near copy: the photo decoded and saved again at a lower quality."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as image:
        image.save(path, quality=quality)
    return str(path)


def crop(source: str, path: Path) -> str:
    """A real edit: 5% off the top and left, 3% off the bottom and right."""
    with Image.open(source) as image:
        w, h = image.size
        box = (round(0.05 * w), round(0.05 * h), round(0.97 * w), round(0.97 * h))
        image.crop(box).save(path, quality=92)
    return str(path)


def copy(source: str, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, path)
    return str(path)


def member(path: str, action: Action, verdict: Kind | None) -> Member:
    """A member as the scan records it: lstat now, the real content hash."""
    stat = FileStat.of(os.lstat(path))
    photo = Photo(path, stat, content_hash=full_hash(path, stat), decodable=True)
    return Member(photo, action, "test", verdict)


def keep(path: str) -> Member:
    return member(path, Action.KEEP, None)


def delete(path: str, verdict: Kind | None) -> Member:
    return member(path, Action.DELETE, verdict)


def save(
    tmp_path: Path,
    groups: list[tuple[Kind, list[Member]]],
    roots: list[str],
    reference_dirs: list[str] | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Written by the report module's own writer (keeper first), then edited by hand."""
    saved = reports.Report(
        1,
        "local:phash-v1",
        roots,
        [Group(kind, members, reason="test") for kind, members in groups],
        reference_folders=reference_dirs or [],
    )
    path = tmp_path / "report.json"
    reports.write_json(saved, path)
    if edit is not None:
        document = json.loads(path.read_text())
        edit(document)
        path.write_text(json.dumps(document))
    return path


def untouched(files: dict[bytes, bytes], home_trash: Path) -> None:
    """Every file is at its path with its bytes, and none of them is in the trash."""
    for path, data in files.items():
        assert read(path) == data, path
    in_trash = {e.data for e in trash_entries(home_trash)}
    assert not in_trash & set(files.values())


# ---------------------------------------------------------------------- hole 3 (a): places


@pytest.mark.parametrize("spelling", ["absolute", "dot-dot"])
def test_a_victim_outside_the_roots_is_refused(
    tmp_path: Path, home_trash: Path, apply: Apply, spelling: str
) -> None:
    lib = tmp_path / "lib"
    keeper = photo_file(lib / "a.jpg")
    (lib / "B").mkdir()
    outside = copy(keeper, tmp_path / "victim" / "secret.jpg")  # byte-identical, unscanned
    path = outside if spelling == "absolute" else str(lib / "B/../../victim/secret.jpg")
    report = save(tmp_path, [(Kind.EXACT, [keep(keeper), delete(path, Kind.EXACT)])], [str(lib)])
    before = snapshot(tmp_path / "victim") | snapshot(lib)

    outcome = apply(report)
    untouched(before, home_trash)
    refused = refused_alike(outcome)
    assert "is not under the report's roots" in refused[path]


def test_a_symlinked_folder_leading_out_of_the_roots_is_refused(
    tmp_path: Path, home_trash: Path, apply: Apply
) -> None:
    lib = tmp_path / "lib"
    keeper = photo_file(lib / "a.jpg")
    copy(keeper, tmp_path / "victim" / "secret.jpg")
    (lib / "link").symlink_to(tmp_path / "victim")
    path = str(lib / "link" / "secret.jpg")  # the file itself is no symlink
    report = save(tmp_path, [(Kind.EXACT, [keep(keeper), delete(path, Kind.EXACT)])], [str(lib)])
    before = snapshot(tmp_path / "victim") | snapshot(lib)

    outcome = apply(report)
    untouched(before, home_trash)
    refused = refused_alike(outcome)
    assert "is not under the report's roots" in refused[path]


def test_a_keeper_outside_the_roots_is_refused(
    tmp_path: Path, home_trash: Path, apply: Apply
) -> None:
    """The copy that "survives" must be one the scan saw, not a file anywhere."""
    lib = tmp_path / "lib"
    victim = photo_file(lib / "a.jpg")
    elsewhere = copy(victim, tmp_path / "tmp" / "a.jpg")
    report = save(
        tmp_path, [(Kind.EXACT, [keep(elsewhere), delete(victim, Kind.EXACT)])], [str(lib)]
    )
    before = snapshot(lib)

    outcome = apply(report)
    untouched(before, home_trash)
    refused = refused_alike(outcome)
    assert f"keeper {elsewhere!r} is not under the report's roots" in refused[victim]


def test_a_report_without_roots_refuses_everything(
    tmp_path: Path, home_trash: Path, apply: Apply
) -> None:
    lib = tmp_path / "lib"
    keeper = photo_file(lib / "a.jpg")
    victim = copy(keeper, lib / "b.jpg")
    report = save(tmp_path, [(Kind.EXACT, [keep(keeper), delete(victim, Kind.EXACT)])], [])
    before = snapshot(lib)

    outcome = apply(report)
    untouched(before, home_trash)
    refused = refused_alike(outcome)
    assert "names no roots" in refused[victim]


# ---------------------------------------------------------------------- hole 3 (a): files


@pytest.mark.parametrize("where", ["inside", "outside"])
def test_a_file_that_is_not_an_image_is_refused(
    tmp_path: Path, home_trash: Path, apply: Apply, where: str
) -> None:
    """A unique text file with its real lstat fields, claimed as a near copy."""
    lib = tmp_path / "lib"
    keeper = photo_file(lib / "a.jpg")
    folder = lib if where == "inside" else tmp_path / "victim"
    folder.mkdir(exist_ok=True)
    notes = folder / "notes.txt"
    notes.write_bytes(b"my notes, not a photo\n" * 50)
    report = save(
        tmp_path, [(Kind.NEAR, [keep(keeper), delete(str(notes), Kind.NEAR)])], [str(lib)]
    )
    before = snapshot(folder) | snapshot(lib)

    outcome = apply(report)
    untouched(before, home_trash)
    refused = refused_alike(outcome)
    reason = refused[str(notes)]
    if where == "inside":
        assert "is not an image photodup decodes" in reason
    else:
        assert "is not under the report's roots" in reason


# ---------------------------------------------------------------------- hole 3 (b): verdicts


def crop_family(tmp_path: Path) -> tuple[str, str, str, list[tuple[Kind, list[Member]]]]:
    """What the scan reports for a photo, its q70 re-encode and an 8% crop of it (checked
    with ``photodup scan --no-model``): one near group, the crop a similar member, kept."""
    lib = tmp_path / "lib"
    original = photo_file(lib / "a.jpg")
    near_copy = reencode(original, lib / "a_q70.jpg")
    edit = crop(original, lib / "a_crop.jpg")
    members = [
        keep(original),
        delete(near_copy, Kind.NEAR),
        member(edit, Action.KEEP, Kind.SIMILAR),
    ]
    return original, near_copy, edit, [(Kind.NEAR, members)]


def forge_crop(how: str) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        crop_doc = document["groups"][0]["members"][2]
        assert crop_doc["verdict"] == "similar"
        crop_doc["action"] = "delete"
        if how == "removed":
            del crop_doc["verdict"]
        else:
            crop_doc["verdict"] = {"null": None, "near": "near"}[how]

    return edit


@pytest.mark.parametrize("how", ["removed", "null", "near"])
def test_a_similar_crop_marked_delete_with_a_forged_verdict_is_not_trashed(
    tmp_path: Path, home_trash: Path, apply: Apply, how: str
) -> None:
    original, near_copy, edit, groups = crop_family(tmp_path)
    report = save(tmp_path, groups, [str(tmp_path / "lib")], edit=forge_crop(how))
    before = snapshot(tmp_path / "lib")

    outcome = apply(report)
    assert read(edit) == before[os.fsencode(edit)]
    assert read(original) == before[os.fsencode(original)]
    # The honest part of the same report still goes: the re-encode is proven near.
    assert [e.original for e in trash_entries(home_trash)] == [os.fsencode(near_copy)]
    refused = refused_alike(outcome)
    if how == "near":  # proven wrong: the pixels of a crop are not the same picture
        assert refused[edit].startswith("near verdict not confirmed")
    else:
        assert refused[edit] == "verdict missing: cannot verify"


def test_an_exact_claim_on_different_bytes_is_refused(
    tmp_path: Path, home_trash: Path, apply: Apply
) -> None:
    lib = tmp_path / "lib"
    original = photo_file(lib / "a.jpg")
    near_copy = reencode(original, lib / "a_q70.jpg")
    other = photo_file(lib / "b.jpg", seed=8)
    different = photo_file(lib / "c.jpg", seed=9)

    def same_hash(document: dict[str, Any]) -> None:  # the second group: hashes forged equal
        keeper_doc, victim_doc = document["groups"][1]["members"]
        victim_doc["content_hash"] = keeper_doc["content_hash"]

    report = save(
        tmp_path,
        [
            # In a near group nothing else checks a member that claims to be byte-identical.
            (Kind.NEAR, [keep(original), delete(near_copy, Kind.EXACT)]),
            (Kind.EXACT, [keep(other), delete(different, Kind.EXACT)]),
        ],
        [str(lib)],
        edit=same_hash,
    )
    before = snapshot(lib)

    outcome = apply(report)
    untouched(before, home_trash)
    refused = refused_alike(outcome)
    assert refused[near_copy] == "exact verdict without equal content hashes: cannot verify"
    assert "byte compare with the keeper failed" in refused[different]


# ---------------------------------------------------------------------- hole 6


def test_a_reference_folder_configured_since_the_scan_is_honoured(
    tmp_path: Path, home_trash: Path, apply: Apply
) -> None:
    lib = tmp_path / "lib"
    keeper = photo_file(lib / "a.jpg")
    archived = copy(keeper, lib / "Archive" / "a.jpg")
    report = save(
        tmp_path, [(Kind.EXACT, [keep(keeper), delete(archived, Kind.EXACT)])], [str(lib)]
    )
    # Since the scan, the user made lib/Archive a reference folder ("never touched").
    config = Path(os.environ["PHOTODUP_CONFIG_DIR"]) / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f"[scan]\nreference_folders = [{json.dumps(str(lib / 'Archive'))}]\n")
    before = snapshot(lib)

    outcome = apply(report)
    untouched(before, home_trash)
    refused = refused_alike(outcome)
    assert refused[archived] == f"in reference folder {str(lib / 'Archive')!r} (rule 11)"


def test_apply_reads_the_config_it_is_given(tmp_path: Path, home_trash: Path) -> None:
    lib = tmp_path / "lib"
    keeper = photo_file(lib / "a.jpg")
    archived = copy(keeper, lib / "Archive" / "a.jpg")
    report = save(
        tmp_path, [(Kind.EXACT, [keep(keeper), delete(archived, Kind.EXACT)])], [str(lib)]
    )
    config = tmp_path / "other.toml"
    config.write_text(f"[scan]\nreference_folders = [{json.dumps(str(lib / 'Archive'))}]\n")
    assert (
        cli.main(["apply", str(report), "--yes", "--config", str(config)]) == cli.EXIT_APPLY_SKIPPED
    )
    assert read(archived) == read(keeper) and trash_entries(home_trash) == []
    config.write_text("[scan]\nreference_folders = 7\n")  # unreadable: nothing is done
    assert cli.main(["apply", str(report), "--yes", "--config", str(config)]) == cli.EXIT_USAGE
    assert read(archived) == read(keeper) and trash_entries(home_trash) == []


# ---------------------------------------------------------------------- honest reports


def test_an_honest_report_of_real_near_copies_is_still_applied(
    tmp_path: Path, home_trash: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """End to end with the real scan: the q70 re-encode is proven near and trashed, the
    original and the crop stay.  (The vetting does not simply refuse everything.)"""
    lib = tmp_path / "lib"
    original = photo_file(lib / "a.jpg")
    near_copy = reencode(original, lib / "a_q70.jpg")
    edit = crop(original, lib / "a_crop.jpg")
    before = snapshot(lib)
    report = tmp_path / "report.json"
    assert cli.main(["scan", str(lib), "--no-model", "-q", "--json", str(report)]) == 1
    (group,) = reports.load_report(report).groups
    verdicts = {m.photo.path: (m.verdict, m.action) for m in group.members}
    assert verdicts[near_copy] == (Kind.NEAR, Action.DELETE)
    assert verdicts[edit] == (Kind.SIMILAR, Action.KEEP)

    capsys.readouterr()
    assert cli.main(["apply", str(report), "--dry-run"]) == 0
    assert snapshot(lib) == before
    assert cli.main(["apply", str(report), "--yes"]) == 0
    assert "moved 1 file to the trash" in capsys.readouterr().out
    (entry,) = trash_entries(home_trash)
    assert entry.original == os.fsencode(near_copy)
    assert entry.data == before[os.fsencode(near_copy)]
    assert read(original) == before[os.fsencode(original)]
    assert read(edit) == before[os.fsencode(edit)]


def test_a_keeper_in_the_reports_reference_folder_outside_the_roots_is_accepted(
    tmp_path: Path, home_trash: Path
) -> None:
    """Reference folders are scanned too and their copies win (keep rule "reference"): a
    keeper there is one the scan saw, even outside the roots."""
    archive = tmp_path / "Archive"
    keeper = photo_file(archive / "a.jpg")
    victim = copy(keeper, tmp_path / "lib" / "a.jpg")
    report = save(
        tmp_path,
        [(Kind.EXACT, [keep(keeper), delete(victim, Kind.EXACT)])],
        [str(tmp_path / "lib")],
        reference_dirs=[str(archive)],
    )
    result = apply_report(report, dry_run=False)
    assert result.skipped == []
    assert [e.original for e in trash_entries(home_trash)] == [os.fsencode(victim)]
    assert os.path.exists(keeper)


def test_when_the_user_keeps_a_copy_the_verdicts_are_proven_against_that_copy(
    tmp_path: Path, home_trash: Path
) -> None:
    """Verdicts are relations to the scan's keeper.  The user kept the re-encode instead: the
    original (verdict null) is judged by the re-encode's own verdict, the original's byte
    copy by the weaker of the two (near), each proven against the re-encode's pixels."""
    lib = tmp_path / "lib"
    original = photo_file(lib / "a.jpg")
    twin = copy(original, lib / "backup" / "a.jpg")
    near_copy = reencode(original, lib / "a_q70.jpg")
    members = [
        delete(original, None),  # the scan's keeper, marked by the user
        delete(twin, Kind.EXACT),
        member(near_copy, Action.KEEP, Kind.NEAR),
    ]
    report = save(tmp_path, [(Kind.NEAR, members)], [str(lib)])
    before = snapshot(lib)

    result = apply_report(report, dry_run=False)
    assert result.skipped == []
    trashed = {e.original: e.data for e in trash_entries(home_trash)}
    assert trashed == {os.fsencode(p): before[os.fsencode(p)] for p in (original, twin)}
    assert read(near_copy) == before[os.fsencode(near_copy)]


def test_a_root_that_is_a_symlink_to_the_library_still_holds_its_files(
    tmp_path: Path, home_trash: Path
) -> None:
    """The walk follows a root the user named even when it is a symlink: its files are
    under that root, resolved or not."""
    real = tmp_path / "disk" / "Pictures"
    keeper = photo_file(real / "a.jpg")
    copy(keeper, real / "b.jpg")
    (tmp_path / "Pictures").symlink_to(real)
    root = str(tmp_path / "Pictures")
    members = [keep(f"{root}/a.jpg"), delete(f"{root}/b.jpg", Kind.EXACT)]
    report = save(tmp_path, [(Kind.EXACT, members)], [root])

    assert apply_report(report, dry_run=False).skipped == []
    assert [e.original for e in trash_entries(home_trash)] == [os.fsencode(f"{root}/b.jpg")]
    assert read(keeper) == read(trash_entries(home_trash)[0].files_path)
