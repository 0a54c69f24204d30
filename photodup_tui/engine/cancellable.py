"""A blocking call on a helper thread, so the caller can stop waiting for it.

Two ways of stopping, one runner:

* :func:`run_cancellable`, for the UI: a ``cancel`` Event set elsewhere (escape, the app
  exiting) ends the wait at once; the call is left to finish on its daemon thread, which
  cannot hold the process open at exit.  For calls with no cancel of their own (waiting
  for photodupd to start or for a model to load).
* :func:`run_interruptible`, for the command line: Ctrl-C in the main thread becomes
  ``cancel`` instead of an exception in the middle of a file operation or a database
  write, and the call is waited for, so it can finish the current file and return what
  it has.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar, cast

T = TypeVar("T")

#: Hands a call to the UI thread, where it runs after what was handed back before it.
HandBack = Callable[[Callable[[], object]], object]
#: A blocking job for a UI's background worker: it runs until done or ``cancel`` and hands
#: what it finds back to the UI thread.
Job = Callable[[threading.Event, HandBack], None]


class Cancelled(Exception):
    """The user cancelled while we waited."""


class _Call(Generic[T]):
    """``fn`` running on a daemon thread; :attr:`done` is set once it returned or raised."""

    def __init__(self, fn: Callable[[], T], thread_name: str) -> None:
        self.done = threading.Event()
        self._outcome: tuple[bool, object] = (False, RuntimeError("the call has not ended"))
        thread = threading.Thread(target=self._run, args=(fn,), name=thread_name, daemon=True)
        thread.start()

    def _run(self, fn: Callable[[], T]) -> None:
        try:
            self._outcome = (True, fn())
        except BaseException as exc:
            self._outcome = (False, exc)
        finally:
            self.done.set()

    def result(self) -> T:
        """What the call returned; what it raised is raised here.  Only once :attr:`done`."""
        ok, value = self._outcome
        if not ok:
            raise cast(BaseException, value)
        return cast(T, value)


def run_cancellable(fn: Callable[[], T], cancel: threading.Event, poll: float = 0.1) -> T:
    """``fn()``, unless ``cancel`` is set first: then :class:`Cancelled` at once."""
    call = _Call(fn, "photodup-wait")
    while not call.done.wait(poll):
        if cancel.is_set():
            raise Cancelled
    return call.result()


def run_interruptible(
    fn: Callable[[], T],
    cancel: threading.Event,
    on_interrupt: Callable[[], None] = lambda: None,
) -> tuple[T, bool]:
    """``fn()`` and whether Ctrl-C was pressed meanwhile (it sets ``cancel``, and
    ``on_interrupt`` is called the first time).  Call it from the main thread.

    The main thread waits on an Event the call sets when it ends, not on ``join``: a
    KeyboardInterrupt inside ``Thread.join`` can leave ``is_alive()`` False while the call
    still runs (CPython's tstate lock is released by the interrupted wait), and the result
    would be read before it exists.
    """
    call = _Call(fn, "photodup-work")
    interrupted = False
    while not call.done.is_set():
        try:
            call.done.wait(0.2)
        except KeyboardInterrupt:
            if not interrupted:
                on_interrupt()
            interrupted = True
            cancel.set()
    return call.result(), interrupted
