"""The daemon's malloc settings: forward passes reuse freed memory, and a trim returns it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Allocates and frees a 64 MiB block (bigger than glibc's default mmap threshold, smaller
# than the daemon's), reporting anonymous memory after the free and after a trim.
PROBE = """
import sys
from photodupd import daemon_cli
if sys.argv[1] == "daemon":
    daemon_cli.limit_memory_growth()
import numpy as np
from photodupd.models import backend

def anon_mib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon"):
                return int(line.split()[1]) // 1024

before = anon_mib()
block = np.ones(16 * 2**20, np.float32)  # 64 MiB, every page touched
del block
kept = anon_mib() - before
backend.trim_memory()
print(kept, anon_mib() - before)
"""


def freed_then_trimmed(settings: str) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, settings],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    kept, after_trim = out.stdout.split()
    return int(kept), int(after_trim)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc, /proc")
def test_freed_activations_stay_for_the_next_pass_until_the_daemon_trims() -> None:
    kept, after_trim = freed_then_trimmed("daemon")
    assert kept >= 60  # the next forward pass reuses these pages: no page faults
    assert after_trim < 16  # the idle trim gives them back
    default_kept, _ = freed_then_trimmed("default")
    assert default_kept < 16  # glibc's default maps such blocks and unmaps them on free
