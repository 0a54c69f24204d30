"""A remote source against a stand-in photodupd (tests/remote/stub_photodupd.py) for what a
real one does not do on cue: a model changed under the scan, a link that keeps dropping."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from photodup_tui.engine.features import FeatureResult
from photodup_tui.engine.remote_features import CANCEL_GRACE, LinkedFeatureSource
from photodupd.transport import CommandEndpoint, Ended, LinkFailed

STUB = Path(__file__).with_name("stub_photodupd.py")


def stub(behaviour: str) -> CommandEndpoint:
    def explain(ended: Ended) -> LinkFailed:
        return LinkFailed(f"the stub ended ({ended.returncode})")  # not permanent: retried

    return CommandEndpoint(
        [sys.executable, str(STUB), behaviour], label="photodupd on stub", explain=explain
    )


def test_a_reply_from_another_model_is_never_taken(tmp_path: Path) -> None:
    files = [str(tmp_path / f"{i}.jpg") for i in range(3)]
    results: dict[str, FeatureResult] = {}
    with LinkedFeatureSource(stub("other-model"), upload="path", mode="remote") as source:
        assert source.model_id == "test:stub"
        source.compute(files, results.__setitem__, threading.Event())
    assert sorted(results) == sorted(files)
    for result in results.values():
        assert result.error_code == "model_changed"
        assert result.embedding is None
        assert "now serves test:other, this scan uses test:stub" in (result.error_message or "")


def test_a_cancel_does_not_wait_for_a_link_being_retried(tmp_path: Path) -> None:
    """The link drops under every request and the client would retry for an hour; the
    user's cancel ends the computing (after a grace for what is in flight)."""
    files = [str(tmp_path / f"{i}.jpg") for i in range(3)]
    cancel = threading.Event()
    results: dict[str, FeatureResult] = {}
    endpoint = stub("die-on-features")
    with LinkedFeatureSource(endpoint, upload="path", mode="remote", retry_for=3600) as source:
        computing = threading.Thread(
            target=source.compute, args=(files, results.__setitem__, cancel), daemon=True
        )
        computing.start()
        while source._client.reconnects < 1:  # it is retrying: now the user cancels
            computing.join(0.05)
        cancel.set()
        computing.join(CANCEL_GRACE + 30)  # a bound on a hang, not a speed test
        assert not computing.is_alive()
    assert results == {}  # nothing answered, nothing made up
