"""photodupd as the UI sees it (photodup_tui.daemon_supervisor), without Textual: a host that
records what the supervisor shows, tells and asks to run, and runs its jobs when told."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from photodup_tui import daemon_supervisor, ui_settings
from photodup_tui.daemon_supervisor import DaemonSupervisor, Notice
from photodup_tui.engine.cancellable import Job
from photodup_tui.engine.daemon_control import DaemonStatus, ModelSwitch
from photodup_tui.engine.daemon_launch import DaemonStartFailed
from photodupd.protocol import RemoteError

SERVING = DaemonStatus("ready", "builtin:efficientnet_lite0/imagenet", "the built-in model")
CLIP = "clip:ViT-B-32"
NO_WEIGHTS = (
    "CLIP weights for clip:ViT-B-32 are not in the local cache (~/.cache/huggingface/hub); "
    "photodup-ctl models pull clip:ViT-B-32"
)


class Host:
    """The app, as the supervisor sees it."""

    def __init__(self) -> None:
        self.shown = [DaemonStatus("checking")]  # every status the line was given
        self.notices: list[Notice] = []
        self.jobs: list[tuple[str, Job]] = []

    @property
    def daemon_status(self) -> DaemonStatus:
        return self.shown[-1]

    @daemon_status.setter
    def daemon_status(self, status: DaemonStatus) -> None:
        self.shown.append(status)

    def tell(self, notice: Notice) -> None:
        self.notices.append(notice)

    def in_background(self, job: Job, *, name: str, does: str, exclusive: bool = False) -> None:
        self.jobs.append((name, job))

    def run(self, name: str) -> None:
        """Run the oldest queued job of this name to its end, what it hands back at once (as
        the UI thread would, in order); a polling job stops after its first answer."""
        index = next(i for i, (queued, _job) in enumerate(self.jobs) if queued == name)
        _name, job = self.jobs.pop(index)
        cancel = threading.Event()

        def hand_back(call: object) -> None:
            call()  # type: ignore[operator]
            if name == "daemon-poll":
                cancel.set()

        job(cancel, hand_back)

    def queued(self) -> list[str]:
        return [name for name, _job in self.jobs]


def supervisor(host: Host, tmp_path: Path, **options: object) -> DaemonSupervisor:
    return DaemonSupervisor(host, tmp_path / "nobody.sock", use_model=True, **options)  # type: ignore[arg-type]


def configured_model() -> str | None:
    return ui_settings.read_config().get("daemon", {}).get("model")


def test_a_refused_switch_keeps_the_old_model_and_says_why_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(socket_path: Path | None, name: str) -> ModelSwitch:
        raise RemoteError("model_unavailable", NO_WEIGHTS)

    monkeypatch.setattr(daemon_supervisor, "switch_model", refuse)
    ui_settings.update_tables({"daemon": {"model": CLIP}})  # what the settings screen saved
    host = Host()
    daemon = supervisor(host, tmp_path)
    host.daemon_status = SERVING

    daemon.settings_changed(True, CLIP, previous="builtin", scan_running=False)
    assert host.daemon_status == DaemonStatus("loading", CLIP, "switching models")
    assert host.queued() == ["model-switch"]
    daemon.heard(SERVING)  # photodupd still says "ready" with its old model meanwhile
    assert host.daemon_status.state == "loading"

    host.run("model-switch")
    assert host.daemon_status == SERVING  # the model it had, no stale "loading"
    [notice] = host.notices
    assert notice.severity == "error" and notice.title == f"Could not switch to {CLIP}"
    assert NO_WEIGHTS in notice.message
    assert "the model setting is back to builtin" in notice.message
    assert configured_model() == "builtin"  # the setting went back
    assert host.queued() == ["daemon-poll"]  # photodupd's own word replaces ours


def test_a_refused_switch_says_so_when_the_setting_cannot_go_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(socket_path: Path | None, name: str) -> ModelSwitch:
        raise RemoteError("model_unavailable", NO_WEIGHTS)

    monkeypatch.setattr(daemon_supervisor, "switch_model", refuse)
    blocked = tmp_path / "config-is-a-file"
    blocked.write_text("")
    monkeypatch.setenv("PHOTODUP_CONFIG_DIR", str(blocked))
    host = Host()
    daemon = supervisor(host, tmp_path, watch=False)
    host.daemon_status = SERVING

    daemon.settings_changed(True, CLIP, previous=None, scan_running=False)
    host.run("model-switch")
    [notice] = host.notices
    assert "could not be put back to auto" in notice.message
    assert host.daemon_status == SERVING and host.queued() == []


def test_a_switch_that_loads_says_what_photodupd_serves_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def load(socket_path: Path | None, name: str) -> ModelSwitch:
        return ModelSwitch("clip:ViT-B-32/openai", "requested")

    monkeypatch.setattr(daemon_supervisor, "switch_model", load)
    host = Host()
    daemon = supervisor(host, tmp_path)
    daemon.settings_changed(True, CLIP, previous="builtin", scan_running=False)
    assert daemon.loading_seconds() is not None
    host.run("model-switch")
    assert host.daemon_status == DaemonStatus("ready", "clip:ViT-B-32/openai", "requested")
    assert [n.title for n in host.notices] == ["Model switched"]
    assert daemon.loading_seconds() is None


def test_a_model_chosen_during_a_scan_loads_when_the_scan_ends(tmp_path: Path) -> None:
    host = Host()
    daemon = supervisor(host, tmp_path, watch=False)
    daemon.settings_changed(True, CLIP, previous=None, scan_running=True)
    assert host.queued() == []  # one scan never mixes two models
    assert [n.title for n in host.notices] == ["Model"]
    daemon.scan_ended()
    assert host.queued() == ["model-switch"]
    host.run("model-switch")  # nobody answers on the socket: saved for its next start
    assert [n.title for n in host.notices] == ["Model", "Model saved"]


def test_a_daemon_that_will_not_start_is_said_once_and_stays_on_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports: list[str] = []

    def refuse(socket_path: Path | None, report: object = None, **kwargs: object) -> None:
        reports.append("starting photodupd")
        report("starting photodupd")  # type: ignore[operator]
        raise DaemonStartFailed(
            "photodupd exited with status 3.\nphotodupd: refusing to start: mode 0755"
        )

    monkeypatch.setattr(daemon_supervisor, "ensure_daemon", refuse)
    host = Host()
    daemon = supervisor(host, tmp_path)
    daemon.begin(start=True)
    assert host.queued() == ["daemon-poll", "daemon-start"]

    host.run("daemon-start")
    why = "photodupd exited with status 3. refusing to start: mode 0755"
    assert DaemonStatus("starting", detail="starting photodupd") in host.shown
    assert host.daemon_status == DaemonStatus("down", detail=why)
    assert [(n.title, n.message) for n in host.notices] == [("photodupd did not start", why)]

    host.run("daemon-poll")  # nobody answers: the line keeps saying why
    assert host.daemon_status == DaemonStatus("down", detail=why)
    daemon.heard(SERVING)  # it came up after all (the user started it)
    assert host.daemon_status == SERVING
    daemon.heard(DaemonStatus("down"))
    assert host.daemon_status == DaemonStatus("down")  # the old reason is gone
    assert len(host.notices) == 1


def test_turning_the_model_off_stops_polling_and_a_fixed_line_never_changes(
    tmp_path: Path,
) -> None:
    host = Host()
    daemon = supervisor(host, tmp_path)
    daemon.begin(start=False)
    daemon.settings_changed(False, None, None, scan_running=False)
    assert host.daemon_status == DaemonStatus("off")
    host.run("daemon-poll")  # the job sees the model off and asks nothing
    assert host.daemon_status == DaemonStatus("off")

    fixed = Host()
    still = supervisor(fixed, tmp_path, fixed=SERVING)
    still.begin(start=True)
    still.heard(DaemonStatus("down"))
    still.launcher_said("starting photodupd")
    still.scan_fell_back("photodupd is not available: no")
    still.settings_changed(True, CLIP, None, scan_running=False)
    assert fixed.shown == [DaemonStatus("checking"), SERVING] and fixed.queued() == []
