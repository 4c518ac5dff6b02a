"""The one device resolver: a device name from a config or the CLI -> a ``torch.device``.

Every command and loader calls :func:`resolve_device` (``trainer.device``, ``nmf.device``,
``evaluate``'s ``device``, ``Explainer.load(device=...)``, ``load_interpreter``);
:func:`lightning_devices` turns its result into Lightning's ``(accelerator, devices)`` for
:func:`l2i.training.common.build_trainer`. Imports torch and :mod:`l2i.errors` only.
"""

from __future__ import annotations

import torch

from l2i.errors import ConfigError

NAMES = "auto, cpu, cuda, cuda:N or mps"
HINT = "set the device option (e.g. --trainer.device, --device) to cpu or auto"


def mps_available() -> bool:
    """Whether this torch build has a usable Apple MPS device."""
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto | cpu | cuda | cuda:N | mps`` (or a ``torch.device``) -> a ``torch.device``.

    ``auto`` (or None / empty) picks CUDA, then MPS, then CPU; ``cuda`` is the current GPU,
    ``cuda:N`` exactly GPU ``N``. A ``torch.device`` is returned as given. Raises
    ConfigError naming the value for an unknown name or a device this machine lacks.
    """
    if isinstance(name, torch.device):
        return name
    text = (name or "auto").strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not mps_available():
            raise ConfigError("device is 'mps' but MPS is not available on this machine; "
                              + HINT)
        return torch.device("mps")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device is {text!r} but CUDA is not available here; "
                              + HINT)
        if text == "cuda":
            return torch.device("cuda")
        idx_text = text.split(":", 1)[1]
        if not idx_text.isdigit() or int(idx_text) >= torch.cuda.device_count():
            raise ConfigError(f"device {text!r}: GPU index must be 0.."
                              f"{torch.cuda.device_count() - 1}")
        return torch.device(f"cuda:{int(idx_text)}")
    raise ConfigError(f"unknown device {name!r} (not a valid torch device): use {NAMES}")


def lightning_devices(device: torch.device) -> tuple[str, int | list[int]]:
    """A resolved device -> Lightning's ``(accelerator, devices)``.

    ``cuda`` -> ``("gpu", 1)``, ``cuda:N`` -> ``("gpu", [N])``, ``cpu``/``mps`` -> ``(type, 1)``.
    """
    if device.type == "cuda":
        return ("gpu", [device.index]) if device.index is not None else ("gpu", 1)
    return device.type, 1


__all__ = ["NAMES", "lightning_devices", "mps_available", "resolve_device"]
