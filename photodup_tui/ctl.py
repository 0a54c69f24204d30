"""``photodup-ctl``: talk to a running photodupd.  Torch-free and instant.

Exit codes: 0 ok; 1 the daemon is not running (``doctor``: a check failed); 2 usage
error; 3 the daemon answered with an error.

``doctor`` runs the engine's checks (:mod:`photodup_tui.engine.doctor`), imported only
for that command, like the watch view and the metrics text for theirs: ``status`` and
``ping`` load nothing but the protocol and the client.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from photodupd import __version__, paths, protocol, remote
from photodupd import config as daemon_config
from photodupd.client import ConnectionLost, SyncClient
from photodupd.humanize import human_size
from photodupd.protocol import RemoteError
from photodupd.transport import Endpoint, LinkFailed

EXIT_OK = 0
EXIT_DOWN = 1
EXIT_USAGE = 2
EXIT_REMOTE = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="photodup-ctl", description="Control the photodupd daemon."
    )
    parser.add_argument(
        "--socket", type=Path, help=f"socket path (default {paths.default_socket_path()})"
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an answer")
    parser.add_argument(
        "--remote",
        metavar="HOST",
        help="the photodupd on HOST, over ssh ([daemon] ssh_command and remote_command apply)",
    )
    parser.add_argument("--version", action="version", version=f"photodup-ctl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="state, model, load and memory of the daemon")
    shown = status.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="machine-readable output")
    shown.add_argument(
        "--watch", action="store_true", help="a live view, redrawn every second (q quits)"
    )
    status.add_argument(
        "--interval", type=float, default=1.0, help="seconds between redraws with --watch"
    )
    sub.add_parser(
        "metrics", help="the daemon's counters in the Prometheus text format (textfile collector)"
    )
    doctor = sub.add_parser(
        "doctor",
        help="check every part: config, dirs, daemon, model, decoders, trash, cache, journal",
        description="Check the whole chain and print one row per check (OK, WARN, FAIL, SKIP), "
        "with the fix for every FAIL. Exit 0 when nothing fails, 1 otherwise. Starts photodupd "
        "when it is not running (unless --no-start).",
    )
    doctor.add_argument(
        "roots",
        nargs="*",
        metavar="FOLDER",
        help="folders whose trash to check (default: the folders scanned recently)",
    )
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.add_argument("--config", type=Path, help="config file (default: the user's)")
    doctor.add_argument(
        "--no-start", action="store_true", help="a daemon that is not running is a FAIL"
    )
    doctor.add_argument(
        "--record-probe",
        action="store_true",
        help="store the served model's embedding of the probe photo (a CLIP model you trust): "
        "later runs check it against this",
    )
    doctor.add_argument(
        "--settle",
        action="store_true",
        help="settle interrupted clean-up batches first, leaving their files in the trash",
    )
    sub.add_parser("ping", help="round trip to the daemon")
    sub.add_parser("stop", help="ask the daemon to finish in-flight work and exit")
    models = sub.add_parser("models", help="list, pull (download) or switch models")
    models_sub = models.add_subparsers(dest="models_command")
    models_list = models_sub.add_parser(
        "list", help="known models and whether their weights are here"
    )
    models_list.add_argument("--json", action="store_true")
    pull = models_sub.add_parser("pull", help="download a model's weights into the local cache")
    pull.add_argument("name", help="e.g. clip:ViT-B-32")
    use = models_sub.add_parser("use", help="switch the daemon to another model")
    use.add_argument("name", help="builtin, auto, or clip:NAME[/TAG]")
    use.add_argument("--weights", type=Path, help="open_clip weights file")
    bridge = sub.add_parser(
        "bridge",
        help="relay protocol v1 between stdin/stdout and this user's photodupd (what "
        "`photodup --remote` runs here over ssh), starting photodupd if needed",
    )
    bridge.add_argument(
        "--no-start", action="store_true", help="do not start photodupd when nobody answers"
    )
    return parser


def _rss(rss: int | None) -> str:
    return "?" if rss is None else human_size(rss)


def _human_duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _idle_exit(seconds: float | None) -> str:
    if seconds is None:
        return "never (idle_exit = 0)"
    return f"in {_human_duration(seconds)} unless a request comes (status and ping do not count)"


def format_status(status: protocol.Status) -> str:
    state = status.get("state", "?")
    lines = [
        f"photodupd {status.get('version', '?')} — running (pid {status.get('pid')}, up {_human_duration(float(status.get('uptime') or 0))})",
        f"  socket      {status.get('socket')}",
        f"  model       {status.get('model') or '(none yet)'}  [{state}]",
        f"  why         {status.get('why') or '-'}",
        f"  device      {status.get('device', '?')}, {status.get('threads', '?')} torch threads, {status.get('decode_workers', '?')} decoders",
        f"  queue       {status.get('queue_depth', 0)} queued, {status.get('in_flight_items', 0)} images in flight, {status.get('in_flight_requests', 0)} requests in flight",
        f"  clients     {status.get('connections', 0)} connected, {status.get('connections_total', 0)} since start",
        f"  served      {status.get('requests', 0)} requests, {status.get('images_served', 0)} images, {status.get('errors', 0)} image errors",
        f"  rate        {float(status.get('recent_images_per_s') or 0):.1f} images/s (recent)",
        f"  memory      RSS {_rss(status.get('rss'))}",
        f"  idle exit   {_idle_exit(status.get('idle_exit_in'))}",
    ]
    latency = status.get("features_latency")
    if latency and latency.get("count"):
        lines.append(
            f"  latency     features p50 {latency.get('p50_ms') or 0:.0f} ms, p99 "
            f"{latency.get('p99_ms') or 0:.0f} ms ({latency['count']} in the last "
            f"{float(latency.get('window_s') or 0) / 60:.0f} min)"
        )
    if status.get("device_why"):
        lines.append(f"  device why  {status.get('device_why')}")
    if status.get("last_error"):
        lines.append(f"  last error  {status['last_error']}")
    return "\n".join(lines)


def _print_models(result: protocol.Models) -> None:
    print("\n".join(format_models(result)))


def format_models(result: protocol.Models) -> list[str]:
    """One line per model, the columns as wide as the longest name (never run together)."""
    active = (result.get("active") or {}).get("id")
    models = result.get("models", [])
    names = [str(model.get("name", "?")) for model in models]
    width = max((len(name) for name in names), default=0)
    lines = []
    for model, name in zip(models, names, strict=True):
        mark = "*" if model.get("id") and model.get("id") == active else " "
        here = "weights here" if model.get("available") else "not downloaded"
        lines.append(f"{mark} {name:{width}}  {here:14}  {model.get('description', '')}".rstrip())
    return lines


def _remote_endpoint(host: str) -> Endpoint:
    """The photodupd on ``host``, over ssh; a control command never starts it there."""
    cfg = daemon_config.load()
    return remote.ssh_endpoint(host, cfg.ssh_command, cfg.remote_command, ("--no-start",))


def run(args: argparse.Namespace) -> int:
    if args.command == "doctor":
        return _doctor(args)
    if args.command == "metrics":
        return _metrics(args)
    if args.command == "status" and args.watch:
        return _watch(args)
    if args.command == "bridge":
        if args.remote:
            print("photodup-ctl: bridge runs where photodupd is, without --remote", file=sys.stderr)
            return EXIT_USAGE
        from photodup_tui import bridge  # here: only the bridge needs the launcher

        return bridge.run(args.socket, start=not args.no_start)
    if args.remote:
        if args.socket:
            print("photodup-ctl: --remote and --socket do not go together", file=sys.stderr)
            return EXIT_USAGE
        try:
            client = SyncClient(endpoint=_remote_endpoint(args.remote), timeout=args.timeout)
        except (daemon_config.ConfigError, ValueError) as exc:
            print(f"photodup-ctl: {exc}", file=sys.stderr)
            return EXIT_USAGE
    else:
        client = SyncClient(args.socket, timeout=args.timeout)
    try:
        client.connect()
    except LinkFailed as exc:
        print(f"photodup-ctl: {exc}", file=sys.stderr)
        return EXIT_DOWN
    except (OSError, ConnectionLost) as exc:
        print(f"photodupd is not running (socket {client.path}: {exc})", file=sys.stderr)
        return EXIT_DOWN
    with client:
        if args.command == "status":
            status = client.call(protocol.STATUS)
            print(
                json.dumps(status, indent=2, sort_keys=True) if args.json else format_status(status)
            )
        elif args.command == "ping":
            started = time.perf_counter()
            client.call(protocol.PING)
            print(f"pong from photodupd in {(time.perf_counter() - started) * 1000:.2f} ms")
        elif args.command == "stop":
            client.call(protocol.SHUTDOWN)
            print("photodupd is stopping (finishing in-flight work first)")
        elif args.command == "models":
            return _models(client, args)
    return EXIT_OK


class StatusSource:
    """``status`` of the daemon at ``socket``, one connection kept across calls and opened
    again after the daemon restarts (the watch view and metrics read it)."""

    def __init__(self, socket: Path | None, timeout: float) -> None:
        self.socket = socket
        self.timeout = timeout
        self._client: SyncClient | None = None

    def __call__(self) -> protocol.Status:
        if self._client is None:
            client = SyncClient(self.socket, timeout=self.timeout)
            try:
                client.connect()
            except BaseException:
                client.close()
                raise
            self._client = client
        try:
            return self._client.call(protocol.STATUS)
        except (OSError, ConnectionLost, RemoteError):
            self.close()
            raise

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _watch(args: argparse.Namespace) -> int:
    from photodupd import watch

    source = StatusSource(args.socket, args.timeout)
    try:
        return watch.watch(source, interval=max(0.1, args.interval))
    finally:
        source.close()


def _metrics(args: argparse.Namespace) -> int:
    from photodupd import metrics

    source = StatusSource(args.socket, args.timeout)
    try:
        status: protocol.Status | None = source()
    except (OSError, ConnectionLost, RemoteError) as exc:
        print(f"photodupd is not answering: {exc}", file=sys.stderr)
        status = None
    finally:
        source.close()
    sys.stdout.write(metrics.prometheus_text(status))
    return EXIT_OK if status is not None else EXIT_DOWN


def _doctor(args: argparse.Namespace) -> int:
    import shutil

    from photodup_tui.engine import doctor

    options = doctor.Options(
        socket=args.socket,
        config_file=args.config,
        roots=tuple(args.roots),
        start=not args.no_start,
        record_probe=args.record_probe,
        settle=args.settle,
    )
    if args.json:
        checks = doctor.run(options)
        print(json.dumps(doctor.to_json(checks), indent=2))
    else:
        width = shutil.get_terminal_size((100, 24)).columns
        print(doctor.header(), flush=True)
        checks = doctor.run(
            options, on_check=lambda check: print(doctor.format_row(check, width), flush=True)
        )
        print(doctor.summary(checks))
    return 1 if doctor.failed(checks) else EXIT_OK


def _models(client: SyncClient, args: argparse.Namespace) -> int:
    command = args.models_command or "list"
    if command == "list":
        result = client.call(protocol.MODELS)
        if getattr(args, "json", False):
            print(json.dumps(result, indent=2, sort_keys=True))
        else:
            _print_models(result)
    elif command == "pull":

        def progress(notice: dict[str, Any]) -> None:
            done, total = int(notice.get("done") or 0), int(notice.get("total") or 0)
            percent = f"{100 * done / total:5.1f}%" if total else "     "
            print(
                f"\rdownloading {args.name}: {percent} {human_size(done)} of {human_size(total)}",
                end="",
                file=sys.stderr,
                flush=True,
            )

        client.set_timeout(None)  # a download takes as long as it takes; progress shows it
        pulled = client.call(protocol.PULL, model=args.name, on_progress=progress)
        print(file=sys.stderr)
        print(f"pulled {args.name}: {pulled.get('path', '')}")
    elif command == "use":
        weights = str(args.weights.resolve()) if args.weights else None
        fields: dict[str, Any] = {"model": args.name}
        if weights:
            fields["weights"] = weights
        client.set_timeout(None)  # loading a large model takes a while
        serving = client.call(protocol.LOAD, **fields)
        print(f"now serving {serving.get('id')} ({serving.get('why', '')})")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except RemoteError as exc:
        print(f"photodupd: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_REMOTE
    except (ConnectionLost, OSError) as exc:
        print(f"lost the connection to photodupd: {exc}", file=sys.stderr)
        return EXIT_DOWN


if __name__ == "__main__":
    sys.exit(main())
