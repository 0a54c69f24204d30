"""photodupd as the terminal UI sees it: started when nobody answers, watched for the status
line, asked to switch models; what the status line says, and what to tell the user.

No Textual here.  The app holds one :class:`DaemonSupervisor` and is its
:class:`DaemonHost`: every decision is taken here, on the UI thread, and each blocking call
(poll, start, load a model) runs as a job in one of the app's thread workers, which hands
what it found back to the UI thread.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from photodup_tui import ui_settings
from photodup_tui.engine.cancellable import Cancelled, HandBack, Job, run_cancellable
from photodup_tui.engine.daemon_control import (
    DaemonNotRunning,
    DaemonStatus,
    ModelSwitch,
    poll_daemon,
    switch_model,
)
from photodup_tui.engine.daemon_launch import ensure_daemon
from photodup_tui.engine.placement import Placement
from photodup_tui.formatting import short_reason
from photodup_tui.scan_session import NO_MODEL, UNAVAILABLE

#: How often the status line asks photodupd how it is.
POLL_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Notice:
    """Something to tell the user once, in a notification."""

    title: str
    message: str
    severity: Literal["information", "warning", "error"] = "information"
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class SwitchEnded:
    """What became of a model switch (:func:`switch_or_keep`)."""

    model: str  # the model the user chose
    served: ModelSwitch | None = None  # photodupd serves it now
    failure: str | None = None  # why photodupd kept its model; both None: it is not running
    setting_problem: str | None = None  # why the model setting could not be put back


class DaemonHost(Protocol):
    """What the supervisor asks of the app."""

    @property
    def daemon_status(self) -> DaemonStatus:
        """What the status line shows (a reactive value the status lines watch)."""

    @daemon_status.setter
    def daemon_status(self, status: DaemonStatus) -> None: ...

    def tell(self, notice: Notice) -> object: ...

    def in_background(self, job: Job, *, name: str, does: str, exclusive: bool = False) -> object:
        """Run ``job`` in a thread worker and return at once; ``exclusive``: it replaces
        (cancels) a job of the same ``name``; a failure is said as "Could not ``does``"."""


@dataclass(frozen=True, slots=True)
class _Switch:
    """A model switch under way."""

    model: str
    previous: str | None  # the config's model setting before the user's choice
    before: DaemonStatus  # what the status line said before

    @property
    def loading(self) -> DaemonStatus:
        return DaemonStatus("loading", model=self.model, why="switching models")


def elsewhere(placement: Placement | None) -> str | None:
    """What the status line says before a scan when the model is not the local daemon's
    (``ray``, ``mode = remote`` or ``inline``, or ``auto`` with a remote configured); None
    when it is."""
    if placement is None:
        return None
    if placement.ray:  # it alone serves a scan: the local daemon is not started for nothing
        return f"model on the Ray cluster ({placement.ray}): it loads when a scan starts"
    if placement.mode == "remote":
        return f"model on the photodupd on {placement.remote} (remote): a scan connects to it"
    if placement.mode == "auto" and placement.remote:
        return (
            f"model on the photodupd on {placement.remote} (remote) when a scan can reach it, "
            "else here"
        )
    if placement.mode == "inline":
        return "model inside each scan (inline): it loads when a scan starts"
    return None


class DaemonSupervisor:
    """photodupd's life as the app sees it, and the status line's word on it.

    The public methods run on the UI thread; the jobs (``_watch``, ``_start``, ``_load``)
    run in the host's workers and hand what they found back.  ``fixed``: a status that
    never changes (snapshot tests); ``watch``: poll photodupd for the status line (tests
    without a daemon turn it off); ``elsewhere``: the model is not the local daemon's
    (:func:`elsewhere`), so the local one is neither started nor watched, and the line says
    this until a scan says where its model ran.
    """

    def __init__(
        self,
        host: DaemonHost,
        socket_path: Path | None,
        *,
        use_model: bool,
        watch: bool = True,
        fixed: DaemonStatus | None = None,
        elsewhere: str | None = None,
    ) -> None:
        self.host = host
        self.socket_path = socket_path
        self.use_model = use_model  # read by the polling job too: it stops when turned off
        self.elsewhere = elsewhere
        self.watching = watch and elsewhere is None
        self.fixed = fixed
        #: where the last scan's model ran, when not the local daemon (remote, inline)
        self._served: DaemonStatus | None = None
        #: One start of photodupd at a time: the app's own at launch and a scan's.
        self.start_lock = threading.Lock()
        self._starting = False  # written by the starting job, read on the UI thread
        self._start_failure: str | None = None  # why photodupd could not start, if it failed
        self._switch: _Switch | None = None
        self._switch_later: tuple[str, str | None] | None = None  # (model, previous)
        self._loading_since: float | None = None

    # ------------------------------------------------------------------ what happens

    def begin(self, start: bool) -> None:
        """At launch: the status line's first word; ``start``: photodupd too, if nobody
        answers (its model then loads while the user looks)."""
        if self.fixed is not None:
            self._show(self.fixed)
        elif not self.use_model:
            self._show(DaemonStatus("off"))
        elif self.elsewhere is not None:
            self._show(DaemonStatus("elsewhere", detail=self.elsewhere))
        elif self.watching:
            self._poll()
            if start:
                self.host.in_background(self._start, name="daemon-start", does="start photodupd")

    def heard(self, status: DaemonStatus) -> None:
        """What photodupd answered when polled, said as the status line should say it."""
        if not self.use_model or self.fixed is not None:
            return
        if self._switch is not None and status.state != "down":
            # The daemon says "ready" (old model) until the new one starts loading: say what
            # is really going on.
            status = self._switch.loading
        if status.state == "down" and self._served is not None:
            status = self._served  # the last scan's model ran elsewhere (inline)
        elif status.state == "down" and self._starting:
            status = DaemonStatus("starting", detail=self.host.daemon_status.detail)
        elif status.state == "down" and self._start_failure:
            status = DaemonStatus("down", detail=self._start_failure)
        elif status.state != "down":
            self._start_failure = None
        self._show(status)

    def launcher_said(self, text: str) -> None:
        """A line from the launcher ("starting photodupd", "model x: loading"), for the app's
        own start or a scan's."""
        if self.fixed is None and self.host.daemon_status.state in ("down", "checking", "starting"):
            self._show(DaemonStatus("starting", detail=text))

    def start_failed(self, reason: str) -> None:
        self._start_failure = reason
        self._show(DaemonStatus("down", detail=reason))
        self.host.tell(Notice("photodupd did not start", reason, "error", timeout=12))

    def scan_chose(self, mode: str, model_id: str, served_by: str) -> None:
        """A scan's model runs in ``mode``: a model not the local daemon's is what the line
        shows from now on (the local daemon's own status keeps its line as before)."""
        if self.fixed is not None or not self.use_model or mode == NO_MODEL:
            return
        if mode == "local" and self.elsewhere is None:
            self._served = None
            return
        self._served = DaemonStatus("served", model=model_id, detail=served_by)
        self._show(self._served)

    def scan_fell_back(self, fallback_reason: str | None) -> None:
        """A scan ran without the model: when the user wants one, the line says why."""
        if fallback_reason and self.use_model and self.fixed is None:
            self._start_failure = fallback_reason.removeprefix(UNAVAILABLE)
            self._show(DaemonStatus("down", detail=self._start_failure))

    def settings_changed(
        self, use_model: bool, model: str | None, previous: str | None, scan_running: bool
    ) -> None:
        """Saved settings: the model turned on or off; ``model``: the model the user chose
        (None: left as it was), loaded now or, during a scan, when it ends; ``previous``:
        the config's model setting before, put back if photodupd cannot load it."""
        was_on, self.use_model = self.use_model, use_model
        if self.fixed is not None:
            return
        if use_model != was_on:
            self._show(DaemonStatus("checking" if use_model else "off"))
            if use_model and self.watching:
                self._poll()  # (turned off, the polling job stops by itself)
        if model is None or not use_model:
            return
        if scan_running:
            self._switch_later = (model, previous)
            message = (
                f"photodupd switches to {model} when this scan ends: one scan never mixes "
                "two models."
            )
            self.host.tell(Notice("Model", message))
        else:
            self._begin_switch(model, previous)

    def scan_ended(self) -> None:
        """The scan is over (results, failure or cancel): a model chosen meanwhile loads now."""
        if self._switch_later is not None:
            (model, previous), self._switch_later = self._switch_later, None
            self._begin_switch(model, previous)

    def switch_ended(self, ended: SwitchEnded) -> None:
        switch = self._switch
        if switch is None or ended.model != switch.model:
            return  # a switch the user replaced by a newer choice
        self._switch = None
        if ended.served is not None:
            served = ended.served
            self._show(DaemonStatus("ready", model=served.model_id, why=served.why))
            message = f"photodupd now serves {served.model_id}. The next scan uses it."
            self.host.tell(Notice("Model switched", message))
            return
        if ended.failure is None:
            message = (
                f"photodupd is not running; it loads {switch.model} when it starts (the next "
                "scan starts it)."
            )
            self.host.tell(Notice("Model saved", message))
        else:
            # Said once, in a notification: the status line shows what photodupd serves
            # now, which is the model it had.
            self.host.tell(_refused(switch, ended))
        self._show(switch.before)  # until photodupd's own word, which polling asks for now
        if self.watching:
            self._poll()

    def loading_seconds(self) -> float | None:
        """How long the status line has said "loading"."""
        if self._loading_since is None:
            return None
        return time.monotonic() - self._loading_since

    def _begin_switch(self, model: str, previous: str | None) -> None:
        self._switch = _Switch(model, previous, before=self.host.daemon_status)
        self._show(self._switch.loading)
        job = functools.partial(self._load, model, previous)
        self.host.in_background(job, name="model-switch", does="switch models", exclusive=True)

    def _poll(self) -> None:
        self.host.in_background(
            self._watch, name="daemon-poll", does="ask photodupd how it is", exclusive=True
        )

    def _show(self, status: DaemonStatus) -> None:
        if status.state != "loading":
            self._loading_since = None
        elif self._loading_since is None:
            self._loading_since = time.monotonic()
        self.host.daemon_status = status

    # ------------------------------------------------------------------ jobs (worker threads)

    def _watch(self, cancel: threading.Event, hand_back: HandBack) -> None:
        """Ask photodupd how it is every POLL_SECONDS, while the model is on."""
        while not cancel.is_set() and self.use_model:
            hand_back(functools.partial(self.heard, poll_daemon(self.socket_path)))
            if cancel.wait(POLL_SECONDS):
                return

    def _start(self, cancel: threading.Event, hand_back: HandBack) -> None:
        """Start photodupd when nobody answers."""
        if poll_daemon(self.socket_path).state != "down":
            return

        def report(text: str) -> None:
            hand_back(functools.partial(self.launcher_said, text))

        self._starting = True
        try:
            with self.start_lock:
                ensure_daemon(self.socket_path, report=report)
        except Exception as exc:  # DaemonStartFailed, a bad runtime dir ...: the line says why
            hand_back(functools.partial(self.start_failed, short_reason(exc)))
        finally:
            self._starting = False

    def _load(
        self, model: str, previous: str | None, cancel: threading.Event, hand_back: HandBack
    ) -> None:
        ended = switch_or_keep(self.socket_path, model, previous, cancel)
        hand_back(functools.partial(self.switch_ended, ended))


def switch_or_keep(
    socket_path: Path | None, model: str, previous: str | None, cancel: threading.Event
) -> SwitchEnded:
    """Have photodupd load ``model``; when it cannot, it keeps the model it had, and the
    config's model setting goes back to ``previous``.  Raises Cancelled when ``cancel``
    comes first (the app exits, or a newer choice replaces this one)."""
    try:
        served = run_cancellable(lambda: switch_model(socket_path, model), cancel)
    except DaemonNotRunning:
        return SwitchEnded(model)
    except Cancelled:
        raise
    except Exception as exc:  # model_unavailable, a lost connection ...
        problem = None
        try:
            restore_model_setting(previous)
        except ui_settings.UiSettingsError as error:
            problem = str(error)
        return SwitchEnded(model, failure=short_reason(exc), setting_problem=problem)
    return SwitchEnded(model, served=served)


def restore_model_setting(previous: str | None) -> None:
    """Put the config's ``[daemon] model`` back as it was (None: not set)."""
    if previous is None:
        ui_settings.update_tables({}, remove={"daemon": ["model"]})
    else:
        ui_settings.update_tables({"daemon": {"model": previous}})


def _refused(switch: _Switch, ended: SwitchEnded) -> Notice:
    back = switch.previous or "auto"
    setting = f"the model setting is back to {back}."
    if ended.setting_problem:
        setting = f"the model setting could not be put back to {back}: {ended.setting_problem}"
    return Notice(
        f"Could not switch to {switch.model}",
        f"{ended.failure}\nphotodupd keeps the model it had; {setting}",
        "error",
        timeout=20,
    )
