"""Deterministic scan results for snapshot tests: fixed paths under a fake root, fixed sizes,
fixed previews drawn from seeds (no disk, no clock, no temp paths on screen)."""

from __future__ import annotations

import itertools
from collections import Counter

from PIL import Image

from photodup_tui.engine.daemon_control import DaemonStatus
from photodup_tui.engine.safedelete import FileRef, Operation, OpKind, Plan, RunReport
from photodup_tui.engine.scan import ScanCounts, ScanProgress, ScanResult
from photodup_tui.engine.types import Action, FileStat, Group, Kind, Member, Photo
from photodup_tui.plan_summary import PlanSummary
from tests.photos import make_photo

ROOT = "/home/alex/Pictures"
TRASH = "/home/alex/.local/share/Trash"
MODEL = "builtin:efficientnet_lite0/imagenet"
STATUS = DaemonStatus("ready", MODEL, "the built-in model was requested")

#: path -> (seed, width, height): what each fake photo looks like
_LOOKS: dict[str, tuple[int, int, int]] = {}
_inodes = itertools.count(1000)


def _photo(name: str, seed: int, size: tuple[int, int], nbytes: int, **facts: object) -> Photo:
    path = f"{ROOT}/{name}"
    _LOOKS[path] = (seed, *size)
    stat = FileStat(dev=2049, ino=next(_inodes), size=nbytes, mtime_ns=1, ctime_ns=1)
    return Photo(
        path,
        stat,
        content_hash=f"hash-{name}",
        width=size[0],
        height=size[1],
        format=str(facts.get("format", "JPEG")),
        taken=facts.get("taken"),  # type: ignore[arg-type]
        camera=facts.get("camera"),  # type: ignore[arg-type]
        decodable=True,
    )


def _group(kind: Kind, reason: str, members: list[tuple[Photo, Action, str]]) -> Group:
    return Group(
        kind,
        [Member(photo, action, why) for photo, action, why in members],
        reason=reason,
        scores={p.path: s for (p, _a, _w), s in zip(members, (1.0, 0.987, 0.962), strict=False)},
    )


def groups() -> list[Group]:
    cam = {"camera": "Canon EOS 80D", "taken": "2019-06-01T12:30:00"}
    beach = _photo("2019/06/IMG_0412.jpg", 1, (4000, 3000), 5_412_000, **cam)
    beach_copy = _photo("Backup/IMG_0412.jpg", 1, (4000, 3000), 5_412_000, **cam)
    beach_small = _photo("WhatsApp/IMG-20190601-WA0003.jpg", 1, (1600, 1200), 312_000)
    cat = _photo("2020/cat.png", 4, (2048, 1536), 3_100_000, format="PNG")
    cat_jpg = _photo("2020/cat (1).jpg", 4, (2048, 1536), 901_000)
    dune = _photo("2021/dune.jpg", 7, (3000, 2000), 2_200_000, taken="2021-08-14T18:02:11")
    dune_crop = _photo("2021/dune-edit.jpg", 7, (2400, 1600), 1_400_000)
    return [
        _group(
            Kind.NEAR,
            "pHash distance 2, cosine 0.962, 4000x3000 vs 1600x1200 (weakest of 2 matches)",
            [
                (beach, Action.KEEP, "keeper: higher resolution (4000x3000 vs 1600x1200)"),
                (
                    beach_copy,
                    Action.DELETE,
                    "byte-identical to the keeper; keeper wins: shorter path",
                ),
                (
                    beach_small,
                    Action.DELETE,
                    "near duplicate of the keeper (pHash 2, cosine 0.962)",
                ),
            ],
        ),
        _group(
            Kind.NEAR,
            "pHash distance 0, cosine 0.991, 2048x1536 vs 2048x1536",
            [
                (cat, Action.KEEP, "keeper: preferred format (PNG over JPEG)"),
                (cat_jpg, Action.DELETE, "near duplicate of the keeper; keeper wins: format"),
            ],
        ),
        _group(
            Kind.SIMILAR,
            "cosine 0.871, 3000x2000 vs 2400x1600, taken 2021-08-14T18:02:11 vs no date",
            [
                (dune, Action.KEEP, "keeper: higher resolution (3000x2000 vs 2400x1600)"),
                (dune_crop, Action.KEEP, "similar to the keeper (cosine 0.871)"),
            ],
        ),
    ]


def result(with_groups: bool = True) -> ScanResult:
    found = groups() if with_groups else []
    photos = [m.photo for g in found for m in g.members]
    counts = ScanCounts(files=1_284, bytes=3_912_000_000, hashed=214, cache_hits=1_070)
    return ScanResult(
        groups=found,
        photos=photos,
        errors=[
            (f"{ROOT}/2018/broken.jpg", "truncated: image file is truncated"),
            (f"{ROOT}/2018/secret.jpg", "unreadable: Permission denied"),
        ],
        counts=counts,
        elapsed=12.5,
        model_id=MODEL,
        roots=[ROOT],
    )


def preview(path: str, max_side: int) -> Image.Image:
    """The fake photo at ``path``, scaled like the real loader would."""
    seed, width, height = _LOOKS[path]
    scale = min(1.0, max_side / max(width, height), 160 / max(width, height))
    return make_photo(seed, (round(width * scale), round(height * scale)), noise=0)


def progress() -> ScanProgress:
    return ScanProgress(
        phase="features",
        files_found=1_284,
        bytes_found=3_912_000_000,
        hashed=214,
        cache_hits=1_070,
        embedded=96,
        errors=2,
        current_dir=f"{ROOT}/2021/08",
        rate=41.0,
        eta_seconds=95.0,
        phase_done=96,
        phase_total=310,
        error_files=(
            (f"{ROOT}/2018/broken.jpg", "truncated: image file is truncated"),
            (f"{ROOT}/2018/secret.jpg", "unreadable: Permission denied"),
        ),
    )


def plan_summary() -> PlanSummary:
    kept = groups()
    operations = [
        Operation(OpKind.TRASH, i, g.kind, FileRef.of(m), FileRef.of(g.keeper_member))
        for i, g in enumerate(kept)
        for m in g.members
        if m.action is Action.DELETE
    ]
    plan = Plan(operations, refused=[(f"{ROOT}/Archive/IMG_0001.jpg", "in a reference folder")])
    return PlanSummary(
        plan,
        files=len(operations),
        bytes=sum(op.victim.stat.size for op in operations),
        trash_dirs=Counter({TRASH: len(operations)}),
        by_kind=Counter(op.group_kind.value for op in operations),
    )


def run_report() -> RunReport:
    report = RunReport(batch_id="20250131-120000-000000001-abcd", dry_run=False)
    report.trashed = [
        (f"{ROOT}/Backup/IMG_0412.jpg", f"{TRASH}/files/IMG_0412.jpg", 5_412_000),
        (
            f"{ROOT}/WhatsApp/IMG-20190601-WA0003.jpg",
            f"{TRASH}/files/IMG-20190601-WA0003.jpg",
            312_000,
        ),
    ]
    report.skipped = [(f"{ROOT}/2020/cat (1).jpg", "changed since the scan (mtime)")]
    report.bytes_reclaimed = 5_724_000
    return report


#: What the launcher says when photodupd refuses to start (an unsafe runtime dir).
DAEMON_DOWN = (
    "photodupd exited with status 3: refusing to start: /run/user/1000/photodup "
    "has mode 0755, it must be 0700"
)


def run_report_with_failures() -> RunReport:
    """A clean-up where the trash refused some files and one check failed after a move."""
    report = RunReport(batch_id="20250131-120500-000000002-ef01", dry_run=False)
    report.trashed = [
        (f"{ROOT}/Backup/IMG_0412.jpg", f"{TRASH}/files/IMG_0412.jpg", 5_412_000),
    ]
    report.skipped = [
        (
            "/mnt/usb/DCIM/IMG_0412.jpg",
            "no usable trash on this device (/mnt/usb/.Trash-1000: read-only filesystem)",
        ),
        (
            f"{ROOT}/2020/cat (1).jpg",
            "byte compare with the keeper failed: contents differ (rule 5)",
        ),
    ]
    report.failed = [
        (
            f"{ROOT}/WhatsApp/IMG-20190601-WA0003.jpg",
            "moved to the trash, but trash info file missing or unreadable",
        ),
    ]
    report.bytes_reclaimed = 5_412_000
    return report
