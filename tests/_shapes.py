"""Models built on the meta device: open_clip's modules with their shapes and no weights, for
tests that read an architecture and never run it. Building a ViT-L-14 on the processor spends
seconds drawing its random weights; on the meta device it takes hundredths. The meta device is
set for this thread only (PyTorch keeps a thread's device context to itself), so work in other
threads still builds real tensors."""

from __future__ import annotations

import logging
from typing import Any

import open_clip
import torch


def meta_model(name: str, **kwargs: Any) -> torch.nn.Module:
    """``open_clip.create_model(name, **kwargs)`` on the meta device (no weights; open_clip's
    notice that none were loaded is silenced)."""
    logging.disable(logging.WARNING)
    try:
        with torch.device("meta"):
            return open_clip.create_model(name, device="meta", **kwargs)
    finally:
        logging.disable(logging.NOTSET)
