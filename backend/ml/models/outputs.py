"""Reading a classifier's forward output, whatever shape its family returns it in."""

from __future__ import annotations

import torch


def model_logits(output) -> torch.Tensor:
    """Logits from whatever a classifier's forward returns (ModelOutput, dict, tuple or tensor).

    >>> model_logits((torch.zeros(1, 2),)).shape
    torch.Size([1, 2])
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        return output["logits"]
    if hasattr(output, "logits"):
        return output.logits
    return output[0]
