"""A decoder that signals it has started, then never returns (run in a decoder worker).

For tests that must interrupt a scan while it is provably in the middle of decoding:
the file named by ``PHOTODUP_TEST_DECODE_STARTED`` appears when the first decode begins.
"""

from __future__ import annotations

import os
import threading

from photodupd.imaging import Decoded, PreprocessSpec
from photodupd.protocol import FeatureItem


def blocking(item: FeatureItem, spec: PreprocessSpec | None) -> Decoded:
    with open(os.environ["PHOTODUP_TEST_DECODE_STARTED"], "a"):
        pass
    threading.Event().wait()
    raise AssertionError("unreachable")
