"""`photodup-ctl models list`: the columns stay apart and aligned, whatever a name's length."""

from __future__ import annotations

from photodup_tui.ctl import format_models


def test_long_model_names_do_not_run_into_the_next_column() -> None:
    long_name = "clip:ViT-bigG-14-CLIPA-336/datacomp1b"  # longer than the old 32-column pad
    lines = format_models(
        {
            "active": {"id": "builtin:efficientnet_lite0/imagenet"},
            "models": [
                {
                    "name": "builtin",
                    "id": "builtin:efficientnet_lite0/imagenet",
                    "available": True,
                    "description": "EfficientNet-Lite0, ships with photodup",
                },
                {"name": long_name, "available": False, "description": "the biggest CLIP"},
            ],
        }
    )
    assert lines[0].startswith("* builtin ")
    assert lines[1].startswith(f"  {long_name}  not downloaded")
    # "weights here" and "not downloaded" start in the same column, so do the descriptions.
    assert lines[0].index("weights here") == lines[1].index("not downloaded")
    assert lines[0].index("EfficientNet") == lines[1].index("the biggest")
