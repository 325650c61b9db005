"""Device selection: every entry point takes ``device="auto"``."""
from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) picks CUDA when available, else MPS, else CPU; anything else is kept."""
    if device is None or (isinstance(device, str) and device == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def available_device(device: str | torch.device | None = "auto") -> torch.device:
    """``resolve_device``, refusing with a ``GramcastError`` (that says what to use instead) a name torch
    does not know or a CUDA device this machine does not have."""
    from gramcast.errors import GramcastError

    try:
        dev = resolve_device(device)
    except (RuntimeError, TypeError):    # torch's message lists every device type it has ever heard of
        raise GramcastError(f"{device!r} is not a device: use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise GramcastError(f"{device}: this machine has no such CUDA device; use auto or cpu")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise GramcastError(f"{device}: this machine has no Apple GPU (MPS) that torch can use; use auto or cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise GramcastError(f"{device}: gramcast runs on cpu, cuda or mps devices; use auto, cpu, cuda or mps")
    return dev


def device_option(value: str, option: str = "--device") -> torch.device:
    """``available_device`` for a command-line option: the refusal names the option, and comes before
    the command loads or writes anything."""
    from gramcast.errors import GramcastError

    try:
        return available_device(value)
    except GramcastError as exc:
        raise GramcastError(f"{option} {exc}") from None


def host_to_device(t: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """``t.to(device)`` that does not stop the host: a plain copy from pageable memory to a GPU waits for
    every kernel queued before it (torch synchronises the stream), so a training step that draws its
    random numbers on the CPU mid-step would drain the GPU's queue; from pinned memory the copy is queued
    like a kernel. Elsewhere (CPU, or a tensor already there) it is ``t.to(device)``."""
    device = torch.device(device)
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
