"""Scan settings: defaults, the [scan] table, per-model thresholds, the --threshold flag."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from photodup_tui.engine import settings as config
from photodup_tui.engine.settings import LOCAL_MODEL_ID, ScanSettings, SettingsError


def test_missing_default_config_means_defaults() -> None:
    assert config.load() == ScanSettings()


def test_scan_table_is_read(tmp_path: Path) -> None:
    path = Path(os.environ["PHOTODUP_CONFIG_DIR"]) / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text(
        """
[daemon]
model = "builtin"

[scan]
exclude = ["*/Backups/*"]
min_size = 2048
reference_folders = ["~/Archive"]
keep_rules = ["reference", "format", "resolution"]
format_priority = [["raw"], ["jpeg"]]
delete_raw_jpeg_pairs = true

[scan.thresholds."clip:ViT-B-32/laion2b_s34b_b79k"]
near_cosine = 0.95

[scan.thresholds."local:phash-v1"]
near_phash = 6
"""
    )
    settings = config.load()
    assert settings.exclude == ("*/Backups/*",)
    assert settings.min_size == 2048
    assert settings.reference_folders == (os.path.expanduser("~/Archive"),)
    assert settings.keep_rules == ("reference", "format", "resolution")
    assert settings.format_priority == (("RAW",), ("JPEG",))
    assert settings.delete_raw_jpeg_pairs is True
    clip = settings.thresholds_for("clip:ViT-B-32/laion2b_s34b_b79k")
    assert clip.near_cosine == 0.95
    assert clip.similar_cosine == config.DEFAULT_THRESHOLDS["*"].similar_cosine
    assert settings.thresholds_for("clip:ViT-L-14/openai") == config.DEFAULT_THRESHOLDS["clip"]
    assert settings.thresholds_for(LOCAL_MODEL_ID).near_phash == 6
    assert settings.thresholds_for("someone:else") == config.DEFAULT_THRESHOLDS["*"]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[scan]\nmin_size = -1\n", "min_size"),
        ("[scan]\ninclude_hidden = 1\n", "include_hidden"),
        ("[scan]\ncolour = 'red'\n", "unknown keys"),
        ("[scan.thresholds.x]\nnear_cosine = 1.5\n", "cosine"),
        ("[scan.thresholds.x]\nnear_phash = 65\n", "bit count"),
        ("[scan.thresholds.x]\nfuzz = 1\n", "unknown threshold"),
        ("[scan\n", "cannot read"),
    ],
)
def test_bad_values_say_what_is_wrong(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(toml)
    with pytest.raises(SettingsError, match=message):
        config.load(path)


def test_threshold_flag_means_cosine_for_models_and_bits_without() -> None:
    settings = ScanSettings()
    model = settings.with_threshold("builtin:efficientnet_lite0/imagenet", 0.6)
    changed = model.thresholds_for("builtin:efficientnet_lite0/imagenet")
    assert changed.near_cosine == 0.6
    assert changed.similar_cosine == 0.6  # similar never stricter than near
    assert settings.with_threshold(LOCAL_MODEL_ID, 5).thresholds_for(LOCAL_MODEL_ID).near_phash == 5
    with pytest.raises(SettingsError):
        settings.with_threshold(LOCAL_MODEL_ID, 0.5)
    with pytest.raises(SettingsError):
        settings.with_threshold("builtin:efficientnet_lite0/imagenet", 3)
