"""Settings that shape a scan, saved to config.toml: model, thresholds, keep rules, exclusions."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar, cast

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Footer, Header, Input, Label, Select, Static, Switch
from textual.worker import Worker, WorkerState

from photodup_tui import ui_settings
from photodup_tui.engine import settings as scan_settings
from photodup_tui.engine.settings import KEEP_RULES, LOCAL_MODEL_ID, ScanSettings
from photodup_tui.screens.base import AppScreen
from photodup_tui.widgets.daemon_status import DaemonStatusLine
from photodup_tui.widgets.text_input import TextInput

BUILTIN_ID = "builtin:efficientnet_lite0/imagenet"
MODELS = [
    ("auto: CLIP if its weights are on this computer, else built-in", "auto"),
    ("builtin: EfficientNet-Lite0, offline, small", "builtin"),
    ("clip:ViT-B-32: better at similar shots (weights must be downloaded)", "clip:ViT-B-32"),
]


@dataclass(frozen=True, slots=True)
class SettingsForm:
    """What the user typed, before it is checked."""

    use_model: bool
    model: str | None
    model_id: str
    near: str
    similar: str
    keep_rules: str
    exclude: str
    reference_folders: str


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def save_form(
    form: SettingsForm, ui: ui_settings.UiSettings
) -> tuple[ScanSettings, ui_settings.UiSettings]:
    """Check the form with the engine's own parser, then write only the keys it edits."""
    document = ui_settings.read_config()
    scan_table: dict[str, Any] = dict(document.get("scan") or {})
    keys = (
        ("near_phash", "similar_phash")
        if form.model_id == LOCAL_MODEL_ID
        else (
            "near_cosine",
            "similar_cosine",
        )
    )
    number = int if form.model_id == LOCAL_MODEL_ID else float
    try:
        thresholds = {keys[0]: number(form.near), keys[1]: number(form.similar)}
    except ValueError:
        raise scan_settings.SettingsError(
            "thresholds must be numbers (a cosine like 0.9, or bits for perceptual hashes)"
        ) from None
    edits: dict[str, Any] = {
        "keep_rules": _split(form.keep_rules),
        "exclude": _split(form.exclude),
        "reference_folders": _split(form.reference_folders),
        "thresholds": {form.model_id: thresholds},
    }
    merged_thresholds = {**(scan_table.get("thresholds") or {}), form.model_id: thresholds}
    checked = scan_settings.from_mapping(
        {**scan_table, **edits, "thresholds": merged_thresholds}, where="settings"
    )
    updates: dict[str, dict[str, Any]] = {"scan": edits, "ui": {"use_model": form.use_model}}
    if form.model:
        updates["daemon"] = {"model": form.model}
    ui_settings.update_tables(updates)
    return checked, replace(ui, use_model=form.use_model)


def configured_model() -> str | None:
    """The ``[daemon] model`` the config file names now (None: not set, photodupd's default)."""
    table = ui_settings.read_config().get("daemon")
    model = table.get("model") if isinstance(table, dict) else None
    return model if isinstance(model, str) else None


def save_and_recall(
    form: SettingsForm, ui: ui_settings.UiSettings
) -> tuple[ScanSettings, ui_settings.UiSettings, str | None]:
    """:func:`save_form`, plus the model setting it replaced (put back if the switch fails)."""
    previous = configured_model()
    settings, saved_ui = save_form(form, ui)
    return settings, saved_ui, previous


class SettingsScreen(AppScreen):
    HELP = (
        "Settings are saved to your config file and used from the next scan on. A new model "
        "is loaded by photodupd at once (the status line shows it loading); if it cannot be "
        "loaded, photodupd keeps the model it had and the setting goes back."
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Cancel"),
        Binding("ctrl+s", "save", "Save"),
    ]
    DEFAULT_CSS = """
    SettingsScreen #form {
        padding: 1 2;
    }
    SettingsScreen Label {
        margin-top: 1;
        text-style: bold;
    }
    SettingsScreen .hint {
        color: $text-muted;
    }
    SettingsScreen #thresholds {
        height: auto;
    }
    SettingsScreen #thresholds TextInput {
        width: 20;
        margin-right: 2;
    }
    SettingsScreen #settings-error {
        color: $error;
        height: auto;
    }
    SettingsScreen #save-row {
        height: auto;
        margin-top: 1;
    }
    """

    def __init__(self) -> None:
        super().__init__()
        self._chosen_model: str | None = None  # the model picked in the form, if any

    def _model_id(self) -> str:
        if not self.papp.ui.use_model:
            return LOCAL_MODEL_ID
        if self.papp.result is not None:
            return self.papp.result.model_id
        return self.papp.daemon_status.model or BUILTIN_ID

    def compose(self) -> ComposeResult:
        s = self.papp.scan_settings
        model_id = self._model_id()
        t = s.thresholds_for(model_id)
        local = model_id == LOCAL_MODEL_ID
        near, similar = (
            (t.near_phash, t.similar_phash) if local else (t.near_cosine, t.similar_cosine)
        )
        yield Header()
        yield DaemonStatusLine()
        with VerticalScroll(id="form"):
            yield Label("Use an image model (finds similar shots, not only copies)")
            yield Switch(value=self.papp.ui.use_model, id="use-model")
            yield Label("Model photodupd loads")
            yield Select(MODELS, prompt="keep the current setting", id="model")
            yield Label(f"Thresholds for {model_id}")
            yield Static(
                "pHash bits: lower is stricter" if local else "cosine 0..1: higher is stricter",
                classes="hint",
            )
            with Horizontal(id="thresholds"):
                yield TextInput(str(near if near is not None else ""), id="near")
                yield TextInput(str(similar if similar is not None else ""), id="similar")
            yield Static("near duplicates · similar photos", classes="hint")
            yield Label("Keep rules, strongest first")
            yield Static("choose from: " + ", ".join(KEEP_RULES), classes="hint")
            yield TextInput(", ".join(s.keep_rules), id="keep-rules")
            yield Label("Exclude (globs, comma-separated)")
            yield TextInput(
                ", ".join(s.exclude), placeholder="*/node_modules, *.thumb.jpg", id="exclude"
            )
            yield Label("Reference folders (scanned, never trashed, win the keeper choice)")
            yield TextInput(", ".join(s.reference_folders), placeholder="~/Archive", id="reference")
            yield Static(id="settings-error")
            with Horizontal(id="save-row"):
                yield Button("Save (ctrl+s)", id="save", variant="primary")
        yield Footer()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()

    def action_save(self) -> None:
        model = self.query_one("#model", Select).value
        form = SettingsForm(
            use_model=self.query_one("#use-model", Switch).value,
            model=model if isinstance(model, str) else None,
            model_id=self._model_id(),
            near=self.query_one("#near", Input).value,
            similar=self.query_one("#similar", Input).value,
            keep_rules=self.query_one("#keep-rules", Input).value,
            exclude=self.query_one("#exclude", Input).value,
            reference_folders=self.query_one("#reference", Input).value,
        )
        ui = self.papp.ui
        self._chosen_model = form.model
        self.run_worker(
            lambda: save_and_recall(form, ui), thread=True, exit_on_error=False, name="save"
        )

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.name != "save":
            return
        if event.state is WorkerState.SUCCESS:
            settings, ui, previous = cast(
                "tuple[ScanSettings, ui_settings.UiSettings, str | None]", event.worker.result
            )
            self.notify("Saved. The next scan uses these settings.")
            self.app.pop_screen()
            self.papp.apply_settings(settings, ui, self._chosen_model, previous)
        elif event.state is WorkerState.ERROR:
            self.query_one("#settings-error", Static).update(f"Not saved: {event.worker.error}")
