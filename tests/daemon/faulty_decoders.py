"""Decoders that misbehave on command, for the decoder-pool tests.

The pool resolves ``decode_fn`` ("module:function") inside each worker process,
so these run in the child.  ``scripted`` reads a command from a data item:

* ``b"hang"``: blocks forever (the pool must time out and replace the worker)
* ``b"hang:<fifo>"``: writes one byte to the FIFO (a readiness signal for the
  test), then blocks forever
* ``b"segv"``: dereferences NULL (SIGSEGV)
* ``b"exit"``: ``os._exit(7)`` without a word
* ``b"alloc:<MiB>"``: allocates and touches that much memory
* ``b"raise"``: raises an unexpected exception (a bug in a decoder)
* ``b"pid"``: fails with the worker's pid and RLIMIT_AS in the message
* anything else: the real decoder
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
import threading

from photodupd.imaging import Decoded, ImageError, PreprocessSpec, decode_item
from photodupd.protocol import ErrorCode, FeatureItem


def scripted(item: FeatureItem, spec: PreprocessSpec | None) -> Decoded:
    command = item.data or b""
    if command == b"hang":
        threading.Event().wait()
    if command.startswith(b"hang:"):
        with open(command.split(b":", 1)[1], "wb") as fifo:
            fifo.write(b"!")
        threading.Event().wait()
    if command == b"segv":
        ctypes.string_at(0)
    if command == b"exit":
        os._exit(7)
    if command.startswith(b"alloc:"):
        size = int(command.split(b":", 1)[1]) * 1024 * 1024
        block = bytearray(size)  # calloc: the address space is what RLIMIT_AS refuses
        block[::4096] = b"\1" * len(block[::4096])
        raise AssertionError(f"allocated {len(block)} bytes despite the cap")
    if command == b"raise":
        raise KeyError("a decoder bug")
    if command == b"pid":
        soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
        torch = "torch" in sys.modules
        raise ImageError(ErrorCode.NOT_AN_IMAGE, f"pid={os.getpid()} as={soft} torch={torch}")
    return decode_item(item, spec)


def crash_on_gif(item: FeatureItem, spec: PreprocessSpec | None) -> Decoded:
    """The real decoder, except that a GIF kills the worker (SIGSEGV): a decoder library
    that crashes on one format, for ``photodup-ctl doctor``'s decoder check."""
    if (item.data or b"").startswith((b"GIF87a", b"GIF89a")):
        ctypes.string_at(0)
    return decode_item(item, spec)
