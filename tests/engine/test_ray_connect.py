"""Connecting to Ray: a Ray Client session server that dies at birth (ray-project/ray#63202)
is connected to again; any other failure is said at once."""

from __future__ import annotations

from typing import Any

import pytest

from photodup_tui.engine import ray_features


class FlakyRay:
    """``ray.init`` failing ``failures`` times with ``message``, then starting."""

    def __init__(self, failures: int, message: str) -> None:
        self.failures = failures
        self.message = message
        self.inits = 0
        self.shutdowns = 0

    def init(self, **kwargs: Any) -> None:
        self.inits += 1
        if self.inits <= self.failures:
            raise ConnectionAbortedError(f"Initialization failure from server:\n{self.message}")

    def shutdown(self) -> None:
        self.shutdowns += 1


@pytest.mark.parametrize(
    "message",
    [
        "RuntimeError: Starting Ray client server failed. See the logs.",
        # The fork died while the proxy read its command line (seen in CI, 2026-12-07).
        "psutil.ZombieProcess: PID still exists but it's a zombie (pid=29835)",
    ],
)
def test_a_session_server_that_died_at_birth_is_connected_to_again(message: str) -> None:
    ray = FlakyRay(2, message)
    said: list[str] = []
    owner, error = ray_features._start_ray(ray, {"address": "ray://h:1"}, said.append)
    assert error is None and owner is not None
    owner.stop()
    assert ray.inits == 3 and len(said) == 2


@pytest.mark.parametrize(
    ("failures", "message"),
    [
        (5, "RuntimeError: Starting Ray client server failed."),  # every attempt: give up
        (5, "psutil.ZombieProcess: PID still exists but it's a zombie (pid=1)"),
        (1, "Version mismatch: the client runs Ray 2.60.0, the server 2.61.0"),
        (1, "psutil.AccessDenied: (pid=1)"),  # not the flake: said at once
    ],
)
def test_other_failures_and_a_lasting_one_are_said(failures: int, message: str) -> None:
    ray = FlakyRay(failures, message)
    owner, error = ray_features._start_ray(ray, {"address": "ray://h:1"}, lambda _: None)
    assert owner is None and error is not None and message in str(error)
    flake = "client server" in message or "ZombieProcess" in message
    expected = ray_features.CLIENT_ATTEMPTS if flake else 1
    assert ray.inits == expected
