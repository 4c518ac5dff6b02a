"""Steps 4 and 5 of the mask rule (benchmarks/select_masks.py): the input floor gate, then
pruning the bins the classifier cannot hear, on VALIDATION folds, on top of each recipe's mask.

    .venv/bin/python benchmarks/select_gate.py --synthetic demo=runs/demo/l2i/l2i.ckpt \\
        --esc10 esc=runs/esc10_faith/l2i.ckpt --esc10_base '{"rescale": true, "sharpen": 0.5}' \\
        --out benchmarks/results/select_gate.json
    .venv/bin/python benchmarks/select_gate.py --step prune ...  # step 5, below

Why: on the synthetic VALID fold 4, within the frames where the event sounds, the L2I mask
ranks the event's bins above the rest at chance level (ROC-AUC 0.55-0.59, the input energy
0.90): its frequency detail comes from psi's coarse reconstruction in the log1p domain, which
is blind to how loud a bin actually is. ``mask.floor_gate q`` multiplies the mask, last, by
``|X| / (|X| + N_f)`` with ``N_f`` the ``q`` quantile of the clip's magnitude at frequency
``f`` (:func:`l2i.explain.floor_gate`): the input's own fine structure, relative to its own
floor, inside what L2I selected.

Candidates: the recipe's mask (``off``: the step-3 winner that ``mask:`` holds) and the same
with ``floor_gate`` 0.1, 0.25, 0.5. Ranked by select_masks's own metrics and rule (synthetic:
localisation ROC-AUC and IoU, AI, AD, FF, Fid-In; ESC-10: AI, AD, FF, Fid-In on clean and
mixtures, SPS on white noise; the lowest mean rank wins, and as in its step 3 a candidate other
than ``off`` is kept only if its mean rank is strictly lower). The candidates were looked at
on the same validation folds before this step was written (exploration, test folds never
read); the rule is select_masks's, written before any of it. Listenability (spectral flatness,
STFT inconsistency) is reported, not ranked.

Step 5 (``--step prune``): ``mask.prune tol`` (:func:`l2i.explain.prune_mask`) zeroes the
faintest bins of ``M |X|`` while the classifier's log1p filterbank input moves by at most
``tol`` in every frame and band. Why: issue 14's SPS goal (the mask's Gini index), which steps
1-4 never ranked; the recipes' masks are wide (ESC-10 mean 0.77) because widening kept the
decision, and much of that width sits in bins too faint for the classifier's log1p input to
register. Candidates: ``off`` (the recipe's mask, whatever step 4 left) and ``prune`` 0.05,
0.1, 0.2, 0.4. Metrics: step 4's plus SPS on the clean set (ESC-10: clean and mixtures), each
ranked as one more metric. Floors: on ESC-10 a candidate must keep issue 14's AI >= 40,
AD <= 10 and Fid-In >= 0.85 on clean and on mixtures; on the synthetic set a localisation
ROC-AUC >= 0.95. The lowest mean rank among the candidates that keep the floors wins; one
other than ``off`` only if strictly lower. This rule was written before the runs it reports;
the option itself went through three forms on the same validation folds first (exploration:
per-band mass fractions, then a tolerance with a repair pass that undid much of the pruning,
then the shared budgets it has now), and the grid moved from 0.02-0.2 to 0.05-0.4 with the
last form, which prunes less at the same tolerance. The test folds were not read.

Step 6 (``--step sparse``): not a change of the recipe's mask but a sparse VARIANT of it
(``recipes/esc50/l2i_conv2d_sparse.yaml``), for a user who wants the sparsest explanation
that still keeps issue 14's floors. Why: issue 14's goals of an SPS above the input energy's
(the energy's Gini index is ~0.8 on ESC-10) and >= 0.4 under white noise, which step 5's
ranking never reaches (it weighs SPS as one metric among ten). Candidates, fixed before any
run of this step: ``off`` and ``prune`` 0.4, 0.8, 1.6, 3.2, each also after ``binarize`` 0.5
(a hard mask: the bins at or above half the mask's peak -> 1, then pruned). Rule: among the
candidates that keep step 5's floors (ESC-10: AI >= 40, AD <= 10, Fid-In >= 0.85 on clean
and on mixtures; synthetic: localisation ROC-AUC >= 0.95), the highest SPS wins (ESC-10: the
mean of the clean and mixtures SPS; synthetic: the clean SPS); ties go to the earlier
candidate in the list. The recipe's own checkpoint is the one scored; the test folds were not
read.

Prints one JSON object (``--out`` writes it, and ``NAME_synthetic.json`` / ``NAME_esc10.json``
tables next to it for docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emit import emit  # noqa: E402
from select_masks import (  # noqa: E402
    CONTAMINATION,
    ESC_METRICS,
    SYNTH_METRICS,
    _named,
    _round,
    listenability,
    mean_ranks,
    score,
    valid_set,
)

from l2i.config import MaskConfig, from_dict, to_dict  # noqa: E402

STEPS: dict[str, dict[str, dict[str, float]]] = {
    "gate": {f"floor_gate{q}": {"floor_gate": q} for q in (0.1, 0.25, 0.5)},
    "prune": {f"prune{q}": {"prune": q} for q in (0.05, 0.1, 0.2, 0.4)},
    "sparse": {**{f"prune{q}": {"prune": q} for q in (0.4, 0.8, 1.6, 3.2)},
               **{f"binarize0.5+prune{q}": {"binarize": 0.5, "prune": q}
                  for q in (0.4, 0.8, 1.6, 3.2)}}}
# step 5 also ranks the clean SPS, and keeps issue 14's floors (docstring)
EXTRA_METRICS = {"gate": {"synthetic": {}, "esc10": {}},
                 "prune": {"synthetic": {("clean", "SPS"): 1},
                           "esc10": {("clean", "SPS"): 1, ("mixtures", "SPS"): 1}}}
EXTRA_METRICS["sparse"] = EXTRA_METRICS["prune"]
# step 6 does not rank: the sparsest candidate that keeps the floors wins (docstring)
SPARSITY = {"synthetic": (("clean", "SPS"),), "esc10": (("clean", "SPS"), ("mixtures", "SPS"))}
FLOORS = {"gate": {"synthetic": (), "esc10": ()},
          "prune": {"synthetic": (("clean", "loc_auc", ">=", 0.95),),
                    "esc10": tuple((s, m, op, v) for s in ("clean", "mixtures")
                                   for m, op, v in (("AI", ">=", 40.0), ("AD", "<=", 10.0),
                                                    ("Fid-In", ">=", 0.85)))}}
FLOORS["sparse"] = FLOORS["prune"]
COLS = {"synthetic": {"clean": ("loc_auc", "loc_iou", "AI", "AD", "FF", "Fid-In", "SPS",
                                 "mask_mean")},
        "esc10": {"clean": ("AI", "AD", "FF", "Fid-In", "SPS", "mask_mean"),
                  "mixtures": ("AI", "AD", "FF", "Fid-In", "SPS"),
                  "white_noise": ("AI", "AD", "SPS", "mask_mean")}}
PREFIX = {"clean": "", "mixtures": "mix ", "white_noise": "noise "}


def candidates(base: MaskConfig, step: str = "gate") -> dict[str, MaskConfig]:
    return {"off": base, **{name: replace(base, **kw) for name, kw in STEPS[step].items()}}


def sparsest(vals: dict[str, dict[tuple[str, str, str], Any]], name: str,
             keys: tuple[tuple[str, str], ...]) -> str:
    """Step 6: the candidate with the highest mean of ``keys`` (set, metric) among those in
    ``vals`` (already filtered by the floors); the first one on ties or when none is a number."""
    def mean(c: str) -> float:
        xs = [vals[c].get((name, s, m)) for s, m in keys]
        return (sum(xs) / len(xs) if all(isinstance(x, (int, float)) for x in xs)
                else -float("inf"))
    best = list(vals)[0]
    for c in vals:
        if mean(c) > mean(best):
            best = c
    return best


def keeps_floors(vals: dict[tuple[str, str, str], Any], name: str,
                 floors: tuple[tuple[str, str, str, float], ...]) -> bool:
    """Whether a candidate's metrics ``vals[(ckpt, set, metric)]`` keep every floor."""
    for s, m, op, bound in floors:
        v = vals.get((name, s, m))
        if not isinstance(v, (int, float)) or not (v >= bound if op == ">=" else v <= bound):
            return False
    return True


def run(kind: str, name: str, ckpt: str, base: MaskConfig | None, log: Any,
        data_folder: str = "", step: str = "gate") -> dict[str, Any]:
    """The step for one checkpoint: every candidate on every set, ranks, the winner."""
    from l2i.explain import checkpoint_mask_config

    sets = ("clean",) if kind == "synthetic" else ("clean", "mixtures", "white_noise")
    metrics = {**(SYNTH_METRICS if kind == "synthetic" else ESC_METRICS),
               **EXTRA_METRICS[step][kind]}
    table: dict[str, dict] = {}
    baselines: dict[str, Any] = {}
    cands: dict[str, MaskConfig] = {}
    listen: dict[str, Any] = {}
    for s in sets:
        t0 = time.perf_counter()
        data = valid_set(ckpt, CONTAMINATION[s], data_folder=data_folder)
        cands = candidates(base or checkpoint_mask_config(data["explainer"].interpreter), step)
        res = score(data, cands, baselines=True)
        log(f"{kind}/{name}/{s}: {len(cands)} masks in {time.perf_counter() - t0:.0f} s")
        for c, agg in res.items():
            dest = table.setdefault(c, {}) if c in cands else baselines.setdefault(c, {})
            dest.update({(name, s, m): v for m, v in agg.items()})
        if s == "clean":
            listen = listenability(data, cands)
    ranks = mean_ranks({c: table[c] for c in cands}, metrics, [name])
    eligible = [c for c in cands if c == "off" or keeps_floors(table[c], name,
                                                              FLOORS[step][kind])]
    if step == "sparse":
        winner = sparsest({c: table[c] for c in eligible}, name, SPARSITY[kind])
    else:
        winner = min(eligible, key=lambda c: (ranks[c] - (1e-9 if c == "off" else 0),
                                              eligible.index(c)))
    rows = [{"mask": c, "mean rank": round(ranks[c], 3) if c in ranks else None,
             **({"floors": "kept" if keeps_floors(vals, name, FLOORS[step][kind]) else "no"}
                if FLOORS[step][kind] and c in cands else {}),
             **{PREFIX[s] + m: _round(vals.get((name, s, m)))
                for s, ms in COLS[kind].items() for m in ms if (name, s, m) in vals},
             "kept": "yes" if c == winner else ""}
            for c, vals in {**table, **{f"baseline {b}": v for b, v in baselines.items()}}.items()]
    return {"checkpoint": ckpt, "base": to_dict(cands["off"]), "winner": winner,
            "chosen": to_dict(cands[winner]), "rows": rows, "listenability": listen}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--synthetic", default=None, help="NAME=l2i.ckpt (demo data)")
    ap.add_argument("--esc10", default=None, help="NAME=l2i.ckpt (ESC-10)")
    ap.add_argument("--synthetic_base", default=None, help="JSON MaskConfig (default: ckpt's)")
    ap.add_argument("--esc10_base", default=None, help="JSON MaskConfig (default: ckpt's)")
    ap.add_argument("--synthetic_data", default="", help="data folder (default: ckpt's)")
    ap.add_argument("--esc10_data", default="", help="data folder (default: ckpt's)")
    ap.add_argument("--step", choices=sorted(STEPS), default="gate",
                    help="gate: step 4 (mask.floor_gate); prune: step 5 (mask.prune); "
                         "sparse: step 6 (the sparse variant)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:6.0f} s] {msg}", file=sys.stderr, flush=True)

    result: dict[str, Any] = {
        "command": "python benchmarks/select_gate.py " + " ".join(argv or sys.argv[1:]),
        "machine": "2-core CPU, shared (validation metrics; no timing)",
        "rule": "see the script's docstring"}
    for kind in ("synthetic", "esc10"):
        spec, base = getattr(args, kind), getattr(args, f"{kind}_base")
        if spec:
            (name, ckpt), = _named([spec]).items()
            cfg = from_dict(MaskConfig, json.loads(base), "mask.") if base else None
            result[kind] = run(kind, name, ckpt, cfg, log, getattr(args, f"{kind}_data"),
                               args.step)
    if args.out:
        for kind in ("synthetic", "esc10"):
            if kind in result:
                table = {"command": result["command"], "machine": result["machine"],
                         "rows": result[kind]["rows"]}
                Path(f"{args.out.removesuffix('.json')}_{kind}.json").write_text(
                    json.dumps(table, indent=2) + "\n")
    return emit(result, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
