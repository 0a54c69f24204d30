"""Remote mode through a real OpenSSH server on 127.0.0.1, the real ``photodup-ctl bridge``
and a real second photodupd (its own runtime, state and config directories)."""

from __future__ import annotations

import contextlib
import subprocess
import threading
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from photodup_tui import cli, ctl
from photodup_tui.engine.features import FeatureResult
from photodup_tui.engine.remote_features import LinkedFeatureSource
from photodup_tui.engine.report import load_report
from photodup_tui.engine.types import Kind
from photodupd import paths, remote
from photodupd.client import DaemonUnavailable
from tests.engine.test_e2e_daemon import library
from tests.photos import make_photo
from tests.remote.conftest import client_config, remote_status, write_local_config
from tests.remote.sshd import RemoteSide, Sshd, free_port

BUILTIN = "builtin:efficientnet_lite0/imagenet"


def source(sshd: Sshd, side: RemoteSide, upload: str = "reduced") -> LinkedFeatureSource:
    endpoint = remote.ssh_endpoint(sshd.host, sshd.ssh_command(), side.command())
    return LinkedFeatureSource(endpoint, upload=upload, mode="remote")


def compute(src: LinkedFeatureSource, files: list[Path]) -> dict[str, FeatureResult]:
    results: dict[str, FeatureResult] = {}
    src.compute([str(f) for f in files], results.__setitem__, threading.Event())
    return results


def test_a_scan_over_ssh_finds_what_a_local_scan_finds(
    sshd: Sshd, remote_side: RemoteSide, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``photodup scan --remote HOST``: the remote daemon embeds, nothing runs here (no
    local socket), and the groups are those of the local end-to-end test."""
    write_local_config(client_config(sshd, remote_side, remote=""))
    files = library(tmp_path / "Pictures")
    report_path = tmp_path / "report.json"
    argv = ["scan", str(tmp_path / "Pictures"), "--remote", sshd.host, "--json", str(report_path)]
    served_before = _served(remote_side)

    assert cli.main(argv) == cli.EXIT_DUPLICATES

    out = capsys.readouterr().out
    assert f"model: {BUILTIN} on photodupd on {sshd.host} (remote, cpu)" in out
    assert "sent per photo (reduced upload)" in out
    report = load_report(report_path)
    assert report.model == BUILTIN
    (group,) = report.groups
    assert group.kind is Kind.NEAR
    verdicts = {Path(m.photo.path).name: m.verdict for m in group.members}
    assert verdicts["astronaut_small.jpg"] is Kind.NEAR
    assert verdicts["astronaut_mirror.jpg"] is Kind.SIMILAR
    assert str(files["coffee"]) not in {m.photo.path for m in group.members}
    # Five distinct contents were embedded over there; this computer has no daemon.
    assert _served(remote_side) - served_before == 5
    assert not paths.default_socket_path().exists()


def test_killing_ssh_mid_scan_reconnects_and_answers_every_photo_once(
    sshd: Sshd, remote_side: RemoteSide, tmp_path: Path
) -> None:
    files = []
    for seed in range(24):
        path = tmp_path / f"p{seed:02d}.jpg"
        make_photo(seed, (320, 240)).save(path, quality=90)
        files.append(path)
    reference = compute(src := source(sshd, remote_side), files)
    src.close()

    src = source(sshd, remote_side)
    calls: list[str] = []
    killed: list[int] = []

    def on_result(path: str, result: FeatureResult) -> None:
        calls.append(path)
        if not killed:  # the first answer is in; the rest of the scan is in flight
            for child in psutil.Process().children(recursive=True):
                with contextlib.suppress(psutil.Error):  # one that ended meanwhile
                    if child.name() == "ssh":
                        child.kill()
                        killed.append(child.pid)
        results[path] = result

    results: dict[str, FeatureResult] = {}
    try:
        src.compute([str(f) for f in files], on_result, threading.Event())
        reconnects = src._client.reconnects
    finally:
        src.close()

    assert killed, "no ssh process to kill"
    assert reconnects >= 1
    assert sorted(calls) == sorted(str(f) for f in files)  # each photo answered once
    for path, result in results.items():
        assert result.ok, (path, result.error_code, result.error_message)
        assert result.phash == reference[path].phash
        assert float(np.dot(result.embedding, reference[path].embedding)) >= 0.9999


def test_original_upload_sends_the_files_and_gets_the_same_answers(
    sshd: Sshd, remote_side: RemoteSide, tmp_path: Path
) -> None:
    big = [tmp_path / f"big{seed}.jpg" for seed in range(3)]
    for seed, path in enumerate(big):
        make_photo(seed, (1600, 1200)).save(path, quality=95)
    small = tmp_path / "small.jpg"
    make_photo(9, (64, 48)).save(small, quality=80)  # smaller than its model input
    files = [*big, small]

    reduced = source(sshd, remote_side, "reduced")
    by_reduced = compute(reduced, files)
    reduced_bytes = reduced.bytes_sent / reduced.photos_sent
    reduced.close()
    original = source(sshd, remote_side, "original")
    by_original = compute(original, files)
    original_bytes = original.bytes_sent / original.photos_sent
    original.close()

    total = sum(f.stat().st_size for f in files)
    assert original_bytes >= total / len(files)  # every file went whole
    assert reduced_bytes < original_bytes / 2
    for path in map(str, files):
        a, b = by_reduced[path], by_original[path]
        assert a.ok and b.ok
        assert (a.phash, a.width, a.height, a.format) == (b.phash, b.width, b.height, b.format)
        assert float(np.dot(a.embedding, b.embedding)) >= 0.9999
    assert "sent per photo (original upload)" in original.served_by()


def test_a_remote_of_another_protocol_version_is_one_clear_line(
    sshd: Sshd, remote_side: RemoteSide, capsys: pytest.CaptureFixture[str]
) -> None:
    future = Path(__file__).with_name("future_photodupd.py")
    write_local_config(
        client_config(sshd, remote_side, remote_command=remote_side.command(str(future)))
    )
    assert ctl.main(["--remote", sshd.host, "status"]) == ctl.EXIT_DOWN
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"photodupd on {sshd.host} speaks another protocol version" in err
    assert "protocol 2" in err


@pytest.mark.parametrize(
    ("problem", "expected"),
    [
        ("ssh missing", "command not found: install the OpenSSH client"),
        ("host unreachable", "cannot reach 127.0.0.1: ssh: connect to host 127.0.0.1 port"),
        ("auth refused", "127.0.0.1 refused the login"),
        ("not installed", "photodup is not installed on 127.0.0.1"),
    ],
)
def test_each_failure_is_one_line_that_says_what_to_do(
    sshd: Sshd,
    remote_side: RemoteSide,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    problem: str,
    expected: str,
) -> None:
    changes: dict[str, str] = {}
    if problem == "ssh missing":
        changes["ssh_command"] = str(tmp_path / "no-such-ssh")
    elif problem == "host unreachable":
        changes["ssh_command"] = sshd.ssh_command(port=free_port())
    elif problem == "auth refused":
        stranger = tmp_path / "stranger_key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True
        )
        changes["ssh_command"] = sshd.ssh_command(key=stranger)
    else:
        changes["remote_command"] = "photodup-ctl-is-not-here bridge"
    write_local_config(client_config(sshd, remote_side, **changes))

    assert ctl.main(["--remote", sshd.host, "ping"]) == ctl.EXIT_DOWN

    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert expected in err, err
    if problem == "not installed":
        assert "pip install photodup==" in err


def test_a_scan_whose_remote_refuses_falls_back_and_says_why(
    sshd: Sshd, remote_side: RemoteSide, tmp_path: Path
) -> None:
    """The source itself: a permanent failure (login refused) is DaemonUnavailable at once,
    with the same line ``photodup-ctl`` gives."""
    endpoint = remote.ssh_endpoint(sshd.host, sshd.ssh_command(), "photodup-ctl-is-not-here bridge")
    with pytest.raises(DaemonUnavailable, match="photodup is not installed") as failure:
        LinkedFeatureSource(endpoint, upload="reduced", mode="remote")
    assert failure.value.permanent


def test_control_commands_over_ssh_never_start_the_remote_daemon(
    sshd: Sshd, remote_side: RemoteSide, capsys: pytest.CaptureFixture[str]
) -> None:
    write_local_config(client_config(sshd, remote_side))
    with source(sshd, remote_side):  # the scan's bridge starts it if need be
        pass
    assert ctl.main(["--remote", sshd.host, "status"]) == ctl.EXIT_OK
    out = capsys.readouterr().out
    assert f"socket      {remote_side.socket}" in out
    assert "device why  auto: no CUDA or MPS device: the CPU" in out


def _served(side: RemoteSide) -> int:
    try:
        return int(remote_status(side)["images_served"])
    except OSError:
        return 0


def test_reduced_pixels_are_the_daemons_own_decode(tmp_path: Path) -> None:
    """No ssh needed: what a reduced upload sends is exactly the pixels the daemon's decoder
    makes of the file (so the remote model sees what a local daemon's would)."""
    from photodupd import imaging, pixelcodec
    from photodupd.protocol import FeatureItem

    path = tmp_path / "p.jpg"
    Image.fromarray(np.asarray(make_photo(3, (1200, 900)))).save(path, quality=92)
    spec = imaging.PreprocessSpec(224, 256)
    packed = pixelcodec.decode_for_upload(FeatureItem(path=str(path)), spec)
    upload = pixelcodec.for_upload(packed, spec)
    direct = imaging.decode(str(path), spec=spec)
    daemon_side = pixelcodec.decoded_from_item(
        FeatureItem(pixels=upload.packed, side=upload.side), spec
    )
    assert np.array_equal(daemon_side.pixels, direct.pixels)
    assert upload.decoded.phash == direct.phash
    assert (upload.decoded.width, upload.decoded.height) == (1200, 900)
