"""The duplicate engine: no Textual here, so the TUI and the headless CLI share it."""
