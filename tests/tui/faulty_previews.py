"""Preview decoders that misbehave on command, run in the preview worker process.

``scripted`` reads the command from the file's name: ``*.segv`` kills the worker with
SIGSEGV, ``*.hang`` blocks forever, ``*.alloc`` allocates past any cap; any other file
goes to the real preview decoder."""

from __future__ import annotations

import ctypes
import threading

from PIL import Image

from photodupd.previewdecode import PreviewJob, decode_preview


def scripted(job: PreviewJob, spec: object = None) -> Image.Image:
    if job.path.endswith(".segv"):
        ctypes.string_at(0)
    if job.path.endswith(".hang"):
        threading.Event().wait()
    if job.path.endswith(".alloc"):
        block = bytearray(8 * 1024**3)
        block[::4096] = b"\1" * len(block[::4096])
    return decode_preview(job, spec)
