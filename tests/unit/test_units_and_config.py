"""The service units parse and point at the right command; the config file is read strictly."""

from __future__ import annotations

import configparser
import os
import plistlib
import shutil
import subprocess
from pathlib import Path

import pytest

from photodupd import config, paths

ROOT = Path(__file__).resolve().parents[2]


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(ROOT / "systemd" / name)
    return parser


def test_socket_unit_listens_where_clients_look() -> None:
    sock = unit("photodupd.socket")
    assert sock["Socket"]["ListenStream"] == "%t/photodup/" + paths.SOCKET_NAME
    assert sock["Socket"]["SocketMode"] == "0600"
    assert sock["Socket"]["DirectoryMode"] == "0700"
    # %t is $XDG_RUNTIME_DIR, which is what the default socket path uses.
    os.environ.pop("PHOTODUP_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = "/run/user/4242"
    assert str(paths.default_socket_path()) == "/run/user/4242/photodup/" + paths.SOCKET_NAME


def test_service_unit_runs_photodupd_with_notify_and_restart() -> None:
    service = unit("photodupd.service")
    assert service["Service"]["ExecStart"].split("/")[-1] == "photodupd"
    assert service["Service"]["Type"] == "notify"
    assert service["Service"]["Restart"] == "on-failure"
    assert service["Unit"]["Requires"] == "photodupd.socket"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    photodupd = shutil.which("photodupd")
    if photodupd is None:
        pytest.skip("photodupd is not installed on PATH")
    (tmp_path / "photodupd.socket").write_text((ROOT / "systemd/photodupd.socket").read_text())
    text = (
        (ROOT / "systemd/photodupd.service")
        .read_text()
        .replace("%h/.local/bin/photodupd", photodupd)
    )
    (tmp_path / "photodupd.service").write_text(text)
    result = subprocess.run(
        [
            "systemd-analyze",
            "--user",
            "verify",
            str(tmp_path / "photodupd.socket"),
            str(tmp_path / "photodupd.service"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "photodupd" in line and "Documentation" not in line
    ]
    assert problems == [], result.stderr


def test_a_clean_idle_exit_is_left_to_socket_activation() -> None:
    """photodupd's idle exit is status 0: neither unit may restart it on the spot (that
    would keep it resident); the socket starts it again on the next connection."""
    assert unit("photodupd.service")["Service"]["Restart"] in ("on-failure", "on-abnormal")
    with (ROOT / "launchd" / "io.github.photodup.photodupd.plist").open("rb") as fh:
        assert plistlib.load(fh)["KeepAlive"] == {"SuccessfulExit": False}


def test_launchd_plist_parses_and_names_the_daemon() -> None:
    plist_path = ROOT / "launchd" / "io.github.photodup.photodupd.plist"
    with plist_path.open("rb") as fh:
        plist = plistlib.load(fh)
    assert plist["Label"] == plist_path.stem
    assert plist["ProgramArguments"] == ["__PHOTODUPD__", "--log-file", "__LOGFILE__"]
    listener = plist["Sockets"]["Listeners"]
    assert listener["SockPathMode"] == 0o600
    assert listener["SockType"] == "stream"


def test_config_file_overrides_defaults_and_flags_override_it(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[daemon]\nmodel = "builtin"\nthreads = 1\nidle_unload = 5\nsocket = "~/x.sock"\n'
        "hello_timeout = 2\nidle_exit = 0\n"
    )
    cfg = config.load(path)
    assert cfg.idle_exit == 0.0 and config.DaemonConfig().idle_exit == 900.0
    assert cfg.model == "builtin" and cfg.threads == 1 and cfg.idle_unload == 5.0
    assert cfg.hello_timeout == 2.0
    assert cfg.socket == Path.home() / "x.sock"
    assert cfg.with_overrides(threads=2, model=None).threads == 2
    assert cfg.with_overrides(model=None).model == "builtin"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[daemon]\nthreads = "two"\n', "threads must be int"),
        ("[daemon]\nbogus = 1\n", "unknown keys"),
        ("[daemon\n", "cannot read"),
        ("[daemon]\nthreads = true\n", "threads must be int"),
        ("[daemon]\nhello_timeout = 0\n", "hello_timeout must be more than 0"),
        ("[daemon]\nidle_timeout = -1\n", "idle_timeout must be more than 0"),
        ("[daemon]\nframe_timeout = nan\n", "frame_timeout must be more than 0"),
        ("[daemon]\nidle_exit = -1\n", "idle_exit must be 0"),
        ("[daemon]\nidle_exit = nan\n", "idle_exit must be 0"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError, match=message):
        config.load(path)


def test_missing_default_config_means_defaults() -> None:
    assert config.load() == config.DaemonConfig()
