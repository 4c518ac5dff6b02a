"""Where an L2I mask's localisation comes from, on a synthetic VALIDATION fold (ground truth).

    .venv/bin/python benchmarks/mask_diagnosis.py runs/demo/l2i/l2i.ckpt \\
        [--data_folder runs/demo/data] [--mask '{"floor_gate": 0.1}'] [--out diag.json]

For each score map, the ROC-AUC against the event's ideal binary mask (``l2i.scoring``'s
truth), over the whole clip, only inside the frames where the event sounds (does the map find
the event in FREQUENCY?) and only inside the event's band (in TIME); means over the clips:

- ``energy``: the input magnitude ``|X|``;
- ``psi_reconstruction``: psi's ``W H`` (what the ratio mask takes its detail from);
- ``mask``: the checkpoint's mask (with ``--mask`` overrides), and ``mask_paper``: the paper's;
- ``oracle_psi``: the best mask of psi's components when the truth is known (each component
  weighted by its share inside the event minus outside, clamped at 0): an upper bound for any
  selection rule on psi's activations;
- ``nmf_fit`` / ``oracle_nmf``: the same with the dictionary's own fit of each clip
  (multiplicative updates of H, fixed W, 300 iterations): what the dictionary could do if psi
  reconstructed as well as it does.

docs/method.md, "Frequency: where the mask's detail comes from", quotes this script's output.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emit import emit  # noqa: E402
from select_masks import valid_set  # noqa: E402

from l2i import explain as E  # noqa: E402
from l2i import features as feats  # noqa: E402
from l2i import metrics as M  # noqa: E402
from l2i.config import MaskConfig, to_dict  # noqa: E402

NMF_ITERS = 300


def aucs(score: torch.Tensor, truths: list) -> dict[str, float]:
    """Mean ROC-AUC of ``score (N, T, F)`` over clips: whole clip, event frames, event band."""
    out: dict[str, list[float]] = {"clip": [], "event_frames": [], "event_band": []}
    for i, t in enumerate(truths):
        if t is None or not t.any():
            continue
        tt = torch.from_numpy(np.asarray(t, dtype=bool))  # (T, F)
        rows, cols = tt.any(1), tt.any(0)
        out["clip"].append(M.roc_auc(score[i].reshape(-1), tt.reshape(-1)))
        out["event_frames"].append(M.roc_auc(score[i][rows].reshape(-1), tt[rows].reshape(-1)))
        out["event_band"].append(M.roc_auc(score[i][:, cols].reshape(-1),
                                           tt[:, cols].reshape(-1)))
    return {k: round(float(np.nanmean(v)), 4) for k, v in out.items()}


def oracle(W: torch.Tensor, H: torch.Tensor, truths: list) -> torch.Tensor:
    """The truth-aware component mask per clip, ``(N, T, F)`` (see the module doc)."""
    masks = []
    for i, t in enumerate(truths):
        share = torch.einsum("fk,kt->ktf", W, H[i])  # (K, T, F)
        share = share / (share.sum(0, keepdim=True) + 1e-10)
        tt = torch.from_numpy(np.asarray(t, dtype=np.float32)) if t is not None else None
        if tt is None or not tt.any():
            masks.append(torch.zeros_like(share[0]))
            continue
        inside = (share * tt).sum((1, 2)) / tt.sum()
        outside = (share * (1 - tt)).sum((1, 2)) / (1 - tt).sum().clamp_min(1)
        w = (inside - outside).clamp_min(0)  # (K,)
        masks.append(torch.einsum("k,ktf->tf", w, share))
    return torch.stack(masks)


def nmf_fit(W: torch.Tensor, V: torch.Tensor, n_iter: int = NMF_ITERS) -> torch.Tensor:
    """``H (N, K, T)`` fitting ``V (N, T, F)`` with the fixed ``W (F, K)`` (Frobenius, MU)."""
    H = torch.full((V.shape[0], W.shape[1], V.shape[1]), 0.1)
    WtV, WtW = torch.einsum("fk,btf->bkt", W, V), W.T @ W  # (N, K, T), (K, K)
    for _ in range(n_iter):
        H = H * WtV / (torch.einsum("kj,bjt->bkt", WtW, H) + 1e-9)
    return H


def _rel_error(R: torch.Tensor, V: torch.Tensor) -> float:
    """``||R - V|| / ||V||`` (the reconstruction error the training logs as ``rec_rel``)."""
    return round(float((R - V).norm() / V.norm()), 4)


def diagnose(ckpt: str, data_folder: str, mask: dict[str, Any]) -> dict[str, Any]:
    data = valid_set(ckpt, "none", data_folder=data_folder)
    ex, truths = data["explainer"], data["truths"]
    if truths is None:
        raise SystemExit("this dataset has no event ground truth (make it with `l2i synth`)")
    interp = ex.interpreter.eval()
    wavs = torch.from_numpy(np.ascontiguousarray(data["wavs"]))  # (N, S)
    H, z, mags, tgt = [], [], [], []
    with torch.no_grad():
        for s in range(0, len(wavs), 16):
            spec = feats.stft(wavs[s:s + 16], ex.features)
            o = interp(spec.abs(), phase=spec.angle(), length=wavs.shape[1])
            H.append(o.H)
            z.append(o.z)
            mags.append(spec.abs())
            tgt.append(o.logits.argmax(1))
    H, z, mag, target = torch.cat(H), torch.cat(z), torch.cat(mags), torch.cat(tgt)
    W, tw = interp.W.detach().clamp_min(0), interp.theta.linear.weight.detach()
    cfg = E.checkpoint_mask_config(interp, mask)
    m, _ = E.explanation_mask(W, H, tw, z, target, cfg, relevance_th=ex.relevance_th, mag=mag)
    paper, _ = E.explanation_mask(W, H, tw, z, target, MaskConfig(),
                                  relevance_th=ex.relevance_th)
    V = torch.log1p(mag)
    recon = torch.einsum("fk,bkt->btf", W, H.clamp_min(0))
    Hf = nmf_fit(W, V)
    fit = torch.einsum("fk,bkt->btf", W, Hf)
    return {"checkpoint": ckpt, "valid_folds": data["folds"], "n_clips": len(wavs),
            "mask": to_dict(cfg),
            "rec_rel": {"psi": _rel_error(recon, V), "nmf_fit": _rel_error(fit, V)},
            "roc_auc": {"energy": aucs(mag, truths), "psi_reconstruction": aucs(recon, truths),
                        "mask": aucs(m, truths), "mask_paper": aucs(paper, truths),
                        "oracle_psi": aucs(oracle(W, H.clamp_min(0), truths), truths),
                        "nmf_fit": aucs(fit, truths),
                        "oracle_nmf": aucs(oracle(W, Hf, truths), truths)}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ckpt")
    ap.add_argument("--data_folder", default="", help="default: the checkpoint's")
    ap.add_argument("--mask", default="{}", help="JSON MaskConfig overrides")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    result = diagnose(args.ckpt, args.data_folder, json.loads(args.mask))
    result["command"] = "python benchmarks/mask_diagnosis.py " + " ".join(argv or sys.argv[1:])
    return emit(result, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
