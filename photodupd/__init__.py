"""photodupd: the per-user image-model daemon of photodup."""

__version__ = "0.1.0"
