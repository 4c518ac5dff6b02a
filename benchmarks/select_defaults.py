"""Choose the L2I explanation defaults on a VALIDATION fold, by a rule fixed in advance.

    .venv/bin/python benchmarks/select_defaults.py --data_folder ESC10 --valid_folds 3 \\
        --ckpt meanmax=runs/sel/l2i_meanmax/l2i.ckpt --ckpt flatten=runs/sel/l2i_flatten/l2i.ckpt \\
        --out benchmarks/results/select_l2i_conv2d.json

The rule (written before any figure was seen; docs/benchmarks.md repeats it):

1. ``relevance_th``, per checkpoint: evaluate every candidate threshold on the validation fold,
   clean and mixtures; rank the candidates on each of AI (higher is better), AD (lower), FF
   (higher) and Fid-In (higher) in each set (8 rankings); the lowest mean rank wins; a tie goes
   to the larger threshold (the sparser explanation).
2. ``psi.freq_reduce`` (one checkpoint per value, trained with the same recipe): the higher
   validation top-1 fidelity (``valid/selection``, what training selects on) wins; within one
   validation clip of each other, the lower mean rank of step 1 at each one's chosen threshold.

The test fold is never read. Prints (and writes with ``--out``) the JSON that
``tools/gen_docs.py`` renders into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emit import emit  # noqa: E402

from l2i.config import EvaluateRecipe  # noqa: E402
from l2i.evaluation import evaluate  # noqa: E402

METRICS = {"AI": 1, "AD": -1, "FF": 1, "Fid-In": 1}  # +1: higher is better
SETS = ("none", "mixtures")


def valid_metrics(ckpt: str, data_folder: str, folds: list[int], th: float, contamination: str,
                  out: Path) -> dict:
    cfg = EvaluateRecipe(ckpt=ckpt, data_folder=data_folder, output_folder=str(out),
                         test_folds=folds, contamination=contamination, relevance_th=th,
                         n_examples=0)
    evaluate(cfg)
    data = json.loads((out / "metrics.json").read_text())
    agg = data.get("metrics", data)
    if "explainers" in data:  # the comparison layout: take the L2I row
        agg = next(v for k, v in data["explainers"].items() if k.startswith("l2i"))
    return {k: agg[k] for k in METRICS}


def mean_ranks(table: dict[float, dict[str, dict[str, float]]]) -> dict[float, float]:
    """``table[th][set][metric]`` -> mean rank of each threshold (1 = best), ties averaged."""
    ths = sorted(table)
    ranks = np.zeros(len(ths))
    n = 0
    for s in SETS:
        for m, sign in METRICS.items():
            vals = np.array([-sign * table[t][s][m] for t in ths])  # smaller is better
            order = vals.argsort(kind="stable")
            r = np.empty(len(ths))
            r[order] = np.arange(1, len(ths) + 1)
            for v in np.unique(vals):  # average tied ranks
                r[vals == v] = r[vals == v].mean()
            ranks += r
            n += 1
    return {t: float(ranks[i] / n) for i, t in enumerate(ths)}


def fidelity(ckpt: str) -> float:
    """Validation top-1 fidelity in [0, 1] that ``l2i train`` stored in the checkpoint."""
    import torch

    rec = torch.load(ckpt, map_location="cpu", weights_only=True)
    return float((rec.get("metrics") or {})["valid/fid_top1"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data_folder", required=True)
    ap.add_argument("--valid_folds", default="3")
    ap.add_argument("--ckpt", action="append", required=True, help="NAME=PATH (repeatable)")
    ap.add_argument("--thresholds", default="0.05,0.1,0.2,0.3,0.5")
    ap.add_argument("--n_valid", type=int, default=80, help="validation clips (for the tie rule)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    folds = [int(f) for f in args.valid_folds.split(",")]
    ths = [float(t) for t in args.thresholds.split(",")]
    rows, chosen = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.ckpt:
            name, path = spec.split("=", 1)
            table = {t: {s: valid_metrics(path, args.data_folder, folds, t, s,
                                          Path(tmp) / f"{name}_{t}_{s}") for s in SETS}
                     for t in ths}
            ranks = mean_ranks(table)
            best = min(ths, key=lambda t: (ranks[t], -t))
            chosen[name] = {"relevance_th": best, "mean_rank": ranks[best],
                            "valid_fidelity_top1": fidelity(path)}
            for t in ths:
                for s in SETS:
                    rows.append({"checkpoint": name, "relevance_th": t, "set": s,
                                 **{m: round(table[t][s][m], 3) for m in METRICS},
                                 "mean rank": round(ranks[t], 2),
                                 "chosen": "yes" if t == best else ""})
    names = list(chosen)
    fid = {n: chosen[n]["valid_fidelity_top1"] for n in names}
    top = max(names, key=lambda n: fid[n])
    close = [n for n in names if fid[top] - fid[n] <= 1.0 / args.n_valid + 1e-9]
    winner = min(close, key=lambda n: chosen[n]["mean_rank"])
    result = {"command": "python benchmarks/select_defaults.py " + " ".join(argv or sys.argv[1:]),
              "machine": "2-core CPU (validation metrics; no timing)",
              "rule": "see the script's docstring", "chosen": chosen, "winner": winner,
              "rows": rows}
    return emit(result, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
