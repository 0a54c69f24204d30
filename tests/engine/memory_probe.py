"""Run in a scoring process by tests: what the C library's allocator does with a big array
once it is freed."""

from __future__ import annotations

import os

import numpy as np

#: Bigger than glibc's largest adaptive mmap threshold (32 MB): by default such an array is
#: mapped afresh when made and given back to the kernel when freed.
PROBE_BYTES = 40 * 1024 * 1024


def _resident() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bytes_kept_after_freeing() -> int:
    """How much of an array of PROBE_BYTES, made, filled and freed, the process still holds
    (resident): ~0 when it went back to the kernel, ~all of it when kept for reuse."""
    before = _resident()
    array = np.ones(PROBE_BYTES // 8)
    del array
    return _resident() - before
