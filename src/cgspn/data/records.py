"""A sample reference: an image location and an optional caption."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Record"]


class Record(NamedTuple):
    """path: image file; text: caption or None."""

    path: str
    text: str | None
