"""``photodup-ctl status --watch``: a live view of the daemon, redrawn every second (torch-free).

Plain ANSI, no Textual: the view is one pure function (:func:`render`: a status and the
samples seen so far in, lines of text out, so a test compares it with a stored frame), and
a small loop (:func:`watch`) that asks for ``status`` once a second, redraws, and quits on
``q`` or Ctrl-C.  The loop takes the status from any callable, so a remote daemon is
watched the same way as the local one.

The images/s and RSS charts are per second, from this watcher's own samples (the images
served between two polls, exactly); the last hour comes from the daemon's per-minute
history, so it is there from the first frame.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, TextIO

from photodupd import protocol
from photodupd.humanize import human_size

#: Sparkline steps, lowest first (a blank for zero).
BARS: Final = " ▁▂▃▄▅▆▇█"
#: Per-second samples kept (the charts show the last ``width`` of them).
MAX_SAMPLES: Final = 600
QUIT_KEYS: Final = frozenset({"q", "Q", "\x03", "\x04"})


@dataclass
class Samples:
    """What the watcher saw, one entry per poll: images/s since the previous poll and RSS."""

    rates: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))
    rss: deque[int] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))
    _last: tuple[float, int, int] | None = None  # (time, pid, images served)

    def add(self, status: protocol.Status | None, now: float) -> None:
        if status is None:
            self._last = None
            return
        served, pid = int(status.get("images_served") or 0), int(status.get("pid") or 0)
        last = self._last
        if last is not None and last[1] == pid and now > last[0] and served >= last[2]:
            self.rates.append((served - last[2]) / (now - last[0]))
        self._last = (now, pid, served)
        rss = status.get("rss")
        if isinstance(rss, int):
            self.rss.append(rss)


def sparkline(values: Sequence[float], width: int, top: float | None = None) -> str:
    """The last ``width`` values as bars scaled to ``top`` (default: their maximum)."""
    shown = list(values)[-width:] if width > 0 else []
    peak = top if top is not None else max(shown, default=0.0)
    if peak <= 0:
        return BARS[0] * len(shown) if shown else ""
    steps = len(BARS) - 1
    return "".join(
        BARS[0] if v <= 0 else BARS[max(1, min(steps, round(v / peak * steps)))] for v in shown
    )


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def render(
    status: protocol.Status | None,
    samples: Samples,
    width: int = 80,
    problem: str | None = None,
) -> list[str]:
    """One frame of the watch view, as lines no wider than ``width``."""
    width = max(width, 40)
    if status is None:
        lines = [
            "photodupd is not answering" + (f": {problem}" if problem else ""),
            "retrying every second",
            "",
            "q or Ctrl-C: quit",
        ]
        return [line[:width] for line in lines]
    latency = status.get("features_latency")
    history = status.get("history") or []
    rates, rss = list(samples.rates), list(samples.rss)
    chart = width - 2
    lines = [
        f"photodupd {status.get('version', '?')}  {status.get('state', '?')}  "
        f"{status.get('model') or '(no model yet)'}",
        f"pid {status.get('pid')}, up {_duration(float(status.get('uptime') or 0))}, "
        f"{status.get('device') or '?'}, {status.get('decode_workers', '?')} decoders",
        "",
        f"queue     {status.get('queue_depth', 0)} queued, {status.get('in_flight_items', 0)} "
        f"images in flight, {status.get('in_flight_requests', 0)} requests in flight",
        f"clients   {status.get('connections', 0)} connected, "
        f"{status.get('connections_total', 0)} since start",
        f"served    {status.get('images_served', 0):,} images, {status.get('requests', 0):,} "
        f"requests, {status.get('errors', 0):,} image errors",
    ]
    if latency:
        lines.append(
            f"latency   features p50 {_ms(latency.get('p50_ms'))}, p90 "
            f"{_ms(latency.get('p90_ms'))}, p99 {_ms(latency.get('p99_ms'))} "
            f"({latency.get('count', 0)} in the last {latency.get('window_s', 0) / 60:.0f} min)"
        )
    now_rate = rates[-1] if rates else float(status.get("recent_images_per_s") or 0.0)
    lines += [
        "",
        f"images/s  now {now_rate:.1f}, peak {max(rates, default=0.0):.1f} "
        f"(last {min(len(rates), chart)} s)",
        "  " + sparkline(rates, chart),
        f"RSS       {human_size(rss[-1]) if rss else '?'}, peak "
        f"{human_size(max(rss)) if rss else '?'}",
        "  " + sparkline([float(v) for v in rss], chart),
    ]
    if history:
        per_minute = [float(m.get("images_per_s") or 0.0) for m in history]
        requests = sum(int(m.get("requests") or 0) for m in history)
        errors = sum(int(m.get("errors") or 0) for m in history)
        lines += [
            "",
            f"last {len(history)} min, per minute: images/s peak {max(per_minute):.1f}, "
            f"{requests:,} requests, {errors:,} errors",
            "  " + sparkline(per_minute, chart),
        ]
    lines += ["", "q or Ctrl-C: quit"]
    return [line[:width] for line in lines]


@contextlib.contextmanager
def _terminal(keys: TextIO, out: TextIO) -> Iterator[None]:
    """Keys without Enter (cbreak: Ctrl-C still interrupts), the alternate screen and no
    cursor while watching; everything restored after, however the watch ends."""

    def restore() -> None:
        pass

    if keys.isatty():
        import termios
        import tty

        fd = keys.fileno()
        saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)

        def restore() -> None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    screen = out.isatty()
    if screen:
        out.write("\x1b[?1049h\x1b[?25l")
    try:
        yield
    finally:
        if screen:
            out.write("\x1b[?25h\x1b[?1049l")
            out.flush()
        restore()


def _key(keys: TextIO, timeout: float) -> str | None:
    """A key pressed within ``timeout`` seconds; "" when input ended, None for none."""
    try:
        ready, _, _ = select.select([keys], [], [], max(timeout, 0.0))
    except (OSError, ValueError):  # no selectable input (closed, or not a file)
        time.sleep(max(timeout, 0.0))
        return None
    if not ready:
        return None
    return os.read(keys.fileno(), 32).decode(errors="replace")


def watch(
    fetch: Callable[[], protocol.Status],
    *,
    keys: TextIO | None = None,
    out: TextIO | None = None,
    interval: float = 1.0,
    width: Callable[[], int] | None = None,
) -> int:
    """Poll ``fetch`` every ``interval`` seconds and redraw until ``q`` or Ctrl-C; 0.

    A failing ``fetch`` (the daemon restarting) shows as a frame saying so, and the next
    poll tries again."""
    keys = keys if keys is not None else sys.stdin
    out = out if out is not None else sys.stdout
    columns = width or (lambda: os.get_terminal_size(out.fileno()).columns)
    samples = Samples()
    try:
        with _terminal(keys, out):
            while True:
                started = time.monotonic()
                status: protocol.Status | None = None
                problem = None
                try:
                    status = fetch()
                except Exception as exc:  # the daemon went away: say so, try again
                    problem = str(exc) or type(exc).__name__
                samples.add(status, started)
                try:
                    cols = columns() or 80  # a terminal that never said its size says 0
                except OSError:
                    cols = 80
                frame = render(status, samples, cols, problem)
                out.write("\x1b[H\x1b[2J" + "\n".join(frame) + "\n")
                out.flush()
                pressed = _key(keys, interval - (time.monotonic() - started))
                if pressed is not None and (pressed == "" or QUIT_KEYS & set(pressed)):
                    return 0
    except KeyboardInterrupt:
        return 0
