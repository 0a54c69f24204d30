"""A minimal service for tests of the server's own job (framing, limits, peers, lifecycle).

The server is what these tests exercise; the model side is tested for real in
test_inference.py and end to end in test_daemon_e2e.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from photodupd.protocol import FeatureItem


class StubService:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.release.set()
        self.started_features = 0
        self.finished_features = 0

    def model_info(self) -> dict[str, Any]:
        return {"id": "stub:none", "dim": 0, "state": "ready"}

    def status(self) -> dict[str, Any]:
        return {"state": "ready", "model": self.model_info()}

    def models(self) -> list[dict[str, Any]]:
        return []

    async def features(self, items: list[FeatureItem]) -> dict[str, Any]:
        # Holds the request until the test releases it: lets tests keep work in flight.
        self.started_features += 1
        await self.release.wait()
        self.finished_features += 1
        return {
            "model": self.model_info(),
            "items": [{"ok": True, "echo": item.describe()} for item in items],
        }

    async def load(self, name: str, weights: str | None = None) -> dict[str, Any]:
        return self.model_info()

    async def probe(self, item: FeatureItem) -> dict[str, Any]:
        return {"model": self.model_info(), "classes": None}

    async def pull(self, name: str, progress: Callable[[int, int], None]) -> dict[str, Any]:
        for done in range(0, 101, 50):
            progress(done, 100)
            await asyncio.sleep(0.3)
        return {"path": "/nowhere"}
