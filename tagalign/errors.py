"""Errors shared by several packages (no project imports: every layer may raise them)."""

from __future__ import annotations

__all__ = ["MissingDatasetError"]


class MissingDatasetError(FileNotFoundError):
    """A benchmark's files are not where they were expected."""
