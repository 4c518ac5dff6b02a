"""``l2i report`` on a comparison: one row per explainer, each explainer's audio side by side."""

from __future__ import annotations

import json
import re

import numpy as np
import soundfile as sf

from l2i.config import ReportRecipe
from l2i.report import write_report

ROW = {"AI": 40.0, "AD": 10.0, "AG": 5.0, "FF": 0.3, "Fid-In": 0.9, "SPS": 0.5, "COMP": 9.0,
       "AD_sb": 1.5, "ms_per_clip": 12.0}


def test_report_shows_the_comparison_and_every_explainers_audio(tmp_path):
    ev = tmp_path / "eval"
    ex = ev / "examples"
    ex.mkdir(parents=True)
    explainers = {"l2i": {**ROW, "fidelity_top1": 90.0}, "lmac": {**ROW, "AI": 61.5},
                  "saliency": ROW, "ones": {**ROW, "AI": 0.0}}
    (ev / "metrics.json").write_text(json.dumps({
        "kind": "l2i-evaluate", "version": 2, "explainers": explainers,
        "metrics": explainers["l2i"], "counts": {"n_clips": 4},
        "settings": {"ckpt": "l2i.ckpt", "contamination": "mixtures", "class_names": ["a"]}}))
    t = np.arange(4000) / 8000.0
    wavs = {"input": 300, "l2i": 400, "lmac": 500, "saliency": 600, "ones": 700}
    for tag, hz in wavs.items():
        sf.write(ex / f"c1.{tag}.wav", (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32),
                 8000)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(ex / "c1.masks.png", np.random.default_rng(0).random((8, 8)))
    (ex / "c1.json").write_text(json.dumps({
        "predicted_name": "a", "label_name": "a", "p": 0.9, "o": 0.8, "q": 0.1,
        "explainer_wavs": {k: f"c1.{k}.wav" for k in wavs if k != "input"}}))
    page = (tmp_path / "r.html")
    write_report(ReportRecipe(run_folder=str(ev), output=str(page)))
    html = page.read_text()
    table = re.search(r"<table class='comparison'>(.*?)</table>", html).group(1)
    for name in explainers:
        assert f"<b>{name}</b>" in table
    assert "61.50" in table and "AD (SB)" in table and "ms/clip" in table
    assert "L-MAC, reference" in table
    for name in ("l2i", "lmac", "saliency", "ones"):
        assert f"explanation: {name}" in html
    assert html.count("<audio") == 5  # input + one per explainer
    assert "c1.masks.png figure" in html  # every explainer's M·|X| side by side
