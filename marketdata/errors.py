"""Errors every layer may raise: below the config loader and the venue contracts, so that both
(and the runtime above them) import them without an import running back up."""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad configuration (or a missing secret): the start fails with a message saying what to fix."""
