"""Where photodup keeps things, per platform (platformdirs), and the socket directory check."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import platformdirs

APP = "photodup"
SOCKET_NAME = "photodupd.sock"
#: macOS limits sun_path to 104 bytes (Linux 108); stay under the smaller.
MAX_SOCKET_PATH = 103


class UnsafeRuntimeDir(Exception):
    """The socket directory is not private to this user; the daemon refuses to start."""


def runtime_dir() -> Path:
    override = os.environ.get("PHOTODUP_RUNTIME_DIR")
    if override:
        return Path(override)
    if sys.platform == "darwin":
        # The per-user temporary dir ($TMPDIR) is private (0700) and short enough.
        return Path(platformdirs.user_runtime_dir(APP))
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / APP
    # No runtime dir (containers, su): fall back to a per-uid dir in /tmp,
    # checked for ownership and mode like any other.
    return Path(f"/tmp/{APP}-{os.getuid()}")


def default_socket_path() -> Path:
    return runtime_dir() / SOCKET_NAME


def config_dir() -> Path:
    override = os.environ.get("PHOTODUP_CONFIG_DIR")
    return Path(override) if override else Path(platformdirs.user_config_dir(APP))


def config_file() -> Path:
    return config_dir() / "config.toml"


def cache_dir() -> Path:
    override = os.environ.get("PHOTODUP_CACHE_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir(APP))


def state_dir() -> Path:
    """Journals and decisions: data we must not lose when a cache is cleared."""
    override = os.environ.get("PHOTODUP_STATE_DIR")
    return Path(override) if override else Path(platformdirs.user_state_dir(APP))


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` 0700 if missing, then insist it is a real directory owned by us with no
    group/other access.  Checked with ``lstat`` so a symlink planted there is refused."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise UnsafeRuntimeDir(f"cannot create {path}: {exc.strerror}") from None
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeRuntimeDir(f"{path} is a symlink; refusing to put the socket there")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeRuntimeDir(f"{path} is not a directory")
    if st.st_uid != os.getuid():
        raise UnsafeRuntimeDir(
            f"{path} is owned by uid {st.st_uid}, not by you (uid {os.getuid()})"
        )
    if st.st_mode & 0o077:
        raise UnsafeRuntimeDir(
            f"{path} has mode {stat.S_IMODE(st.st_mode):04o}; it must be 0700 (chmod 700 {path})"
        )


def check_socket_path_length(path: Path) -> None:
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise UnsafeRuntimeDir(
            f"socket path {path} is longer than {MAX_SOCKET_PATH} bytes; set a shorter --socket"
        )
