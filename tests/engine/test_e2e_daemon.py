"""The whole headless journey on real photos: ``photodup scan`` through a real photodupd with
the built-in model, then ``apply`` and ``undo``, re-reading the disk at each step."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import skimage.data
from PIL import Image, ImageOps

from photodup_tui import cli
from photodup_tui.engine.report import load_report
from photodup_tui.engine.types import Action, Kind
from photodupd import paths
from photodupd.client import SyncClient
from tests.daemon.daemon_proc import DaemonProcess


@pytest.fixture
def daemon(isolated_dirs: Path, tmp_path: Path) -> Iterator[DaemonProcess]:
    """photodupd with the built-in model on the socket the CLI looks for by default."""
    paths.ensure_private_dir(paths.runtime_dir())
    process = DaemonProcess(paths.default_socket_path(), tmp_path / "daemon", "--model", "builtin")
    try:
        process.wait_hello(timeout=120)
        process.wait_state("ready", timeout=300)
        yield process
    finally:
        assert process.terminate() == 0, process.output()


def images_served() -> int:
    with SyncClient(paths.default_socket_path()) as client:
        client.connect()
        return int(client.request("status")["images_served"])


def library(root: Path) -> dict[str, Path]:
    """Two real photographs, and the copies a library gathers of one of them."""
    astronaut = Image.fromarray(skimage.data.astronaut())
    files = {
        "original": root / "2019/astronaut.jpg",
        "copy": root / "backup/astronaut.jpg",
        "small": root / "phone/astronaut_small.jpg",
        "webp": root / "web/astronaut.webp",
        "mirror": root / "edits/astronaut_mirror.jpg",
        "coffee": root / "2020/coffee.jpg",
    }
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    astronaut.save(files["original"], quality=92)
    shutil.copyfile(files["original"], files["copy"])
    astronaut.reduce(2).save(files["small"], quality=85)
    astronaut.save(files["webp"], "WEBP", quality=80)
    ImageOps.mirror(astronaut).save(files["mirror"], quality=92)
    Image.fromarray(skimage.data.coffee()).save(files["coffee"], quality=92)
    return files


def test_scan_apply_undo_with_the_builtin_model(
    daemon: DaemonProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = library(tmp_path / "Pictures")
    before = {name: path.read_bytes() for name, path in files.items()}
    report_path = tmp_path / "report.json"
    argv = ["scan", str(tmp_path / "Pictures"), "--model", "builtin", "-q"]
    assert cli.main([*argv, "--json", str(report_path)]) == cli.EXIT_DUPLICATES
    report = load_report(report_path)
    assert report.model == "builtin:efficientnet_lite0/imagenet"
    (group,) = report.groups  # one family; the coffee photo is in none
    by_name = {
        Path(m.photo.path).parent.name + "/" + Path(m.photo.path).name: m for m in group.members
    }
    keeper = group.keeper_member
    assert keeper.photo.path == str(files["original"]) or keeper.photo.path == str(files["copy"])
    assert group.kind is Kind.NEAR
    verdicts = {name: (m.verdict, m.action) for name, m in by_name.items() if m is not keeper}
    assert verdicts["phone/astronaut_small.jpg"] == (Kind.NEAR, Action.DELETE)
    assert verdicts["web/astronaut.webp"] == (Kind.NEAR, Action.DELETE)
    assert verdicts["edits/astronaut_mirror.jpg"] == (Kind.SIMILAR, Action.KEEP)
    replica = (
        "backup/astronaut.jpg"
        if keeper.photo.path == str(files["original"])
        else ("2019/astronaut.jpg")
    )
    assert verdicts[replica] == (Kind.EXACT, Action.DELETE)
    assert "same shot" in by_name["edits/astronaut_mirror.jpg"].why

    # A rescan asks the daemon nothing and finds the same.
    served = images_served()
    assert served == 5  # six files, one of them a byte-identical copy: embedded once
    second = tmp_path / "again.json"
    assert cli.main([*argv, "--json", str(second)]) == cli.EXIT_DUPLICATES
    assert images_served() == served
    assert [m.photo.path for m in load_report(second).groups[0].members] == [
        m.photo.path for m in group.members
    ]

    capsys.readouterr()
    assert cli.main(["apply", str(report_path), "--yes"]) == 0
    gone = {name for name, path in files.items() if not path.exists()}
    assert gone == {"small", "webp", "copy" if replica.startswith("backup") else "original"}
    assert files["mirror"].read_bytes() == before["mirror"]  # similar: never touched
    assert files["coffee"].read_bytes() == before["coffee"]

    assert cli.main(["undo"]) == 0
    assert {name: path.read_bytes() for name, path in files.items()} == before
