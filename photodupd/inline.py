"""A private photodupd for one scan (``mode = inline``): the model next to the scan, not in it.

``photodup`` starts ``python -m photodupd.inline`` with one end of a socket pair as its stdin
and stdout (:func:`photodupd.transport.inline_endpoint`).  This process serves exactly that
one connection with the daemon's own server and inference service (so the same decoders,
the same batching, the same answers as a local photodupd), then exits: when the scan
closes the connection, when the scan's process dies (the kernel tells us, on Linux), or on
SIGTERM.  No socket file, no runtime directory, no lock: nothing is left behind, and nothing
else can connect.

Why a child rather than torch inside the scanning process: the UI stays torch-free (its
start-up time and memory, and the import contracts that keep it so); a model that crashes
or runs out of memory takes this child down, not the UI with the user's review in it; and
it is the daemon's code path, not a second one to keep equal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from photodupd import config, daemon_cli
from photodupd.config import ConfigError, DaemonConfig
from photodupd.server import Server

log = logging.getLogger("photodupd.inline")

#: The one connection is this process's whole life: the daemon's idle close would only end
#: it early (the parent reconnects, and the model loads again).
IDLE_TIMEOUT = 7 * 24 * 3600.0

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_NOT_A_SOCKET = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m photodupd.inline",
        description="Serve one photodup scan on stdin/stdout (a socket), then exit.",
    )
    parser.add_argument("--config", type=Path, help="config file (default: the user's)")
    parser.add_argument("--model", help="auto | builtin | clip:NAME[/TAG]")
    parser.add_argument(
        "--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    return parser


def _take_stdio() -> socket.socket:
    """Our end of the parent's socket pair, from fd 0; fd 1 (the same socket) then points at
    stderr, so that nothing printed by accident can break a frame."""
    sock = socket.socket(fileno=os.dup(0))
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise OSError("stdin is not a Unix stream socket (this is started by photodup)")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return sock


def _die_with_parent() -> None:
    """Linux: SIGTERM when the scanning process dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


async def serve(cfg: DaemonConfig, sock: socket.socket) -> None:
    # As in the daemon, the one place torch comes in: the inference service.
    from photodupd.inference import InferenceService

    service = InferenceService(cfg)
    server = Server(cfg, service)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server.on_shutdown_request = stop.set
    try:
        await service.start()
        serving = asyncio.create_task(server.serve_connected(sock))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        await server.shutdown()
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        await service.close(cfg.drain_timeout)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def main(argv: list[str] | None = None) -> int:
    daemon_cli.limit_memory_growth()
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="photodupd inline: %(levelname)s %(message)s",
    )
    _die_with_parent()
    try:
        sock = _take_stdio()
    except OSError as exc:
        print(f"photodupd inline: {exc}", file=sys.stderr)
        return EXIT_NOT_A_SOCKET
    try:
        cfg = config.load(args.config).with_overrides(model=args.model, idle_timeout=IDLE_TIMEOUT)
    except ConfigError as exc:
        print(f"photodupd inline: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    with sock:
        asyncio.run(serve(cfg, sock))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
