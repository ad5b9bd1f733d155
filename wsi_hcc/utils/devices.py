"""Which torch device a run uses: every command's ``--device`` means the same."""

from __future__ import annotations

from wsi_hcc.errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(device: str):
    """``auto`` picks CUDA when present; asking for CUDA without one is a one-line error."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device!r} is not a device; use auto, cpu or cuda") from None
