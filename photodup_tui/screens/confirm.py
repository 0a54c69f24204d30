"""Before anything moves: exactly how many files, how many bytes, and which trash."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Static

from photodup_tui.engine.undo_preview import UndoPreview
from photodup_tui.formatting import display_path, human_size, plural
from photodup_tui.plan_summary import PlanSummary

SHOW_AT_MOST = 8


def describe(summary: PlanSummary, roots: Sequence[str]) -> Text:
    text = Text()
    kinds = ", ".join(f"{n} from {kind} groups" for kind, n in sorted(summary.by_kind.items()))
    text.append(f"Move {plural(summary.files, 'file')} ({human_size(summary.bytes)}) ", "bold")
    text.append("to the trash", "bold")
    text.append(f"  ({kinds})\n\n" if kinds else "\n\n")
    for trash_dir, count in sorted(summary.trash_dirs.items()):
        text.append(f"  {plural(count, 'file')} → {display_path(trash_dir)}\n")
    operations = summary.plan.operations
    text.append("\n")
    for op in operations[:SHOW_AT_MOST]:
        text.append(f"  ✗ {display_path(op.victim.path, roots)}", "red")
        text.append(f"  (keeps {display_path(op.keeper.path, roots)})\n", "dim")
    if len(operations) > SHOW_AT_MOST:
        text.append(f"  … and {len(operations) - SHOW_AT_MOST} more\n", "dim")
    if summary.no_trash:
        text.append(
            f"\n{plural(len(summary.no_trash), 'file')} will stay where they are: no trash on "
            "their disk can take them without copying (nothing is ever deleted outright):\n",
            "yellow",
        )
        for path, why in summary.no_trash[:SHOW_AT_MOST]:
            text.append(f"  {display_path(path, roots)}: {why}\n", "yellow")
    refused = summary.plan.refused
    if refused:
        text.append(f"\n{plural(len(refused), 'marked file')} will not be touched:\n", "yellow")
        for path, why in refused[:SHOW_AT_MOST]:
            text.append(f"  {display_path(path, roots)}: {why}\n", "yellow")
        if len(refused) > SHOW_AT_MOST:
            text.append(f"  … and {len(refused) - SHOW_AT_MOST} more\n", "yellow")
    text.append(
        "\nRight before each move photodup checks the files again (byte by byte against the "
        "keeper for exact copies, by content hash for the others) and skips anything that "
        "changed. Press u afterwards to put every file back.",
        "dim",
    )
    return text


class YesNoScreen(ModalScreen[bool]):
    """A question about moving files, answered y (the confirm button) or n / escape
    (each subclass binds them, with its own words for y).

    Subclasses say what is asked: ``question``, ``body_widget()``, ``answer()`` (the confirm
    button's label) and its ``variant``, and style it in their own CSS."""

    question = ""
    variant: Literal["primary", "error"] = "primary"

    def body_widget(self) -> Widget:
        raise NotImplementedError

    def answer(self) -> str:
        raise NotImplementedError

    def can_confirm(self) -> bool:
        return True

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as dialog:
            dialog.border_title = self.question
            yield self.body_widget()
            with Horizontal(id="buttons"):
                yield Button("Cancel (n)", id="cancel")
                yield Button(
                    self.answer(),
                    id="confirm",
                    variant=self.variant,
                    disabled=not self.can_confirm(),
                )

    def on_mount(self) -> None:
        button = self.query_one("#confirm" if self.can_confirm() else "#cancel", Button)
        button.focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm")

    def action_confirm(self) -> None:
        if self.can_confirm():
            self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)


class ConfirmScreen(YesNoScreen):
    HELP = "Nothing has happened yet. Enter or y moves the files to the trash; escape or n cancels."
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "confirm", "Move to trash"),
        Binding("escape,n", "cancel", "Cancel"),
    ]
    DEFAULT_CSS = """
    ConfirmScreen {
        align: center middle;
    }
    ConfirmScreen #dialog {
        width: 90;
        max-width: 95%;
        height: auto;
        max-height: 90%;
        border: thick $warning;
        background: $surface;
        padding: 1 2;
    }
    ConfirmScreen #dialog-body {
        height: auto;
        max-height: 24;
    }
    ConfirmScreen #buttons {
        height: auto;
        margin-top: 1;
        align-horizontal: right;
    }
    ConfirmScreen Button {
        margin-left: 2;
    }
    """
    question = "Move to trash?"
    variant = "error"

    def __init__(self, summary: PlanSummary, roots: Sequence[str]) -> None:
        super().__init__()
        self.summary = summary
        self.roots = list(roots)

    def body_widget(self) -> Widget:
        return VerticalScroll(Static(describe(self.summary, self.roots)), id="dialog-body")

    def answer(self) -> str:
        return f"Move {plural(self.summary.files, 'file')} to trash (y)"

    def can_confirm(self) -> bool:
        return self.summary.files > 0


class UndoConfirmScreen(YesNoScreen):
    """u: which clean-up comes back (it may be one another photodup made), asked once."""

    HELP = "Nothing has happened yet. y puts these files back; escape or n cancels."
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "confirm", "Put back"),
        Binding("escape,n", "cancel", "Cancel"),
    ]
    DEFAULT_CSS = """
    UndoConfirmScreen {
        align: center middle;
    }
    UndoConfirmScreen #dialog {
        width: 76;
        max-width: 95%;
        height: auto;
        max-height: 90%;
        border: thick $primary;
        background: $surface;
        padding: 1 2;
    }
    UndoConfirmScreen #buttons {
        height: auto;
        margin-top: 1;
        align-horizontal: right;
    }
    UndoConfirmScreen Button {
        margin-left: 2;
    }
    """
    question = "Undo the last clean-up?"

    def __init__(self, target: UndoPreview) -> None:
        super().__init__()
        self.target = target

    def body_widget(self) -> Widget:
        return Static(describe_undo(self.target), id="dialog-body")

    def answer(self) -> str:
        return f"Put {plural(self.target.files, 'file')} back (y)"


def describe_undo(target: UndoPreview) -> Text:
    text = Text()
    text.append(f"Put back {plural(target.files, 'file')} ({human_size(target.bytes)})?", "bold")
    they = "It was" if target.files == 1 else "They were"
    text.append(f"\n{they} {target.where} on {target.when} {target.by}.\n\n")
    if target.batch.state == "interrupted":
        text.append("That clean-up was interrupted; photodup settles it first.\n", "yellow")
    text.append(
        f"Batch {target.batch.batch_id}. Each file goes back to where it was, never over a "
        "file that is there now. photodup undo --list shows every batch.",
        "dim",
    )
    return text
