"""Devices and dtypes: ``auto`` and named choices, checked before any heavy work. Imports torch
only (no transformers), so the vision side can use it."""
from __future__ import annotations

import torch

from eval.errors import BadInputError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def check_device(device: str, flag: str = "--device") -> None:
    """Fail fast on a device name torch does not know, or CUDA asked for where there is none."""
    if device == "auto":
        return
    try:
        kind = torch.device(device).type
    except RuntimeError as err:
        raise BadInputError(f"{flag} {device}: unknown device (expected auto, cpu, cuda, cuda:N, mps, ...)") from err
    if kind == "cuda" and not torch.cuda.is_available():
        raise BadInputError(f"{flag} {device}: no CUDA device is available")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
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
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        device = device or resolve_device()
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in DTYPES:
        raise BadInputError(f"unknown dtype '{dtype}'; choose one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]
