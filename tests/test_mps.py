"""No float64 on MPS (it has none): metrics and NMF keep float64 off tensors that may live there.

There is no MPS device here, so MPS is simulated: ``FakeMPS`` is a CPU tensor that reports
``device.type == "mps"`` and, like MPS, refuses to produce float64; for NMF, whose solvers
allocate on the device they are given, the CPU is declared a no-float64 device
(``l2i.nmf.NO_FLOAT64_DEVICES``) and every op is checked for a float64 result.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from l2i import metrics as M
from l2i import nmf
from l2i.config import FeaturesConfig, NMFConfig


def _is_f64(o) -> bool:
    return isinstance(o, torch.Tensor) and o.dtype == torch.float64


class FakeMPS(torch.Tensor):
    """A CPU tensor that says it lives on MPS and, like MPS, refuses float64."""

    @property
    def device(self):  # noqa: D102
        return torch.device("mps")

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # noqa: D105
        if func is torch.Tensor.cpu:
            return args[0].as_subclass(torch.Tensor)
        out = super().__torch_function__(func, types, args, kwargs or {})
        if _is_f64(out) or (isinstance(out, (tuple, list)) and any(map(_is_f64, out))):
            raise TypeError(f"MPS framework doesn't support float64 ({func.__name__})")
        return out


def mps(x) -> FakeMPS:
    return torch.as_tensor(x).as_subclass(FakeMPS)


class NoFloat64(TorchDispatchMode):
    """Fails on any op that returns a float64 tensor."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: D105
        out = func(*args, **(kwargs or {}))
        if _is_f64(out) or (isinstance(out, (tuple, list)) and any(map(_is_f64, out))):
            raise AssertionError(f"float64 tensor from {func} on a no-float64 device")
        return out


def test_fake_mps_refuses_float64():
    with pytest.raises(TypeError, match="float64"):
        mps(torch.ones(3)).double()


def test_metrics_on_mps_tensors_match_the_cpu():
    g = torch.Generator().manual_seed(0)
    p, o = torch.rand(6, generator=g), torch.rand(6, generator=g)
    logits, pred = torch.randn(6, 4, generator=g), torch.randint(0, 4, (6,), generator=g)
    assert M.average_drop(mps(p), mps(o)) == pytest.approx(M.average_drop(p, o))
    assert M.average_increase(mps(p), mps(o)) == pytest.approx(M.average_increase(p, o))
    assert M.faithfulness_ff(mps(p), mps(o)) == pytest.approx(M.faithfulness_ff(p, o))
    assert M.fidelity_topk(mps(logits), mps(pred), 2) == pytest.approx(
        M.fidelity_topk(logits, pred, 2))
    assert M.input_fidelity(mps(logits), mps(logits.flip(0))) == pytest.approx(
        M.input_fidelity(logits, logits.flip(0)))


@pytest.mark.parametrize("solver,extrapolate,batch_frames", [
    ("hals", True, None), ("hals", False, None), ("mu", False, None), ("hals", False, 64)])
def test_nmf_makes_no_float64_on_a_no_float64_device(monkeypatch, solver, extrapolate,
                                                     batch_frames):
    monkeypatch.setattr(nmf, "NO_FLOAT64_DEVICES", ("cpu",))  # the CPU plays MPS
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(200, 3, generator=g) @ torch.rand(3, 12, generator=g)  # (N, F)
    cfg = NMFConfig(n_components=3, n_iter=5, solver=solver, extrapolate=extrapolate,
                    batch_frames=batch_frames, device="cpu")
    with NoFloat64():
        res = nmf.fit_nmf(frames, cfg, progress=False)
        rel = nmf.relative_error(frames, res.W, n_iter=5, device="cpu")
    assert res.W.dtype == torch.float32 and 0 <= rel < 1


def test_nmf_uses_float64_where_the_device_has_it():
    frames = torch.rand(50, 8)
    assert nmf._exact(frames) == torch.float64  # exact sums on CPU / CUDA, as before


def test_atom_centroids_of_an_mps_dictionary():
    from l2i.training.nmf import spectral_centroids

    W = torch.rand(129, 4)
    feats = FeaturesConfig(sample_rate=8000, n_fft=256)
    np.testing.assert_allclose(spectral_centroids(mps(W), feats), spectral_centroids(W, feats))
