"""Daemon configuration: defaults < TOML file (``[daemon]`` table) < command-line flags."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from photodupd import devices, paths


class ConfigError(Exception):
    """The config file or a flag is wrong; the message says which and how."""


def _default_threads() -> int:
    return max(
        1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    socket: Path | None = None  # None: the default path in the runtime dir
    model: str = "auto"  # auto | builtin | clip:NAME[/TAG]
    weights: Path | None = None  # open_clip weights file (pretrained=PATH)
    model_config: Path | None = None  # open_clip model config JSON for custom architectures
    clip_weights: str = "float16"  # how CLIP weights are stored: float16 | float32
    threads: int = _default_threads()  # torch intra-op threads
    model_streams: int = 0  # forward passes at once, threads split among them; 0 = one per thread
    decode_workers: int = _default_threads()  # isolated decoder processes
    batch_size: int = 32  # largest micro-batch
    batch_wait_ms: float = 4.0  # how long a partial batch waits for company
    max_queue: int = 1024  # items waiting for decode or model before "busy"
    decode_timeout: float = 20.0  # seconds before a decoder is replaced
    decode_memory_mb: int = 2048  # address-space cap of a decoder process
    idle_unload: float = 600.0  # seconds without work before the model is unloaded; 0 = never
    #: Seconds without a client request before photodupd exits (0 = never): an idle daemon
    #: costs nothing, and socket activation or the next ``photodup`` starts it again.
    idle_exit: float = 900.0
    max_connections: int = 256  # ordinary slots; a few more are kept for control (server.py)
    max_in_flight: int = 64  # requests per connection
    hello_timeout: float = 10.0  # a new connection must complete hello within this
    idle_timeout: float = 600.0  # a connection with nothing in flight is closed after this
    frame_timeout: float = 30.0  # a started frame must complete within this
    drain_timeout: float = 30.0  # on SIGTERM, in-flight work gets this long
    device: str = "auto"  # auto | cpu | cuda | mps (photodupd.devices)
    # Where the model runs, as photodup (the client) reads it; photodupd ignores these.
    mode: str = "auto"  # auto | remote | local | inline (README: Where the model runs)
    remote: str = ""  # the ssh host of a remote photodupd ("" = none)
    ssh_command: str = "ssh"  # a full command line, like git's GIT_SSH_COMMAND
    remote_command: str = "photodup-ctl bridge"  # run on the remote host, a full command line
    upload: str = "reduced"  # reduced (the model's input only) | original (the file's bytes)
    #: Decode and embed on a Ray cluster ("" = no): local (a Ray instance for the run) |
    #: auto (RAY_ADDRESS) | ray://HOST:PORT (Ray Client).  README: Very large libraries.
    ray: str = ""

    @property
    def socket_path(self) -> Path:
        return self.socket if self.socket is not None else paths.default_socket_path()

    def with_overrides(self, **overrides: Any) -> DaemonConfig:
        known = {f.name for f in fields(self)}
        clean = {k: v for k, v in overrides.items() if k in known and v is not None}
        return replace(self, **clean)


_PATH_KEYS = {"socket", "weights", "model_config"}
#: Timeouts that mean "close the connection after this long": 0 would close every connection
#: at once, and a negative value means nothing.
_POSITIVE_KEYS = ("hello_timeout", "idle_timeout", "frame_timeout")

#: Keys whose value must be one of a few words.
_CHOICES: dict[str, tuple[str, ...]] = {
    "device": devices.DEVICES,
    "mode": ("auto", "remote", "local", "inline"),
    "upload": ("reduced", "original"),
}

#: Values of ``clip_weights``: float16 halves the memory of a CLIP model's weights
#: (computing stays float32; the model id gets :data:`catalog.HALF_WEIGHTS_SUFFIX`).
CLIP_WEIGHTS = ("float16", "float32")


def read_document(path: Path, *, required: bool) -> dict[str, Any]:
    """The parsed TOML config file; a missing file is an empty document unless ``required``."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"config file {path} does not exist") from None
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None


def read_table(name: str, config_file: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """One ``[name]`` table of the config file (the user's unless ``config_file`` is given),
    with the path it came from; a missing default file means an empty table."""
    path = config_file if config_file is not None else paths.config_file()
    table = read_document(path, required=config_file is not None).get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    return path, table


def load(config_file: Path | None = None) -> DaemonConfig:
    """Read the ``[daemon]`` table of the config file; a missing file means defaults."""
    path, table = read_table("daemon", config_file)
    defaults = DaemonConfig()
    values: dict[str, Any] = {}
    for f in fields(DaemonConfig):
        if f.name not in table:
            continue
        raw = table[f.name]
        if f.name in _PATH_KEYS:
            values[f.name] = Path(os.path.expanduser(str(raw)))
            continue
        expected = type(getattr(defaults, f.name))
        if expected is float and isinstance(raw, int):
            raw = float(raw)
        if not isinstance(raw, expected) or isinstance(raw, bool):
            raise ConfigError(f"{path}: daemon.{f.name} must be {expected.__name__}, got {raw!r}")
        values[f.name] = raw
    for key in _POSITIVE_KEYS:
        if key in values and not values[key] > 0:
            raise ConfigError(f"{path}: daemon.{key} must be more than 0, got {values[key]!r}")
    if not values.get("idle_exit", 0) >= 0:  # also refuses nan
        raise ConfigError(f"{path}: daemon.idle_exit must be 0 (never) or more seconds")
    if values.get("model_streams", 0) < 0:
        raise ConfigError(f"{path}: daemon.model_streams must be 0 (automatic) or more")
    if values.get("clip_weights", defaults.clip_weights) not in CLIP_WEIGHTS:
        raise ConfigError(
            f"{path}: daemon.clip_weights must be one of {', '.join(CLIP_WEIGHTS)}, "
            f"got {values['clip_weights']!r}"
        )
    for key, allowed in _CHOICES.items():
        if key in values and values[key] not in allowed:
            raise ConfigError(
                f"{path}: daemon.{key} must be one of {', '.join(allowed)}, got {values[key]!r}"
            )
    ray = values.get("ray", "")
    if ray and ray not in ("local", "auto") and not ray.startswith("ray://"):
        raise ConfigError(f"{path}: daemon.ray must be local, auto or ray://HOST:PORT, got {ray!r}")
    if values.get("remote", "").startswith("-"):
        raise ConfigError(f"{path}: daemon.remote must be a host name, got {values['remote']!r}")
    unknown = set(table) - {f.name for f in fields(DaemonConfig)}
    if unknown:
        raise ConfigError(f"{path}: unknown keys in [daemon]: {', '.join(sorted(unknown))}")
    return replace(defaults, **values)
