"""Where the model runs for a scan: ``[daemon] mode`` and its settings, and how each mode's
feature source is reached.  Torch-free.

* ``remote``: a photodupd on another computer, over SSH (:mod:`photodupd.remote`);
* ``local``: this computer's photodupd, started if need be (``DaemonFeatureSource``);
* ``inline``: a private photodupd child of the scan (:func:`photodupd.transport.inline_endpoint`);
* ``auto`` (default): remote when one is configured, else local, else inline (else, in
  :mod:`photodup_tui.scan_session`, no model at all);
* ``ray`` (``--ray ADDRESS`` / ``[daemon] ray``, over any mode): a Ray cluster decodes and
  embeds (:mod:`photodup_tui.engine.ray_features`, which imports ``ray`` only when opened).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from photodup_tui.engine.daemon_launch import Report
from photodup_tui.engine.features import FeatureSource
from photodup_tui.engine.remote_features import LinkedFeatureSource
from photodupd import config as daemon_config
from photodupd import remote as ssh
from photodupd.transport import inline_endpoint

MODES: Final = ("auto", "remote", "local", "inline")
UPLOADS: Final = ("reduced", "original")


@dataclass(frozen=True, slots=True)
class Placement:
    """The user's choice of where the model runs (config < flags)."""

    mode: str = "auto"
    remote: str = ""  # ssh host; "" = none configured
    ssh_command: str = ssh.DEFAULT_SSH
    remote_command: str = ssh.DEFAULT_REMOTE_COMMAND
    upload: str = "reduced"
    #: The config file the inline child reads its [daemon] table from (None: the user's).
    config_file: Path | None = None
    #: A Ray cluster's address ("" = none): when set, it alone serves the scan.
    ray: str = ""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise daemon_config.ConfigError(
                f"mode must be one of {', '.join(MODES)}, not {self.mode!r}"
            )
        if self.upload not in UPLOADS:
            raise daemon_config.ConfigError(
                f"upload must be one of {', '.join(UPLOADS)}, not {self.upload!r}"
            )
        if self.mode == "remote" and not self.remote:
            raise daemon_config.ConfigError(
                'mode = remote needs a host: [daemon] remote = "HOST", or --remote HOST'
            )
        if self.ray and self.ray not in ("local", "auto") and not self.ray.startswith("ray://"):
            raise daemon_config.ConfigError(
                f"ray must be local, auto or ray://HOST:PORT, not {self.ray!r}"
            )
        if self.remote:
            try:
                ssh.check_host(self.remote)
            except ssh.BadHost as exc:
                raise daemon_config.ConfigError(f"remote: {exc}") from None

    def order(self) -> tuple[str, ...]:
        """The modes to try, in order (``auto``: remote only when a host is configured)."""
        if self.ray:
            return ("ray",)
        if self.mode != "auto":
            return (self.mode,)
        return ("remote", "local", "inline") if self.remote else ("local", "inline")

    def describe(self, mode: str) -> str:
        """A mode as messages name it."""
        if mode == "remote":
            return f"the photodupd on {self.remote} (remote)"
        if mode == "local":
            return "the local photodupd"
        if mode == "inline":
            return "the model inside this scan (inline)"
        if mode == "ray":
            return f"the Ray cluster ({self.ray})"
        return "no model"


def load_placement(
    config_file: Path | None = None,
    *,
    mode: str | None = None,
    remote: str | None = None,
    ray: str | None = None,
) -> Placement:
    """The ``[daemon]`` table's choice, overridden by ``--mode``, ``--remote`` (which
    implies ``mode = remote`` unless ``--mode`` says otherwise) and ``--ray``.  Raises
    ConfigError."""
    cfg = daemon_config.load(config_file)
    placement = Placement(
        mode=cfg.mode if cfg.mode != "remote" or cfg.remote else "auto",
        remote=cfg.remote,
        ssh_command=cfg.ssh_command,
        remote_command=cfg.remote_command,
        upload=cfg.upload,
        config_file=config_file,
        ray=ray if ray is not None else cfg.ray,
    )
    if cfg.mode == "remote" and not cfg.remote and not remote:
        raise daemon_config.ConfigError('[daemon] mode = remote needs remote = "HOST"')
    if remote:
        placement = replace(placement, remote=remote, mode=mode or "remote")
    elif mode:
        placement = replace(placement, mode=mode)
    return placement


def open_remote(
    placement: Placement, report: Report, cancel: threading.Event
) -> LinkedFeatureSource:
    """The photodupd on ``placement.remote``, over ssh, its model ready."""
    endpoint = ssh.ssh_endpoint(placement.remote, placement.ssh_command, placement.remote_command)
    report(f"connecting to photodupd on {placement.remote} over ssh")
    return LinkedFeatureSource(
        endpoint, upload=placement.upload, mode="remote", report=report, cancel=cancel
    )


def open_inline(
    placement: Placement, model: str, report: Report, cancel: threading.Event
) -> LinkedFeatureSource:
    """A private photodupd child for this scan, its model ready."""
    report("starting the model inside this scan (inline)")
    endpoint = inline_endpoint(model, placement.config_file)
    return LinkedFeatureSource(endpoint, upload="path", mode="inline", report=report, cancel=cancel)


def open_ray(
    placement: Placement, model: str, report: Report, cancel: threading.Event
) -> FeatureSource:
    """The Ray cluster at ``placement.ray``, the model loaded there (``ray`` is imported
    here, on this path only).  The [daemon] table's decoder caps and weight storage apply."""
    from photodup_tui.engine.ray_features import RayFeatureSource, RaySettings

    cfg = daemon_config.load(placement.config_file)
    settings = RaySettings(
        placement.ray,
        model=model if model != "auto" else cfg.model,
        clip_weights=cfg.clip_weights,
        weights=str(cfg.weights) if cfg.weights else None,
        model_config=str(cfg.model_config) if cfg.model_config else None,
        decode_timeout=cfg.decode_timeout,
        decode_memory_mb=cfg.decode_memory_mb,
    )
    return RayFeatureSource(settings, report=report, cancel=cancel)
