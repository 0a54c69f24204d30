"""A photodupd stand-in on stdin/stdout, for what a real one will not do on cue.

``python stub_photodupd.py BEHAVIOUR``: answers ``hello`` and ``status`` (model
``test:stub``, ready), and ``features`` as BEHAVIOUR says:

* ``die-on-features``: exits without a word (a link that drops under every request);
* ``other-model``: answers every item, embedded by ``test:other`` (a daemon whose model
  changed under the scan).
"""

from __future__ import annotations

import os
import sys

from photodupd import protocol

MODEL = "test:stub"


def read_exactly(n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = os.read(0, n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def status() -> dict[str, object]:
    return {
        "state": "ready",
        "model": MODEL,
        "dim": 2,
        "model_name": "stub",
        "device": "cpu",
        "why": "a test",
        "input_size": 224,
        "input_resize": 256,
    }


def main(behaviour: str) -> int:
    while (header := read_exactly(protocol.HEADER.size)) is not None:
        body = read_exactly(protocol.frame_length(header))
        if body is None:
            return 0
        request = protocol.unpack(body)
        op, rid = request.get("op"), request.get("id")
        if op == "hello":
            active = {
                "id": MODEL,
                "dim": 2,
                "name": "stub",
                "device": "cpu",
                "why": "",
                "state": "ready",
            }
            result: object = protocol.welcome_result("stub", active)  # type: ignore[arg-type]
        elif op == "status":
            result = status()
        elif op == "features" and behaviour == "die-on-features":
            return 0
        elif op == "features":
            items = request.get("items") or []
            vector = b"\x00\x00\x80\x3f" + b"\x00\x00\x00\x00"  # (1.0, 0.0) float32
            ok = {
                "ok": True,
                "embedding": vector,
                "phash": 0,
                "width": 1,
                "height": 1,
                "format": "JPEG",
                "taken": None,
                "camera": None,
                "exif_fields": 0,
            }
            result = {"model": {"id": "test:other", "dim": 2}, "items": [ok for _ in items]}
        else:
            result = {}
        os.write(1, protocol.pack(protocol.ok_reply(rid, result)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
