"""Getting a listening Unix socket safely (docs/safety.md rules 15-17) and checking peers (rule 16).

Three ways to get a listener:
- inherited from systemd socket activation (``LISTEN_FDS``) or launchd;
- bound by us at a path inside a private directory, under a lock file, after
  proving with a real hello that no live daemon owns an existing socket there.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import socket
import stat
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

from photodupd import paths

SD_LISTEN_FDS_START = 3
LOCK_NAME = "photodupd.lock"
LAUNCHD_SOCKET_NAME = "Listeners"


class AlreadyRunning(Exception):
    """A live daemon answers on the socket (or holds the lock); we leave it alone."""


class BadInheritedSocket(Exception):
    """The fd we were handed is not a listening Unix stream socket."""


@dataclass
class Listener:
    """A listening socket plus what must be undone on exit."""

    sock: socket.socket
    path: Path | None  # the path we bound and must unlink on exit; None when inherited
    inherited: bool
    lock_fd: int | None = None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        self.hand_over()

    def hand_over(self) -> None:
        """Give up the path and the lock while the socket stays open (to accept what is
        already queued on it): unlink the path we bound, then release the lock, so that
        a new photodupd can bind the path at once.  Once only: after it, the path may be
        the new daemon's and must never be unlinked by us."""
        if self.path is not None and not self.inherited:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self.path = None
        if self.lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.lock_fd)
            self.lock_fd = None


# --------------------------------------------------------------------------- inherited sockets


def _check_listening_unix(sock: socket.socket) -> None:
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise BadInheritedSocket(f"inherited fd {sock.fileno()} is not a Unix stream socket")
    if hasattr(socket, "SO_ACCEPTCONN") and not sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_ACCEPTCONN
    ):
        raise BadInheritedSocket(f"inherited fd {sock.fileno()} is not listening")


def systemd_listener(environ: dict[str, str] | None = None) -> Listener | None:
    """The socket systemd passed us, if ``LISTEN_PID`` names this process.

    The activation variables are removed so that children (decoder workers) do
    not believe the fds are theirs.
    """
    env = os.environ if environ is None else environ
    pid, count = env.get("LISTEN_PID"), env.get("LISTEN_FDS")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    if pid is None or count is None:
        return None
    if not pid.isdigit() or int(pid) != os.getpid():
        return None
    if not count.isdigit() or int(count) < 1:
        return None
    if int(count) != 1:
        raise BadInheritedSocket(f"expected one socket from systemd, got {count}")
    fd = SD_LISTEN_FDS_START
    os.set_inheritable(fd, False)
    sock = socket.socket(fileno=fd)
    try:
        _check_listening_unix(sock)
    except BadInheritedSocket:
        sock.detach()  # leave the fd to its owner; we only refuse to use it
        raise
    sock.setblocking(False)
    return Listener(sock=sock, path=None, inherited=True)


def launchd_listener() -> Listener | None:
    """The socket launchd holds for us under the plist's ``Sockets`` key (macOS only)."""
    if sys.platform != "darwin":
        return None
    libname = ctypes.util.find_library("System")
    if libname is None:
        return None
    lib = ctypes.CDLL(libname)
    fds = ctypes.POINTER(ctypes.c_int)()
    count = ctypes.c_size_t(0)
    rc = lib.launch_activate_socket(
        LAUNCHD_SOCKET_NAME.encode(), ctypes.byref(fds), ctypes.byref(count)
    )
    if rc != 0 or count.value < 1:
        return None  # ESRCH: not started by launchd, or no such socket
    fd = fds[0]
    ctypes.CDLL(ctypes.util.find_library("c")).free(fds)
    sock = socket.socket(fileno=fd)
    _check_listening_unix(sock)
    sock.setblocking(False)
    return Listener(sock=sock, path=None, inherited=True)


# --------------------------------------------------------------------------- binding ourselves


def _take_lock(directory: Path) -> int:
    fd = os.open(
        directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise AlreadyRunning(
                f"another photodupd holds {directory / LOCK_NAME}; it is starting or running"
            ) from None
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def probe(path: Path, timeout: float = 2.0) -> bool:
    """True when a live daemon answers a real hello at ``path``.

    Only a refused connection (or no socket at all) counts as dead: a daemon
    that accepts but is slow to answer is treated as alive, so we never unlink
    a socket that someone is serving.
    """
    from photodupd.client import SyncClient  # local import: client imports nothing heavy

    try:
        with SyncClient(path, timeout=timeout, client_name="photodupd-probe") as client:
            client.connect()
        return True
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError as exc:
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    except Exception:
        # It accepted and said something odd: alive, but not a daemon we understand.
        return True


def bind_listener(path: Path, backlog: int = 1024) -> Listener:
    """Bind ``path`` safely: private directory, lock, stale-socket probe, 0600 socket."""
    paths.check_socket_path_length(path)
    directory = path.parent
    paths.ensure_private_dir(directory)
    lock_fd = _take_lock(directory)
    try:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None:
            if not stat.S_ISSOCK(st.st_mode):
                raise AlreadyRunning(f"{path} exists and is not a socket; refusing to replace it")
            if probe(path):
                raise AlreadyRunning(f"a photodupd is already serving {path}")
            os.unlink(path)  # refused: a stale socket from a daemon that died
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is born 0600, no window with wider mode
        try:
            sock.bind(os.fspath(path))
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        sock.listen(backlog)
        sock.setblocking(False)
        return Listener(sock=sock, path=path, inherited=False, lock_fd=lock_fd)
    except BaseException:
        os.close(lock_fd)
        raise


def acquire_listener(path: Path) -> Listener:
    """An inherited socket when we were socket-activated, else a freshly bound one."""
    return systemd_listener() or launchd_listener() or bind_listener(path)


# --------------------------------------------------------------------------- peer credentials


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end, or None when the OS will not say."""
    if hasattr(socket, "SO_PEERCRED"):
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return uid
    if sys.platform == "darwin":
        sol_local, local_peercred = 0, 1
        # struct xucred { u_int cr_version; uid_t cr_uid; short cr_ngroups; gid_t cr_groups[16]; }
        raw = sock.getsockopt(sol_local, local_peercred, 4 + 4 + 2 + 2 + 16 * 4)
        return int(struct.unpack_from("I", raw, 4)[0])
    return None


def peer_allowed(uid: int | None, own_uid: int) -> bool:
    """Only our own user may talk to us; an unknown peer is refused."""
    return uid is not None and uid == own_uid
