"""Blocking work in a Textual app: thread workers that hand their results back to the UI
thread, and their failures said in one place.

The event loop only ever renders and handles keys; everything that can wait on the disk,
photodupd or a child process runs in a thread worker (harlequin's
``@work(thread=True, exit_on_error=False)``).  What a worker finds comes back as a call
handed to the UI thread (:class:`HandedBack`), to the one handler its caller named, never
routed by the worker's name; a failure is said by :meth:`BackgroundApp.on_worker_state_changed`
as "Could not <what the worker does>", with the error's reason.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TypeVar

from textual.app import App
from textual.message import Message
from textual.worker import Worker, WorkerState, get_current_worker

from photodup_tui.engine.cancellable import Cancelled, HandBack, Job
from photodup_tui.formatting import short_reason

T = TypeVar("T")
R = TypeVar("R")


class HandedBack(Message):
    """A call a worker hands back to the UI thread (:data:`HandBack`)."""

    def __init__(self, call: Callable[[], object]) -> None:
        super().__init__()
        self.call = call


class BackgroundApp(App[R]):
    """An app that runs its blocking work with :meth:`in_thread` and :meth:`in_background`."""

    def in_background(
        self, job: Job, *, name: str, does: str, exclusive: bool = False
    ) -> Worker[None]:
        """Run ``job`` in a thread worker; what it hands back runs on the UI thread, in
        order.  ``does``: what it does, said as "Could not ..." if it fails; ``exclusive``:
        it cancels a running worker of the same ``name``."""

        def run() -> None:
            cancel = get_current_worker().cancelled_event  # set when the app exits, too
            job(cancel, lambda call: self.post_message(HandedBack(call)))

        return self.run_worker(
            run,
            thread=True,
            exit_on_error=False,
            exclusive=exclusive,
            group=name,
            name=name,
            description=does,
        )

    def in_thread(
        self,
        call: Callable[[], T],
        then: Callable[[T], object] | None,
        *,
        name: str,
        does: str,
        exclusive: bool = False,
    ) -> Worker[None]:
        """``call()`` in a thread worker, then ``then(its result)`` on the UI thread."""

        def job(_cancel: threading.Event, hand_back: HandBack) -> None:
            result = call()
            if then is not None:
                hand_back(functools.partial(then, result))

        return self.in_background(job, name=name, does=does, exclusive=exclusive)

    def on_handed_back(self, message: HandedBack) -> None:
        message.call()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Every failure of the app's own workers (a screen's workers report to the screen)."""
        worker, error = event.worker, event.worker.error
        if event.state is not WorkerState.ERROR or isinstance(error, Cancelled):
            return
        what = f"Could not {worker.description}" if worker.description else f"{worker.name} failed"
        reason = short_reason(error) if error is not None else "unknown error"
        self.notify(reason, title=what, severity="error", timeout=12)
