"""photodup: find, review and safely trash duplicate photos."""

__version__ = "0.1.0"
