"""The ``wsi-hcc`` command line: each command parses its options, calls the library and reports."""

from wsi_hcc.cli.app import main

__all__ = ["main"]
