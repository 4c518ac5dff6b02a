"""psi: hidden maps -> H (B, K, T) >= 0 for any T; the cacheable frequency pooling."""

from __future__ import annotations

import pytest
import torch

from l2i.config import PsiConfig
from l2i.models.psi import Psi, reduce_maps

CHANNELS = {"block3": 8, "block4": 16}


def _maps(batch: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"block3": torch.randn(batch, 8, 13, 5, generator=g),
            "block4": torch.randn(batch, 16, 7, 3, generator=g)}


@pytest.mark.parametrize("T", [50, 431, 1000])
def test_any_number_of_frames_gives_nonnegative_H(T):
    psi = Psi(CHANNELS, 20, PsiConfig(hidden=32, n_layers=2))
    H = psi(_maps(), T)
    assert H.shape == (2, 20, T)
    assert bool((H >= 0).all())
    assert H.abs().sum() > 0  # not a dead output


def test_softplus_output_is_strictly_positive():
    psi = Psi(CHANNELS, 5, PsiConfig(hidden=16, n_layers=1, activation="softplus"))
    assert bool((psi(_maps(), 40) > 0).all())


def test_reduce_is_mean_and_max_over_frequency():
    m = torch.tensor([[[[1.0, 2.0, 6.0], [0.0, -3.0, 0.0]]]])  # (B=1, C=1, T=2, F=3)
    r = reduce_maps({"a": m})["a"]
    assert r.shape == (1, 2, 2)
    assert torch.allclose(r[0, 0], torch.tensor([3.0, -1.0]))  # means
    assert torch.allclose(r[0, 1], torch.tensor([6.0, 0.0]))  # maxima


def test_reduce_accepts_3d_maps_and_keeps_the_configured_ones():
    psi = Psi({"a": 4, "b": 3}, 6, PsiConfig(maps=["b"], hidden=8, n_layers=1))
    maps = {"a": torch.rand(2, 4, 9, 2), "b": torch.rand(2, 3, 9)}
    red = psi.reduce(maps)
    assert list(red) == ["b"] and red["b"].shape == (2, 6, 9)
    assert psi(maps, 30).shape == (2, 6, 30)


def test_forward_equals_forward_reduced_of_reduce():
    psi = Psi(CHANNELS, 10, PsiConfig(hidden=16, n_layers=2)).eval()
    maps = _maps()
    assert torch.allclose(psi(maps, 77), psi.forward_reduced(psi.reduce(maps), 77))


def test_unknown_map_and_even_kernel_are_rejected():
    with pytest.raises(ValueError, match="block9"):
        Psi(CHANNELS, 10, PsiConfig(maps=["block9"]))
    with pytest.raises(ValueError, match="odd"):
        Psi(CHANNELS, 10, PsiConfig(kernel_size=4))


def test_default_psi_is_small():
    psi = Psi({"block3": 64, "block4": 128}, 100, PsiConfig())
    assert sum(p.numel() for p in psi.parameters()) < 1_000_000


def test_gradients_reach_every_parameter():
    psi = Psi(CHANNELS, 10, PsiConfig(hidden=16, n_layers=2))
    psi(_maps(), 25).sum().backward()
    assert all(p.grad is not None for p in psi.parameters())


@pytest.mark.parametrize("T", [50, 431])
def test_maps_time_resolution_gives_the_same_shapes(T):
    psi = Psi(CHANNELS, 7, PsiConfig(hidden=16, n_layers=2, time_resolution="maps"))
    H = psi(_maps(), T)
    assert H.shape == (2, 7, T) and bool((H >= 0).all())


def test_flatten_keeps_frequency_bins_as_channels():
    maps = _maps()
    red = reduce_maps(maps, ["block3"], mode="flatten")["block3"]
    assert red.shape == (2, 8 * 5, 13)
    # channel c * F + f at frame t is bin f of channel c at frame t
    assert torch.equal(red[:, 3 * 5 + 4, 6], maps["block3"][:, 3, 6, 4])


def test_flatten_psi_any_T_and_needs_map_bins():
    cfg = PsiConfig(hidden=16, n_layers=1, freq_reduce="flatten")
    psi = Psi(CHANNELS, 6, cfg, map_bins={"block3": 5, "block4": 3})
    assert psi.proj["block3"].in_channels == 40 and psi.proj["block4"].in_channels == 48
    for T in (20, 431):
        H = psi(_maps(), T)
        assert H.shape == (2, 6, T) and bool((H >= 0).all())
    with pytest.raises(ValueError, match="frequency bins"):
        Psi(CHANNELS, 6, cfg)


def test_probe_map_bins_reads_the_classifier_maps():
    from l2i.models.psi import probe_map_bins

    class Toy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(1, 1)

        def forward(self, mag):  # (B, T, F)
            x = mag[:, None]  # (B, 1, T, F)
            return mag.mean((1, 2))[:, None], {
                "a": torch.nn.functional.avg_pool2d(x, 2), "b": x[..., :7]}

    assert probe_map_bins(Toy(), 40) == {"a": 20, "b": 7}


def test_psi_takes_a_typed_config():
    from types import SimpleNamespace

    with pytest.raises(TypeError, match="PsiConfig"):
        Psi(CHANNELS, 4, SimpleNamespace(maps=[], hidden=8, n_layers=1, kernel_size=3,
                                         dropout=0.0))


def test_input_map_reads_the_log_magnitude_at_the_frame_rate():
    """With input_map, H depends on the input's log1p|X| (through a 1x1 projection of its bins)
    as well as on the maps; a missing or mis-shaped input is refused."""
    torch.manual_seed(0)
    psi = Psi(CHANNELS, 6, PsiConfig(hidden=16, n_layers=1, input_map=True), n_freq=9).eval()
    maps, T = _maps(), 40
    a, b = torch.rand(2, T, 9), torch.rand(2, T, 9)
    Ha, Hb = psi(maps, T, a), psi(maps, T, b)
    assert Ha.shape == (2, 6, T) and bool((Ha >= 0).all())
    assert not torch.allclose(Ha, Hb)  # the input matters
    # the input term is the 1x1 projection of the bins, added before the blocks
    with torch.no_grad():
        psi.input_proj.weight.zero_()
        psi.input_proj.bias.zero_()
    plain = Psi(CHANNELS, 6, PsiConfig(hidden=16, n_layers=1)).eval()
    plain.load_state_dict({k: v for k, v in psi.state_dict().items()
                           if not k.startswith("input_proj")})
    assert torch.allclose(psi(maps, T, a), plain(maps, T))
    with pytest.raises(ValueError, match="log1p magnitude"):
        psi(maps, T)
    with pytest.raises(ValueError, match="log1p magnitude"):
        psi(maps, T, torch.rand(2, T + 1, 9))
    with pytest.raises(ValueError, match="n_freq"):
        Psi(CHANNELS, 6, PsiConfig(input_map=True))
    # at the maps' frame rate the input term is brought to it like the maps
    slow = Psi(CHANNELS, 6, PsiConfig(hidden=16, n_layers=1, input_map=True,
                                      time_resolution="maps"), n_freq=9)
    assert slow(maps, T, a).shape == (2, 6, T)
