"""Where the work runs and in which precision: one decision for training, validation and separation.

    device = pick_device("auto")                 # CUDA when present, else the CPU
    dtype = autocast_dtype(device, "auto")       # bfloat16 / float16 / None (float32)
    with autocast(device, dtype):
        mask = model(mix)
    with large_buffers_reused():                 # a song's spectra: heap memory, not fresh pages
        separate_songs()
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections.abc import Iterator

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


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters: when free memory goes back to
GLIBC_DEFAULT = 128 * 1024  # the kernel, and the size from which malloc maps fresh pages (defaults: both this)


@contextlib.contextmanager
def large_buffers_reused(threshold: int = 2**30) -> Iterator[None]:
    """Within the block, glibc serves allocations up to `threshold` bytes from its heap and keeps
    what is freed for the next ones, instead of mapping fresh pages for each allocation above
    128 KiB to 32 MiB: separation's temporaries (a chunk's spectra, tens of MB each) are otherwise
    zero-filled by the kernel page by page on every chunk (3-minute song, AMX Xeon: 2.92 -> 2.34 s
    with both thresholds). On exit glibc's default thresholds are back and the kept memory is
    returned (malloc_trim). Elsewhere than glibc (macOS, Windows, musl) nothing changes."""
    libc = glibc()
    if libc is None or not libc.mallopt(M_MMAP_THRESHOLD, threshold):
        yield
        return
    libc.mallopt(M_TRIM_THRESHOLD, 2 * threshold)
    try:
        yield
    finally:
        libc.mallopt(M_MMAP_THRESHOLD, GLIBC_DEFAULT)
        libc.mallopt(M_TRIM_THRESHOLD, GLIBC_DEFAULT)
        libc.malloc_trim(0)


def glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (the one with mallopt), else None."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "gnu_get_libc_version") else None
