"""Mixed precision: which one a run trains in, its autocast context and its gradient scaler.

On CUDA with ``train.amp``: bf16 autocast where the GPU supports it (same range as fp32, no loss
scaling needed); fp16 autocast with dynamic loss scaling (``torch.amp.GradScaler``) on older GPUs,
because fp16's narrow range underflows small gradients to zero without it. fp32 everywhere else.
"""

from __future__ import annotations

from typing import Literal

import torch

Precision = Literal["bf16", "fp16", "fp32"]
PRECISIONS: tuple[str, ...] = ("bf16", "fp16", "fp32")


def choose_precision(device_type: str, amp: bool, bf16_supported: bool) -> Precision:
    """The training precision for a device type, the ``train.amp`` flag and the GPU's bf16 support."""
    if not amp or device_type != "cuda":
        return "fp32"
    return "bf16" if bf16_supported else "fp16"


def resolve_precision(device: torch.device, amp: bool, forced: str = "auto") -> Precision:
    """``forced`` (an internal option: tests run the fp16 path on CPU) or the choice for ``device``."""
    if forced != "auto":
        if forced not in PRECISIONS:
            raise ValueError(f"precision must be 'auto' or one of {PRECISIONS}, got {forced!r}")
        return forced  # type: ignore[return-value]
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return choose_precision(device.type, amp, bf16)


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context of ``precision`` (disabled for fp32)."""
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=precision != "fp32")


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Dynamic loss scaling for fp16; for bf16 and fp32 a disabled scaler that passes everything through."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
