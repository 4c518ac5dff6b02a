"""The one device resolver: names -> torch.device, clear errors, Lightning's view of it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from l2i.device import lightning_devices, resolve_device
from l2i.errors import ConfigError

SRC = Path(__file__).resolve().parents[1] / "src" / "l2i"


def test_names_resolve_to_torch_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    given = torch.device("cpu")
    assert resolve_device(given) is given
    auto = resolve_device("auto")
    assert isinstance(auto, torch.device) and auto.type in ("cpu", "cuda", "mps")
    assert resolve_device(None) == auto
    assert resolve_device("") == auto


def test_unknown_or_absent_devices_are_config_errors():
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        for name in ("cuda", "cuda:1"):
            with pytest.raises(ConfigError, match="CUDA is not available"):
                resolve_device(name)
    else:
        assert resolve_device("cuda:0") == torch.device("cuda:0")
        with pytest.raises(ConfigError, match="GPU index"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_lightning_view():
    assert lightning_devices(torch.device("cpu")) == ("cpu", 1)
    assert lightning_devices(torch.device("cuda")) == ("gpu", 1)
    assert lightning_devices(torch.device("cuda:1")) == ("gpu", [1])
    assert lightning_devices(torch.device("mps")) == ("mps", 1)


def test_no_other_module_resolves_device_names():
    """``torch.cuda.is_available()`` decides a device only in l2i/device.py."""
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "device.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and "device" in node.name.lower() and any(
                    isinstance(n, ast.Attribute) and n.attr == "is_available"
                    for n in ast.walk(node)):
                offenders.append(f"{path.relative_to(SRC)}:{node.name}")
    assert offenders == []
