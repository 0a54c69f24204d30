"""Features from photodupd: pipelined requests that keep the daemon's batches full."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import numpy as np

from photodup_tui.engine.daemon_launch import (
    Report,
    daemon_decodes_raw,
    ensure_daemon,
    wait_for_model,
)
from photodup_tui.engine.features import FeatureResult, PathFeed
from photodupd import protocol
from photodupd.client import AsyncClient, DaemonUnavailable
from photodupd.protocol import RemoteError

#: Items per request and requests in flight: enough to keep a micro-batch of 32
#: full on both sides of a round trip, small enough that a cancel is quick.
CHUNK = 16
IN_FLIGHT = 8


class DaemonFeatureSource:
    """A FeatureSource backed by the daemon's model (started if needed)."""

    def __init__(
        self,
        socket_path: Path | None = None,
        *,
        report: Report | None = None,
        start: bool = True,
        daemon_args: list[str] | None = None,
    ) -> None:
        self.socket_path = socket_path
        self._report = report
        self._daemon_args = daemon_args
        self._start = start
        if start:
            ensure_daemon(socket_path, report=report, extra_args=daemon_args)
        self.model = wait_for_model(socket_path, report=report)
        self.model_id: str = str(self.model["id"])
        self.decodes_raw = daemon_decodes_raw(socket_path)
        self.dim = int(self.model.get("dim") or 0)

    def compute(
        self,
        paths: Sequence[str],
        on_result: Callable[[str, FeatureResult], None],
        cancel: threading.Event,
    ) -> None:
        self.compute_feed(PathFeed(paths, closed=True), on_result, cancel)

    def compute_feed(
        self,
        feed: PathFeed,
        on_result: Callable[[str, FeatureResult], None],
        cancel: threading.Event,
    ) -> None:
        """Requests of up to CHUNK paths, IN_FLIGHT at a time, as the feed gives paths; no
        connection at all when it gives none (a rescan must not wake an idle daemon)."""
        first = feed.first(CHUNK, cancel)
        if first is not None:
            asyncio.run(self._compute(first, feed, on_result, cancel))

    async def _compute(
        self,
        first: list[str],
        feed: PathFeed,
        on_result: Callable[[str, FeatureResult], None],
        cancel: threading.Event,
    ) -> None:
        waiting = [first]
        taking = asyncio.Lock()  # one worker at a time waits on the feed, off the loop

        async def next_chunk() -> list[str] | None:
            async with taking:
                if waiting:
                    return waiting.pop()
                while not cancel.is_set():
                    chunk = await asyncio.to_thread(feed.take, CHUNK, 0.1)
                    if chunk is None or chunk:
                        return chunk
                return None

        restart = self._restart if self._start else None
        async with AsyncClient(self.socket_path, start_daemon=restart) as client:

            async def worker() -> None:
                while not cancel.is_set():
                    chunk = await next_chunk()
                    if chunk is None:
                        return
                    for path, result in zip(chunk, await self._request(client, chunk), strict=True):
                        on_result(path, result)

            await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))

    async def _restart(self) -> None:
        """photodupd went away (its idle exit, with no service manager holding the socket):
        start it again as at the start; a reply from another model is refused per chunk."""
        await asyncio.to_thread(
            ensure_daemon, self.socket_path, report=self._report, extra_args=self._daemon_args
        )

    async def _request(self, client: AsyncClient, chunk: list[str]) -> list[FeatureResult]:
        items = [{"path": protocol.path_for_wire(p)} for p in chunk]
        try:
            reply = await client.features(items, thumbs=True)
        except (RemoteError, DaemonUnavailable) as exc:
            code = exc.code if isinstance(exc, RemoteError) else "daemon_unavailable"
            return [FeatureResult.failure(code, str(exc)) for _ in chunk]
        model = reply.get("model")
        model_id = model.get("id") if model else None
        if model_id != self.model_id:
            # Someone switched the daemon's model mid-scan: never mix embeddings.
            message = f"the daemon now serves {model_id}, this scan uses {self.model_id}"
            return [FeatureResult.failure("model_changed", message) for _ in chunk]
        return [to_result(item) for item in reply.get("items", [])]


def to_result(item: protocol.ItemResult) -> FeatureResult:
    # The "ok" tag says which shape the item has; an item without it is a failure too.
    if not item.get("ok"):
        error = cast(protocol.ItemFailed, item).get("error") or {}
        return FeatureResult.failure(
            str(error.get("code", "internal")), str(error.get("message", ""))
        )
    done = cast(protocol.ItemOk, item)
    raw = done.get("embedding")
    embedding = np.frombuffer(raw, dtype="<f4").copy() if isinstance(raw, bytes) else None
    thumb = done.get("thumb")  # checked when unpacked (pixelthumb.unpack)
    return FeatureResult(
        embedding=embedding,
        phash=done.get("phash"),
        width=done.get("width"),
        height=done.get("height"),
        format=done.get("format"),
        taken=done.get("taken"),
        camera=done.get("camera"),
        exif_fields=int(done.get("exif_fields") or 0),
        thumb=thumb if isinstance(thumb, bytes) else None,
    )
