"""Ctrl-C during ``photodup scan``: exit 130, no traceback, the partial report written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.photos import make_photo, write_jpeg

#: ``photodup`` with every decoder replaced by one that blocks, so the scan is provably
#: mid-decode when the signal arrives (a real decode could finish first and race the test).
PROGRAM = """
import sys
from photodup_tui.engine import local_features
real_init = local_features.LocalFeatureSource.__init__
def init(self, *args, **kwargs):
    kwargs["decode_fn"] = "tests.engine.blocking_decoder:blocking"
    real_init(self, *args, **kwargs)
local_features.LocalFeatureSource.__init__ = init
from photodup_tui.cli import main
sys.exit(main())
"""


def test_ctrl_c_mid_scan_exits_130_and_writes_the_partial_report(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    for seed in range(3):
        write_jpeg(lib / f"p{seed}.jpg", make_photo(seed))
    (lib / "copy.jpg").write_bytes((lib / "p0.jpg").read_bytes())
    started = tmp_path / "decode-started"
    report = tmp_path / "report.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "PHOTODUP_TEST_DECODE_STARTED": str(started),
    }
    child = subprocess.Popen(
        [sys.executable, "-c", PROGRAM, "scan", str(lib), "--no-model", "--json", str(report)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the scan never started decoding"
            time.sleep(0.05)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted" in err
    assert "partial" in out
    document = json.loads(report.read_text())
    # The exact tier ran before decoding began: its group is in the partial report.
    kinds = [g["kind"] for g in document["groups"]]
    assert kinds == ["exact"], document
