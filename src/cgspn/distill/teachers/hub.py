"""Network policy for model loading: offline unless the user explicitly allows the network."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

__all__ = ["network_policy"]

_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


@contextlib.contextmanager
def network_policy(allow_network: bool) -> Iterator[None]:
    """Inside the block, Hugging Face hub clients only read their local cache unless ``allow_network``.

    Files already in the HF cache still load; anything that would download raises, and the
    caller turns that into a one-line error naming ``teacher.allow_network``.
    """
    if allow_network:
        yield
        return
    saved = {k: os.environ.get(k) for k in _OFFLINE_VARS}
    for k in _OFFLINE_VARS:
        os.environ[k] = "1"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
