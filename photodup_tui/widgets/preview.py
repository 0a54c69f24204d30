"""One photo, drawn in the terminal: Kitty or Sixel graphics where the terminal has them,
coloured half-blocks otherwise.  Decoding happens in a thread worker (photodupd's safe
decoder, EXIF-oriented), never on the event loop.
"""

from __future__ import annotations

from typing import Literal

from PIL import Image as PILImage
from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Static
from textual.worker import Worker, WorkerState

# Imported at start-up on purpose: textual-image asks the terminal for its cell size and
# graphics support when imported, which is impossible once Textual owns the terminal.
from textual_image.renderable import HalfcellImage as HalfcellRenderable
from textual_image.renderable import Image as AutoRenderable
from textual_image.renderable import UnicodeImage as UnicodeRenderable
from textual_image.widget import HalfcellImage, UnicodeImage
from textual_image.widget import Image as AutoImage

from photodup_tui.previews import PreviewCache

Renderer = Literal["auto", "halfcell", "unicode", "none"]
#: Pixels decoded per preview: Sixel/Kitty graphics show real pixels (a third of a wide
#: terminal is ~600 px); character cells show two pixels per cell at most.
GRAPHICS_SIDE = 768
CELLS_SIDE = 320


def preview_side(renderer: Renderer) -> int:
    cells = renderer in ("halfcell", "unicode") or AutoRenderable in (
        HalfcellRenderable,
        UnicodeRenderable,
    )
    return CELLS_SIDE if cells else GRAPHICS_SIDE


_IMAGE_CLASSES = {"auto": AutoImage, "halfcell": HalfcellImage, "unicode": UnicodeImage}


class Preview(Widget):
    DEFAULT_CSS = """
    Preview {
        height: 1fr;
        width: 1fr;
        align: center middle;
    }
    Preview > .preview-image {
        width: auto;
        height: auto;
    }
    Preview > .preview-note {
        width: auto;
        height: auto;
        color: $text-muted;
        text-align: center;
    }
    """

    def __init__(self, path: str, cache: PreviewCache, renderer: Renderer = "auto") -> None:
        super().__init__()
        self.path = path
        self.cache = cache
        self.renderer = renderer

    def compose(self) -> ComposeResult:
        note = "no preview (turned off)" if self.renderer == "none" else "loading preview…"
        yield Static(note, classes="preview-note")

    def on_mount(self) -> None:
        if self.renderer != "none":
            self.run_worker(
                self._load, thread=True, exclusive=True, exit_on_error=False, group="preview"
            )

    def _load(self) -> PILImage.Image:
        return self.cache.get(self.path, preview_side(self.renderer))

    async def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        event.stop()
        if event.state is WorkerState.SUCCESS and isinstance(event.worker.result, PILImage.Image):
            await self.remove_children()
            image_class = _IMAGE_CLASSES.get(self.renderer, AutoImage)
            await self.mount(image_class(event.worker.result, classes="preview-image"))
        elif event.state is WorkerState.ERROR:
            reason = str(event.worker.error) or type(event.worker.error).__name__
            await self.remove_children()
            await self.mount(Static(f"cannot show this photo\n{reason}", classes="preview-note"))
