"""`gramcast-train` subcommands of the detail stage(s) (filled in by that stage's work)."""
from __future__ import annotations


def register(sub) -> None:
    """Add this module's subcommands to the `gramcast-train` subparsers ``sub``."""
