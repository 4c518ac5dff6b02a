"""What the classifier decides under white noise, and on the noise alone (issue 14's white-noise
SPS goal).

    .venv/bin/python benchmarks/noise_decision.py NAME=runs/esc10_fid4/l2i.ckpt [NAME=CKPT ...] \\
        --folds 3 [--folds 4] [--out benchmarks/results/noise_decision.json]

For the clips of each fold: the classifier's prediction on the clean clip, on the clip with
white noise at 0 dB (``l2i evaluate --contamination white_noise``, the same noise draw: seed
0), and on that noise alone, at the level it has in the mix (``mix - clean / peak``, so the
only difference from the mix is the clip). Also the L2I explanation of the noisy clip (the
checkpoint's mask): its mean and SPS. If the noise alone gets the noisy clip's class, the noise
is what the classifier hears in the mix, and a faithful explanation of that decision has to
keep it, everywhere it is.

Prints one JSON object: per checkpoint and fold, accuracy clean / noisy, the most frequent
predictions, the share of noisy clips whose noise alone gets the same class, and the class
probabilities; ``rows`` is the same as a table (docs/benchmarks.md). Diagnosis only: nothing
is chosen from it.
"""

from __future__ import annotations

import argparse
import collections
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emit import emit  # noqa: E402
from select_masks import valid_set  # noqa: E402

from l2i.metrics import sparseness  # noqa: E402


def noisy_and_noise(clean: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The white-noise mix of :func:`l2i.contamination.contaminate` and its noise part."""
    from l2i.contamination import contaminate
    from l2i.noise import white_noise_like

    noisy, _ = contaminate(clean, np.zeros(len(clean), np.int64), "white_noise", seed)
    c = torch.from_numpy(clean)
    n = white_noise_like(c, torch.Generator().manual_seed(int(seed)))  # the same draw
    gain = torch.sqrt(c.pow(2).sum(-1) / n.pow(2).sum(-1).clamp_min(1e-20))  # 0 dB
    mix = c + gain[:, None] * n  # (N, S)
    peak = mix.abs().amax(dim=-1, keepdim=True) + 1e-12
    assert np.allclose((mix / peak).numpy(), noisy, atol=1e-5), "not the evaluation's noise"
    return noisy, (gain[:, None] * n / peak).numpy()


def fold_report(ckpt: str, fold: int, data_folder: str) -> dict[str, Any]:
    data = valid_set(ckpt, "none", data_folder=data_folder, folds=[fold])
    ex, clean, labels = data["explainer"], data["wavs"], data["labels"]
    noisy, noise = noisy_and_noise(clean)
    sr, names = ex.sample_rate, ex.class_names
    out: dict[str, Any] = {"fold": fold, "clips": int(len(labels))}
    preds, probs = {}, {}
    for kind, wavs in (("clean", clean), ("noisy", noisy), ("noise_alone", noise)):
        es = [ex.explain(w, sr)[0] for w in wavs]
        preds[kind] = np.array([e.target for e in es])
        probs[kind] = np.stack([e.classifier_probs for e in es])  # (N, C)
        if kind == "noisy":
            masks = torch.from_numpy(np.stack([e.mask for e in es]))  # (N, T, F)
            out["noisy_mask_mean"] = float(masks.mean())
            out["noisy_SPS"] = float(sparseness(masks).mean())
    for kind in preds:
        out[f"accuracy_{kind}"] = float((preds[kind] == labels).mean())
        top = collections.Counter(names[p] for p in preds[kind]).most_common(3)
        out[f"top_predictions_{kind}"] = {n: c for n, c in top}
    same = preds["noise_alone"] == preds["noisy"]
    out["noise_alone_gets_the_noisy_class"] = float(same.mean())
    idx = np.arange(len(labels))
    out["p_noisy_class_on_noisy"] = float(probs["noisy"][idx, preds["noisy"]].mean())
    out["p_noisy_class_on_noise_alone"] = float(probs["noise_alone"][idx, preds["noisy"]].mean())
    out["p_noisy_class_on_clean"] = float(probs["clean"][idx, preds["noisy"]].mean())
    return out


ROW_KEYS = {"accuracy_clean": "acc clean", "accuracy_noisy": "acc noisy",
            "noise_alone_gets_the_noisy_class": "noise alone: same class",
            "p_noisy_class_on_noisy": "p(that class) noisy",
            "p_noisy_class_on_noise_alone": "p noise alone", "p_noisy_class_on_clean": "p clean",
            "noisy_mask_mean": "L2I mask mean (noisy)", "noisy_SPS": "L2I SPS (noisy)"}


def as_row(name: str, rep: dict[str, Any]) -> dict[str, Any]:
    top, count = next(iter(rep["top_predictions_noisy"].items()))
    return {"classifier": name, "fold": rep["fold"],
            "top noisy prediction": f"{top} ({count}/{rep['clips']})",
            **{title: round(rep[k], 3) for k, title in ROW_KEYS.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ckpts", nargs="+", help="NAME=l2i.ckpt")
    ap.add_argument("--folds", type=int, action="append", default=[])
    ap.add_argument("--data_folder", default="")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    result: dict[str, Any] = {
        "command": "python benchmarks/noise_decision.py " + shlex.join(argv or sys.argv[1:]),
        "machine": "2-core CPU (diagnosis; no timing)", "checkpoints": {}, "rows": []}
    for spec in args.ckpts:
        name, _, ckpt = spec.rpartition("=")
        reps = [fold_report(ckpt, f, args.data_folder) for f in args.folds or [3]]
        result["checkpoints"][name or ckpt] = {"checkpoint": ckpt, "folds": reps}
        result["rows"] += [as_row(name or ckpt, r) for r in reps]
    return emit(result, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
