"""Asking a running photodupd how it is, and to load another model: blocking round trips,
which the terminal UI's daemon supervisor runs in its workers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from photodupd import config as daemon_config
from photodupd import protocol
from photodupd.client import ConnectionLost, SyncClient
from photodupd.protocol import RemoteError

#: How long a model load may take before the UI gives up waiting (CLIP on a slow disk).
LOAD_TIMEOUT = 600.0


@dataclass(frozen=True, slots=True)
class DaemonStatus:
    """What photodupd says about itself, as the status line shows it."""

    state: str  # checking | starting | loading | ready | unloaded | failed | down | off
    model: str | None = None
    why: str = ""
    detail: str = ""  # last error, or what the launcher is doing
    images_per_s: float = 0.0


def poll_daemon(socket_path: Path | None, timeout: float = 2.0) -> DaemonStatus:
    """One ``status`` round trip; any failure to connect means "down"."""
    try:
        with SyncClient(socket_path, timeout=timeout, client_name="photodup-tui") as client:
            client.connect()
            status = client.call(protocol.STATUS)
    except (OSError, ConnectionLost, RemoteError):
        return DaemonStatus("down")
    return DaemonStatus(
        state=str(status.get("state") or "ready"),
        model=status.get("model") or None,
        why=str(status.get("why") or ""),
        detail=str(status.get("last_error") or ""),
        images_per_s=float(status.get("recent_images_per_s") or 0.0),
    )


class DaemonNotRunning(Exception):
    """Nobody answers on the socket: the model setting applies when photodupd starts."""


@dataclass(frozen=True, slots=True)
class ModelSwitch:
    model_id: str  # what photodupd serves now
    why: str  # photodupd's reason ("auto: CLIP weights found in the local cache")


def switch_model(socket_path: Path | None, name: str) -> ModelSwitch:
    """Ask the running photodupd to load ``name`` now (what ``photodup-ctl models use``
    does).  Blocks until the model is loaded; raises :class:`DaemonNotRunning`, or
    ``RemoteError`` (``model_unavailable``: e.g. CLIP weights not on this computer), in which
    case photodupd keeps serving the model it had."""
    fields: dict[str, Any] = {"model": name}
    try:
        weights = daemon_config.load().weights  # the config's weights file goes with CLIP
    except daemon_config.ConfigError:
        weights = None
    if weights is not None and name != "builtin":
        fields["weights"] = str(weights)
    with SyncClient(socket_path, timeout=5, client_name="photodup-tui") as client:
        try:
            client.connect()
        except (OSError, ConnectionLost) as exc:
            raise DaemonNotRunning(str(exc)) from None
        client.set_timeout(LOAD_TIMEOUT)
        result = client.call(protocol.LOAD, **fields)
    return ModelSwitch(str(result.get("id") or name), str(result.get("why") or ""))
