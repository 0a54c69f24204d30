"""``photodupd``: parse flags, get a listener, run the server until a signal says stop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import logging.handlers
import os
import signal
import sys
from pathlib import Path

from photodupd import __version__, config, paths, sdnotify, sockets
from photodupd.config import ConfigError, DaemonConfig
from photodupd.server import Server

log = logging.getLogger("photodupd")

EXIT_OK = 0
EXIT_ALREADY_RUNNING = 1
EXIT_CONFIG = 2
EXIT_UNSAFE = 3

#: mallopt(3) parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
#: Malloc arenas the daemon may use.  glibc's default is 8 per core, and each
#: thread that allocates (the model thread and streams, torch's intra-op threads,
#: the event loop, the decoder pool's threads) then keeps the high-water mark of
#: freed activations in an arena of its own: with the built-in model, about 1050 MB
#: resident after 64 photos instead of 800-840 MB with one arena.  Those threads
#: spend far more time computing than allocating, so sharing one arena's lock
#: cost nothing measurable (model-only images/s within noise).
MALLOC_ARENAS = 1
#: Blocks below this come from the heap, and freed ones are reused by the next
#: forward pass.  By default glibc moves this threshold as blocks are freed and
#: trims the heap whenever twice that much is free at its top, so each forward
#: pass gave its activations back to the kernel and faulted them in again
#: (measured: 2,000-5,000 page faults per image for ViT-B-32 and the built-in
#: model).  Fixed here, with :data:`MALLOC_TRIM_THRESHOLD`: no page faults, and
#: model-only images/s up by 5-15% (ViT-B-32) and 50-70% (built-in, whose
#: activations are big), with a lower peak (no heap fragmented between mapped and
#: unmapped blocks).  Older glibc refuses more than 32 MiB (mallopt returns 0):
#: then 32 MiB, which maps only the built-in model's biggest activations (a third
#: of the faults are left).
MALLOC_MMAP_THRESHOLD = 128 * 2**20
_MALLOC_MMAP_THRESHOLD_OLD_GLIBC = 32 * 2**20
#: Free memory at the heap's top that glibc keeps instead of trimming: above any
#: burst's working set.  The daemon gives everything back itself, after loading a
#: model and one second after a burst (``malloc_trim``, photodupd.batcher.TRIM_AFTER).
MALLOC_TRIM_THRESHOLD = 1024 * 2**20


#: The file log (``--log-file``) is rotated at this size, and LOG_BACKUPS old files are kept:
#: with a line per request, a busy daemon must not fill the disk.  Under systemd the log goes
#: to stderr, which journald keeps (and rotates).
LOG_MAX_BYTES = 10 * 2**20
LOG_BACKUPS = 3


def setup_logging(
    level: str,
    log_file: Path | None = None,
    *,
    max_bytes: int = LOG_MAX_BYTES,
    backups: int = LOG_BACKUPS,
) -> None:
    """Log to stderr (journald adds the time), or to ``log_file``, rotated, with the time."""
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("photodupd: %(levelname)s %(message)s"))
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        handler.setFormatter(
            logging.Formatter("%(asctime)s photodupd[%(process)d]: %(levelname)s %(message)s")
        )
    logging.basicConfig(level=level, handlers=[handler], force=True)


def limit_memory_growth() -> None:
    """Process-wide memory settings; must run before the daemon starts any thread.

    * Caps glibc's malloc arenas (see :data:`MALLOC_ARENAS`) and fixes its mmap and
      trim thresholds (see :data:`MALLOC_MMAP_THRESHOLD`).
    * Keeps Triton out: torchvision imports ``torch._dynamo``, which imports
      Triton when it is installed, mapping ~75 MB of ``libtriton.so`` that an
      eager-mode inference daemon never runs.  ``None`` in ``sys.modules`` makes
      that import fail as if Triton were absent, and torch carries on without it
      (``torch.utils._triton.has_triton()`` is False).
    """
    sys.modules.setdefault("triton", None)  # type: ignore[arg-type]
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # not glibc (musl): nothing to tune
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(_M_ARENA_MAX, MALLOC_ARENAS)
            if not libc.mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD):
                libc.mallopt(_M_MMAP_THRESHOLD, _MALLOC_MMAP_THRESHOLD_OLD_GLIBC)
            libc.mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="photodupd",
        description="photodup's per-user image-model daemon. Serves embeddings over a Unix socket.",
    )
    parser.add_argument("--version", action="version", version=f"photodupd {__version__}")
    parser.add_argument(
        "--config", type=Path, help=f"TOML config file (default {paths.config_file()})"
    )
    parser.add_argument(
        "--socket", type=Path, help=f"socket path (default {paths.default_socket_path()})"
    )
    parser.add_argument(
        "--model", help="auto (default), builtin, or clip:NAME[/TAG] e.g. clip:ViT-B-32"
    )
    parser.add_argument(
        "--weights", type=Path, help="open_clip weights file to load (pretrained=PATH)"
    )
    parser.add_argument(
        "--model-config", type=Path, help="open_clip model config JSON (custom models)"
    )
    parser.add_argument(
        "--clip-weights",
        choices=config.CLIP_WEIGHTS,
        help="store CLIP weights in float16 (default: half the memory, computed in float32) "
        "or float32",
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    parser.add_argument(
        "--model-streams",
        type=int,
        help="forward passes at once, torch threads split among them (default 0: one per thread)",
    )
    parser.add_argument("--decode-workers", type=int, help="decoder processes (default: all cores)")
    parser.add_argument("--batch-size", type=int, help="largest micro-batch (default 32)")
    parser.add_argument(
        "--idle-unload",
        type=float,
        help="unload the model after this many idle seconds (0 = never)",
    )
    parser.add_argument(
        "--idle-exit",
        type=float,
        help="exit after this many seconds without a client request (0 = never; default 900); "
        "socket activation or the next photodup starts it again",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="INFO (default) logs a line per request; WARNING only problems",
    )
    parser.add_argument(
        "--log-file",
        type=Path,
        help=f"log to this file, rotated at {LOG_MAX_BYTES // 2**20} MiB "
        f"({LOG_BACKUPS} old files kept), instead of stderr",
    )
    return parser


def make_config(args: argparse.Namespace) -> DaemonConfig:
    if args.idle_exit is not None and not args.idle_exit >= 0:
        raise ConfigError("--idle-exit must be 0 (never) or more seconds")
    base = config.load(args.config)
    return base.with_overrides(
        socket=args.socket,
        model=args.model,
        weights=args.weights,
        model_config=args.model_config,
        clip_weights=args.clip_weights,
        threads=args.threads,
        model_streams=args.model_streams,
        decode_workers=args.decode_workers,
        batch_size=args.batch_size,
        idle_unload=args.idle_unload,
        idle_exit=args.idle_exit,
    )


async def serve(cfg: DaemonConfig, listener: sockets.Listener) -> None:
    # The one place the daemon reaches for torch: importing the inference service.
    from photodupd.inference import InferenceService

    service = InferenceService(cfg)
    server = Server(cfg, service)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    idle = False  # the stop is an idle exit

    def request_stop(reason: str, *, idle_exit: bool = False) -> None:
        nonlocal idle
        if not stop.is_set():
            log.info("stopping (%s)", reason)
            idle = idle_exit
            stop.set()

    def on_ready() -> None:
        info = service.model_info()
        sdnotify.notify(f"READY=1\nSTATUS=serving {info.get('id')}")
        log.info("model ready: %s (%s)", info.get("id"), info.get("why"))

    service.on_ready = on_ready
    server.on_shutdown_request = lambda: request_stop("stop requested by a client")
    # Exit code 0: systemd (Restart=on-failure) and launchd (KeepAlive SuccessfulExit=false)
    # leave a clean exit alone and start photodupd again on the next connection.
    server.on_idle_exit = lambda: request_stop(
        f"no requests for {cfg.idle_exit:g} s", idle_exit=True
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop, signal.Signals(signum).name)
    try:
        await service.start()
        await server.start(listener.sock, bound=listener)
        log.info(
            "listening on %s (pid %d)",
            listener.path or "inherited socket",
            os.getpid(),
        )
        await stop.wait()
        sdnotify.notify("STOPPING=1")
        await server.shutdown(idle=idle)
        await service.close(cfg.drain_timeout)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def main(argv: list[str] | None = None) -> int:
    limit_memory_growth()
    args = build_parser().parse_args(argv)
    try:
        setup_logging(args.log_level, args.log_file)
    except OSError as exc:
        print(f"photodupd: cannot open the log file {args.log_file}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        cfg = make_config(args)
    except ConfigError as exc:
        print(f"photodupd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        listener = sockets.acquire_listener(cfg.socket_path)
    except sockets.AlreadyRunning as exc:
        print(f"photodupd: already running: {exc}", file=sys.stderr)
        return EXIT_ALREADY_RUNNING
    except (paths.UnsafeRuntimeDir, sockets.BadInheritedSocket) as exc:
        print(f"photodupd: refusing to start: {exc}", file=sys.stderr)
        return EXIT_UNSAFE
    try:
        asyncio.run(serve(cfg, listener))
    finally:
        listener.close()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
