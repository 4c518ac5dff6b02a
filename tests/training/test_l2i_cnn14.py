"""L2I on CNN14 (recipes/esc50/l2i_cnn14.yaml's psi/theta/loss) with a width-reduced CNN14."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from l2i.config import L2IRecipe, load_config
from l2i.data import load_dataset, load_split
from l2i.interpreter import Interpreter
from l2i.models.cnn14 import CNN14
from l2i.models.psi import Psi, probe_map_bins
from l2i.models.theta import Theta
from l2i.training.interpreter import L2IModule, WaveSplit

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "esc50" / "l2i_cnn14.yaml"


def test_l2i_cnn14_recipe_trains_on_a_narrow_cnn14(tiny_dataset, tiny_features,
                                                   tiny_data_config):
    cfg = load_config(L2IRecipe, RECIPE, {"psi.hidden": 16, "psi.n_layers": 1,
                                          "theta.hidden": 8})
    assert cfg.psi.maps == ["block3", "block4", "block5", "block6"]
    index = load_dataset(str(tiny_dataset), tiny_data_config)
    split = load_split(index, "train", tiny_data_config, tiny_features.sample_rate, None)
    torch.manual_seed(0)
    clf = CNN14(tiny_features, index.n_classes, embed_dim=8, channels=(2, 2, 4, 4, 8, 16))
    K = 6
    W = torch.rand(tiny_features.n_freq, K, generator=torch.Generator().manual_seed(0))
    psi = Psi(clf.map_channels, K, cfg.psi, map_bins=probe_map_bins(clf, W.shape[0]))
    interp = Interpreter(clf, psi, Theta(K, index.n_classes, cfg.theta), W, tiny_features,
                         list(index.class_names))
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    module = L2IModule(interp, cfg.loss, cfg.trainer)
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad],
                           lr=cfg.trainer.lr * 10)
    batch = WaveSplit(np.asarray(split.wavs), np.asarray(split.labels)).__getitems__(
        list(range(8)))
    interp.train()
    losses = []
    for _ in range(6):
        terms, out = module.shared_step(batch, train=True)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        losses.append(float(terms["loss"]))
    assert out["H"].shape == (8, K, out["target"].shape[1]) and (out["H"] >= 0).all()
    assert losses[-1] < losses[0]
    assert all(torch.equal(before[k], v) for k, v in clf.state_dict().items())  # frozen
