"""photodup: find, review and safely trash duplicate photos."""

from photodupd import __version__

__all__ = ["__version__"]
