"""Scan reports: JSON (for ``photodup apply`` and other programs) and CSV (for spreadsheets).

JSON report, version 1::

    {
      "version": 1,
      "model": "builtin:efficientnet_lite0/imagenet",   # or "local:phash-v1" (--no-model)
      "roots": ["/home/me/Pictures"],                    # absolute, as scanned
      "reference_dirs": ["/home/me/Archive"],            # never targets (rule 11)
      "created": "2025-01-31T12:00:00+00:00",
      "groups": [
        {
          "kind": "exact" | "near" | "similar",
          "reason": "pHash distance 4, cosine 0.987, 4000x3000 vs 2000x1500",
          "scores": {"/home/me/Pictures/a.jpg": 1.0, ...},   # similarity to the keeper, 0..1
          "members": [
            {
              "path": "/home/me/Pictures/a.jpg",
              "size": 123456, "width": 4000, "height": 3000,   # width/height null if unknown
              "format": "JPEG", "taken": "2021-06-01T12:30:00",  # null if unknown
              "action": "keep" | "delete",
              "keeper": true,                  # exactly one member per group
              "verdict": null | "exact" | "near" | "similar",  # own relation to the keeper;
                                               # apply proves it, refuses a deletion without
              "why": "keeper: higher resolution (4000x3000 vs 2000x1500)",
              "dev": 2049, "ino": 1234567, "mtime_ns": ..., "ctime_ns": ...,  # lstat at scan
              "content_hash": "<BLAKE2b-256 hex>",
              "decodable": true,               # false: could not be decoded; null: not tried
              "reference": false               # inside a reference folder
            }
          ]
        }
      ],
      "errors": [{"path": "...", "reason": "truncated: ..."}]
    }

Groups come exact first, then near, then similar, biggest savings first.  A group's
``kind`` is the weakest verdict among the members the keep rules may mark; ``similar``
members (edits of the keeper: crops, borders, mirrors ...) may sit in an exact or near
group beside the copies of their original, and are never pre-marked ``delete``.  ``dev``, ``ino``, ``size``, ``mtime_ns``,
``ctime_ns`` and ``content_hash`` let ``photodup apply`` refuse a file that changed since.

File names that are not valid UTF-8 are written the way Python spells them (surrogate
escapes such as ``\\udcff``, ASCII-escaped in the JSON text), so ``load_report`` gives back
exactly the same path; ``os.fsencode(path)`` gives the original bytes.  The CSV is written
as UTF-8 with such bytes passed through unchanged.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from photodup_tui.engine.atomic import write_atomically
from photodup_tui.engine.types import Action, FileStat, Group, Kind, Member, Photo, ScanResult

REPORT_VERSION = 1

CSV_COLUMNS = (
    "group",
    "kind",
    "reason",
    "path",
    "action",
    "keeper",
    "why",
    "size",
    "width",
    "height",
    "format",
    "taken",
    "score",
    "content_hash",
)


class ReportError(Exception):
    """A report file that is not a valid photodup report; the message says what is wrong."""


@dataclass(slots=True)
class Report:
    version: int
    model: str
    roots: list[str]
    groups: list[Group]
    reference_folders: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    created: str | None = None


def from_scan(result: ScanResult, reference_folders: list[str] | None = None) -> Report:
    return Report(
        version=REPORT_VERSION,
        model=result.model_id,
        roots=list(result.roots),
        groups=result.groups,
        reference_folders=[os.path.abspath(p) for p in reference_folders or []],
        errors=list(result.errors),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


# ---------------------------------------------------------------------- JSON


def to_json(report: Report) -> str:
    document = {
        "version": report.version,
        "model": report.model,
        "roots": report.roots,
        "reference_dirs": report.reference_folders,
        "created": report.created,
        "groups": [_group_doc(g) for g in report.groups],
        "errors": [{"path": path, "reason": reason} for path, reason in report.errors],
    }
    # ensure_ascii: lone surrogates (undecodable names) become \\udcXX escapes, valid JSON.
    return json.dumps(document, ensure_ascii=True, indent=1) + "\n"


def _group_doc(group: Group) -> dict[str, Any]:
    return {
        "kind": group.kind.value,
        "reason": group.reason,
        "scores": group.scores,
        "members": [_member_doc(m, i == group.keeper) for i, m in enumerate(group.members)],
    }


def _member_doc(member: Member, keeper: bool) -> dict[str, Any]:
    photo, st = member.photo, member.photo.stat
    return {
        "path": photo.path,
        "size": st.size,
        "width": photo.width,
        "height": photo.height,
        "format": photo.format,
        "taken": photo.taken,
        "action": member.action.value,
        "keeper": keeper,
        "verdict": None if member.verdict is None else member.verdict.value,
        "why": member.why,
        "dev": st.dev,
        "ino": st.ino,
        "mtime_ns": st.mtime_ns,
        "ctime_ns": st.ctime_ns,
        "content_hash": photo.content_hash,
        "decodable": photo.decodable,
        "reference": photo.reference,
    }


def write_json(report: Report, path: str | Path) -> None:
    write_atomically(Path(path), to_json(report).encode("ascii"))


def load_report(path: str | Path) -> Report:
    """Read a JSON report back, checking every field ``apply`` relies on."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path} is not JSON: {exc}") from None
    return parse_report(document, str(path))


def parse_report(document: Any, where: str = "report") -> Report:
    doc = _Checked(document, where)
    version = doc.integer("version")
    if version != REPORT_VERSION:
        raise ReportError(f"{where}: report version {version} is not supported (want 1)")
    groups = [_parse_group(g, f"{where}: groups[{i}]") for i, g in enumerate(doc.array("groups"))]
    errors = []
    for i, e in enumerate(document.get("errors") or []):
        item = _Checked(e, f"{where}: errors[{i}]")
        errors.append((item.text("path"), item.text("reason")))
    return Report(
        version=version,
        model=doc.text("model"),
        roots=[_as_str(r, f"{where}: roots") for r in doc.array("roots")],
        groups=groups,
        reference_folders=[
            _as_str(r, f"{where}: reference_dirs") for r in document.get("reference_dirs") or []
        ],
        errors=errors,
        created=document.get("created"),
    )


def _parse_group(document: Any, where: str) -> Group:
    doc = _Checked(document, where)
    try:
        kind = Kind(doc.text("kind"))
    except ValueError:
        raise ReportError(f"{where}: kind must be exact, near or similar") from None
    members: list[Member] = []
    keeper = None
    for i, m in enumerate(doc.array("members")):
        member, is_keeper = _parse_member(m, f"{where}.members[{i}]")
        if is_keeper:
            if keeper is not None:
                raise ReportError(f"{where}: more than one keeper")
            keeper = i
        members.append(member)
    if keeper is None:
        raise ReportError(f"{where}: no member is the keeper")
    scores = document.get("scores") or {}
    if not isinstance(scores, dict):
        raise ReportError(f"{where}: scores must be an object")
    return Group(
        kind=kind,
        members=members,
        reason=doc.text("reason"),
        keeper=keeper,
        scores={str(k): float(v) for k, v in scores.items()},
    )


def _parse_member(document: Any, where: str) -> tuple[Member, bool]:
    doc = _Checked(document, where)
    try:
        action = Action(doc.text("action"))
    except ValueError:
        raise ReportError(f"{where}: action must be keep or delete") from None
    stat = FileStat(
        dev=doc.integer("dev"),
        ino=doc.integer("ino"),
        size=doc.integer("size"),
        mtime_ns=doc.integer("mtime_ns"),
        ctime_ns=doc.integer("ctime_ns"),
    )
    photo = Photo(
        path=doc.text("path"),
        stat=stat,
        content_hash=doc.optional("content_hash", str),
        width=doc.optional("width", int),
        height=doc.optional("height", int),
        format=doc.optional("format", str),
        taken=doc.optional("taken", str),
        decodable=doc.optional("decodable", bool),
        reference=bool(doc.optional("reference", bool)),
    )
    keeper = doc.optional("keeper", bool)
    verdict_text = doc.optional("verdict", str)
    try:
        verdict = None if verdict_text is None else Kind(verdict_text)
    except ValueError:
        raise ReportError(f"{where}: verdict must be exact, near, similar or null") from None
    member = Member(photo, action, str(doc.optional("why", str) or ""), verdict)
    return member, bool(keeper)


class _Checked:
    """Typed access to one JSON object, with errors that name the field."""

    def __init__(self, document: Any, where: str) -> None:
        if not isinstance(document, dict):
            raise ReportError(f"{where} must be an object")
        self.document = document
        self.where = where

    def _get(self, key: str) -> Any:
        if key not in self.document:
            raise ReportError(f"{self.where}: missing {key!r}")
        return self.document[key]

    def text(self, key: str) -> str:
        return _as_str(self._get(key), f"{self.where}.{key}")

    def integer(self, key: str) -> int:
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ReportError(f"{self.where}.{key} must be an integer")
        return value

    def array(self, key: str) -> list[Any]:
        value = self._get(key)
        if not isinstance(value, list):
            raise ReportError(f"{self.where}.{key} must be a list")
        return value

    def optional(self, key: str, kind: type) -> Any:
        value = self.document.get(key)
        if value is None:
            return None
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ReportError(f"{self.where}.{key} must be {kind.__name__} or null")
        return value


def _as_str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ReportError(f"{where} must be a string")
    return value


# ---------------------------------------------------------------------- CSV


def to_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for index, group in enumerate(report.groups, start=1):
        for position, member in enumerate(group.members):
            photo = member.photo
            writer.writerow(
                (
                    index,
                    group.kind.value,
                    group.reason,
                    photo.path,
                    member.action.value,
                    "yes" if position == group.keeper else "",
                    member.why,
                    photo.stat.size,
                    _blank(photo.width),
                    _blank(photo.height),
                    _blank(photo.format),
                    _blank(photo.taken),
                    _blank(group.scores.get(photo.path)),
                    _blank(photo.content_hash),
                )
            )
    return out.getvalue()


def _blank(value: object) -> object:
    return "" if value is None else value


def write_csv(report: Report, path: str | Path) -> None:
    # surrogateescape: an undecodable file name goes out as the bytes it has on disk.
    write_atomically(Path(path), to_csv(report).encode("utf-8", "surrogateescape"))
