"""Saving UI settings changes only the keys it names; the file is re-read from disk."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from photodup_tui import ui_settings
from photodup_tui.engine import settings as scan_settings
from photodup_tui.screens.settings import SettingsForm, save_form
from photodupd import paths

HAND_WRITTEN = """\
# my photodup config
[daemon]
model = "builtin"
threads = 2

[scan]
exclude = ["*/cache/*"]

[scan.thresholds."clip:ViT-B-32/laion2b_s34b_b79k"]
near_cosine = 0.95
"""


def read() -> dict[str, object]:
    with paths.config_file().open("rb") as fh:
        return tomllib.load(fh)


def write(text: str) -> Path:
    path = paths.config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_recent_roots_are_saved_without_touching_other_tables(tmp_path: Path) -> None:
    path = write(HAND_WRITTEN)
    settings = ui_settings.load().with_recent([str(tmp_path / "a"), str(tmp_path / "b")])
    ui_settings.save(settings.with_recent([str(tmp_path / "b")]))
    document = read()
    assert document["ui"] == {
        "recent_roots": [str(tmp_path / "b"), str(tmp_path / "a")],
        "use_model": True,
    }
    assert document["daemon"] == {"model": "builtin", "threads": 2}
    assert document["scan"] == tomllib.loads(HAND_WRITTEN)["scan"]
    # tomli-w drops comments, so the hand-written original is kept beside it.
    assert path.with_name("config.toml.bak").read_text() == HAND_WRITTEN
    assert ui_settings.load().recent_roots == (str(tmp_path / "b"), str(tmp_path / "a"))


def test_recent_roots_are_capped() -> None:
    settings = ui_settings.UiSettings()
    for n in range(ui_settings.MAX_RECENT + 5):
        settings = settings.with_recent([f"/photos/{n}"])
    assert len(settings.recent_roots) == ui_settings.MAX_RECENT
    assert settings.recent_roots[0] == f"/photos/{ui_settings.MAX_RECENT + 4}"


def test_a_broken_ui_table_never_stops_the_app() -> None:
    write('ui = "not a table"\n')
    assert ui_settings.load() == ui_settings.UiSettings()


def form(**changes: object) -> SettingsForm:
    values: dict[str, object] = {
        "use_model": True,
        "model": None,
        "model_id": "builtin:efficientnet_lite0/imagenet",
        "near": "0.93",
        "similar": "0.85",
        "keep_rules": "resolution, file_size, shorter_path",
        "exclude": "*/Thumbs/*, *.tmp.jpg",
        "reference_folders": "",
    }
    values.update(changes)
    return SettingsForm(**values)  # type: ignore[arg-type]


def test_settings_form_saves_what_the_engine_then_reads() -> None:
    write(HAND_WRITTEN)
    checked, ui = save_form(form(model="clip:ViT-B-32", use_model=False), ui_settings.UiSettings())
    loaded = scan_settings.load()  # the engine's own reader, from disk
    assert loaded == checked
    assert loaded.keep_rules == ("resolution", "file_size", "shorter_path")
    assert loaded.exclude == ("*/Thumbs/*", "*.tmp.jpg")
    builtin = loaded.thresholds_for("builtin:efficientnet_lite0/imagenet")
    assert (builtin.near_cosine, builtin.similar_cosine) == (0.93, 0.85)
    # The other model's thresholds and the daemon's other keys survive.
    assert loaded.thresholds_for("clip:ViT-B-32/laion2b_s34b_b79k").near_cosine == 0.95
    document = read()
    assert document["daemon"] == {"model": "clip:ViT-B-32", "threads": 2}
    assert document["ui"] == {"use_model": False}
    assert ui.use_model is False


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"keep_rules": "resolution, prettiest"}, "unknown keep rules"),
        ({"near": "1.5"}, "cosine"),
        ({"similar": "lots"}, "numbers"),
    ],
)
def test_settings_form_refuses_bad_values_and_writes_nothing(
    change: dict[str, str], message: str
) -> None:
    write(HAND_WRITTEN)
    with pytest.raises(scan_settings.SettingsError, match=message):
        save_form(form(**change), ui_settings.UiSettings())
    assert paths.config_file().read_text() == HAND_WRITTEN
