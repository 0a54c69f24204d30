"""torch stays in the daemon's model backend; Textual stays out of the engine."""

from __future__ import annotations

import json
import os
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
        # `--ray`: the driver names the workers' module; only a Ray actor loads the model.
        "photodup_tui.engine.ray_features",
        "photodupd.raywork",
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


@pytest.mark.parametrize(
    "module",
    [
        "photodup_tui.cli",
        "photodup_tui.app",
        "photodup_tui.scan_session",
        "photodup_tui.engine.placement",
        "photodup_tui.engine.ray_features",  # imports ray when a source opens, not before
        "photodupd.raywork",
    ],
)
def test_no_ray_on_import(module: str) -> None:
    assert not {m for m in loaded_after_import(module) if m.split(".")[0] == "ray"}


def test_a_scan_without_ray_never_imports_it(tmp_path: Path) -> None:
    """A whole scan (the settings read, the placement chosen, the scan run) without --ray."""
    (tmp_path / "a.jpg").write_bytes(b"not a photo")
    code = (
        "import sys, json; from photodup_tui import cli; "
        f"cli.main(['scan', {str(tmp_path)!r}, '--no-model', '-q']); "
        "print(json.dumps(sorted(sys.modules)))"
    )
    env = {**os.environ, "PHOTODUP_CACHE_DIR": str(tmp_path / "cache")}
    env["PHOTODUP_STATE_DIR"] = str(tmp_path / "state")
    env["PHOTODUP_CONFIG_DIR"] = str(tmp_path / "config")
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, check=True
    )
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    assert "photodup_tui.engine.scan" in loaded  # the scan did run
    assert not {m for m in loaded if m.split(".")[0] == "ray"}


def test_the_ray_driver_resolves_the_workers_without_torch() -> None:
    """What a --ray scan's driver touches of the worker side (the callables it hands Ray)."""
    code = (
        "import sys, json, importlib; "
        "from photodup_tui.engine import ray_features; "
        "worker = importlib.import_module(ray_features.WORKER_MODULE); "
        "assert callable(worker.decode_batch) and callable(worker.Embedder); "
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(out.stdout))
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}
