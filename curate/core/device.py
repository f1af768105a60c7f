"""Devices and dtypes: ``auto`` and named choices, checked before any heavy work. Part of the
ground layer: torch is imported inside the functions (never transformers), so importing this
module is free and the vision side can use it."""
from __future__ import annotations

from typing import TYPE_CHECKING

from curate.core.errors import BadInputError

if TYPE_CHECKING:
    import torch

# dtype names the flags accept -> torch attribute names
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


def check_device(device: str, flag: str = "--device") -> None:
    """Fail fast on a device name torch does not know, or CUDA asked for where there is none."""
    if device == "auto":
        return
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError as err:
        raise BadInputError(f"{flag} {device}: unknown device (expected auto, cpu, cuda, cuda:N, mps, ...)") from err
    if kind == "cuda" and not torch.cuda.is_available():
        raise BadInputError(f"{flag} {device}: no CUDA device is available")


def resolve_device(device: "str | torch.device" = "auto") -> "torch.device":
    """``auto`` picks CUDA when present, else CPU."""
    import torch

    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise BadInputError(f"unknown device '{device}': {err}") from err


def resolve_dtype(dtype: str | torch.dtype = "auto", device: torch.device | None = None) -> torch.dtype:
    """``auto`` is bf16 on a GPU that supports it, fp32 elsewhere (CPU half precision is slow)."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        device = device or resolve_device()
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in DTYPES:
        raise BadInputError(f"unknown dtype '{dtype}'; choose one of auto, {', '.join(DTYPES)}")
    return getattr(torch, DTYPES[dtype])
