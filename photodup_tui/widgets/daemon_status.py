"""The one-line daemon status: state, the model in use and why."""

from __future__ import annotations

import os

from rich.text import Text
from textual.app import App
from textual.widgets import Static

from photodup_tui.engine.daemon_control import DaemonStatus

_LOOK = {
    "off": ("○", "dim"),
    "checking": ("…", "dim"),
    "starting": ("◌", "yellow"),
    "loading": ("◐", "yellow"),
    "ready": ("●", "green"),
    "unloaded": ("○", "cyan"),
    "failed": ("✕", "red"),
    "down": ("✕", "red"),
    "elsewhere": ("○", "dim"),
    "served": ("●", "green"),
}

#: States whose line names an error: shown whole, wrapped if need be.
_PROBLEMS = {"failed", "down"}


def describe(status: DaemonStatus, loading_seconds: float | None = None) -> str:
    model = status.model or "the model"
    if status.state == "off":
        return "model off: perceptual hashes only (finds exact and near copies, not similar photos)"
    if status.state == "checking":
        return "looking for photodupd…"
    if status.state == "elsewhere":
        return status.detail
    if status.state == "served":
        return status.detail or model
    if status.state == "starting":
        detail = status.detail if status.detail and status.detail != "starting photodupd" else ""
        return f"starting photodupd… {detail}".strip()
    if status.state == "loading":
        elapsed = f" ({loading_seconds:.0f} s)" if loading_seconds is not None else ""
        return f"photodupd is loading {model}{elapsed}…"
    if status.state == "ready":
        busy = f" · {status.images_per_s:.0f} images/s" if status.images_per_s >= 1 else ""
        why = f" ({status.why})" if status.why else ""
        return f"photodupd ready{busy} · {model}{why}"
    if status.state == "unloaded":
        return f"photodupd idle, {model} unloaded to free memory (it reloads for the next scan)"
    if status.state == "failed":
        return f"photodupd could not load its model: {status.detail or 'see photodupd.log'}"
    if status.detail:
        return f"photodupd could not start, so scans run without a model: {status.detail}"
    return "photodupd is not running: a scan starts it (or scans without a model if it cannot)"


class DaemonStatusLine(Static):
    """Shows ``app.daemon_status``; every screen has one, all watch the same app value."""

    DEFAULT_CSS = """
    DaemonStatusLine {
        height: 1;
        padding: 0 1;
        background: $boost;
        color: $text-muted;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    /* An error wraps instead of losing its end (the part that says why). */
    DaemonStatusLine.-problem {
        height: auto;
        max-height: 3;
        text-wrap: wrap;
    }
    """

    def on_mount(self) -> None:
        app: App[object] = self.app
        if hasattr(app, "daemon_status"):
            self.watch(app, "daemon_status", self._show)

    def _show(self, status: DaemonStatus) -> None:
        since = getattr(self.app, "loading_seconds", lambda: None)()
        symbol, colour = _LOOK.get(status.state, ("?", "dim"))
        line = Text.assemble((f"{symbol} ", colour), _home_as_tilde(describe(status, since)))
        self.set_class(status.state in _PROBLEMS, "-problem")
        self.update(line)


def _home_as_tilde(text: str) -> str:
    """Errors name paths under the home folder ("/home/me/.cache/huggingface/hub"); ``~``
    saves the status line a dozen characters."""
    home = os.path.expanduser("~").rstrip(os.sep)
    return text.replace(home + os.sep, "~" + os.sep) if len(home) > 1 else text
