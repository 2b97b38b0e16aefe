"""Mixed precision and the other per-device speed switches, resolved once per run.

Each switch trades something, and the resolved choice is printed at the start of a run and
recorded in results.json, so nothing changes results silently:

- ``mixed_precision``: matrix products in bf16 (8 bits of mantissa) or fp16 under autocast,
  weights and optimiser state stay fp32. ``auto`` picks bf16 where the hardware computes it
  natively (CUDA GPUs since Ampere; CPUs with AVX512-BF16 or AMX), else full precision.
- ``tf32``: CUDA matrix products in TF32 (10 bits of mantissa); no effect elsewhere.
- ``attention``: which attention kernel trains; the same math with different rounding.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

from ..errors import UserError
from ..models.hardware import cpu_has_native_bf16

logger = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """The resolved mixed-precision mode of a run on one device."""

    mode: str
    """no, bf16 or fp16."""
    device_type: str
    reason: str

    @property
    def dtype(self) -> torch.dtype | None:
        return DTYPES.get(self.mode)

    @property
    def needs_grad_scaler(self) -> bool:
        # fp16 has too few exponent bits for small gradients; bf16 has fp32's range.
        return self.mode == "fp16" and self.device_type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward pass runs under this."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """What ``training.mixed_precision`` means on ``device``.

    >>> resolve_precision("no", torch.device("cpu")).mode
    'no'
    """
    kind = device.type
    if requested == "no":
        return Precision("no", kind, "mixed_precision: no")
    if requested == "auto":
        if kind == "cuda" and torch.cuda.is_bf16_supported():
            return Precision("bf16", kind, "auto: this GPU computes bf16 natively")
        if kind == "cpu" and cpu_has_native_bf16():
            return Precision("bf16", kind, "auto: this CPU has AVX512-BF16/AMX")
        return Precision("no", kind, f"auto: no native bf16 on this {kind.upper()}")
    if requested == "fp16" and kind == "cpu":
        raise UserError("training.mixed_precision: fp16 autocast needs a GPU; on a CPU use bf16 "
                        "(or auto, which picks bf16 where the CPU supports it)")
    if requested == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("training.mixed_precision: this GPU has no bf16 support (it needs "
                        "compute capability 8.0+); use fp16 or auto")
    if requested == "bf16" and kind == "cpu" and not cpu_has_native_bf16():
        logger.warning("training.mixed_precision is bf16 but this CPU has no native bf16 "
                       "(AVX512-BF16/AMX): torch emulates it, which is usually slower than "
                       "full precision. Use 'auto' to pick the fast mode for each machine.")
        return Precision("bf16", kind, "bf16 requested; emulated on this CPU")
    return Precision(requested, kind, f"{requested} requested")


def resolve_attention(requested: str, device: torch.device) -> str:
    """``model.attention`` on ``device``: auto is sdpa on GPUs and eager on CPUs, where PyTorch's
    CPU attention kernel trained MiniLM 5-10% slower in bf16 (benchmarks/bench_training.py)."""
    if requested != "auto":
        return requested
    return "eager" if device.type == "cpu" else "sdpa"


def enable_tf32(enabled: bool, device: torch.device) -> None:
    """TF32 matrix products on CUDA (about 8x an fp32 product on Ampere+, 10-bit mantissa)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled
