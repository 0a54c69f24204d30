"""Messages that thread workers post to the UI.

High-rate messages (progress) coalesce: a newer one replaces an older one still waiting in
the queue, so a slow screen never falls behind the engine (toolong's ``can_replace``).
"""

from __future__ import annotations

from textual.message import Message

from photodup_tui.engine.scan import ScanProgress


class ScanProgressed(Message):
    def __init__(self, progress: ScanProgress) -> None:
        super().__init__()
        self.progress = progress

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ScanProgressed)


class ScanSourceReady(Message):
    """The scan knows which features it uses: a model id, or why it runs without one; where
    the model runs (``mode``, ``served_by``) and each step down to it (``steps``)."""

    def __init__(
        self,
        model_id: str,
        fallback_reason: str | None,
        mode: str = "local",
        served_by: str = "",
        steps: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self.model_id = model_id
        self.fallback_reason = fallback_reason
        self.mode = mode
        self.served_by = served_by
        self.steps = steps


class ActionProgressed(Message):
    def __init__(self, done: int, total: int) -> None:
        super().__init__()
        self.done = done
        self.total = total

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ActionProgressed)


class DaemonReport(Message):
    """A line from the daemon launcher ("starting photodupd", "model x: loading")."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class GroupShownAgain(Message):
    """A hidden group is back (u, or the hidden-groups list): the screen on top redraws."""

    def __init__(self, group_index: int) -> None:
        super().__init__()
        self.group_index = group_index
