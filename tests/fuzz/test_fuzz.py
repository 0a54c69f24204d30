"""The fuzz harnesses in CI: a few seconds of atheris each, and the same checks under hypothesis.

``fuzz_frames.py`` and ``fuzz_decode.py`` run as atheris scripts for
``PHOTODUP_FUZZ_SECONDS`` (default 5) when atheris is installed; with
``--run-slow`` they run for ``PHOTODUP_FUZZ_LONG_SECONDS`` (default 300) and the
hypothesis versions run tens of thousands of examples.  The hypothesis tests
need no atheris, so the properties are checked on every machine.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import fuzz_decode, fuzz_frames

HERE = Path(__file__).resolve().parent
HAS_ATHERIS = importlib.util.find_spec("atheris") is not None
SHORT = float(os.environ.get("PHOTODUP_FUZZ_SECONDS", "5"))
LONG = float(os.environ.get("PHOTODUP_FUZZ_LONG_SECONDS", "300"))


def run_atheris(harness: str, seconds: float, workdir: Path) -> int:
    """Run one harness as a script; returns how many inputs it tried. Fails on any finding."""
    corpus = workdir / "corpus"
    corpus.mkdir()
    run = subprocess.run(
        [
            sys.executable,
            str(HERE / harness),
            f"-max_total_time={int(seconds)}",
            "-timeout=30",  # one input taking longer is a hang
            "-rss_limit_mb=3072",
            f"-artifact_prefix={workdir}/",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 180,
        check=False,
    )
    findings = sorted(p.name for p in workdir.iterdir() if p.name.startswith(("crash-", "leak-")))
    assert run.returncode == 0 and not findings, (findings, run.stderr[-4000:])
    done = re.search(r"Done (\d+) runs", run.stderr)
    assert done is not None, run.stderr[-2000:]
    assert any(corpus.iterdir()), "the harness did not seed its corpus"
    return int(done.group(1))


@pytest.mark.skipif(not HAS_ATHERIS, reason="atheris is not installed")
@pytest.mark.timeout(SHORT + 240)
@pytest.mark.parametrize("harness", ["fuzz_frames.py", "fuzz_decode.py"])
def test_atheris_short_run(harness: str, tmp_path: Path) -> None:
    assert run_atheris(harness, SHORT, tmp_path) > 0


@pytest.mark.slow
@pytest.mark.skipif(not HAS_ATHERIS, reason="atheris is not installed")
@pytest.mark.timeout(LONG + 240)
@pytest.mark.parametrize("harness", ["fuzz_frames.py", "fuzz_decode.py"])
def test_atheris_long_run(harness: str, tmp_path: Path) -> None:
    assert run_atheris(harness, LONG, tmp_path) > 0


# ----------------------------------------------------------------------- hypothesis drivers


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, max(0, len(data) - 1)))
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "cut"]))
        if kind == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[position] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0xC1, 0xDD, 0xDF]))
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[position : position + draw(st.integers(1, 16))]
        elif position > 0:
            del data[position:]
    return bytes(data)


FRAME_SEEDS = fuzz_frames.seeds()
DECODE_SEEDS = fuzz_decode.seeds()
frames = st.one_of(mutated(FRAME_SEEDS), st.binary(max_size=256))


@pytest.fixture(scope="module")
def live_server() -> Iterator[fuzz_frames.LiveServer]:
    server = fuzz_frames.LiveServer().start()
    yield server
    server.close()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=frames)
def test_frames_property(live_server: fuzz_frames.LiveServer, data: bytes) -> None:
    fuzz_frames.check_frame_bytes(data)
    fuzz_frames.check_exchange(live_server, data)


@pytest.mark.slow
@settings(
    max_examples=30_000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=frames)
def test_frames_property_long_run(live_server: fuzz_frames.LiveServer, data: bytes) -> None:
    fuzz_frames.check_frame_bytes(data)
    fuzz_frames.check_exchange(live_server, data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated(DECODE_SEEDS))
def test_decode_property(data: bytes) -> None:
    fuzz_decode.check_decode(data)


@pytest.mark.slow
@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated(DECODE_SEEDS))
def test_decode_property_long_run(data: bytes) -> None:
    fuzz_decode.check_decode(data)


def test_a_cut_reply_frame_is_caught() -> None:
    """check_exchange relies on split_frames to notice a reply cut short."""
    with pytest.raises(ValueError, match="cut"):
        fuzz_frames.split_frames(b"\x00\x00\x00\x10abc")
