"""A remote photodup of another protocol version, as the client meets it over ssh.

Run as the ``remote_command``: it reads the client's hello from stdin and answers it the
way a photodupd speaking protocol 2 does (``unsupported_protocol``, then it closes).
"""

from __future__ import annotations

import os
import sys

from photodupd import protocol


def main() -> int:
    header = os.read(0, protocol.HEADER.size)
    length = protocol.frame_length(header)
    body = b""
    while len(body) < length:
        chunk = os.read(0, length - len(body))
        if not chunk:
            return 1
        body += chunk
    hello = protocol.unpack(body)
    reply = protocol.error_reply(
        hello.get("id"),
        protocol.ErrorCode.UNSUPPORTED_PROTOCOL,
        f"this daemon speaks protocol 2, the client asked for {hello.get('protocol')!r}; "
        "upgrade the older of the two",
    )
    os.write(1, protocol.pack(reply))
    return 0


if __name__ == "__main__":
    sys.exit(main())
