"""The model thread's streams and batching policy, with a model that reports what it saw.

The batcher is what these tests exercise, with its real threads and queue; the
model is a small stand-in (the real ones are tested in test_models.py and, in
the whole pipeline, in test_inference.py) so the tests can see how many
forward passes overlap, how big each batch is and how many torch threads ran it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bench.model_forward import benchmark_forward
from photodupd import batcher, config, daemon_cli
from photodupd.batcher import Embedded, Job, ModelWorker, Outcome, stream_layout
from photodupd.config import DaemonConfig
from photodupd.imaging import Decoded, PreprocessSpec
from photodupd.models import backend
from photodupd.protocol import ModelState

pytestmark = pytest.mark.timeout(60)

SIDE = 8


class RecordingModel:
    """Embeds anything as a constant vector, and records each forward pass."""

    id = "test:recording"
    dim = 4
    device = "cpu"
    spec = PreprocessSpec(size=SIDE, resize=SIDE)

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.threads: list[int] = []
        self.together: threading.Barrier | None = None  # passes that must overlap
        self.lock = threading.Lock()

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        with self.lock:
            self.sizes.append(len(pixels))
            self.threads.append(torch.get_num_threads())
        if self.together is not None:
            self.together.wait(timeout=5)  # BrokenBarrierError unless passes overlap
        return np.full((len(pixels), self.dim), 0.5, np.float32)


class Harness:
    """A ModelWorker with the recording model, counting answered items."""

    def __init__(self, model: RecordingModel, **overrides: Any) -> None:
        self.model = model
        self.admitted = 0
        self.results: list[Outcome] = []
        self.answered = threading.Condition()
        cfg = DaemonConfig(model="builtin", threads=2, decode_workers=2, idle_unload=0)
        self.worker = ModelWorker(
            cfg.with_overrides(**overrides),
            reply=self.reply,
            on_state_change=lambda: None,
            pending_items=lambda: self.admitted - len(self.results),
        )

    def reply(self, job: Job, outcome: Outcome) -> None:
        with self.answered:
            self.results.append(outcome)
            self.answered.notify_all()

    def submit(self, count: int) -> None:
        pixels = np.zeros((SIDE, SIDE, 3), np.uint8)
        decoded = Decoded(pixels=pixels, phash=0, width=SIDE, height=SIDE, format="PNG")
        for index in range(count):
            self.worker.submit(Job(self, index, decoded))

    def admit(self, count: int) -> None:
        """Items the service let in (some may still be decoding)."""
        self.admitted += count

    def wait_answered(self, count: int) -> list[Outcome]:
        with self.answered:
            assert self.answered.wait_for(lambda: len(self.results) >= count, timeout=30)
            return list(self.results)


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingModel]:
    model = RecordingModel()
    monkeypatch.setattr(backend, "load_model", lambda choice, **_: model)
    yield model


@pytest.fixture
def harnesses() -> Iterator[list[Harness]]:
    started: list[Harness] = []
    yield started
    for harness in started:
        harness.worker.stop()
        harness.worker.join(10)


def start(harnesses: list[Harness], model: RecordingModel, **overrides: Any) -> Harness:
    harness = Harness(model, **overrides)
    harness.worker.start()
    harnesses.append(harness)
    deadline = time.monotonic() + 30
    while harness.worker.readiness()[0] is not ModelState.READY:
        assert time.monotonic() < deadline, "the model never became ready"
        time.sleep(0.01)
    return harness


def test_threads_are_split_into_streams() -> None:
    assert stream_layout(2, 0) == (2, 1)  # automatic: one stream per thread
    assert stream_layout(1, 0) == (1, 1)
    assert stream_layout(2, 1) == (1, 2)  # the old layout: one pass on every thread
    assert stream_layout(4, 2) == (2, 2)
    assert stream_layout(2, 3) == (3, 1)  # more streams than threads: one thread each


@pytest.mark.parametrize(("streams", "overlap"), [(2, True), (1, False)])
def test_two_streams_run_two_forward_passes_at_once(
    recording: RecordingModel, harnesses: list[Harness], streams: int, overlap: bool
) -> None:
    recording.together = threading.Barrier(2)
    harness = start(harnesses, recording, model_streams=streams, batch_size=1)
    harness.admit(2)
    harness.submit(2)
    results = harness.wait_answered(2)
    # With one stream the second pass cannot start while the first waits: the barrier breaks.
    assert all(isinstance(r, Embedded) for r in results) is overlap
    assert harness.worker.streams == streams


def test_a_lone_batch_gets_every_thread_and_parallel_batches_one_each(
    recording: RecordingModel, harnesses: list[Harness]
) -> None:
    harness = start(harnesses, recording, batch_size=4)
    harness.admit(1)
    harness.submit(1)
    harness.wait_answered(1)
    assert recording.threads == [2]
    recording.threads.clear()
    recording.together = threading.Barrier(2)
    harness.admit(8)
    harness.submit(8)
    assert all(isinstance(r, Embedded) for r in harness.wait_answered(9))
    assert recording.threads[:2] == [1, 1]


def test_the_backlog_is_shared_between_streams(
    recording: RecordingModel, harnesses: list[Harness]
) -> None:
    harness = start(harnesses, recording, batch_size=32)
    harness.admit(20)
    harness.submit(20)
    harness.wait_answered(20)
    # Guided: the first stream takes half (not all 20), the rest is split as streams free up.
    assert recording.sizes[0] == 10
    assert max(recording.sizes[1:]) <= 5 and sum(recording.sizes) == 20


@pytest.mark.parametrize(("decoding", "sizes"), [(3, [4]), (1, [1, 1])])
def test_a_batch_waits_for_items_still_decoding_while_the_decoders_are_busy(
    recording: RecordingModel,
    harnesses: list[Harness],
    monkeypatch: pytest.MonkeyPatch,
    decoding: int,
    sizes: list[int],
) -> None:
    monkeypatch.setattr(batcher, "BUSY_DECODERS_WAIT", 10.0)  # no stall on a busy machine
    harness = start(harnesses, recording, model_streams=1, batch_size=32, batch_wait_ms=1.0)
    harness.admit(1 + decoding)
    harness.submit(1)
    time.sleep(0.2)  # the decoders' work: longer than batch_wait_ms
    harness.submit(decoding)
    harness.wait_answered(1 + decoding)
    # Three still decoding keep both decoders busy: the first item waits for them.  One
    # alone leaves a decoder idle: waiting would idle a core, so the first item goes.
    assert recording.sizes == sizes


def test_model_only_benchmark_can_run_the_daemon_layout() -> None:
    model = RecordingModel()
    result = benchmark_forward(model, images=10, batch_size=4, threads=2, streams=2)
    assert result["images"] == 10 and result["streams"] == 2 and result["images_per_s"] > 0
    assert model.threads[0] == 2  # the shared warm-up, then one thread per stream
    assert set(model.threads[1:]) == {1}
    measured = model.sizes[3:]  # after the three warm-ups
    assert sum(measured) == 10 and max(measured) <= 4


def test_new_settings_come_from_the_config_file_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[daemon]\nmodel_streams = 1\nclip_weights = "float32"\n')
    cfg = config.load(path)
    assert cfg.model_streams == 1 and cfg.clip_weights == "float32"
    assert DaemonConfig().clip_weights == "float16" and DaemonConfig().model_streams == 0
    args = daemon_cli.build_parser().parse_args(
        ["--config", str(path), "--model-streams", "2", "--clip-weights", "float16"]
    )
    flagged = daemon_cli.make_config(args)
    assert flagged.model_streams == 2 and flagged.clip_weights == "float16"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[daemon]\nclip_weights = "bfloat16"\n', "clip_weights must be one of"),
        ("[daemon]\nmodel_streams = -1\n", "model_streams must be 0"),
        ('[daemon]\nmodel_streams = "two"\n', "model_streams must be int"),
    ],
)
def test_bad_new_settings_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError, match=message):
        config.load(path)
