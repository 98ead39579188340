"""User-facing errors: each names the problem and the fix, so a failed run tells the user what to do."""

from __future__ import annotations


class CalmError(Exception):
    """Base class for errors caused by the user's input or setup rather than a bug."""

    def __init__(self, problem: str, fix: str) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}\n  How to fix: {fix}")


class ConfigError(CalmError):
    """A setting is missing, unknown or inconsistent."""


class DataError(CalmError):
    """A dataset folder, metadata file or clip is missing or unreadable."""


class AssetError(CalmError):
    """Model weights or bundled assets cannot be found."""


class CacheError(CalmError):
    """An activation cache is inconsistent with the settings it is opened with."""


class ProtocolError(CalmError):
    """The evaluation protocol cannot be satisfied by the dataset (e.g. too few clips)."""
