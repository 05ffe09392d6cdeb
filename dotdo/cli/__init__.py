"""The `dotdo` command line (see `dotdo.cli.app`)."""

from dotdo.cli.app import cli, main

__all__ = ["cli", "main"]
