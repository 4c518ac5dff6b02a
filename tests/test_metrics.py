"""Metrics on hand-computed cases and toy models with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from l2i import metrics as M

P_IN = [0.5, 0.8]
P_MASKED = [0.6, 0.4]


# --------------------------------------------------------------------------- AI / AD / AG / FF
def test_ai_ad_ag_hand_computed():
    # o > p: [1, 0] -> 50 %; drop: [0, 0.4 / 0.8] -> 25 %; gain: [0.1 / 0.5, 0] -> 10 %
    assert M.average_increase(P_IN, P_MASKED) == pytest.approx(50.0)
    assert M.average_drop(P_IN, P_MASKED) == pytest.approx(25.0)
    assert M.average_gain(P_IN, P_MASKED) == pytest.approx(10.0)


def test_per_sample_values_and_numpy_input():
    ad = M.average_drop(np.array(P_IN), np.array(P_MASKED), reduce=False)
    assert isinstance(ad, torch.Tensor) and ad.shape == (2,)
    assert ad.tolist() == pytest.approx([0.0, 50.0])
    assert M.average_gain(P_IN, P_MASKED, reduce=False).tolist() == pytest.approx([20.0, 0.0])
    assert M.average_increase(P_IN, P_MASKED, reduce=False).tolist() == [100.0, 0.0]


def test_ad_ag_bounds_and_equal_inputs():
    p = torch.tensor([0.3, 0.9, 1.0])
    assert M.average_drop(p, p) == 0.0 and M.average_gain(p, p) == 0.0
    assert M.average_increase(p, p) == 0.0  # strict increase only
    # o = 0 is the largest possible drop (100 %); p = 1 gives a finite gain
    assert M.average_drop([0.7], [0.0]) == pytest.approx(100.0)
    assert math.isfinite(M.average_gain([1.0], [1.0]))


def test_ad_is_not_double_softmax():
    # textbook AD: 100 * (1 - 0) / 1 = 100; the reference's double softmax gives (e - 1) / e
    probs = torch.tensor([[1.0, 0.0]])
    probs_in = torch.tensor([[0.0, 1.0]])
    assert M.average_drop([1.0], [0.0]) == pytest.approx(100.0)
    sb = M.average_drop_sb_compatible(probs, probs_in, torch.tensor([0]))
    assert sb == pytest.approx(100.0 * (math.e - 1) / math.e, rel=1e-6)


def test_sb_compatible_ad_is_squeezed_for_many_classes():
    c = 50
    probs = torch.zeros(1, c)
    probs[0, 3] = 1.0
    # even a total drop 1 -> 0 stays far below 100 after the second softmax
    sb = M.average_drop_sb_compatible(probs, torch.zeros(1, c), torch.tensor([3]))
    pp, oo = math.e / (49 + math.e), 1 / 50
    assert sb == pytest.approx(100 * (pp - oo) / pp, rel=1e-6)


def test_faithfulness_ff():
    assert M.faithfulness_ff(P_IN, [0.1, 0.9]) == pytest.approx((0.4 - 0.1) / 2)
    assert M.faithfulness_ff(P_IN, [0.1, 0.9], reduce=False).tolist() == pytest.approx([0.4, -0.1])


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        M.average_drop([0.5, 0.2], [0.1])


# --------------------------------------------------------------------------- fidelity
def test_input_fidelity_against_prediction_not_labels():
    logits_in = torch.tensor([[1.0, 2.0], [3.0, 0.0], [0.0, 5.0]])
    logits_orig = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    assert M.input_fidelity(logits_in, logits_orig) == pytest.approx(2 / 3)
    assert M.input_fidelity(logits_in, logits_orig, reduce=False).tolist() == [1.0, 0.0, 1.0]


def test_fidelity_topk():
    theta = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    pred = torch.tensor([1, 0])
    assert M.fidelity_topk(theta, pred, 1) == 0.0
    assert M.fidelity_topk(theta, pred, 2) == 0.5  # row 0: {0, 1} holds 1; row 1: {2, 1} not 0
    assert M.fidelity_topk(theta, pred, 3) == 1.0
    assert M.fidelity_topk(theta, torch.tensor([0, 2]), 1) == 1.0
    with pytest.raises(ValueError, match="k must be"):
        M.fidelity_topk(theta, pred, 4)


# --------------------------------------------------------------------------- SPS / COMP
def _gini_quantus(a: list[float]) -> float:
    """quantus 0.5.3 ``Sparseness`` by hand: ``a = |a| / max|a| + 1e-7``, sorted, Gini."""
    a = sorted(abs(v) / max(abs(v) for v in a) + 1e-7 for v in a)
    n = len(a)
    return sum((2 * i - n - 1) * v for i, v in enumerate(a, 1)) / (n * sum(a))


def test_sparseness_one_hot_uniform_and_hand_case():
    # one bin of 431 x 513 (the reference's mask size): a = 1e-7 everywhere, 1 + 1e-7 at the bin;
    # sum_i (2i - n - 1) = 0, so Gini = (n - 1) / (n (1 + n 1e-7)) = 0.97836357 (quantus 0.5.3:
    # 0.9783635652835354), NOT (n - 1) / n = 0.9999955 (no epsilon).
    n = 431 * 513
    one_bin = torch.zeros(1, 431, 513)
    one_bin[0, 100, 200] = 1.0
    assert M.sparseness(one_bin)[0] == pytest.approx((n - 1) / (n * (1 + n * 1e-7)), abs=1e-12)
    assert M.sparseness(one_bin)[0] == pytest.approx(0.9783635652835354, abs=1e-9)
    # a constant mask: every value 1 + 1e-7 after normalisation -> 0 (quantus refuses it)
    assert M.sparseness(torch.full((1, 10, 100), 0.3))[0] == pytest.approx(0.0, abs=1e-12)
    # [4, 1, 3, 2] / 4 + 1e-7, sorted [0.25, 0.5, 0.75, 1] + 1e-7:
    # sum_i (2i - 5) a_i = 2.5 (the epsilon cancels), sum a = 2.5 + 4e-7 -> 2.5 / (4 (2.5 + 4e-7))
    hand = 2.5 / (4 * (2.5 + 4e-7))  # 0.24999996000000638 with quantus 0.5.3
    assert M.sparseness(torch.tensor([[4.0, 1.0, 3.0, 2.0]]))[0] == pytest.approx(hand, abs=1e-15)


def test_sparseness_normalises_each_clip_by_its_max_before_the_epsilon():
    # the 1e-7 is added after dividing by the clip's max, so the scale of the mask does not
    # matter: 1e-6 * arange(100) gives what arange(100) gives (quantus: 0.33666659933334675)
    tiny = 1e-6 * torch.arange(100.0, dtype=torch.float64).reshape(1, 10, 10)
    expected = _gini_quantus([float(v) for v in range(100)])
    assert M.sparseness(tiny)[0] == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.33666659933334675, abs=1e-12)


def test_sparseness_is_per_sample_and_uses_abs():
    a = torch.tensor([[4.0, 1.0, 3.0, 2.0], [400.0, -100.0, 300.0, 200.0]])
    s = M.sparseness(a)
    assert s.shape == (2,)
    # each clip by its own max: the two clips score the same (quantus on a batch would divide
    # both by 400, the batch-global max, and score the first clip differently)
    assert s.tolist() == pytest.approx([_gini_quantus([4.0, 1.0, 3.0, 2.0])] * 2, abs=1e-15)
    assert math.isnan(M.sparseness(torch.zeros(1, 5))[0])  # empty mask -> NaN, not dropped


# Values from quantus 0.5.3 (pip install quantus==0.5.3; numpy 2.4), one mask at a time:
#   a = mask[None, None]; kw = dict(model=None, x_batch=np.zeros_like(a), y_batch=np.zeros(1, int),
#   a_batch=a); quantus.Sparseness(disable_warnings=True)(**kw)[0], same for quantus.Complexity.
# Sparseness = Gini of |a| / max|a| + 1e-7; Complexity = scipy.stats.entropy(|a| / sum|a|).
def _reference_masks() -> dict[str, np.ndarray]:
    t, f = np.meshgrid(np.arange(20), np.arange(30), indexing="ij")
    blob = np.exp(-((np.arange(40)[:, None] - 12) ** 2 / 20.0 + (np.arange(50)[None] - 30) ** 2
                    / 50.0))
    return {"mod7": ((t * f) % 7) / 6.0, "blob": blob,
            "signed": np.array([[-1.0, 0.5, 0.0, 2.0], [0.25, -0.75, 1.5, 0.0],
                                [0.1, 0.2, -0.3, 0.4]])}


QUANTUS_0_5_3 = {  # name: (Sparseness, Complexity)
    "mod7": (0.48849034173522576, 5.92267957872922),
    "blob": (0.9006925921484115, 5.597842378048222),
    "signed": (0.5404760051701316, 1.9736631401196436),
}


@pytest.mark.parametrize("name", sorted(QUANTUS_0_5_3))
def test_sparseness_and_complexity_equal_quantus_values(name):
    mask = torch.as_tensor(_reference_masks()[name])[None]  # (1, T, F)
    sps, comp = QUANTUS_0_5_3[name]
    assert M.sparseness(mask)[0] == pytest.approx(sps, abs=1e-9)
    assert M.complexity(mask)[0] == pytest.approx(comp, abs=1e-9)


def test_sparseness_and_complexity_equal_installed_quantus():
    """Runs only where quantus is importable (it is not a dependency: heavy)."""
    quantus = pytest.importorskip("quantus")
    gen = np.random.default_rng(0)
    masks = [gen.random((1, 1, 43, 51)) ** 4, gen.random((1, 1, 8, 9)) - 0.5,
             *(m[None, None] for m in _reference_masks().values())]
    for a in masks:
        kw = dict(model=None, x_batch=np.zeros_like(a), y_batch=np.zeros(1, int), a_batch=a)
        sps = quantus.Sparseness(disable_warnings=True)(**kw)[0]
        comp = quantus.Complexity(disable_warnings=True)(**kw)[0]
        assert M.sparseness(a[:, 0])[0] == pytest.approx(sps, abs=1e-6)
        assert M.complexity(a[:, 0])[0] == pytest.approx(comp, abs=1e-6)


def test_complexity_uniform_one_hot_hand_case():
    n = 431 * 513
    assert M.complexity(torch.ones(1, 431, 513))[0] == pytest.approx(math.log(n))
    one_hot = torch.zeros(1, 7)
    one_hot[0, 2] = 5.0
    assert M.complexity(one_hot)[0] == pytest.approx(0.0, abs=1e-12)
    # [1, 1, 2] / 4 -> -(2 * 0.25 ln 0.25 + 0.5 ln 0.5)
    expected = -(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5))
    assert M.complexity(torch.tensor([[1.0, 1.0, 2.0]]))[0] == pytest.approx(expected)
    assert math.isnan(M.complexity(torch.zeros(2, 3))[1])
    with pytest.raises(ValueError, match="batch"):
        M.complexity(torch.ones(5))


# --------------------------------------------------------------------------- localisation
def test_roc_auc_hand_rankings_and_ties():
    # sklearn's doc example: 3 of 4 positive/negative pairs ordered right
    assert M.roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert M.roc_auc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert M.roc_auc([4, 3, 2, 1], [0, 0, 1, 1]) == 0.0
    assert M.roc_auc([1.0, 1.0], [False, True]) == 0.5  # a tie counts one half
    assert M.roc_auc([0.5, 0.5, 0.9], [0, 1, 1]) == pytest.approx(0.75)  # (0.5 + 1) / 2
    assert math.isnan(M.roc_auc([0.2, 0.3], [1, 1]))


def test_roc_auc_matches_sklearn_with_many_ties():
    sk = pytest.importorskip("sklearn.metrics")
    g = np.random.default_rng(0)
    scores = g.integers(0, 5, size=300) / 4.0  # many ties
    labels = g.random(300) < scores * 0.6 + 0.1
    assert M.roc_auc(scores, labels) == pytest.approx(sk.roc_auc_score(labels, scores))
    assert M.roc_auc(torch.tensor(scores).reshape(20, 15), labels.reshape(20, 15)) == \
        pytest.approx(sk.roc_auc_score(labels, scores))


def test_iou_and_mask_localisation():
    assert M.iou([1, 1, 0, 0], [0, 1, 1, 0]) == pytest.approx(1 / 3)
    assert math.isnan(M.iou([0, 0], [0, 0]))
    truth = torch.zeros(20, 8, dtype=torch.bool)
    truth[5:10, 2:4] = True
    perfect = M.mask_localisation(truth.float() * 0.9, truth)
    assert perfect == {"auc": 1.0, "iou": 1.0}
    half = truth.float() * 0.4  # right place, below the 0.5 threshold
    loc = M.mask_localisation(half, truth)
    assert loc["auc"] == 1.0 and loc["iou"] == 0.0
    inverted = M.mask_localisation(1.0 - truth.float(), truth)
    assert inverted["auc"] == 0.0 and inverted["iou"] == 0.0


# --------------------------------------------------------------------------- component removal
def _band_world():
    """4 frequency bins, component 0 = low band (bins 0-1), component 1 = high band (2-3).

    The classifier only listens to the low band: logit_0 = sum(low band) - 4, logit_1 = 0.
    """
    W = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # (F, K)

    def prob_fn(mag):  # (N, T, F) -> (N, 2)
        low = mag[..., :2].sum(dim=(1, 2))  # (N,)
        logits = torch.stack([low - 4.0, torch.zeros_like(low)], dim=1)
        return logits.softmax(dim=1)

    return W, prob_fn


def test_component_removal_band_classifier():
    W, prob_fn = _band_world()
    n, t = 3, 5
    H = torch.ones(n, 2, t)  # (N, K, T)
    mag = torch.ones(n, t, 4)  # low band energy 10 -> logit_0 = 6
    sel = torch.tensor([[True, False]] * n)
    res = M.component_removal(prob_fn, W, H, mag, sel, torch.Generator().manual_seed(0),
                              exclude_selected=True)
    p = torch.sigmoid(torch.tensor(6.0))
    assert torch.allclose(res["p"], p.expand(n))
    # removing the low-band component silences the only evidence: p -> sigmoid(-4)
    assert torch.allclose(res["p_relevant"], torch.sigmoid(torch.tensor(-4.0)).expand(n),
                          atol=1e-6)
    # the control removes the high band, which the classifier ignores: no drop
    assert torch.allclose(res["drop_random"], torch.zeros(n), atol=1e-6)
    assert (res["drop_relevant"] > 0.9).all()
    assert res["n_removed"].tolist() == [1, 1, 1] and res["target"].tolist() == [0, 0, 0]


def test_component_removal_random_control_without_exclusion_is_seeded():
    W, prob_fn = _band_world()
    H = torch.ones(40, 2, 3)
    mag = torch.ones(40, 3, 4)
    sel = torch.tensor([[True, False]] * 40)
    a = M.component_removal(prob_fn, W, H, mag, sel, torch.Generator().manual_seed(1))
    b = M.component_removal(prob_fn, W, H, mag, sel, torch.Generator().manual_seed(1))
    assert torch.equal(a["drop_random"], b["drop_random"])
    # about half of the random draws hit the low band
    hit = (a["drop_random"] > 0.5).float().mean()
    assert 0.2 < hit < 0.8


def test_random_like_selection_counts():
    g = torch.Generator().manual_seed(0)
    sel = torch.zeros(6, 10, dtype=torch.bool)
    for i in range(6):
        sel[i, :i] = True
    rnd = M.random_like_selection(sel, g)
    assert rnd.sum(1).tolist() == sel.sum(1).tolist()
    ex = M.random_like_selection(sel, g, exclude=True)
    assert not (ex & sel).any()
    assert ex.sum(1).tolist() == sel.sum(1).tolist()
    full = torch.ones(2, 4, dtype=torch.bool)
    full[1, 0] = False
    assert M.random_like_selection(full, g, exclude=True).sum(1).tolist() == [0, 1]
