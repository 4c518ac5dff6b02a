"""The mask options of L2I (l2i.config.MaskConfig, l2i.explain.explanation_mask): small cases
checked by hand, the paper's mask as the default, the checkpoint's settings and overrides."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from l2i.config import (
    EvaluateRecipe,
    InterpretRecipe,
    L2IRecipe,
    MaskConfig,
    MaskOverrides,
    load_config,
)
from l2i.errors import ConfigError
from l2i.explain import (
    Explainer,
    Explanation,
    checkpoint_mask_config,
    classifier_bands,
    explanation_mask,
    floor_gate,
    foreground,
    frame_relevance,
    peakiness,
    prune_mask,
    ratio_mask,
    relevance,
    relevance_weights,
    select_components,
    selected_of,
    sharpen_mask,
    weighted_mask,
)

# two bins, two components: bin 0 = h0 + h1, bin 1 = h1
W2 = torch.tensor([[1.0, 1.0], [0.0, 1.0]])  # (F, K)


def test_frame_relevance_hand_computed_and_attention_sums_to_clip_contribution():
    w = torch.tensor([[1.0, 2.0], [-1.0, 0.5]])  # (C, K)
    H = torch.tensor([[[1.0, 0.0], [0.0, 3.0]]])  # (1, K, T)
    r = frame_relevance(w, H, torch.tensor([0]))
    # contributions w_0k h_k(t): [[1, 0], [0, 6]], divided by their max 6
    assert torch.allclose(r, torch.tensor([[[1 / 6, 0.0], [0.0, 1.0]]]))
    att = torch.tensor([[[0.25, 0.75], [0.5, 0.5]]])  # sums to 1 over T
    ra = frame_relevance(w, H, torch.tensor([1]), attention=att)
    # class 1: [[-0.25, 0], [0, 0.75]] / 0.75; summed over t it is proportional to w_1k z_k
    assert torch.allclose(ra, torch.tensor([[[-1 / 3, 0.0], [0.0, 1.0]]]))
    z = (att * H).sum(-1)
    assert torch.allclose(ra.sum(-1) * 0.75, w[1] * z)
    assert not frame_relevance(w, torch.zeros(1, 2, 3), torch.tensor([0])).any()  # silent: 0


def test_foreground_and_peakiness_hand_computed():
    H = torch.tensor([[[1.0, 1.0, 5.0], [2.0, 2.0, 2.0], [0.0, 0.0, 0.0]]])  # (1, 3, 3)
    assert torch.equal(foreground(H), torch.tensor([[[0.0, 0.0, 4.0], [0.0] * 3, [0.0] * 3]]))
    # 1 - mean/max: (1 - (7/3)/5, 1 - 1, 0 for a component never active)
    assert torch.allclose(peakiness(H), torch.tensor([[1 - 7 / 15, 0.0, 0.0]]))


def test_relevance_weights_threshold_soft_and_power():
    r = torch.tensor([[1.0, 0.5, 0.1, -0.4]])
    assert torch.equal(relevance_weights(r, "threshold", relevance_th=0.2),
                       torch.tensor([[1.0, 1.0, 0.0, 0.0]]))
    assert torch.equal(relevance_weights(r, "threshold", top_k=1), torch.tensor([[1.0, 0, 0, 0]]))
    assert torch.allclose(relevance_weights(r, "soft"), torch.tensor([[1.0, 0.5, 0.1, 0.0]]))
    assert torch.allclose(relevance_weights(r, "soft", power=2.0),
                          torch.tensor([[1.0, 0.25, 0.01, 0.0]]))
    # per frame: the same rule on (B, K, T); top_k picks per frame
    r3 = torch.tensor([[[0.9, 0.1], [0.3, 0.8]]])  # (1, K=2, T=2)
    assert torch.equal(select_components(r3, top_k=1), torch.tensor([[[True, False],
                                                                      [False, True]]]))


def test_weighted_mask_model_and_input_denominators():
    H = torch.tensor([[[2.0], [1.0]]])  # (1, K, T=1): W H = [3, 1]
    w = torch.tensor([[1.0, 0.0]])
    m = weighted_mask(W2, H, w)
    assert torch.allclose(m, torch.tensor([[[2 / 3, 0.0]]]))
    assert torch.equal(m, ratio_mask(W2, H, w))  # (B, K) weights: the paper's ratio mask itself
    # per-frame weights (B, K, T) give the same where they are constant over time
    assert torch.allclose(weighted_mask(W2, H, w[:, :, None]), m)
    # input: divided by log1p|X| (what W H models), clamped to [0, 1]
    mag = torch.tensor([[[math.e ** 4 - 1, math.e - 1]]])  # log1p = [4, 1]
    assert torch.allclose(weighted_mask(W2, H, w, "input", mag), torch.tensor([[[0.5, 0.0]]]))
    small = torch.tensor([[[math.e - 1, math.e - 1]]])  # log1p = [1, 1]: 2 / 1 clamps to 1
    assert torch.allclose(weighted_mask(W2, H, torch.tensor([[1.0, 1.0]]), "input", small),
                          torch.tensor([[[1.0, 1.0]]]))
    with pytest.raises(ValueError, match="needs mag"):
        weighted_mask(W2, H, w, "input")


def test_sharpen_and_binarize_relative_to_the_clip_maximum():
    m = torch.tensor([[[0.8, 0.4], [0.2, 0.0]]])  # (1, T, F)
    assert torch.allclose(sharpen_mask(m, 2.0), m ** 2)
    assert torch.equal(sharpen_mask(m, binarize=0.5), torch.tensor([[[1.0, 1.0], [0.0, 0.0]]]))
    assert torch.equal(sharpen_mask(m, 2.0, binarize=0.5),  # 0.16 < 0.5 * 0.64
                       torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]))
    assert not sharpen_mask(torch.zeros(1, 2, 2), binarize=0.5).any()  # empty stays empty
    half = torch.tensor([[[0.4, 0.2], [0.1, 0.0]]])
    assert torch.allclose(sharpen_mask(half, rescale=True), torch.tensor([[[1.0, 0.5],
                                                                          [0.25, 0.0]]]))
    assert not sharpen_mask(torch.zeros(1, 2, 2), rescale=True).any()


def test_binarize_in_one_step_equals_rescale_power_then_threshold():
    """The one-step binarisation gives what the steps give: rescale by the clip's peak, the
    power, then a threshold relative to the new peak (three clips of different scales)."""
    g = torch.Generator().manual_seed(0)
    m = torch.rand(3, 40, 30, generator=g) * torch.tensor([1.0, 1e-3, 0.0])[:, None, None]
    for power in (1.0, 0.5, 2.0):
        for rescale in (False, True):
            steps = m / m.amax(dim=(1, 2), keepdim=True).clamp_min(1e-10) if rescale else m
            steps = steps ** power
            peak = steps.amax(dim=(1, 2), keepdim=True)
            ref = ((steps >= 0.25 * peak) & (peak > 0)).float()
            assert torch.equal(sharpen_mask(m, power, binarize=0.25, rescale=rescale), ref)
    assert not sharpen_mask(m, binarize=0.25)[2].any()  # the silent clip stays empty


def test_floor_gate_hand_computed():
    mag = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]).reshape(1, 5, 1)  # (B, T, F): one bin
    # the median over the frames is 2: |X| / (|X| + 2)
    g = floor_gate(mag, 0.5)
    assert g[0, :, 0].tolist() == pytest.approx([0.0, 1 / 3, 0.5, 0.6, 4 / 6], abs=1e-6)
    # the 0.25 quantile (linear interpolation) is 1; each frequency has its own floor
    two = torch.cat([mag, 10 * mag], dim=2)  # (1, 5, 2)
    g2 = floor_gate(two, 0.25)
    assert g2[0, :, 0].tolist() == pytest.approx([0.0, 0.5, 2 / 3, 0.75, 0.8], abs=1e-6)
    assert torch.allclose(g2[0, :, 1], g2[0, :, 0])  # scale-free: 10x louder, same gate
    with pytest.raises(ValueError, match="quantile"):
        floor_gate(mag, 1.0)


def test_floor_gate_multiplies_the_mask_last_and_needs_the_input():
    W, H, theta, z, t = _background_case()
    mag = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 4.0], [3.0, 0.0]]])  # (1, T, F)
    plain, _ = explanation_mask(W, H, theta, z, t, MaskConfig(rescale=True), relevance_th=0.2)
    gated, _ = explanation_mask(W, H, theta, z, t, MaskConfig(rescale=True, floor_gate=0.5),
                                relevance_th=0.2, mag=mag)
    assert torch.allclose(gated, plain * floor_gate(mag, 0.5))
    assert gated[0, 2, 1] == pytest.approx(plain[0, 2, 1].item() * 4 / 4)  # floor 0 there
    assert gated[0, 3, 0] == pytest.approx(plain[0, 3, 0].item() * 3 / 4)  # floor 1
    with pytest.raises(ValueError, match="floor_gate needs mag"):
        explanation_mask(W, H, theta, z, t, MaskConfig(floor_gate=0.5), relevance_th=0.2)


def test_prune_without_bands_drops_bins_the_log1p_input_hardly_registers():
    # every bin its own band: dropped when log1p(M |X|) <= tolerance, i.e. M |X| <= e^tol - 1
    mask = torch.tensor([[[1.0, 1.0, 0.5, 0.2]]])  # (B, T, F)
    mag = torch.tensor([[[0.05, 2.0, 0.2, 1.0]]])  # M |X| = 0.05, 2, 0.1, 0.2
    got = prune_mask(mask, mag, 0.1)  # e^0.1 - 1 = 0.105
    assert torch.equal(got, torch.tensor([[[0.0, 1.0, 0.0, 0.2]]]))
    assert torch.equal(prune_mask(mask, mag, 0.0), mask)  # 0 = off


def test_prune_drops_the_faintest_bins_of_each_band_within_its_budget():
    # bins 0-2 form band 0, bin 3 band 1; tolerance ln 1.1: a band may lose (1 + u)(1 - 1/1.1)
    bands = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # (F, n_bands)
    mask = torch.ones(1, 1, 4)
    mag = torch.tensor([[[0.2, 0.1, 5.0, 0.3]]])
    got = prune_mask(mask, mag, math.log(1.1), bands)
    # band 0: u = 5.3, budget 0.573: drops 0.1 and 0.2 (sum 0.3), not 5; band 1: budget
    # 1.3 * 0.0909 = 0.118 < 0.3, kept
    assert got.tolist() == [[[0.0, 0.0, 1.0, 1.0]]]
    moved = torch.log1p(mag @ bands) - torch.log1p((got * mag) @ bands)
    assert moved[0, 0, 0] == pytest.approx(math.log(6.3 / 6.0), abs=1e-6)


def test_prune_keeps_each_neighbouring_band_within_its_share():
    # bin 1 is half in band 0 (its own: the first of two equal weights) and half in band 1;
    # band 0's bins may take from band 1 a quarter of band 1's budget
    bands = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    mask = torch.ones(1, 1, 3)
    mag = torch.tensor([[[10.0, 1.0, 0.0]]])
    # band 0 (u = 10.5, fed by nobody else: its whole budget 1.09) could drop bin 1 (0.5), but
    # bin 1 feeds band 1, whose u = 0.5 allows 1.5 * (1 - e^-0.1) / 4 = 0.036
    got = prune_mask(mask, mag, 0.1, bands)
    assert torch.equal(got, torch.tensor([[[1.0, 1.0, 0.0]]]))  # bin 2: |X| = 0, dropped
    # without band 1 the same bin is dropped (and bin 2, with no weight, is invisible)
    assert torch.equal(prune_mask(mask, mag, 0.1, bands[:, :1]), torch.tensor([[[1.0, 0.0, 0.0]]]))


def test_prune_restores_a_band_fed_from_further_away():
    # bin 1 belongs to band 0 and also feeds band 2, two bands away: the shares do not see it
    bands = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.0, 0.4], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    mask = torch.ones(1, 1, 4)
    mag = torch.tensor([[[10.0, 0.5, 5.0, 0.0]]])
    # band 0 drops bin 1 (0.3 <= 11.6 (1 - e^-0.1) = 1.10); band 2 then loses all of its input
    # (log1p(0.2) = 0.18 > 0.1), so the second pass brings back every bin of band 2
    got = prune_mask(mask, mag, 0.1, bands)
    assert torch.equal(got, torch.ones(1, 1, 4))
    moved = torch.log1p(mag @ bands) - torch.log1p((got * mag) @ bands)
    assert moved.abs().max() <= 0.1


def test_prune_bounds_every_feature_change_on_random_spectrograms():
    from l2i import features as feats
    from l2i.config import FeaturesConfig

    fb = feats.mel_filterbank(FeaturesConfig(sample_rate=8000, n_fft=256, n_mels=32))
    gen = torch.Generator().manual_seed(0)
    mag = torch.rand(3, 20, 129, generator=gen) ** 4 * 30
    mask = torch.rand(3, 20, 129, generator=gen)
    dropped = []
    for tol in (0.02, 0.2, 1.0):
        got = prune_mask(mask, mag, tol, fb)
        dropped.append(float((got == 0).float().mean()))
        moved = torch.log1p((mask * mag) @ fb) - torch.log1p((got * mag) @ fb)  # (B, T, mels)
        assert moved.min() >= -1e-6 and moved.max() <= tol * (1 + 1e-4)
        assert torch.all((got == mask) | (got == 0))  # each bin kept as it was, or dropped
        assert (got == 0).float().mean() > (mask == 0).float().mean()  # it did drop some
    assert dropped[0] < dropped[1] < dropped[2]  # a larger tolerance drops more
    # a half-precision mask (mixed precision) is pruned like the float32 one, in its dtype
    half = prune_mask(mask.half(), mag, 0.2, fb)
    assert half.dtype == torch.float16
    assert torch.equal(half == 0, prune_mask(mask.half().float(), mag, 0.2, fb) == 0)
    with pytest.raises(ValueError, match="prune tolerance"):
        prune_mask(mask, mag, -0.1, fb)


def test_prune_is_applied_last_and_needs_the_input():
    W, H, theta, z, t = _background_case()
    mag = torch.tensor([[[1.0, 0.0], [1.0, 0.05], [1.0, 4.0], [3.0, 0.0]]])  # (1, T, F)
    cfg = MaskConfig(rescale=True, floor_gate=0.5)
    plain, _ = explanation_mask(W, H, theta, z, t, cfg, relevance_th=0.2, mag=mag)
    pruned, _ = explanation_mask(W, H, theta, z, t, MaskConfig(rescale=True, floor_gate=0.5,
                                                               prune=0.5),
                                 relevance_th=0.2, mag=mag)
    assert torch.equal(pruned, prune_mask(plain, mag, 0.5))  # M |X| <= e^0.5 - 1 = 0.65 -> 0
    assert (pruned == 0).sum() > (plain == 0).sum()
    with pytest.raises(ValueError, match="prune needs mag"):
        explanation_mask(W, H, theta, z, t, MaskConfig(prune=0.1), relevance_th=0.2)


def test_prune_uses_the_classifiers_own_filterbank():
    from conftest import random_interpreter

    from l2i import features as feats
    from l2i.config import FeaturesConfig

    fcfg = FeaturesConfig(sample_rate=8000, n_fft=256, n_mels=32)
    interp = random_interpreter(fcfg, ["dog", "rain", "siren"], 6)
    assert classifier_bands(interp.classifier, fcfg) is interp.classifier.frontend.fb
    assert classifier_bands(SimpleNamespace(frontend=SimpleNamespace(kind="log1p_mag")),
                            fcfg) is None
    # a classifier given as code has no known frontend: L2I's mel bands
    assert torch.equal(classifier_bands(torch.nn.Linear(2, 2), fcfg), feats.mel_filterbank(fcfg))
    t = np.arange(8000) / 8000
    x = (0.5 * np.sin(2 * np.pi * 440 * t)
         + 0.05 * np.random.default_rng(0).standard_normal(8000)).astype(np.float32)
    soft = Explainer(interp, mask=MaskConfig(rescale=True)).explain(x, 8000)[0]
    ex = Explainer(interp, mask=MaskConfig(rescale=True, prune=0.05))
    pruned = ex.explain(x, 8000)[0]
    want = prune_mask(torch.from_numpy(soft.mask)[None],
                      torch.from_numpy(soft.input_magnitude)[None], 0.05,
                      interp.classifier.frontend.fb)[0]
    assert np.array_equal(pruned.mask, want.numpy())
    total = sum(pruned.component_mask(k) for k in pruned.selected)
    assert np.allclose(total, pruned.mask, atol=1e-5)  # the components still add up


def test_mask_values_out_of_range_are_config_errors():
    for bad in (["--mask.floor_gate", "1.5"], ["--mask.sharpen", "0"], ["--mask.prune", "-1"],
                ["--mask.binarize", "-0.1"], ["--mask.power", "-1"]):
        with pytest.raises(ConfigError, match=bad[0][2:]):
            load_config(L2IRecipe, None, bad)


def _background_case():
    """Component 0: a background active in every frame, heavily weighted for the class;
    component 1: the event, in frame 2 only. W = identity (bin k = component k)."""
    W = torch.eye(2)  # (F, K)
    H = torch.tensor([[[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 2.0, 0.0]]])  # (1, K, T)
    theta = torch.tensor([[3.0, 1.0]])  # (C=1, K)
    z = H.mean(-1)  # mean pooling
    return W, H, theta, z, torch.tensor([0])


def test_default_is_the_papers_mask():
    W, H, theta, z, t = _background_case()
    mask, w = explanation_mask(W, H, theta, z, t, MaskConfig(), relevance_th=0.2)
    sel = select_components(relevance(theta, z, t), 0.2)
    assert torch.equal(mask, ratio_mask(W, H, sel)) and torch.equal(w, sel.float())
    assert torch.equal(explanation_mask(W, H, theta, z, t, relevance_th=0.2)[0], mask)
    # the background gets the top relevance: both bins on in every frame where active
    assert mask[0, :, 0].tolist() == pytest.approx([1.0] * 4)


def test_median_background_and_frame_relevance_follow_the_event_in_time():
    W, H, theta, z, t = _background_case()
    cfg = MaskConfig(resolution="frame", weights="soft", background="median")
    mask, w = explanation_mask(W, H, theta, z, t, cfg)
    assert w.shape == (1, 2, 4)
    # the constant background is gone, the event's frame is kept: only (t=2, bin 1)
    expected = torch.zeros(1, 4, 2)
    expected[0, 2, 1] = 1.0
    assert torch.allclose(mask, expected, atol=1e-6)
    assert selected_of(w).tolist() == [[False, True]]
    # spread: the background's peakiness is 0, the event's 1 - 0.5 / 2 = 0.75
    m_spread, w_spread = explanation_mask(W, H, theta, z, t,
                                          MaskConfig(weights="soft", background="spread"))
    assert torch.allclose(w_spread, torch.tensor([[0.0, 0.75 * (0.5 / 3)]]))
    assert not m_spread[0, :, 0].any() and m_spread[0, 2, 1] > 0


def test_frame_relevance_without_background_handling_weights_frames_separately():
    W, H, theta, z, t = _background_case()
    mask, w = explanation_mask(W, H, theta, z, t, MaskConfig(resolution="frame", weights="soft"))
    # contributions 3 h0(t) = 3 and 1 h1(2) = 2: weights 1 (background) and 2/3 (event)
    assert torch.allclose(w[0, :, 2], torch.tensor([1.0, 2 / 3]))
    assert torch.allclose(mask[0, 2], torch.tensor([1.0, 2 / 3]))


def test_explanation_component_masks_add_up_for_any_mask():
    W, H, theta, z, t = _background_case()
    cfg = MaskConfig(resolution="frame", weights="soft", denominator="input", sharpen=2.0,
                     floor_gate=0.5)
    mag = torch.tensor([[[3.0, 1.0], [2.0, 3.0], [5.0, 4.0], [1.0, 2.0]]])  # (1, T, F)
    mask, w = explanation_mask(W, H, theta, z, t, cfg, mag=mag)
    e = Explanation(audio=np.zeros(8, np.float32), sample_rate=8000, mask=mask[0].numpy(),
                    relevance=np.zeros(2), selected=[0, 1], target=0, target_name="a",
                    classifier_probs=np.ones(1), theta_probs=np.ones(1), H=H[0].numpy(),
                    input_magnitude=mag[0].numpy(), atoms=W.numpy(), weights=w[0].numpy())
    total = e.component_mask(0) + e.component_mask(1)
    assert np.allclose(total, e.mask, atol=1e-6)
    assert e.component_mask(1)[:, 0].max() == 0  # component 1 lives in bin 1 only


def test_checkpoint_mask_config_stored_overridden_and_legacy():
    old = SimpleNamespace(recipe={"loss": {"relevance_th": 0.2}})  # written before mask existed
    assert checkpoint_mask_config(old) == MaskConfig()
    new = SimpleNamespace(recipe={"mask": {"resolution": "frame", "weights": "soft"}})
    assert checkpoint_mask_config(new) == MaskConfig(resolution="frame", weights="soft")
    over = MaskOverrides(weights="threshold", binarize=0.5)  # None fields keep the stored
    assert checkpoint_mask_config(new, over) == MaskConfig(resolution="frame", binarize=0.5)
    assert checkpoint_mask_config(new, {"background": "median"}).background == "median"
    assert checkpoint_mask_config(new, MaskConfig()) == MaskConfig()
    with pytest.raises(ConfigError, match="mask.resolution"):
        checkpoint_mask_config(SimpleNamespace(recipe={"mask": {"resolution": "bins"}}))


def test_mask_section_in_recipes_and_command_lines():
    assert L2IRecipe().mask == MaskConfig()
    cfg = load_config(L2IRecipe, None, ["--mask.resolution", "frame", "--mask.power", "2"])
    assert cfg.mask == MaskConfig(resolution="frame", power=2.0)
    ev = load_config(EvaluateRecipe, None, ["--mask.background", "median"])
    assert ev.mask == MaskOverrides(background="median")
    assert load_config(InterpretRecipe, None, []).mask == MaskOverrides()
    with pytest.raises(ConfigError, match="mask.weights"):
        load_config(EvaluateRecipe, None, ["--mask.weights", "fuzzy"])


def test_explainer_uses_the_checkpoints_mask_and_overrides():
    from conftest import random_interpreter

    from l2i.config import FeaturesConfig

    feats = FeaturesConfig(sample_rate=8000, n_fft=256, n_mels=32)
    interp = random_interpreter(feats, ["dog", "rain", "siren"], 6)
    t = np.arange(8000) / 8000
    x = (0.5 * np.sin(2 * np.pi * 440 * t)
         + 0.05 * np.random.default_rng(0).standard_normal(8000)).astype(np.float32)
    paper = Explainer(interp).explain(x, 8000)[0]  # explain returns a batch: [0] is the clip
    assert paper.weights is None and "mask_config" not in paper.summary()
    interp.recipe = {"mask": {"resolution": "frame", "weights": "soft", "background": "median"}}
    ex = Explainer(interp)
    assert ex.mask_config.background == "median"
    e = ex.explain(x, 8000)[0]
    assert e.weights.shape == e.H.shape and e.summary()["mask_config"]["resolution"] == "frame"
    total = sum(e.component_mask(k) for k in e.selected)
    assert np.allclose(total, e.mask, atol=1e-5)
    back = Explainer(interp, mask=MaskConfig()).explain(x, 8000)[0]
    assert np.array_equal(back.mask, paper.mask)  # the defaults reproduce the paper's mask
