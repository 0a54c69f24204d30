"""A photodupd on another computer, reached over SSH (torch-free).

The client runs ``ssh HOST photodup-ctl bridge`` and speaks protocol v1 over that pipe; the
bridge (:mod:`photodup_tui.bridge`) relays it to the remote user's own daemon, starting it there
if need be.  Nothing listens on the network: authentication and encryption are SSH's, and
host aliases from ``~/.ssh/config`` work.  (A TCP port would make the daemon, which reads any
path it is given, an arbitrary-file-read service for whoever reaches the port.)

``ssh_command`` is a full command line like git's ``GIT_SSH_COMMAND``
(``"ssh -F ~/.ssh/other_config"``); ``remote_command`` the full command line run there
(``"~/venv/bin/photodup-ctl bridge"``; the remote shell expands it).  Options photodup adds
come after the user's, so the user's win (ssh takes the first value given):
``BatchMode=yes`` (never a password prompt: the TUI owns the terminal), keep-alives that
notice a dead link within ~45 s, and a connect timeout.

When ssh fails, its stderr and exit status say why; :func:`explain` turns them into one line.
"""

from __future__ import annotations

import os
import shlex
from typing import Final

from photodupd import __version__
from photodupd.transport import CommandEndpoint, Ended, LinkFailed

DEFAULT_SSH: Final = "ssh"
DEFAULT_REMOTE_COMMAND: Final = "photodup-ctl bridge"
#: What `pip` installs photodup as.
INSTALL_HINT: Final = f"python3 -m pip install photodup=={__version__}"

#: Added after the user's ssh options.
SSH_OPTIONS: Final = (
    "-T",  # no terminal: the pipe carries frames, nothing else
    "-o",
    "BatchMode=yes",
    "-o",
    "ConnectTimeout=15",
    "-o",
    "ServerAliveInterval=15",
    "-o",
    "ServerAliveCountMax=3",
)

#: ssh's own words for a host it cannot reach.
_UNREACHABLE: Final = (
    "could not resolve hostname",
    "name or service not known",
    "connection refused",
    "no route to host",
    "network is unreachable",
    "connection timed out",
    "operation timed out",
    "timed out during banner exchange",
    "connection reset",
    "connection closed by",
    "broken pipe",
    "temporary failure in name resolution",
)
_AUTH: Final = (
    "permission denied",
    "too many authentication failures",
    "no more authentication methods",
    "authentication failed",
)
_HOST_KEY: Final = ("host key verification failed", "remote host identification has changed")
_NOT_FOUND: Final = ("command not found", "no such file or directory", "not found")


class BadHost(ValueError):
    """A host that would reach ssh as an option, or is empty."""


def check_host(host: str) -> str:
    if not host or host.startswith("-") or any(ch.isspace() for ch in host):
        raise BadHost(f"not a host name: {host!r}")
    return host


def command_words(command_line: str) -> list[str]:
    """A command line as git reads GIT_SSH_COMMAND: shell words, ``~`` expanded."""
    words = shlex.split(command_line)
    if not words:
        raise ValueError("empty command line")
    return [os.path.expanduser(word) if word.startswith("~") else word for word in words]


def ssh_argv(
    host: str,
    ssh_command: str = DEFAULT_SSH,
    remote_command: str = DEFAULT_REMOTE_COMMAND,
    remote_args: tuple[str, ...] = (),
) -> list[str]:
    """``ssh [the user's options] [ours] HOST 'REMOTE_COMMAND [ARGS]'``: the remote command is
    one word, which the remote shell splits and expands (``~``, ``$VAR``)."""
    check_host(host)
    remote = " ".join([remote_command.strip(), *(shlex.quote(a) for a in remote_args)])
    return [*command_words(ssh_command), *SSH_OPTIONS, host, remote]


def ssh_endpoint(
    host: str,
    ssh_command: str = DEFAULT_SSH,
    remote_command: str = DEFAULT_REMOTE_COMMAND,
    remote_args: tuple[str, ...] = (),
) -> CommandEndpoint:
    argv = ssh_argv(host, ssh_command, remote_command, remote_args)

    def why(ended: Ended) -> LinkFailed:
        return explain(host, argv[0], remote_command, ended)

    return CommandEndpoint(argv, label=f"photodupd on {host}", explain=why)


def explain(host: str, ssh: str, remote_command: str, ended: Ended) -> LinkFailed:
    """One line for how ``ssh HOST REMOTE_COMMAND`` ended."""
    text = ended.stderr
    lower = text.lower()
    line = _last_meaningful(text)
    code = ended.returncode
    if ended.missing_program:
        return LinkFailed(
            f"{ssh}: command not found: install the OpenSSH client, or set [daemon] "
            "ssh_command to the ssh to use",
            permanent=True,
        )
    bridge = _bridge_says(text)
    if bridge is not None:  # the bridge ran and said why it could not serve
        return LinkFailed(f"photodupd on {host}: {bridge}", permanent=True)
    if ended.garbage is not None:
        shown = ended.garbage.decode("utf-8", "replace")
        return LinkFailed(
            f"{host} answered with text, not photodup's protocol ({shown!r}...): a login script "
            f"that prints? 'ssh {host} true' must print nothing",
            permanent=True,
        )
    if code == 255 or (code is None and line):
        if any(word in lower for word in _HOST_KEY):
            return LinkFailed(
                f"{host}'s host key is unknown or has changed ({line}): run 'ssh {host}' once "
                "to check and accept it",
                permanent=True,
            )
        if any(word in lower for word in _AUTH):
            return LinkFailed(
                f"{host} refused the login ({line}): photodup logs in without prompting, so "
                f"'ssh {host}' must work with a key or an agent (ssh-copy-id {host})",
                permanent=True,
            )
        if any(word in lower for word in _UNREACHABLE):
            return LinkFailed(f"cannot reach {host}: {line}")
    if code == 127 or (code is not None and any(word in lower for word in _NOT_FOUND)):
        return LinkFailed(
            f"photodup is not installed on {host} ('{remote_command}': {line or 'not found'}): "
            f"install it there with '{INSTALL_HINT}', or set [daemon] remote_command to its "
            "full path, e.g. ~/venv/bin/photodup-ctl bridge",
            permanent=True,
        )
    if "invalid choice: 'bridge'" in text:
        return LinkFailed(
            f"photodup on {host} is too old for remote scans (its photodup-ctl has no bridge): "
            f"upgrade it there with '{INSTALL_HINT}'",
            permanent=True,
        )
    status = "still running" if code is None else f"status {code}"
    return LinkFailed(f"ssh to {host} ended ({status}){': ' + line if line else ''}")


#: How the bridge starts the lines it writes to stderr (photodup_tui.bridge).
BRIDGE_PREFIX: Final = "photodup-ctl bridge: "


def _bridge_says(stderr: str) -> str | None:
    for line in reversed(stderr.splitlines()):
        if line.startswith(BRIDGE_PREFIX):
            return line[len(BRIDGE_PREFIX) :].strip()
    return None


def _last_meaningful(text: str) -> str:
    """ssh's last line, without the noise it adds around it."""
    lines = [
        line.strip().rstrip(".")
        for line in text.splitlines()
        if line.strip() and not line.startswith("Warning: Permanently added")
    ]
    return lines[-1] if lines else ""
