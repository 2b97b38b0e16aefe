"""What this machine's CPU computes natively, asked of torch rather than assumed.

Training's ``mixed_precision: auto`` and inference's default precision both ask here, so the
two never disagree about a machine.
"""

from __future__ import annotations

import functools


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True where oneDNN runs bf16 matrix products in hardware (AVX512-BF16 or AMX).

    torch has no public query for this; the mkldnn op is the check torch's own tests use, and the
    only one that answers for the kernels autocast will actually run.
    """
    import torch

    if not torch.backends.mkldnn.is_available():
        return False
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
