"""Mutation check: small deliberate bugs, each of which the test suite must catch.

Usage::

    python bench/mutants.py                 # every mutation, then a markdown table
    python bench/mutants.py --list          # names, files and the tests that should kill them
    python bench/mutants.py --only NAME[,NAME...] [--jobs 2] [--out FILE]

Each mutation names the code it changes by the code itself (an exact snippet and its
replacement), never by line number, so it keeps working as code moves.  A snippet that no
longer occurs exactly once stops the run before anything is tested, saying which mutation
and which file: update that mutation's snippet to the code as it is now.

For each mutation: the repository (``git ls-files``, plus new files not ignored) is copied to
a temporary directory, the edits are applied there, and only the mutation's own tests run,
with ``PYTHONPATH`` pointing at the copy (``python -m pytest -x -q -p no:cacheprovider``).
The mutation is *killed* when pytest reports a failing test (exit status 1); it *survived*
when they all pass; anything else (collection error, missing test id, timeout) is an error.
Before the mutations, the union of their tests runs once on an unmutated copy: a kill must
come from the mutation, not from a test that fails anyway.

Exit status 0 only when the baseline passes and every mutation is killed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: One mutation's tests may not take longer than this (pytest-timeout stops single tests).
TIMEOUT = 900

SAFE = "photodup_tui/engine/safedelete/"
T_SAFETY = "tests/safety/"


@dataclass(frozen=True)
class Edit:
    file: str  # relative to the repository root
    original: str  # must occur exactly once in the file
    replacement: str


@dataclass(frozen=True)
class Mutation:
    name: str
    breaks: str  # what shipping it would do
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]  # pytest node ids that should kill it


def m(name: str, breaks: str, edits: Sequence[Edit], tests: Sequence[str]) -> Mutation:
    return Mutation(name, breaks, tuple(edits), tuple(tests))


MUTATIONS: tuple[Mutation, ...] = (
    # -- the audit's six (issue 20) -----------------------------------------------------
    m(
        "M1-compare-first-block-only",
        "byte compare stops after the first 1 MiB block: files that differ later are "
        "'identical' and the victim is trashed",
        [
            Edit(
                SAFE + "verify.py",
                "                if not block_a:\n                    return None",
                "                if True:  # MUTANT\n                    return None",
            )
        ],
        [
            T_SAFETY + "test_regressions.py::"
            "test_big_files_equal_at_the_start_but_not_at_the_end_are_never_acted_on",
        ],
    ),
    m(
        "M8-no-recheck-before-each-op",
        "keeper and victim are checked once a group, not right before each operation",
        [
            Edit(
                SAFE + "verify.py",
                '    """The last check right before the destructive step: lstat both again."""\n'
                "    return _stats_problem([op], expect)",
                '    """The last check right before the destructive step: lstat both again."""\n'
                "    return None  # MUTANT",
            )
        ],
        [
            T_SAFETY + "test_regressions.py::"
            "test_keeper_deleted_after_the_first_operation_stops_the_rest",
            T_SAFETY + "test_regressions.py::test_victim_edited_mid_batch_is_not_trashed",
        ],
    ),
    m(
        "M10-rename-noreplace-replaces",
        "the no-replace rename becomes a plain rename(2): a file at the destination is lost",
        [
            Edit(
                SAFE + "fsops.py",
                "_RENAME_NOREPLACE = 1  # linux/fs.h",
                "_RENAME_NOREPLACE = 0  # MUTANT",
            )
        ],
        [
            T_SAFETY + "test_regressions.py::test_rename_noreplace_refuses_an_existing_destination",
            T_SAFETY + "test_regressions.py::"
            "test_a_file_appearing_at_the_move_destination_is_not_overwritten",
        ],
    ),
    m(
        "M6b-orientation-jpeg-only",
        "EXIF orientation turns the pixels of JPEG/MPO only (the size still swaps): a "
        "portrait PNG/WebP/TIFF hashes ~30 bits away from the same picture upright",
        [
            Edit(
                "photodupd/imaging.py",
                "    if method is not None:\n        rgb = rgb.transpose(method)",
                '    if method is not None and fmt in ("JPEG", "MPO"):  # MUTANT\n'
                "        rgb = rgb.transpose(method)",
            )
        ],
        [
            "tests/unit/test_orientation_pixels.py::test_lossless_formats_decode_to_the_upright_pixels"
        ],
    ),
    m(
        "M7b-pixel-key-without-times",
        "pixel-check scores are cached without mtime and ctime: an in-place edit reuses the old "
        "same-shot / same-picture scores",
        [
            Edit(
                "photodup_tui/engine/cache.py",
                'return f"file:{_signed(st.dev)}:{_signed(st.ino)}:{st.size}:{st.mtime_ns}:{st.ctime_ns}"',
                'return f"file:{_signed(st.dev)}:{_signed(st.ino)}:{st.size}"  # MUTANT',
            )
        ],
        ["tests/engine/test_pixel_key.py::test_scores_of_a_file_edited_in_place_are_not_reused"],
    ),
    m(
        "M5b-frame-limit-off-by-one",
        "a frame of exactly MAX_FRAME bytes is refused",
        [
            Edit(
                "photodupd/protocol.py",
                "    if length > MAX_FRAME:",
                "    if length >= MAX_FRAME:  # MUTANT",
            )
        ],
        ["tests/unit/test_frame_limits.py::test_header_up_to_max_frame_is_accepted"],
    ),
    # -- safe deletion ------------------------------------------------------------------
    m(
        "plan-group-without-keeper",
        "a group whose every member is marked for deletion is acted on (rule 1)",
        [
            Edit(
                SAFE + "plan.py",
                "    return next((m for m in group.members if m.action is Action.KEEP), None)",
                "    return next((m for m in group.members if m.action is Action.KEEP), None)"
                " or group.keeper_member  # MUTANT",
            ),
        ],
        [T_SAFETY + "test_plan_rules.py::test_whole_group_marked_for_deletion_is_refused"],
    ),
    m(
        "plan-symlink-victim",
        "a symlink may be planned as a victim (rule 3, static check)",
        [
            Edit(
                SAFE + "plan.py",
                "    if _is_symlink(photo.path):\n        return",
                "    if False:  # MUTANT\n        return",
            )
        ],
        [T_SAFETY + "test_plan_rules.py::test_symlinks_are_neither_keepers_nor_victims"],
    ),
    m(
        "plan-hard-link-of-keeper",
        "a hard link of the keeper (same inode) may be planned as its victim (rule 2)",
        [
            Edit(
                SAFE + "plan.py",
                "if photo.path == keeper.photo.path or photo.stat.replica =="
                " keeper.photo.stat.replica:",
                "if photo.path == keeper.photo.path:  # MUTANT",
            )
        ],
        [T_SAFETY + "test_plan_rules.py::test_hard_link_of_the_keeper_is_never_a_victim"],
    ),
    m(
        "plan-reference-folders-ignored",
        "files in reference folders (any spelling) may be deleted (rule 11)",
        [
            Edit(
                SAFE + "plan.py",
                "    reason = protected.refusal(photo.path)\n    if reason is not None:",
                "    reason = protected.refusal(photo.path)\n    if False:  # MUTANT",
            )
        ],
        [
            T_SAFETY + "test_plan_rules.py::"
            "test_reference_folders_are_never_targets_under_any_spelling",
        ],
    ),
    m(
        "plan-similar-without-choice",
        "similar photos are deleted without the user's explicit choice (rule 6)",
        [
            Edit(
                SAFE + "plan.py",
                "    if group.kind is Kind.SIMILAR and not allow_similar:",
                "    if False:  # MUTANT",
            ),
            Edit(
                SAFE + "plan.py",
                "if reason is None and verdict is Kind.SIMILAR and not allow_similar:",
                "if False:  # MUTANT",
            ),
        ],
        [T_SAFETY + "test_plan_rules.py::test_similar_groups_need_an_explicit_choice"],
    ),
    m(
        "plan-similar-edit-in-near-group",
        "an edit marked in a near group is deleted without the explicit choice (rule 6)",
        [
            Edit(
                SAFE + "plan.py",
                "if reason is None and verdict is Kind.SIMILAR and not allow_similar:",
                "if False:  # MUTANT",
            )
        ],
        [
            T_SAFETY + "test_mixed_families.py::"
            "test_a_similar_edit_marked_in_a_near_group_needs_the_explicit_choice",
        ],
    ),
    m(
        "plan-hardlink-mode-for-near",
        "hard-link replacement allowed for near copies: the victim's path then shows other bytes",
        [
            Edit(
                SAFE + "plan.py",
                "        if kind is not Kind.EXACT:\n"
                '            return "hard-link replacement is only for byte-identical files"',
                "        if False:  # MUTANT\n"
                '            return "hard-link replacement is only for byte-identical files"',
            )
        ],
        [T_SAFETY + "test_undo.py::test_hardlink_mode_is_refused_for_anything_but_exact"],
    ),
    m(
        "verify-ignores-ctime",
        "act-time check ignores ctime: a near victim edited in place with its mtime put back "
        "is trashed",
        [
            Edit(
                SAFE + "verify.py",
                "_FIELDS = [f.name for f in fields(FileStat)]",
                '_FIELDS = [f.name for f in fields(FileStat) if f.name != "ctime_ns"]  # MUTANT',
            )
        ],
        [
            T_SAFETY + "test_regressions.py::"
            "test_near_victim_edited_in_place_with_its_mtime_put_back_is_kept",
        ],
    ),
    m(
        "verify-act-time-rule-2-skipped",
        "a stale plan whose victim is the keeper's inode trashes the keeper itself",
        [
            Edit(
                SAFE + "verify.py",
                "        if op.victim.stat.replica == keeper.stat.replica:\n"
                '            return "victim and keeper are the same file (rule 2)"',
                "        if False:  # MUTANT\n"
                '            return "victim and keeper are the same file (rule 2)"',
            )
        ],
        [
            T_SAFETY + "test_act_time_paths.py::"
            "test_a_plan_whose_victim_is_the_keepers_inode_is_refused_when_acting",
        ],
    ),
    m(
        "verify-keeper-not-read",
        "an unreadable keeper does not stop its near and similar copies from going (rule 1)",
        [
            Edit(
                SAFE + "verify.py",
                "        for ref in (keeper, *judged):",
                "        for ref in judged:  # MUTANT",
            )
        ],
        [T_SAFETY + "test_act_time_paths.py::test_an_unreadable_keeper_keeps_every_copy"],
    ),
    m(
        "verify-open-not-checked",
        "the file opened for the byte compare is not checked (fstat) against the one verified",
        [
            Edit(
                SAFE + "verify.py",
                "    if FileStat.of(os.fstat(fd)) != expect.of(ref):",
                "    if False:  # MUTANT",
            )
        ],
        [
            T_SAFETY + "test_act_time_paths.py::"
            "test_a_file_swapped_between_its_stat_and_its_open_is_caught_on_the_fd",
        ],
    ),
    m(
        "execute-move-read-only-unchecked",
        "a move into a read-only folder is not foreseen: the dry run promises a move the "
        "real run cannot make",
        [
            Edit(
                SAFE + "execute.py",
                "    if vfs.f_flag & os.ST_RDONLY:",
                "    if False:  # MUTANT",
            )
        ],
        [
            T_SAFETY + "test_act_time_paths.py::"
            "test_a_move_into_a_read_only_destination_leaves_the_file",
        ],
    ),
    m(
        "execute-link-replaces",
        "the hard link to the keeper is renamed over whatever now stands at the victim's path",
        [
            Edit(
                SAFE + "execute.py",
                "        rename_noreplace(tmp, op.victim.path)",
                "        os.replace(tmp, op.victim.path)  # MUTANT",
            )
        ],
        [
            T_SAFETY + "test_act_time_paths.py::"
            "test_hard_link_that_cannot_be_put_in_place_is_reported_and_nothing_is_overwritten",
        ],
    ),
    m(
        "execute-no-check-after-trash",
        "the rule-9 check after the rename is skipped: a bad trash entry is reported done",
        [
            Edit(
                SAFE + "execute.py",
                "problem = trash.check_entry(entry, v.dev, v.ino, v.size) or"
                " _still_there(op.victim)",
                "problem = None  # MUTANT",
            )
        ],
        [
            T_SAFETY + "test_act_time_paths.py::"
            "test_trash_info_lost_right_after_the_rename_is_reported_and_undo_restores",
        ],
    ),
    m(
        "execute-move-destination-unchecked",
        "a moved file missing from its destination is reported as moved",
        [
            Edit(
                SAFE + "execute.py",
                "        if replica_at(dest) != op.victim.stat.replica:",
                "        if False:  # MUTANT",
            )
        ],
        [T_SAFETY + "test_act_time_paths.py::test_moved_file_checks_after_the_rename"],
    ),
    m(
        "trash-info-not-exclusive",
        "the trash info file is published by a replacing rename instead of link(2): a second "
        "same-named file takes over the first one's entry",
        [
            Edit(
                SAFE + "fsops.py",
                "            os.link(tmp, path)\n",
                "            os.replace(tmp, path)  # MUTANT\n",
            )
        ],
        [
            T_SAFETY + "test_trash_spec.py::test_ten_same_named_files_become_ten_entries",
            T_SAFETY
            + "test_trash_spec.py::test_an_info_name_taken_by_another_trasher_mid_write_is_never_replaced",
        ],
    ),
    m(
        "trash-copies-across-devices",
        "files on other devices go to the home trash, copied then deleted (rule 8)",
        [
            Edit(
                SAFE + "trash.py",
                "    if (\n        anchor is not None\n        and os.stat(anchor).st_dev == dev\n",
                "    if True or (  # MUTANT\n        anchor is not None\n        and os.stat(anchor).st_dev == dev\n",
            ),
            Edit(
                SAFE + "fsops.py",
                "_RENAME_NOREPLACE) == 0:\n            return\n        err = ctypes.get_errno()\n",
                "_RENAME_NOREPLACE) == 0:\n            return\n        err = ctypes.get_errno()\n"
                "        if err == errno.EXDEV:  # MUTANT\n"
                "            import shutil\n\n"
                "            shutil.copy2(src, dst)\n"
                "            os.unlink(src)\n"
                "            return\n",
            ),
        ],
        [T_SAFETY + "test_trash_spec.py::test_other_device_uses_topdir_trash_uid_created_private"],
    ),
    m(
        "undo-overwrites",
        "undo puts a file back over whatever now stands at its path",
        [
            Edit(
                SAFE + "undo.py",
                "    if os.path.lexists(victim.path) and not ours:",
                "    if False:  # MUTANT",
            ),
            Edit(
                SAFE + "undo.py",
                "        rename_noreplace(source, victim.path)",
                "        os.replace(source, victim.path)  # MUTANT",
            ),
        ],
        [T_SAFETY + "test_undo.py::test_undo_into_a_changed_tree_refuses_to_overwrite"],
    ),
    # -- grouping and the exact tier ----------------------------------------------------
    m(
        "grouping-near-threshold-inverted",
        "pairs *below* the near cosine become near duplicates (and are pre-marked)",
        [
            Edit(
                "photodup_tui/engine/grouping.py",
                "near = (cosines >= t.near_cosine) & phash_ok & same_shape",
                "near = (cosines < t.near_cosine) & phash_ok & same_shape  # MUTANT",
            )
        ],
        ["tests/engine/test_grouping.py::test_near_delete_and_similar_keep_with_reasons"],
    ),
    m(
        "exact-hash-first-block-only",
        "the content hash covers only the first MiB: big files that differ later are 'exact'",
        [
            Edit(
                "photodup_tui/engine/exact.py",
                "        while chunk := os.pread(fd, CHUNK, offset):\n"
                "            digest.update(chunk)\n"
                "            offset += len(chunk)",
                "        digest.update(os.pread(fd, CHUNK, 0))  # MUTANT\n"
                "        offset = expected.size",
            )
        ],
        ["tests/engine/test_exact.py::test_small_and_boundary_sizes_hash_like_hashlib"],
    ),
    # -- cache --------------------------------------------------------------------------
    m(
        "cache-lookup-ignores-times",
        "cached hashes and features are used for a file whose mtime and ctime moved",
        [
            Edit(
                "photodup_tui/engine/cache.py",
                "stored = (_unsigned(row[0]), _unsigned(row[1]), row[2], row[3], row[18])",
                "stored = (_unsigned(row[0]), _unsigned(row[1]), row[2], photo.stat.mtime_ns,"
                " photo.stat.ctime_ns)  # MUTANT",
            )
        ],
        ["tests/engine/test_cache.py::test_changed_file_is_a_miss_and_its_old_row_is_replaced"],
    ),
    # -- protocol -----------------------------------------------------------------------
    m(
        "protocol-accepts-ext-types",
        "msgpack ext types are decoded instead of refused",
        [
            Edit("photodupd/protocol.py", "ext_hook=_refuse_ext,", "ext_hook=msgpack.ExtType,"),
            Edit("photodupd/protocol.py", "max_ext_len=0,", "max_ext_len=MAX_FRAME,  # MUTANT"),
        ],
        ["tests/unit/test_protocol.py::test_ext_types_are_refused"],
    ),
    m(
        "protocol-items-limit-off-by-one",
        "a features request of MAX_ITEMS + 1 items is accepted",
        [
            Edit(
                "photodupd/protocol.py",
                "    if len(items) > MAX_ITEMS:",
                "    if len(items) > MAX_ITEMS + 1:  # MUTANT",
            )
        ],
        ["tests/unit/test_protocol.py::test_too_many_items"],
    ),
    # -- imaging ------------------------------------------------------------------------
    m(
        "imaging-allow-list-bypassed",
        "every Pillow plugin parses untrusted files, not only the allow-listed formats",
        [
            Edit(
                "photodupd/imaging.py",
                "Image.open(io.BytesIO(data), formats=OPEN_FORMATS)",
                "Image.open(io.BytesIO(data), formats=None)  # MUTANT",
            )
        ],
        ["tests/unit/test_decoder_allow_list.py::test_no_foreign_parser_runs_on_decode_or_preview"],
    ),
    m(
        "imaging-bomb-limit-ignored",
        "the pixel limit is not enforced: a header claiming 1e8 pixels is decoded",
        [
            Edit(
                "photodupd/imaging.py",
                "    if width * height > pixel_limit():",
                "    if False:  # MUTANT",
            ),
            Edit(
                "photodupd/imagebase.py",
                '        warnings.simplefilter("error", Image.DecompressionBombWarning)\n',
                "",
            ),
        ],
        ["tests/unit/test_imaging.py::test_pixel_limit_holds_even_if_pillow_limit_was_disabled"],
    ),
)


# ------------------------------------------------------------------------------------------
# Running


@dataclass
class Outcome:
    name: str
    status: str  # "killed", "survived", "error"
    killed_by: str  # the first failing test, or what went wrong
    seconds: float


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def repo_files() -> list[str]:
    """Tracked files and new ones not ignored: a test added but not yet committed counts."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return sorted({name for name in os.fsdecode(out).split("\0") if name})


def snippet_problems(mutations: Sequence[Mutation]) -> list[str]:
    """Every edit whose snippet is not in its file exactly once (checked on the real tree)."""
    problems = []
    for mutation in mutations:
        for edit in mutation.edits:
            path = ROOT / edit.file
            if not path.is_file():
                problems.append(f"{mutation.name}: file {edit.file} not found")
                continue
            count = path.read_text(encoding="utf-8").count(edit.original)
            if count != 1:
                what = "snippet not found" if count == 0 else f"snippet found {count} times"
                first = edit.original.strip().splitlines()[0]
                problems.append(
                    f"{mutation.name}: {what} in {edit.file} (starts {first!r}); the code "
                    "moved or changed: update this mutation's snippet in bench/mutants.py"
                )
    return problems


def make_copy(files: Sequence[str], edits: Sequence[Edit]) -> Path:
    base = Path(tempfile.mkdtemp(prefix="pdmut-"))
    tree = base / "repo"
    for name in files:
        source = ROOT / name
        if not source.is_file():  # deleted in the worktree, not yet in git
            continue
        target = tree / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    for edit in edits:
        path = tree / edit.file
        text = path.read_text(encoding="utf-8")
        assert text.count(edit.original) == 1, edit  # checked on the real tree already
        path.write_text(text.replace(edit.original, edit.replacement), encoding="utf-8")
    return tree


#: pytest's short summary line: ``FAILED node id - message`` (ids may hold spaces).
_FAILED = re.compile(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", re.MULTILINE)


def run_tests(tree: Path, tests: Sequence[str]) -> tuple[int, str]:
    """pytest on ``tests`` in ``tree``: (exit status, combined output)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    env.pop("PHOTODUP_FAULT", None)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--basetemp={tree.parent / 't'}",  # concurrent runs never share pytest's temp root
        *tests,
    ]
    try:
        done = subprocess.run(
            command, cwd=tree, env=env, capture_output=True, text=True, timeout=TIMEOUT
        )
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {TIMEOUT} s"
    return done.returncode, done.stdout + done.stderr


def run_one(mutation: Mutation, files: Sequence[str]) -> Outcome:
    start = time.monotonic()
    tree = make_copy(files, mutation.edits)
    try:
        status, output = run_tests(tree, mutation.tests)
    finally:
        shutil.rmtree(tree.parent, ignore_errors=True)
    seconds = time.monotonic() - start
    if status == 1:
        failed = _FAILED.search(output)
        outcome = Outcome(mutation.name, "killed", failed.group(1) if failed else "?", seconds)
    elif status == 0:
        outcome = Outcome(mutation.name, "survived", "**SURVIVED**", seconds)
    else:
        tail = " / ".join(output.strip().splitlines()[-3:])
        outcome = Outcome(
            mutation.name, "error", f"**ERROR** (pytest exit {status}): {tail}", seconds
        )
    say(f"{outcome.status:>8}  {mutation.name}  ({seconds:.1f} s)  {outcome.killed_by}")
    return outcome


def baseline(mutations: Sequence[Mutation], files: Sequence[str]) -> tuple[bool, float, str]:
    """The union of the selected tests on an unmutated copy: they must all pass."""
    tests = list(dict.fromkeys(t for mutation in mutations for t in mutation.tests))
    start = time.monotonic()
    tree = make_copy(files, [])
    try:
        status, output = run_tests(tree, tests)
    finally:
        shutil.rmtree(tree.parent, ignore_errors=True)
    return status == 0, time.monotonic() - start, output


def table(outcomes: Sequence[Outcome], total: float, base_seconds: float | None) -> str:
    lines = ["| mutation | killed by | seconds |", "|---|---|---|"]
    for o in outcomes:
        killer = f"`{o.killed_by}`" if o.status == "killed" else o.killed_by
        lines.append(f"| {o.name} | {killer} | {o.seconds:.1f} |")
    killed = sum(o.status == "killed" for o in outcomes)
    lines.append("")
    base = f"; baseline (unmutated) {base_seconds:.0f} s" if base_seconds is not None else ""
    lines.append(f"{killed} of {len(outcomes)} mutations killed; {total:.0f} s in all{base}.")
    return "\n".join(lines)


def select(names: Sequence[str]) -> list[Mutation]:
    if not names:
        return list(MUTATIONS)
    by_name = {mutation.name: mutation for mutation in MUTATIONS}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(f"unknown mutation(s): {', '.join(unknown)} (see --list)")
    return [by_name[n] for n in names]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only these (repeat or comma-separate)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="mutations run at once (default 1)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    mutations = select([n for value in args.only for n in value.split(",") if n])

    if args.list:
        for mutation in mutations:
            files = sorted({edit.file for edit in mutation.edits})
            print(f"{mutation.name}  [{', '.join(files)}]\n    {mutation.breaks}")
            for test in mutation.tests:
                print(f"    - {test}")
        return 0

    problems = snippet_problems(mutations)
    if problems:
        for problem in problems:
            say(f"ERROR {problem}")
        return 2

    files = repo_files()
    start = time.monotonic()
    base_seconds = None
    if not args.no_baseline:
        say(f"baseline: the {len(mutations)} mutations' tests on the unmutated code ...")
        ok, base_seconds, output = baseline(mutations, files)
        if not ok:
            say(output)
            say("ERROR the tests fail without any mutation; fix them first")
            return 2
        say(f"baseline passed ({base_seconds:.1f} s)")
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        outcomes = list(pool.map(lambda mutation: run_one(mutation, files), mutations))
    text = table(outcomes, time.monotonic() - start, base_seconds)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0 if all(o.status == "killed" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
