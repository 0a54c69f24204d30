"""photodupd: the per-user image-model daemon of photodup, and the torch-free base that the
app shares with it (protocol, client, paths, config, the image decoder)."""

__version__ = "0.1.0"
