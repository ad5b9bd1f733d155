"""User-facing errors: one line that names the file and the fix."""

from __future__ import annotations

__all__ = ["WsiHccError", "SlideError", "MppError", "OutputError", "ConfigError"]


class WsiHccError(Exception):
    """Base class for errors the command line reports as a single line, without a traceback."""


class SlideError(WsiHccError):
    """A slide cannot be opened or read."""


class MppError(SlideError):
    """A slide's microns-per-pixel is missing or implausible."""


class OutputError(WsiHccError):
    """An output location cannot be written."""


class ConfigError(WsiHccError):
    """A configuration file or option is invalid."""
