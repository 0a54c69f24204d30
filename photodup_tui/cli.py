"""The ``photodup`` command: the TUI, or headless ``scan`` / ``apply`` / ``undo``.

    photodup [PATH...]                       open the TUI on these folders
    photodup scan PATH... [options]          find duplicates, print a summary, write reports
    photodup apply REPORT --dry-run|--yes    act on a saved JSON report (safe deletion)
    photodup undo [BATCH]                    put a batch of trashed files back

Exit codes of ``scan``: 0 no duplicates, 1 duplicates found, 2 usage or configuration
error (bad flag, missing folder, bad config, unusable cache), 3 a report could not be
written, 130 interrupted (the reports then hold what was found so far), 141 stdout closed
early (``| head``: the output stops quietly; reports are written first).  When the model
cannot serve where ``--mode`` (or ``[daemon] mode``) puts it and ``--no-model`` was not
given, the scan says so on stderr, steps down (``auto``: remote, local, inline), falls back
to perceptual hashes only when nothing is left, and exits 0 or 1 as usual.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from photodup_tui import __version__
from photodup_tui.formatting import human_size

if TYPE_CHECKING:
    from photodup_tui.scan_session import OpenedSource

EXIT_NO_DUPLICATES = 0
EXIT_DUPLICATES = 1
EXIT_USAGE = 2
EXIT_REPORT_FAILED = 3
EXIT_INTERRUPTED = 130
EXIT_APPLY_FAILED = 1  # apply: a file failed a check after it was moved
EXIT_APPLY_SKIPPED = 4  # apply: some marked files were skipped (they stay in place)
EXIT_BROKEN_PIPE = 141  # what a shell reports for a program that SIGPIPE stopped

SUBCOMMANDS = ("scan", "apply", "undo")
SHOWN_GROUPS = 20
SHOWN_ERRORS = 5


class UsageError(Exception):
    pass


# ---------------------------------------------------------------------- argument parsing


def _scan_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="photodup scan",
        description="Find duplicate and near-duplicate photos without the TUI.",
        epilog="Exit codes: 0 no duplicates, 1 duplicates found, 2 usage/config error, "
        "3 report not written, 130 interrupted, 141 stdout closed early.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="folders (or files) to scan")
    parser.add_argument("--json", metavar="FILE", help="write the JSON report here ('-': stdout)")
    parser.add_argument("--csv", metavar="FILE", help="write a CSV report here")
    parser.add_argument(
        "--model",
        default="auto",
        help="auto | builtin | clip:NAME[/TAG]: the model photodupd should serve (default auto)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        help="near-duplicate threshold: minimum cosine for a model, or maximum pHash "
        "distance in bits with --no-model",
    )
    parser.add_argument(
        "--no-model",
        action="store_true",
        help="perceptual hashes only, computed here: faster, fewer matches, no daemon",
    )
    _placement_flags(parser)
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress, no summary")
    parser.add_argument("--config", metavar="FILE", help="config file (default: the user's)")
    parser.add_argument(
        "--exclude", action="append", default=[], metavar="GLOB", help="skip matching paths"
    )
    parser.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder whose photos are kept and never deleted (scanned too)",
    )
    parser.add_argument("--include-hidden", action="store_true", help="scan hidden folders too")
    parser.add_argument("--min-size", type=int, metavar="BYTES", help="skip smaller files")
    return parser


def _placement_flags(parser: argparse.ArgumentParser) -> None:
    """``--mode`` and ``--remote``: where the model runs (README: Where the model runs)."""
    parser.add_argument(
        "--mode",
        choices=("auto", "remote", "local", "inline"),
        help="where the model runs: remote (photodupd on another computer, over ssh), local "
        "(this computer's photodupd), inline (inside this scan), auto (the first that serves; "
        "default: [daemon] mode, else auto)",
    )
    parser.add_argument(
        "--remote",
        metavar="HOST",
        help="use the photodupd on HOST over ssh (implies --mode remote; [daemon] ssh_command "
        "and remote_command apply)",
    )
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="decode and embed on a Ray cluster: local (a Ray instance for this run), auto "
        "(RAY_ADDRESS) or ray://HOST:PORT (needs photodup[ray]; default: [daemon] ray)",
    )


def _placement(args: argparse.Namespace, config_file: str | None = None) -> Any:
    """The user's choice of where the model runs, or UsageError."""
    from pathlib import Path

    from photodup_tui.engine.placement import load_placement
    from photodupd.config import ConfigError

    try:
        placement = load_placement(
            Path(config_file) if config_file else None,
            mode=args.mode,
            remote=args.remote,
            ray=getattr(args, "ray", None),
        )
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if placement.ray and importlib.util.find_spec("ray") is None:
        # Asked for explicitly: a missing extra is a set-up error, not a reason to scan a
        # very large library on one machine without saying so.
        raise UsageError(f"ray = {placement.ray} needs Ray: pip install 'photodup[ray]'")
    return placement


def _apply_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="photodup apply",
        description="Move the files a report marks for deletion to the trash.",
    )
    parser.epilog = (
        "Exit codes: 0 every marked file moved (or would be), 4 some skipped (listed, left in "
        "place), 1 a check failed after a move, 2 unusable report, 130 interrupted."
    )
    parser.add_argument("report", metavar="REPORT", help="a JSON report from photodup scan --json")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--dry-run", action="store_true", help="say what would happen, touch nothing")
    mode.add_argument("--yes", action="store_true", help="really move the files to the trash")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="config file whose reference_folders are protected too (default: the user's)",
    )
    return parser


def _undo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="photodup undo",
        description="Restore a batch of trashed files (default: the newest batch with files "
        "still in the trash, made by the TUI or by photodup apply). It first says which batch: "
        "when, by which command, how many files.",
    )
    parser.add_argument("batch", nargs="?", help="batch id (see photodup undo --list)")
    parser.add_argument(
        "--list", action="store_true", help="list the batches in the journal, newest first"
    )
    return parser


def _tui_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="photodup",
        description="Find duplicate photos, review them side by side, trash the extras safely. "
        "Subcommands: scan, apply, undo (photodup scan --help).",
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help="folders to open")
    _placement_flags(parser)
    parser.add_argument("--version", action="version", version=f"photodup {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] in SUBCOMMANDS:
            command, rest = args[0], args[1:]
            if command == "scan":
                return scan_command(_parse(_scan_parser(), rest))
            if command == "apply":
                return apply_command(_parse(_apply_parser(), rest))
            return undo_command(_parse(_undo_parser(), rest))
        return tui_command(_parse(_tui_parser(), args))
    except UsageError as exc:
        print(f"photodup: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except _Exit as exc:
        return exc.code
    except BrokenPipeError:
        # The reader went away (`photodup scan ... | head`): stop quietly, as Unix tools do.
        # Nothing is lost: reports are written, and trash moves done, before anything prints.
        _discard_stdout()
        return EXIT_BROKEN_PIPE


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on errors (2)
        raise _Exit(int(exc.code or 0)) from None


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


# ---------------------------------------------------------------------- scan


def scan_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from photodup_tui.engine import report as reports
    from photodup_tui.engine import settings as config
    from photodup_tui.engine.cache import CacheError
    from photodup_tui.engine.cancellable import Cancelled, run_interruptible
    from photodup_tui.scan_session import ScanSession, daemon_or_local

    _check_roots(args.paths)
    try:
        settings = config.load(Path(args.config) if args.config else None)
        settings = _with_flags(settings, args)
    except config.SettingsError as exc:
        raise UsageError(str(exc)) from None

    placement = None if args.no_model else _placement(args, args.config)
    say = _Printer(quiet=args.quiet)
    session = ScanSession(
        settings,
        daemon_or_local(not args.no_model, model=args.model, placement=placement),
        threshold=args.threshold,
        cache_required=True,  # an unusable cache is a configuration error (exit 2)
    )
    cancel = threading.Event()
    try:
        scanned, interrupted = run_interruptible(
            lambda: session.run(
                args.paths,
                cancel,
                progress=say.progress,
                report=say.info,
                chosen=lambda opened: _say_source(opened, args.model, say),
            ),
            cancel,
            on_interrupt=_say_interrupted,
        )
    except (config.SettingsError, CacheError) as exc:
        raise UsageError(str(exc)) from None
    except Cancelled:  # stopped while photodupd was starting: nothing was scanned
        return EXIT_INTERRUPTED
    finally:
        say.end_progress()

    result = scanned.result
    if scanned.keepers:
        _keep_remembered(result.groups, scanned.keepers)
    for warning in result.warnings:
        say.warn(warning)
    report = reports.from_scan(result, list(settings.reference_folders))
    status = EXIT_INTERRUPTED if interrupted else _status(result)
    try:
        if args.json == "-":
            sys.stdout.write(reports.to_json(report))
            say.to_stderr = True
        elif args.json:
            reports.write_json(report, args.json)
        if args.csv:
            reports.write_csv(report, args.csv)
    except OSError as exc:
        say.warn(f"could not write the report: {exc}")
        status = EXIT_REPORT_FAILED
    say.summary(result, args, scanned.served_by)
    return status


def _say_source(opened: OpenedSource, requested: str, say: _Printer) -> None:
    """Once the scan knows its features: each step down to it (auto: remote, local, inline)
    and why, why it runs without photodupd, or that photodupd serves another model than
    ``--model`` asked for."""
    for step in opened.steps:
        say.warn(step)
    if opened.daemon_error is not None:
        say.warn(
            f"{opened.unavailable} is unavailable ({opened.daemon_error}); falling back to --no-model: "
            "perceptual hashes only (re-encodes and resizes are found; mirrors and most crops "
            "are not)"
        )
    elif opened.fallback_reason is None and not _model_matches(requested, opened.source.model_id):
        where = "photodupd" if opened.mode == "local" else opened.served_by()
        say.warn(f"{where} is already serving {opened.source.model_id}, not {requested}; using it")


def _keep_remembered(groups: list[Any], keepers: list[Any]) -> None:
    """The keepers the user chose in the TUI stand in the report too, as in the review: else
    `scan` then `apply` would trash the photo the user chose to keep.  Each member's verdict
    is then its relation to that keeper, which `apply` proves again."""
    from photodup_tui.review_state import Review

    scanned_keepers = [group.keeper_member for group in groups]
    review = Review(groups, keepers=keepers)
    for index, group in enumerate(groups):
        if group.keeper_member is not scanned_keepers[index]:
            relations = [review.relation(index, member) for member in group.members]
            for member, relation in zip(group.members, relations, strict=True):
                member.verdict = relation


def _check_roots(paths: Sequence[str]) -> None:
    """A root must be a folder or a photo: a typo'd ``notes.txt`` is a usage error, not
    "Scanned 0 photos"."""
    from photodup_tui.engine.walk import IMAGE_EXTENSIONS, RAW_EXTENSIONS

    for path in paths:
        if not os.path.lexists(path):
            raise UsageError(f"{display(path)}: no such file or folder")
        if os.path.isdir(path):
            continue
        extension = os.path.splitext(path)[1].lower()
        if not os.path.isfile(path) or extension not in IMAGE_EXTENSIONS | RAW_EXTENSIONS:
            raise UsageError(f"{display(path)}: not a folder or a photo photodup reads")


def _status(result: Any) -> int:
    return EXIT_DUPLICATES if result.groups else EXIT_NO_DUPLICATES


def _with_flags(settings: Any, args: argparse.Namespace) -> Any:
    from dataclasses import replace

    changes: dict[str, Any] = {}
    if args.exclude:
        changes["exclude"] = (*settings.exclude, *args.exclude)
    if args.reference:
        for folder in args.reference:
            if not os.path.isdir(folder):
                raise UsageError(f"--reference {display(folder)}: not a folder")
        changes["reference_folders"] = (*settings.reference_folders, *args.reference)
    if args.include_hidden:
        changes["include_hidden"] = True
    if args.min_size is not None:
        if args.min_size < 0:
            raise UsageError("--min-size must not be negative")
        changes["min_size"] = args.min_size
    return replace(settings, **changes)


def _model_matches(requested: str, model_id: str) -> bool:
    """Does the daemon's model id satisfy ``--model``?  ("clip:ViT-B-32" matches any tag.)"""
    if requested == "auto":
        return True
    if requested == "builtin":
        return model_id.startswith("builtin:")
    return model_id == requested or model_id.startswith(requested + "/")


# ---------------------------------------------------------------------- apply / undo / TUI


def apply_command(args: argparse.Namespace) -> int:
    """Exit codes: 0 every marked file moved (a dry run: would move), 4 some were skipped and
    stay where they are (listed, with why), 1 some file failed a check after acting, 2 the
    report is unusable, 130 interrupted."""
    from pathlib import Path

    from photodup_tui.engine import safedelete
    from photodup_tui.engine.cancellable import run_interruptible

    cancel = threading.Event()
    try:
        outcome, interrupted = run_interruptible(
            lambda: safedelete.apply_report(
                Path(args.report),
                dry_run=bool(args.dry_run),
                config_file=Path(args.config) if args.config else None,
                cancel=cancel,
                on_wait=_say_waiting,
            ),
            cancel,
            on_interrupt=_say_interrupted,
        )
    except (safedelete.ReportError, safedelete.PlanError, safedelete.BatchBusy) as exc:
        raise UsageError(str(exc)) from None
    for line in outcome.lines():
        print(line)
    verb = "would move" if outcome.dry_run else "moved"
    print(
        f"{verb} {count(len(outcome.trashed), 'file')} to the trash "
        f"({human_size(sum(size for _, _, size in outcome.trashed))}); "
        f"{len(outcome.skipped):,} skipped, {len(outcome.failed):,} failed"
    )
    if not outcome.dry_run and outcome.trashed:
        print(f"batch {outcome.batch_id}: undo with `photodup undo {outcome.batch_id}`")
    if interrupted or outcome.cancelled:
        return EXIT_INTERRUPTED
    if outcome.failed:
        return EXIT_APPLY_FAILED
    return EXIT_APPLY_SKIPPED if outcome.skipped else 0


def _say_waiting(holder: str) -> None:
    print(f"photodup: waiting for {holder} to finish first ...", file=sys.stderr, flush=True)


def undo_command(args: argparse.Namespace) -> int:
    """Exit codes: 0 everything restored, 1 some files stayed in the trash (listed),
    2 no such batch or it is busy."""
    from photodup_tui.engine import safedelete, undo_preview

    if args.list:
        if args.batch:
            raise UsageError("--list takes no batch id")
        return _list_batches()
    try:
        target = undo_preview.find(args.batch) if args.batch else undo_preview.next_undo()
        # Say what will come back before it does: the newest batch may be one the user
        # does not remember (another photodup made it).
        if target.files:
            print(f"batch {target.batch.batch_id}: putting back {target.sentence()}", flush=True)
        outcome = safedelete.undo(target.batch.batch_id, on_wait=_say_waiting)
    except (safedelete.BatchNotFound, safedelete.BatchBusy) as exc:
        raise UsageError(str(exc) or "nothing to undo") from None
    for line in outcome.lines():
        print(line)
    if not outcome.restored and not outcome.refused:
        print(f"batch {outcome.batch_id}: already undone, nothing left to restore")
        return 0
    print(
        f"batch {outcome.batch_id}: {len(outcome.restored):,} restored, {len(outcome.refused):,} not"
    )
    return 1 if outcome.refused else 0


def _list_batches() -> int:
    """``photodup undo --list``: every batch, newest first; * marks what undo restores."""
    from photodup_tui.engine import undo_preview

    batches = undo_preview.previews()
    if not batches:
        print("no batches in the journal: nothing was ever moved to the trash")
        return 0
    upcoming = next((b.batch.batch_id for b in batches if b.undoable), None)
    rows = [("", "BATCH", "WHEN", "FILES", "SIZE", "STATE", "COMMAND")]
    for shown in batches:
        info = shown.batch
        state = info.state
        if info.state == "partly undone":
            state = f"{info.restored} of {info.acted} back"
        rows.append(
            (
                "*" if info.batch_id == upcoming else "",
                info.batch_id,
                shown.when,
                f"{info.acted:,}",
                human_size(shown.moved_bytes),
                state,
                shown.command or "?",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())
    if upcoming:
        print("* photodup undo puts this one back (or name another: photodup undo BATCH)")
    return 0


def _say_interrupted() -> None:
    print("photodup: interrupted: finishing the current file", file=sys.stderr)


def tui_command(args: argparse.Namespace) -> int:
    """Start the UI on these folders (or the folder picker when none); the exit status."""
    try:
        from photodup_tui import ui_settings
        from photodup_tui.app import create_app
    except ImportError as exc:
        raise UsageError(f"the TUI is not available ({exc}); try photodup scan PATH") from None
    from photodup_tui.engine import settings as config
    from photodup_tui.engine.settings import ScanSettings

    settings_error = None  # the TUI starts anyway, on defaults, and says so
    try:
        settings = config.load()
    except config.SettingsError as exc:
        settings, settings_error = ScanSettings(), str(exc)
    try:
        ui = ui_settings.load()
    except ui_settings.UiSettingsError as exc:
        ui, settings_error = ui_settings.UiSettings(), settings_error or str(exc)
    try:
        placement = _placement(args)
    except UsageError as exc:
        if args.mode or args.remote or args.ray:
            raise
        # A bad [daemon] table: the TUI starts anyway, the model where it always was, and
        # says why (as for a bad [scan] table).
        placement, settings_error = None, settings_error or str(exc)
    app = create_app(
        args.paths,
        scan_settings=settings,
        settings_error=settings_error,
        ui=ui,
        placement=placement,
    )
    app.run()
    return app.return_code or 0


# ---------------------------------------------------------------------- output


def display(path: str) -> str:
    """A path safe to print on one line: control characters and undecodable bytes escaped."""
    text = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def count(n: int, noun: str) -> str:
    """``1 photo``, ``2 photos``, ``1,234 errors``."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


BAR_WIDTH = 20


def progress_bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    """``[#########-----------]  45% 1,234/2,742``: ASCII, so any terminal or log shows it."""
    fraction = min(1.0, done / total) if total > 0 else 1.0
    filled = int(fraction * width)
    return f"[{'#' * filled}{'-' * (width - filled)}] {fraction:4.0%} {done:,}/{total:,}"


def progress_line(p: Any) -> str:
    """One line of scan progress; phases with a known total lead with a bar and their ETA
    (first, so a narrow terminal that cuts the line keeps them)."""
    head = f"{p.phase}: "
    tail = f" · {p.rate:,.0f} files/s · ETA {_eta(p.eta_seconds)}"
    total = getattr(p, "phase_total", None)
    if total is not None and p.phase not in ("done", "cancelled"):
        head += f"{progress_bar(p.phase_done, total)} · ETA {_eta(p.eta_seconds)} · "
        tail = f" · {p.rate:,.0f} files/s"
    return (
        f"{head}found {p.files_found:,} ({human_size(p.bytes_found)}) · hashed {p.hashed:,}"
        f" · cached {p.cache_hits:,} · embedded {p.embedded:,} · errors {p.errors:,}{tail}"
    )


class _Printer:
    """Progress on stderr (redrawn in place on a terminal, sparse otherwise) and the summary."""

    PLAIN_INTERVAL = 5.0

    def __init__(self, quiet: bool, stream: TextIO | None = None) -> None:
        self.quiet = quiet
        self.err = stream or sys.stderr
        self.tty = self.err.isatty()
        self.to_stderr = False  # the summary goes to stderr when stdout carries the JSON
        self._drawn = False
        self._last_plain = 0.0
        self._last_phase = ""

    def progress(self, p: Any) -> None:
        if self.quiet:
            return
        line = progress_line(p)
        if self.tty:
            width = max(20, _terminal_width() - 1)
            self.err.write("\r\x1b[K" + line[:width])
            self._drawn = True
        else:
            now = time.monotonic()
            if p.phase != self._last_phase or now - self._last_plain >= self.PLAIN_INTERVAL:
                self.err.write(line + "\n")
                self._last_plain, self._last_phase = now, p.phase
        self.err.flush()

    def end_progress(self) -> None:
        if self._drawn:
            self.err.write("\n")
            self.err.flush()
            self._drawn = False

    def info(self, message: str) -> None:
        if not self.quiet:
            self.end_progress()
            print(f"photodup: {message}", file=self.err)

    def warn(self, message: str) -> None:
        self.end_progress()
        print(f"photodup: warning: {message}", file=self.err)

    def summary(self, result: Any, args: argparse.Namespace, served_by: str = "") -> None:
        if self.quiet:
            return
        out = self.err if self.to_stderr else sys.stdout
        c = result.counts
        print(
            f"Scanned {count(c.files, 'photo')} ({human_size(c.bytes)}) in "
            f"{result.elapsed:.1f} s with {result.model_id}: {c.cache_hits:,} from cache, "
            f"{c.embedded:,} computed, {c.hashed:,} hashed, {count(len(result.errors), 'error')}",
            file=out,
        )
        if served_by:
            print(f"  model: {served_by}", file=out)
        for path, reason in result.errors[:SHOWN_ERRORS]:
            print(f"  could not read {display(path)}: {reason}", file=out)
        if len(result.errors) > SHOWN_ERRORS:
            print(f"  ... and {len(result.errors) - SHOWN_ERRORS:,} more (see --json)", file=out)
        if c.aliases_skipped or c.symlinks_skipped:
            print(
                f"  skipped {c.aliases_skipped:,} hard links or repeated paths "
                f"and {c.symlinks_skipped:,} symlinks",
                file=out,
            )
        kinds = ", ".join(f"{c.groups.get(k, 0)} {k}" for k in ("exact", "near", "similar"))
        dismissed = f" ({c.dismissed} dismissed earlier)" if c.dismissed else ""
        reused = " (nothing changed since the last scan: its grouping reused)"
        reused = reused if c.groups_reused else ""
        print(f"Found {count(len(result.groups), 'group')}: {kinds}{dismissed}{reused}", file=out)
        for number, group in enumerate(result.groups[:SHOWN_GROUPS], start=1):
            print(f"\n[{number}] {group.kind.value}: {group.reason}", file=out)
            for member in group.members:
                mark = "keep  " if member.action.value == "keep" else "DELETE"
                print(f"  {mark} {display(member.photo.path)}", file=out)
        if len(result.groups) > SHOWN_GROUPS:
            print(
                f"\n... and {count(len(result.groups) - SHOWN_GROUPS, 'more group')} "
                "(see --json or --csv)",
                file=out,
            )
        marked = sum(1 for g in result.groups for m in g.members if m.action.value == "delete")
        if marked:
            hint = (
                f"photodup apply {args.json} --dry-run"
                if args.json not in (None, "-")
                else ("photodup scan ... --json REPORT, then photodup apply REPORT --dry-run")
            )
            print(
                f"\n{count(marked, 'file')} ({human_size(c.reclaimable)}) marked for deletion; "
                f"review them in photodup, or: {hint}",
                file=out,
            )
        if result.cancelled:
            print("The scan was interrupted: these results are partial.", file=out)


def _terminal_width() -> int:
    with contextlib.suppress(OSError):
        return os.get_terminal_size(sys.stderr.fileno()).columns
    return 80


if __name__ == "__main__":
    sys.exit(main())
