"""Datasets as clip tables, audio decoding, prompts and downloads."""

from calm.data.table import Clip, ClipTable

__all__ = ["Clip", "ClipTable"]
