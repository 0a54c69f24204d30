"""TUI responsiveness benchmark: the real app, driven by Textual's Pilot, on a 100,000-photo
scan result.

Usage::

    python bench/tui_bench.py [--photos 100000] [--size 160x50] [--stream-seconds 5]

A synthetic scan result stands in for a real library: ``--photos`` photos in groups of 2 to
8 (about a quarter as many groups as photos): byte-identical copies in backup folders
(exact), resized or re-saved copies from phones and messengers (near), edits and bursts
(similar), with the keep rules' marks as the engine sets them (exact and near non-keepers
marked, similar never).  No image file exists: every preview fails to load and must say so
in its card without holding anything up (the group view is timed with that happening).

What is timed is "key to handled": from posting a key event to the app until the effect of
the key is observable in the app's state (the screen on top, the cursor row, the filter's
row count, a member's mark), polled every millisecond from the event loop itself.  Pilot's
own ``press`` waits for the *process* to go idle, which a worker thread never lets happen,
so it cannot time keys during a scan.

The streaming case pushes a scan screen and runs a worker thread that posts a progress
message every millisecond (the engine posts four a second) with a growing list of errors,
while keys open and close the live error list and the help; every key must be handled
before the worker finishes, and the worst latency is reported.

Prints a markdown table; the README keeps it.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from textual import events  # noqa: E402
from textual.widgets import Static  # noqa: E402
from textual.worker import Worker, WorkerState  # noqa: E402

from bench._common import isolated_environment  # noqa: E402
from photodup_tui.app import PhotodupApp, create_app  # noqa: E402
from photodup_tui.engine.scan import ScanCounts, ScanProgress, ScanResult  # noqa: E402
from photodup_tui.engine.types import Action, FileStat, Group, Kind, Member, Photo  # noqa: E402
from photodup_tui.messages import ScanProgressed  # noqa: E402
from photodup_tui.screens.errors import ErrorsScreen  # noqa: E402
from photodup_tui.screens.group import GroupScreen  # noqa: E402
from photodup_tui.screens.help import HelpScreen  # noqa: E402
from photodup_tui.screens.review import ReviewScreen  # noqa: E402
from photodup_tui.screens.scan import ScanScreen  # noqa: E402
from photodup_tui.widgets.group_table import GroupTable  # noqa: E402
from photodup_tui.widgets.member_card import MemberCard  # noqa: E402

ROOT_DIR = "/home/alex/Pictures"
MODEL = "builtin:efficientnet_lite0/imagenet"
CAMERAS = ("Canon EOS 80D", "iPhone 12", "Pixel 7", "NIKON D750", None)


# ------------------------------------------------------------------------------ the library


def build_result(photos: int, seed: int = 7) -> ScanResult:
    """A scan result of about ``photos`` photos in groups of 2..8 (mean ~4)."""
    rng = random.Random(seed)
    groups: list[Group] = []
    all_photos: list[Photo] = []
    inode = 1
    made = 0
    number = 0
    while made < photos:
        number += 1
        size = min(photos - made, rng.choice((2, 2, 3, 3, 4, 4, 5, 6, 8)))
        if size < 2:
            break
        roll = rng.random()
        kind = Kind.EXACT if roll < 0.4 else Kind.NEAR if roll < 0.8 else Kind.SIMILAR
        year, month = rng.randint(2008, 2024), rng.randint(1, 12)
        name = f"IMG_{number:06d}"
        base_bytes = rng.randint(800_000, 8_000_000)
        members: list[Member] = []
        for m in range(size):
            folder, suffix, nbytes, scale = _variant(kind, m, year, month, base_bytes, rng)
            photo = Photo(
                f"{ROOT_DIR}/{folder}/{name}{suffix}.jpg",
                FileStat(dev=2049, ino=inode, size=nbytes, mtime_ns=1, ctime_ns=1),
                content_hash=f"{number:06d}" if kind is Kind.EXACT else f"{number:06d}-{m}",
                width=int(4032 * scale),
                height=int(3024 * scale),
                format="JPEG",
                phash=rng.getrandbits(64),
                taken=f"{year}-{month:02d}-{rng.randint(1, 28):02d}T12:{m:02d}:00",
                camera=rng.choice(CAMERAS),
                exif_fields=rng.randint(0, 60),
                decodable=True,
            )
            inode += 1
            marked = m > 0 and kind is not Kind.SIMILAR
            why = "keeper: higher resolution" if m == 0 else "copy of the keeper"
            members.append(Member(photo, Action.DELETE if marked else Action.KEEP, why))
            all_photos.append(photo)
        reason = {
            Kind.EXACT: "byte-identical",
            Kind.NEAR: "pHash distance 2, cosine 0.981, 4032x3024 vs 1600x1200",
            Kind.SIMILAR: "cosine 0.874, taken 12 s apart",
        }[kind]
        scores = {mem.photo.path: 1.0 - 0.01 * n for n, mem in enumerate(members)}
        groups.append(Group(kind, members, reason=reason, scores=scores))
        made += size
    errors = [
        (f"{ROOT_DIR}/broken/IMG_{n:05d}.jpg", "truncated: image file is truncated")
        for n in range(photos // 500)
    ]
    counts = ScanCounts(files=len(all_photos), bytes=sum(p.stat.size for p in all_photos))
    return ScanResult(
        groups=groups,
        photos=all_photos,
        errors=errors,
        counts=counts,
        elapsed=600.0,
        model_id=MODEL,
        roots=[ROOT_DIR],
    )


def _variant(
    kind: Kind, member: int, year: int, month: int, nbytes: int, rng: random.Random
) -> tuple[str, str, int, float]:
    """(folder, name suffix, bytes, scale) of one member of a group."""
    if member == 0:
        return f"{year}/{month:02d}", "", nbytes, 1.0
    if kind is Kind.EXACT:
        return rng.choice(("Backup", "Backup/old", "Desktop/sort me")), "", nbytes, 1.0
    if kind is Kind.NEAR:
        scale = rng.choice((0.5, 0.4, 1.0))
        folder = rng.choice(("WhatsApp/Media", "Phone/DCIM", "Telegram"))
        return folder, f"-{member}", int(nbytes * scale * scale * 0.8) + 1, scale
    return f"{year}/{month:02d}", f"-edit{member}", int(nbytes * 0.9), 1.0


# ------------------------------------------------------------------------------ timing


@dataclass
class Timings:
    """Seconds per named step; several samples for steps repeated."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.samples.setdefault(name, []).append(seconds)

    def worst(self, name: str) -> float:
        return max(self.samples[name])

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])


async def key_to_handled(
    app: PhotodupApp, key: str, effect: Callable[[], bool], timeout: float = 60.0
) -> float:
    """Post one key to the app and time until ``effect()`` holds."""
    character = key if len(key) == 1 else None
    started = time.perf_counter()
    app.post_message(events.Key(key, character))
    while not effect():
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"key {key!r} was not handled within {timeout:.0f} s")
        await asyncio.sleep(0.001)
    return time.perf_counter() - started


async def settle(app: PhotodupApp, seconds: float = 0.05) -> None:
    """Let pending renders and workers run (between measurements, never inside one)."""
    await asyncio.sleep(seconds)


def becomes(read: Callable[[], object], value: object) -> Callable[[], bool]:
    """An effect: ``read()`` now gives ``value``."""
    return lambda: read() == value


def leaves(read: Callable[[], object], value: object) -> Callable[[], bool]:
    """An effect: ``read()`` no longer gives ``value``."""
    return lambda: read() != value


def review_screen(app: PhotodupApp) -> ReviewScreen:
    screen = app.screen
    assert isinstance(screen, ReviewScreen), screen
    return screen


async def review_steps(app: PhotodupApp, timings: Timings, rows: int = 100) -> None:
    """Everything a user does on the list and in a group, timed key by key."""
    screen = review_screen(app)
    table = screen.query_one(GroupTable)

    for _ in range(4):  # each sort key once: reclaimable -> kind -> files -> path -> ...
        before = screen.sort
        timings.add("sort (s)", await key_to_handled(app, "s", leaves(lambda: screen.sort, before)))
        await settle(app)

    start = table.cursor
    for step in range(1, rows + 1):
        seconds = await key_to_handled(app, "down", becomes(lambda: table.cursor, start + step))
        timings.add(f"cursor down ({rows} rows, per key)", seconds)
    await settle(app)

    await key_to_handled(app, "slash", lambda: screen.focused is not table)
    needle = "img_00012"  # narrows with every key: 100k -> ~1,100 -> ... -> ~10 groups
    for typed in range(1, len(needle) + 1):
        text = needle[:typed]
        seconds = await key_to_handled(
            app, needle[typed - 1], becomes(lambda: screen.filter_text, text)
        )
        timings.add("filter, per keystroke", seconds)
    timings.notes["filter, per keystroke"] = f"typing {needle!r}; {table.row_count:,} left"
    await settle(app)
    await key_to_handled(app, "escape", lambda: screen.filter_text == "")
    await settle(app)
    table.focus()
    await settle(app)

    def group_open() -> bool:
        top = app.screen
        return isinstance(top, GroupScreen) and len(top.query(MemberCard)) > 0

    timings.add("open a group (enter)", await key_to_handled(app, "enter", group_open))
    group = app.screen
    assert isinstance(group, GroupScreen)
    await settle(app, 0.3)  # the previews (missing files) fail in their workers meanwhile
    timings.notes["open a group (enter)"] = _preview_note(group)
    # Mark and unmark a non-keeper.
    await key_to_handled(app, "right", lambda: group.selected != group.review.groups[0].keeper)
    member = group.review.groups[group.group_index].members[group.selected]
    for _ in range(3):
        was = member.action
        seconds = await key_to_handled(app, "space", leaves(lambda: member.action, was))
        timings.add("mark / unmark (space)", seconds)
    position = group.position
    seconds = await key_to_handled(app, "right_square_bracket", lambda: group.position > position)
    timings.add("next group (])", seconds)
    await settle(app)
    seconds = await key_to_handled(app, "escape", lambda: isinstance(app.screen, ReviewScreen))
    timings.add("back to the list (escape)", seconds)
    await settle(app)

    hidden = len(screen.review.dismissed)
    timings.add(
        "not duplicates (n)",
        await key_to_handled(app, "n", lambda: len(screen.review.dismissed) > hidden),
    )
    await settle(app)
    timings.add(
        "show it again (u)",
        await key_to_handled(app, "u", lambda: len(screen.review.dismissed) == hidden),
    )
    await settle(app)


def _preview_note(group: GroupScreen) -> str:
    notes = [
        str(note.content)
        for card in group.query(MemberCard)
        for note in card.query(".preview-note").results(Static)
    ]
    failed = sum("cannot show this photo" in n for n in notes)
    return f"{failed} of {len(group.query(MemberCard))} previews: 'cannot show this photo'"


async def streaming_steps(
    app: PhotodupApp, timings: Timings, seconds: float, interval: float = 0.001
) -> None:
    """Keys on the scan screen, for ``seconds``, while a worker posts progress every
    ``interval`` seconds until the keys are done."""
    scan = ScanScreen([ROOT_DIR], autostart=False)
    await app.push_screen(scan)
    await settle(app)
    posted = [0]
    stop = threading.Event()

    def stream() -> None:
        errors: list[tuple[str, str]] = []
        while not stop.is_set():
            n = posted[0]
            if n % 5 == 0:
                errors.append((f"{ROOT_DIR}/bad/{n}.jpg", "not_an_image: cannot identify"))
            progress = ScanProgress(
                "features", 100_000, 3 * 10**11, 100_000, 40_000, n, len(errors),
                f"{ROOT_DIR}/2019/{n % 12:02d}", 45.0, 900.0, n, 60_000, "",
                tuple(errors),
            )  # fmt: skip
            scan.post_message(ScanProgressed(progress))
            posted[0] += 1
            stop.wait(interval)  # the flood's pace, 250 times the engine's

    worker: Worker[None] = app.run_worker(stream, thread=True, name="stream", exit_on_error=False)
    await asyncio.sleep(0.2)
    keys: list[tuple[str, Callable[[], bool]]] = [
        ("e", lambda: isinstance(app.screen, ErrorsScreen)),
        ("escape", lambda: app.screen is scan),
        ("question_mark", lambda: isinstance(app.screen, HelpScreen)),
        ("escape", lambda: app.screen is scan),
    ]
    name = "key during a streaming scan (worst)"
    all_while_running = True
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for key, effect in keys:
                timings.add(name, await key_to_handled(app, key, effect))
                all_while_running &= worker.state is WorkerState.RUNNING
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await worker.wait()
    shown = scan.latest
    timings.notes[name] = (
        f"{len(timings.samples[name])} keys; {posted[0]:,} progress messages posted "
        f"meanwhile, the screen drew up to #{shown.phase_done:,} ({shown.errors:,} errors "
        f"listed live); every key handled while the worker ran: "
        f"{'yes' if all_while_running else 'NO'}"
    )
    app.pop_screen()
    await settle(app)


# ------------------------------------------------------------------------------ running


@dataclass
class BenchRun:
    photos: int
    groups: int
    timings: Timings


async def run_bench(
    photos: int, size: tuple[int, int] = (160, 50), stream_seconds: float = 5.0
) -> BenchRun:
    result = build_result(photos)
    timings = Timings()
    app = create_app(
        result=result,
        watch_daemon=False,
        check_interrupted=False,
        cursor_blink=False,
        preview="halfcell",
    )
    started = time.perf_counter()
    async with app.run_test(size=size):
        while not (
            isinstance(app.screen, ReviewScreen) and app.screen.query_one(GroupTable).row_count
        ):
            await asyncio.sleep(0.001)
        timings.add("show the review list (start to rows)", time.perf_counter() - started)
        await settle(app, 0.2)
        await review_steps(app, timings)
        await streaming_steps(app, timings, stream_seconds)
    return BenchRun(len(result.photos), len(result.groups), timings)


ROWS = (
    ("show the review list (start to rows)", "once"),
    ("sort (s)", "worst of 4"),
    ("filter, per keystroke", "worst"),
    ("cursor down (100 rows, per key)", "worst"),
    ("open a group (enter)", "once"),
    ("mark / unmark (space)", "worst of 3"),
    ("next group (])", "once"),
    ("back to the list (escape)", "once"),
    ("not duplicates (n)", "once"),
    ("show it again (u)", "once"),
    ("key during a streaming scan (worst)", "worst"),
)


def table(run: BenchRun) -> Iterator[str]:
    t = run.timings
    yield f"{run.photos:,} photos in {run.groups:,} groups"
    yield ""
    yield "| step | time | median | notes |"
    yield "|---|---|---|---|"
    for name, how in ROWS:
        if name not in t.samples:
            continue
        worst, median = t.worst(name) * 1000, t.median(name) * 1000
        note = t.notes.get(name, "")
        yield f"| {name} | {worst:,.0f} ms ({how}) | {median:,.1f} ms | {note} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=100_000)
    parser.add_argument("--size", default="160x50", help="terminal columns x rows")
    parser.add_argument("--stream-seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    columns, lines = (int(v) for v in args.size.split("x"))
    with isolated_environment():  # "n" writes a decision: never into the user's own state
        run = asyncio.run(run_bench(args.photos, (columns, lines), args.stream_seconds))
    print("\n".join(table(run)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
