"""Where the work runs and in which precision: one decision for training, validation and separation.

    device = pick_device("auto")                 # CUDA when present, else the CPU
    dtype = autocast_dtype(device, "auto")       # bfloat16 / float16 / None (float32)
    with autocast(device, dtype):
        mask = model(mix)
"""

from __future__ import annotations

import contextlib

import torch

from config import InputError


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' (CUDA when available), 'cpu' or 'cuda'; InputError for anything else or a missing GPU."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA device is available")
        return torch.device("cuda", local_rank)
    if name not in ("auto", "cpu"):
        raise InputError(f"unknown device '{name}' (expected auto, cpu or cuda)")
    return torch.device("cpu")


def native_bfloat16(device: torch.device) -> bool:
    """Whether the device computes bfloat16 natively (CUDA, or a CPU with AVX512-BF16 / AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


PRECISIONS = ("auto", "float32", "bfloat16")


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The reduced precision the network runs in (None: float32).

    "auto": bfloat16 where the device computes it natively, else float16 on CUDA, else float32.
    Measured on both CPU kinds we use (AMX Xeon and AVX512-BF16 EPYC): bfloat16 pays on each,
    for training steps and for separation alike. "float32": none. "bfloat16": bfloat16 even
    where the CPU emulates it (slower than float32 there; it checks bfloat16's numerics on any
    machine).
    """
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}' (expected {', '.join(PRECISIONS)})")
    if precision == "float32":
        return None
    if precision == "bfloat16" or native_bfloat16(device):
        return torch.bfloat16
    return torch.float16 if device.type == "cuda" else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """torch.autocast in `dtype`, or a no-op for None (float32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
