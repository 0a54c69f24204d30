"""Vetting a saved report: ``photodup apply`` re-derives every fact a deletion rests on.

A report is a file anyone can edit, so nothing in it is taken on trust (rule 13).  For each
member marked ``delete``, and the member that survives for it (``plan.chosen_keeper``):

* **place**: both lie under one of the report's roots (the keeper may also lie in one of the
  report's reference folders, which are scanned too), judged on the resolved path: the
  folder's real path (``..``, symlinked parents), then the name, compared by ``(dev, ino)``
  of every ancestor.  A report without roots places nothing;
* **file**: both are regular files, unchanged since the scan (``lstat``), whose first bytes
  are an image format photodup decodes (the decoder's own signature checks);
* **verdict**: the victim's relation to that keeper, from the members' ``verdict`` fields,
  is required and must fit the group's kind; then it is proven here: ``exact`` needs equal
  content hashes (and is compared byte for byte at act time, rule 5), ``near`` needs the
  same-picture pixel check, recomputed on both files now (decoded in worker processes like
  the scan's), and ``similar`` is only ever acted on when the caller says every such mark
  is the user's own choice (rule 6).

Everything is checked up front (the pixel checks in one batch) and handed to ``make_plan``
as its ``vet``: a refusal lands in ``Plan.refused``, so a dry run lists it like the real run
(rule 12).  Nothing is cached: a report is applied once, and correctness beats speed here.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from photodup_tui.engine.safedelete.plan import FileRef, _ancestors, chosen_keeper
from photodup_tui.engine.safedelete.verify import stat_problem
from photodup_tui.engine.types import Action, Group, Kind, Member

VERDICT_MISSING = "verdict missing: cannot verify"
SIMILAR_NEEDS_CHOICE = "similar to the keeper: only deleted after your explicit choice (rule 6)"
#: The verdicts a member of a group of each kind can honestly have (grouping.py): ``similar``
#: edits ride along in any group; a similar group holds nothing else.
_FITS = {
    Kind.EXACT: {Kind.EXACT, Kind.SIMILAR},
    Kind.NEAR: {Kind.EXACT, Kind.NEAR, Kind.SIMILAR},
    Kind.SIMILAR: {Kind.SIMILAR},
}
_STRENGTH = {Kind.EXACT: 0, Kind.NEAR: 1, Kind.SIMILAR: 2}
#: Enough for every signature check the decoder makes (Pillow reads 16 bytes too).
_HEAD_BYTES = 16


@dataclass(slots=True)
class Vetting:
    """The outcome for every deletion of a report; ``refusal`` is ``make_plan``'s ``vet``."""

    #: Per victim (by identity): (victim, the keeper it was vetted against, why it may not
    #: go or None).
    outcomes: dict[int, tuple[Member, Member, str | None]] = field(default_factory=dict)
    near_pairs: int = 0  # same-picture checks made
    near_seconds: float = 0.0  # the time they took, decoding included

    def refusal(self, victim: Member, keeper: Member) -> str | None:
        outcome = self.outcomes.get(id(victim))
        if outcome is None or outcome[0] is not victim or outcome[1] is not keeper:
            return "not vetted against this keeper: cannot verify"
        return outcome[2]

    def _set(self, victim: Member, keeper: Member, reason: str | None) -> None:
        self.outcomes[id(victim)] = (victim, keeper, reason)


def vet_groups(
    groups: Sequence[Group],
    *,
    roots: Sequence[str],
    reference_dirs: Sequence[str] = (),
    allow_similar: bool = False,
    cancel: threading.Event | None = None,
) -> Vetting:
    """Vet every member marked ``delete`` in ``groups`` (a report's, whose roots and
    reference folders are given) against the member that would survive for it."""
    vetting = Vetting()
    # Reference folders are scanned too and their copies win the keeper choice: a keeper
    # may lie there, outside the roots (a victim there is refused by the plan, rule 11).
    victim_places = _Places(roots, "the report's roots")
    keeper_places = _Places([*roots, *reference_dirs], "the report's roots or reference folders")
    near: list[tuple[Member, Member]] = []
    for group in groups:
        keeper = chosen_keeper(group)
        if keeper is None:
            continue  # the plan refuses the whole group (rule 1)
        keeper_reason = _file_refusal(keeper, keeper_places, "keeper ")
        for victim in (m for m in group.members if m.action is Action.DELETE):
            claim, claim_reason = _claim(victim, keeper, group, allow_similar)
            reason = (
                keeper_reason
                or _file_refusal(victim, victim_places, "")
                or claim_reason
                or _proof_refusal(victim, keeper, claim)
            )
            vetting._set(victim, keeper, reason)
            if reason is None and claim is Kind.NEAR:
                near.append((keeper, victim))
    if near:
        _check_near(near, vetting, cancel)
    return vetting


def _claim(
    victim: Member, keeper: Member, group: Group, allow_similar: bool
) -> tuple[Kind | None, str | None]:
    """The victim's relation to ``keeper`` as the report claims it, or why it cannot be used.

    Verdicts are each member's relation to the group's keeper (``null`` for the keeper
    itself).  When the user kept another member, the relation between two members is the
    weaker of their verdicts: it is then proven between those two files directly.
    """
    original = group.keeper_member
    own = [m.verdict for m in (victim, keeper) if m is not original]
    verdicts = [v for v in own if v is not None]
    if len(verdicts) < len(own):
        return None, VERDICT_MISSING
    wrong = [v for v in verdicts if v not in _FITS[group.kind]]
    if wrong:
        return (
            None,
            f"verdict {wrong[0].value} does not fit a {group.kind.value} group: cannot verify",
        )
    claim = max(verdicts, key=_STRENGTH.__getitem__)
    if claim is Kind.SIMILAR and not allow_similar:
        return claim, SIMILAR_NEEDS_CHOICE
    return claim, None


def _file_refusal(member: Member, places: _Places, label: str) -> str | None:
    """Why this member's file is not one a report may name: outside its places, changed, or
    not an image photodup decodes.  ``label`` says whose file it is in the reason."""
    path = member.photo.path
    if not places.named:
        return f"{label}{path!r}: the report names no roots: cannot verify"
    if not places.holds(path):
        return f"{label}{path!r} is not under {places.description}"
    problem = stat_problem(FileRef.of(member), member.photo.stat)
    if problem is not None:
        return f"{label}{path!r} {problem}"
    if image_format(path) is None:
        return f"{label}{path!r} is not an image photodup decodes"
    return None


def _proof_refusal(victim: Member, keeper: Member, claim: Kind | None) -> str | None:
    """The checks of an ``exact`` claim that need no reading (the bytes are compared at act
    time, rule 5); ``near`` claims are proven by the pixel check afterwards."""
    if claim is not Kind.EXACT:
        return None
    a, b = victim.photo.content_hash, keeper.photo.content_hash
    if not (a and b and a == b):
        return "exact verdict without equal content hashes: cannot verify"
    return None


def _check_near(
    pairs: list[tuple[Member, Member]], vetting: Vetting, cancel: threading.Event | None
) -> None:
    """The grouping's same-picture check on each (keeper, victim) pair, recomputed now on
    both files: thumbnails decoded in worker processes (untrusted files), nothing cached."""
    from photodup_tui.engine.sameshot import SAME_PICTURE_MIN
    from photodup_tui.engine.sameshot_check import SameShotChecker

    started = time.monotonic()
    with SameShotChecker(cache=None, cancel=cancel) as checker:
        scores = checker.near([(k.photo, v.photo) for k, v in pairs])
    vetting.near_pairs += len(pairs)
    vetting.near_seconds += time.monotonic() - started
    for (keeper, victim), score in zip(pairs, scores, strict=True):
        reason: str | None
        if score is None:
            reason = "near verdict, but the same-picture check could not be made: cannot verify"
        elif score < SAME_PICTURE_MIN:
            reason = (
                f"near verdict not confirmed: the same-picture check with the keeper scores "
                f"{score:.3f} (a re-encode scores {SAME_PICTURE_MIN} or more)"
            )
        else:  # the files read must be the ones the act-time checks will see
            reason = _changed(keeper, "keeper ") or _changed(victim, "")
        vetting._set(victim, keeper, reason)


def _changed(member: Member, label: str) -> str | None:
    problem = stat_problem(FileRef.of(member), member.photo.stat)
    return None if problem is None else f"{label}{member.photo.path!r} {problem}"


def image_format(path: str) -> str | None:
    """The format photodup's decoder would read this file as, judged by its first bytes
    alone with the decoder's own checks (allow-listed signatures; RAW containers for RAW
    names), or None.  Nothing is decoded and no symlink is followed."""
    from photodupd import imagebase, rawimage

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        head = os.read(fd, _HEAD_BYTES)
    except OSError:
        return None
    finally:
        os.close(fd)
    if rawimage.is_raw(head, path) and rawimage.looks_raw(head):
        return rawimage.RAW_FORMAT  # by its name, libraw's; a misnamed JPEG falls through
    found = imagebase.signature_format(head)
    return found if found in imagebase.OPEN_FORMATS else None


class _Places:
    """Folders a report covers, by ``(dev, ino)``: another spelling of the same folder
    (symlinked root, bind mount) is the same place.  A root that is a file covers itself."""

    def __init__(self, paths: Sequence[str], description: str) -> None:
        self.named = bool(paths)
        self.description = description
        self._folders: set[tuple[int, int]] = set()
        self._files: set[str] = set()
        for path in paths:
            try:
                st = os.stat(path)  # a root may be a symlink to a folder: the walk follows it
            except (OSError, ValueError):
                continue  # gone: it holds nothing now
            if stat.S_ISDIR(st.st_mode):
                self._folders.add((st.st_dev, st.st_ino))
            else:
                self._files.add(os.path.realpath(path))

    def holds(self, path: str) -> bool:
        """Whether ``path`` names an entry inside one of the places, once resolved: the real
        path of its folder (``..`` and symlinks followed, as the kernel will), then its name.
        """
        name = os.path.basename(path)
        if name in ("", ".", ".."):
            return False
        resolved = os.path.join(os.path.realpath(os.path.dirname(path)), name)
        if resolved in self._files:
            return True
        for folder in _ancestors(resolved):
            try:
                st = os.stat(folder)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in self._folders:
                return True
        return False
