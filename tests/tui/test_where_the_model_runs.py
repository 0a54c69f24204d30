"""The TUI says where the model runs: before a scan (a model that is not the local daemon's:
nothing started or polled here), and once a scan chose it, with each step down said once."""

from __future__ import annotations

import threading

from photodup_tui.app import create_app
from photodup_tui.engine.daemon_control import DaemonStatus
from photodup_tui.engine.daemon_launch import Report
from photodup_tui.engine.placement import Placement
from photodup_tui.scan_session import OpenedSource
from photodup_tui.widgets.daemon_status import DaemonStatusLine
from tests.engine.sources import ThumbnailModel
from tests.tui.conftest import SIZE, Library, idle

SERVED = "photodupd on nas (remote, cuda)"
STEP = "the photodupd on nas (remote) is unavailable (cannot reach nas: timed out); trying X"


class RemoteModel(ThumbnailModel):
    def served_by(self) -> str:
        return SERVED


def remote_source(report: Report, cancel: threading.Event) -> OpenedSource:
    return OpenedSource(RemoteModel(), mode="remote", steps=[STEP])


async def test_the_status_line_says_where_the_model_ran(library: Library) -> None:
    app = create_app(
        [],
        source_factory=remote_source,
        placement=Placement(mode="remote", remote="nas"),
        preview="unicode",
        cursor_blink=False,
        check_interrupted=False,
    )
    async with app.run_test(size=SIZE) as pilot:
        await idle(pilot)
        # Before a scan: the model is on nas; no local photodupd was started or polled.
        assert app.daemon_status.state == "elsewhere"
        assert "photodupd on nas (remote)" in app.daemon_status.detail
        assert not [w for w in app.workers if w.name in ("daemon-start", "daemon-poll")]

        app.start_scan([str(library.root)])
        await idle(pilot)
        served = f"{ThumbnailModel.model_id} on {SERVED}"
        assert app.daemon_status == DaemonStatus(
            "served", model=ThumbnailModel.model_id, detail=served
        )
        line = app.screen.query_one(DaemonStatusLine)
        assert served in str(line.render())
        assert [n.message for n in app._notifications].count(STEP) == 1
