"""systemd's sd_notify protocol: one datagram to ``$NOTIFY_SOCKET`` (no-op elsewhere)."""

from __future__ import annotations

import contextlib
import os
import socket


def notify(state: str) -> bool:
    """Send e.g. ``READY=1`` or ``STATUS=...``; returns whether anyone was listening."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace, as systemd may hand us
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
        sock.connect(address)
        sock.sendall(state.encode())
        return True
    return False
