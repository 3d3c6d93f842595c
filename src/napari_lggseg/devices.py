"""Choosing a torch device and the fastest safe numeric mode for it.

``auto`` picks CUDA, then Apple MPS, then CPU. On CPU, bf16 autocast is used only where the
processor has native bf16 (AVX512-BF16/AMX): elsewhere it is ~80x slower than fp32.
"""

from __future__ import annotations

import contextlib
import platform
import warnings
from pathlib import Path

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


class DeviceError(RuntimeError):
    """A device the user asked for is not there."""


def cpu_has_native_bf16() -> bool:
    try:
        return bool(torch.cpu._is_avx512_bf16_supported()) or bool(
            getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
        )
    except Exception:
        return False


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def available_devices() -> list[str]:
    out = ["cpu"]
    if torch.cuda.is_available():
        out.insert(0, "cuda")
    if mps_available():
        out.insert(0 if "cuda" not in out else 1, "mps")
    return out


def resolve_device(name: str | torch.device = "auto", fallback: bool = False) -> torch.device:
    """``auto``/``cpu``/``cuda[:N]``/``mps`` -> a torch.device that exists.

    An explicit device that is missing raises :class:`DeviceError`, or with ``fallback=True``
    warns and returns the CPU.
    """
    name = str(name).lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    ok = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": mps_available()}.get(kind)
    if ok is None:
        raise DeviceError(f"unknown device {name!r}: choose one of {', '.join(DEVICE_CHOICES)}")
    if not ok:
        msg = (
            f"device {name!r} is not available on this machine "
            f"(available: {', '.join(available_devices())})"
        )
        if kind == "cuda":
            msg += (
                f"; is a CUDA build of torch installed? (torch.version.cuda = {torch.version.cuda})"
            )
        if not fallback:
            raise DeviceError(msg)
        warnings.warn(msg + "; using the CPU instead", stacklevel=2)
        return torch.device("cpu")
    return torch.device(name)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The reduced precision worth using on ``device``, or None for plain fp32."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def autocast(device: torch.device, enabled: bool = True):
    dtype = autocast_dtype(device) if enabled else None
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def is_cancelled(cancel) -> bool:
    """A cancel flag: None, a threading.Event, or a callable returning True to stop."""
    if cancel is None:
        return False
    return cancel.is_set() if hasattr(cancel, "is_set") else bool(cancel())


def cpu_model() -> str:
    """The processor's name, for benchmark and report headers."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()
