"""A model chosen in the settings applies at once: photodupd loads it (the status line says
"loading", then "ready"), or keeps its model and says why, and the setting goes back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from textual.widgets import Select

from photodup_tui import ui_settings
from photodup_tui.app import PhotodupApp, create_app
from photodup_tui.engine.daemon_control import DaemonStatus, poll_daemon
from photodup_tui.screens.review import ReviewScreen
from photodup_tui.screens.scan import ScanScreen
from photodup_tui.screens.settings import SettingsScreen
from photodup_tui.widgets.daemon_status import DaemonStatusLine
from tests.tui.conftest import SIZE, Library, idle
from tests.tui.test_responsive import GatedSource


def configured_model() -> str | None:
    return ui_settings.read_config().get("daemon", {}).get("model")


async def choose_model(pilot: Any, app: PhotodupApp, model: str) -> None:
    """Settings (f2), pick the model, save (ctrl+s), and wait for what that started."""
    await pilot.press("f2")
    await idle(pilot)
    assert isinstance(app.screen, SettingsScreen)
    app.screen.query_one("#model", Select).value = model
    await pilot.press("ctrl+s")
    await idle(pilot)


async def test_a_new_model_loads_now_or_the_old_one_stays(daemon_socket: Path) -> None:
    ui_settings.update_tables({"daemon": {"model": "builtin"}})
    app = create_app(socket_path=daemon_socket, start_daemon=False, check_interrupted=False)
    seen: list[DaemonStatus] = []
    async with app.run_test(size=SIZE) as pilot:
        app.watch(app, "daemon_status", lambda status: seen.append(status), init=False)
        await idle(pilot)

        # CLIP without its weights (an offline computer): refused, builtin keeps serving.
        await choose_model(pilot, app, "clip:ViT-B-32")
        assert DaemonStatus("loading", "clip:ViT-B-32", "switching models") in seen
        [failure] = [n for n in app._notifications if n.severity == "error"]
        assert failure.title == "Could not switch to clip:ViT-B-32"
        assert "not in the local cache" in failure.message
        assert "photodup-ctl models pull" in failure.message
        assert configured_model() == "builtin"  # the setting went back
        served = poll_daemon(daemon_socket)
        assert served.state == "ready" and served.model is not None
        assert served.model.startswith("builtin:")
        # The error was said once (above); the status line shows what photodupd serves.
        line = str(app.screen.query_one(DaemonStatusLine).content)
        assert "clip:ViT-B-32" not in line and served.model in line

        # A model it can load: loading, then ready, at once (no daemon restart).
        seen.clear()
        await choose_model(pilot, app, "auto")  # offline: auto resolves to the built-in
        states = [s.state for s in seen]
        assert "loading" in states and states[-1] == "ready", states
        assert app.daemon_status.model == served.model
        assert "auto" in app.daemon_status.why  # photodupd's own reason for its choice
        assert "Model switched" in [n.title for n in app._notifications]
        assert configured_model() == "auto"
        assert "not switched" not in str(app.screen.query_one(DaemonStatusLine).content)


async def test_without_a_daemon_the_model_is_saved_for_its_next_start(
    isolated_dirs: Path,
) -> None:
    app = create_app(
        socket_path=isolated_dirs / "nobody.sock",
        start_daemon=False,
        watch_daemon=False,
        check_interrupted=False,
    )
    async with app.run_test(size=SIZE) as pilot:
        await idle(pilot)
        await choose_model(pilot, app, "builtin")
        assert "Model saved" in [n.title for n in app._notifications]
        assert configured_model() == "builtin"


async def test_a_model_chosen_during_a_scan_is_loaded_when_the_scan_ends(
    library: Library, isolated_dirs: Path
) -> None:
    """One scan never mixes two models: the switch waits for the scan."""
    source = GatedSource()
    app = create_app(
        [str(library.root)],
        source_factory=source.factory,
        socket_path=isolated_dirs / "nobody.sock",
        start_daemon=False,
        watch_daemon=False,
        check_interrupted=False,
    )
    async with app.run_test(size=SIZE) as pilot:
        assert await asyncio.to_thread(source.started.wait, 60)
        await pilot.press("f2")
        assert isinstance(app.screen, SettingsScreen)
        app.screen.query_one("#model", Select).value = "builtin"
        await pilot.press("ctrl+s")
        while not any(n.title == "Model" for n in app._notifications):
            await pilot.pause(0.02)  # the save runs in a worker
        assert not [w for w in app.workers if w.name == "model-switch"]
        assert isinstance(app.screen, ScanScreen)

        source.gate.set()
        await idle(pilot)
        assert isinstance(app.screen, ReviewScreen)
        assert "Model saved" in [n.title for n in app._notifications]  # tried, once it ended
