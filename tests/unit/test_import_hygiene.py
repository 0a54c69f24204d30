"""torch stays in the daemon's model backend; Textual stays out of the engine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "open_clip", "timm", "torchvision")


def loaded_after_import(module: str) -> set[str]:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout))


@pytest.mark.parametrize(
    "module",
    [
        "photodupd.protocol",
        "photodupd.client",
        "photodupd.imaging",
        "photodupd.imagebase",
        "photodup_tui.ctl",
        "photodupd.server",
        "photodupd.history",
        "photodupd.probe",
        "photodupd.watch",
        "photodupd.metrics",
        "photodup_tui.engine.doctor",
        "photodupd.sockets",
        "photodupd.decodepool",
        "photodupd.models.catalog",
        "photodup_tui.cli",
        "photodup_tui.engine.scan",
        "photodup_tui.engine.daemon_features",
        "photodup_tui.engine.safedelete",
        # Where the model runs: remote and inline are reached as other processes.
        "photodupd.transport",
        "photodupd.remote",
        "photodup_tui.bridge",
        "photodupd.pixelcodec",
        "photodupd.devices",
        "photodup_tui.engine.remote_features",
        "photodup_tui.scan_session",
    ],
)
def test_no_torch(module: str) -> None:
    loaded = loaded_after_import(module)
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}, f"{module} pulled in torch"


def test_ui_does_not_import_torch() -> None:
    loaded = loaded_after_import("photodup_tui.app")
    assert "textual" in loaded
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}


@pytest.mark.parametrize(
    "module", ["photodup_tui.engine.scan", "photodup_tui.engine.safedelete", "photodup_tui.cli"]
)
def test_engine_runs_without_textual(module: str) -> None:
    loaded = loaded_after_import(module)
    assert "textual" not in loaded


def test_torch_is_imported_in_exactly_one_module() -> None:
    importers = []
    for path in sorted((ROOT / "photodupd").rglob("*.py")) + sorted(
        (ROOT / "photodup_tui").rglob("*.py")
    ):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if (
                stripped.startswith(("import ", "from "))
                and stripped.split()[1].split(".")[0] in HEAVY
            ):
                importers.append(path.relative_to(ROOT).as_posix())
                break
    assert importers == ["photodupd/models/backend.py"]


def test_ctl_starts_fast_without_heavy_modules() -> None:
    loaded = loaded_after_import("photodup_tui.ctl")
    assert not {m for m in loaded if m.split(".")[0] in (*HEAVY, "numpy", "PIL", "textual")}
    # The doctor (and the engine under it), the watch view and the metrics text are
    # imported by their commands only: status and ping load none of them.
    assert {m for m in loaded if m.split(".")[0] == "photodup_tui"} == {
        "photodup_tui",
        "photodup_tui.ctl",
    }
    assert not {"photodupd.watch", "photodupd.metrics", "photodupd.probe"} & loaded
