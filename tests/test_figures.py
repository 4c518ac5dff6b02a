"""The explanation figure (l2i.figures): the mask panel names the mask it shows."""

from __future__ import annotations

import numpy as np
from PIL import Image

from l2i.explain import Explanation
from l2i.figures import explanation_figure, mask_title


def test_mask_title_names_the_options_that_differ_from_the_papers():
    assert mask_title(None) == "mask M = W_L H_L / W H"
    assert mask_title({"resolution": "clip", "weights": "threshold"}) == "mask M = W_L H_L / W H"
    got = mask_title({"weights": "soft", "rescale": True, "sharpen": 0.5, "floor_gate": 0.1,
                      "binarize": 0.0})
    assert got == "mask M (weights soft, rescale, sharpen 0.5, floor_gate 0.1)"


def test_explanation_figure_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    T, F, K = 40, 33, 3
    e = Explanation(audio=np.zeros(800, np.float32), sample_rate=8000,
                    mask=rng.uniform(size=(T, F)).astype(np.float32),
                    relevance=np.array([1.0, 0.5, -0.2]), selected=[0, 1], target=0,
                    target_name="a", classifier_probs=np.array([0.7, 0.3]),
                    theta_probs=np.array([0.6, 0.4]), H=rng.uniform(size=(K, T)),
                    input_magnitude=rng.uniform(size=(T, F)), class_names=["a", "b"],
                    hop_length=20, mask_config={"floor_gate": 0.1})
    out = explanation_figure(e, tmp_path / "x.png")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 500 and im.size[1] > 300
