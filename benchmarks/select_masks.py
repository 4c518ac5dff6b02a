"""Choose the L2I mask defaults (``mask:`` of the recipes) on VALIDATION folds, by a rule fixed
in advance (written here before any figure was seen).

    .venv/bin/python benchmarks/select_masks.py \\
        --synthetic demo=/work/main/runs/demo/l2i/l2i.ckpt \\
        --esc10 sel=/work/main/runs/sel/l2i_flatten/l2i.ckpt \\
        --out benchmarks/results/select_masks.json

Each checkpoint is evaluated on its recipe's VALIDATION fold (``data.valid_folds``; the test
fold is never read) with the harness's own code (``l2i.scoring.score_explainers`` and
``aggregate``, what ``l2i evaluate`` runs), next to the energy / ones / random baselines.
``--synthetic`` checkpoints (``l2i demo`` data, with event ground truth) on the clean clips;
``--esc10`` checkpoints on the clean clips, ``mixtures`` and ``white_noise`` (0 dB).

The rule:

1. Step 1, candidates: every combination of ``resolution`` (clip, frame) x ``weights``
   (threshold at the checkpoint's ``relevance_th``, soft ``max(r, 0)``) x ``background``
   (none, median) x ``rescale`` (false, true), 16 in all, ``denominator: model``; the paper's
   mask (clip, threshold, none, false) is the first.
2. Each candidate is ranked (1 = best, ties averaged) on each metric below; the lowest mean
   rank wins; a tie goes to the earlier candidate in the order above (the one closer to the
   paper's mask). Step 2: the step-1 winner and three variants of it, each changing one
   option: ``resolution: frame_attention`` (theta's attention weights), ``background:
   spread``, ``denominator: input``; ranked again among these four, the lowest mean rank wins
   (a tie keeps the step-1 winner).
   - synthetic recipe (``recipes/demo/l2i.yaml``): mask localisation ROC-AUC and IoU (higher
     is better), AI (higher), AD (lower), FF (higher), Fid-In (higher): 6 rankings;
   - ESC-10 recipe (``recipes/esc50/l2i_conv2d.yaml``): AI, AD, FF, Fid-In on clean and on
     mixtures, SPS on white noise: 9 rankings.
   With several checkpoints of one kind, the rankings of all of them are pooled (each
   checkpoint's metrics are separate rankings).
3. Step 3, sharpening, on the step-2 winner of each recipe: sharpen 1 (off), sharpen 0.5,
   sharpen 2, binarize 0.25, binarize 0.5 (relative to the clip's maximum), ranked by the same
   metrics; another one than "off" is kept only if its mean rank is strictly lower.
4. Listenability is reported next to the metrics (not ranked): on the clean validation clips,
   the spectral flatness of the explanation audio (mean over frames within 60 dB of the
   clip's loudest; the input's own flatness alongside) and the STFT inconsistency
   ``|| |STFT(ISTFT(M X))| - M |X| || / || M |X| ||`` (0 for a mask the STFT can realise;
   hard masks create artefacts that raise it).

(The rule was cut once, before any selection figure existed: the first version, a 72-mask
factorial with ``frame_attention``, ``spread``, ``input`` and ``rescale`` as factors, would have
needed ~2 h on the shared CPU. ``rescale`` entered the rule after a smoke test on one
validation clip showed soft per-frame masks peaking at ~0.15. The paper's component-removal
control is not computed here: it is not ranked and costs a classifier pass per mask.)

Prints one JSON object (``--out`` also writes it): per recipe the chosen mask, the rows of
every candidate (metrics and mean rank) and the baselines; ``--out`` also writes the compact
tables ``NAME_synthetic.json`` / ``NAME_esc10.json`` next to it (docs/benchmarks.md renders
them). ``--merge A.json B.json`` combines runs made separately (one per kind) into ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emit import emit  # noqa: E402

from l2i import features as feats  # noqa: E402
from l2i.config import EvaluateRecipe, MaskConfig, to_dict  # noqa: E402

SYNTH_METRICS = {("clean", "loc_auc"): 1, ("clean", "loc_iou"): 1, ("clean", "AI"): 1,
                 ("clean", "AD"): -1, ("clean", "FF"): 1, ("clean", "Fid-In"): 1}
ESC_METRICS = {**{(s, m): sign for s in ("clean", "mixtures")
                  for m, sign in (("AI", 1), ("AD", -1), ("FF", 1), ("Fid-In", 1))},
               ("white_noise", "SPS"): 1}
REPORTED = ("AI", "AD", "FF", "Fid-In", "SPS", "COMP", "mask_mean", "loc_auc", "loc_iou",
            "loc_auc_baseline", "fidelity_top1", "ms_per_clip")
CONTAMINATION = {"clean": "none", "mixtures": "mixtures", "white_noise": "white_noise"}


def step1_candidates() -> dict[str, MaskConfig]:
    out = {}
    for res, w, bg, sc in itertools.product(("clip", "frame"), ("threshold", "soft"),
                                            ("none", "median"), (False, True)):
        name = f"{res}/{w}/{bg}" + ("/rescale" if sc else "")
        out[name] = MaskConfig(resolution=res, weights=w, background=bg, rescale=sc)
    return out


def step2_variants(base: MaskConfig) -> dict[str, MaskConfig]:
    return {"frame_attention": replace(base, resolution="frame_attention"),
            "spread": replace(base, background="spread"),
            "input": replace(base, denominator="input")}


def step3_candidates(base: MaskConfig) -> dict[str, MaskConfig]:
    return {"off": base, "sharpen0.5": replace(base, sharpen=0.5),
            "sharpen2": replace(base, sharpen=2.0),
            "binarize0.25": replace(base, binarize=0.25),
            "binarize0.5": replace(base, binarize=0.5)}


# --------------------------------------------------------------------------- data
LIMIT = 0  # --limit: first N validation clips only (a smoke test of the script; 0 = all)


def valid_set(ckpt: str, contamination: str, seed: int = 0, data_folder: str = "",
              folds: list[int] | None = None) -> dict[str, Any]:
    """The checkpoint's validation fold as ``l2i evaluate --test_folds VALID`` loads it
    (``data_folder``: where the data now is, if not where the checkpoint was trained;
    ``folds``: other folds than the checkpoint's validation folds)."""
    from l2i.contamination import contaminate
    from l2i.data import load_dataset, load_split
    from l2i.evaluation import _test_data_config, _truth_masks, with_checkpoint_defaults
    from l2i.explain import Explainer

    ex = Explainer.load(ckpt)
    recipe = dict(ex.interpreter.recipe or {})
    folds = list(folds or recipe["data"]["valid_folds"])
    cfg = with_checkpoint_defaults(EvaluateRecipe(ckpt=ckpt, test_folds=folds,
                                                  data_folder=data_folder), recipe)
    data_cfg = _test_data_config(cfg)
    fcfg, sr = ex.features, ex.sample_rate
    index = load_dataset(cfg.data_folder, data_cfg, sample_rate=sr, splits=("test",),
                         known_classes=ex.class_names)
    split = load_split(index, "test", data_cfg, sr, None)
    names = list(index.class_names)
    labels = np.asarray([ex.class_names.index(names[i]) for i in split.labels], dtype=np.int64)
    n = LIMIT or len(split.labels)
    clean = np.asarray(split.wavs[:n], dtype=np.float32)  # (N, S)
    labels = labels[:n]
    wavs, _ = contaminate(clean, labels, contamination, seed, None, sr)
    ids = [str(i) for i in split.ids][:n]
    truths = _truth_masks(cfg.data_folder, index, ids, fcfg, feats.n_frames(wavs.shape[1], fcfg))
    return {"explainer": ex, "wavs": wavs, "labels": labels, "truths": truths, "folds": folds,
            "data_folder": cfg.data_folder}


class SharedForward:
    """The interpreter, its forward pass computed once per batch for every candidate mask
    (the candidates differ only after it); everything else is the interpreter's."""

    def __init__(self, interp: Any) -> None:
        self._interp, self._key, self._out = interp, None, None

    def __call__(self, mag: torch.Tensor, **kw: Any) -> Any:
        if mag is not self._key:  # the same batch tensor (held, so never a reused address)
            self._key, self._out = mag, self._interp(mag, **kw)
        return self._out

    def eval(self) -> SharedForward:
        self._interp.eval()
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._interp, name)


def _mask_only():
    from l2i.explainers.l2i import L2IExplainer

    class MaskOnly(L2IExplainer):
        """L2I without the extras that trigger the component-removal control."""

        def explain_spec(self, spec: Any, target: Any, **kw: Any) -> Any:
            mask, extras = super().explain_spec(spec, target, **kw)
            return mask, {k: v for k, v in extras.items() if k != "selected"}

    return MaskOnly


def score(data: dict[str, Any], masks: dict[str, MaskConfig],
          baselines: bool) -> dict[str, dict[str, Any]]:
    """``aggregate`` metrics of every candidate mask (and the trivial baselines)."""
    from l2i.explain import Explainer
    from l2i.explainers import build_baseline
    from l2i.scoring import aggregate, score_explainers

    _MaskOnly = _mask_only()
    base = data["explainer"]
    shared = SharedForward(base.interpreter)
    exs = []
    for name, cfg in masks.items():
        e = _MaskOnly(Explainer(shared, relevance_th=base.relevance_th, mask=cfg))
        e.name = name
        exs.append(e)
    if baselines:
        for b in ("energy", "ones", "random"):
            exs.append(build_baseline(b, exs[0].classifier, exs[0].features,
                                      exs[0].class_names, seed=0))
    res = score_explainers(exs, data["wavs"], 16, 0, data["truths"], progress=False)
    out = {}
    for name, r in res.items():
        agg = aggregate(r, data["labels"])
        out[name] = {k: agg.get(k) for k in REPORTED if agg.get(k) is not None}
    return out


def listenability(data: dict[str, Any], masks: dict[str, MaskConfig]) -> dict[str, Any]:
    """Spectral flatness of the explanation audio and STFT inconsistency, means over clips."""
    from l2i.explain import Explainer

    base = data["explainer"]
    fcfg = base.features
    wav = torch.from_numpy(np.ascontiguousarray(data["wavs"]))  # (N, S)
    out: dict[str, Any] = {}
    spec = feats.stft(wav, fcfg)  # (N, T, F) complex
    mag = feats.magnitude(spec)
    out["input"] = {"flatness": _flatness(mag)}
    for name, cfg in masks.items():
        ex = Explainer(base.interpreter, relevance_th=base.relevance_th, mask=cfg)
        flat, inc = [], []
        for s in range(0, wav.shape[0], 16):
            b = ex.explain_batch(mag[s:s + 16])
            target = b.mask * spec[s:s + 16]  # (B, T, F) complex
            audio = feats.istft(target, fcfg, length=wav.shape[1])  # (B, N)
            again = feats.magnitude(feats.stft(audio, fcfg))  # (B, T, F)
            want = target.abs()
            num = (again - want).pow(2).sum(dim=(1, 2)).sqrt()
            den = want.pow(2).sum(dim=(1, 2)).sqrt().clamp_min(1e-12)
            inc.append((num / den).numpy())
            flat.append(_flatness(again, per_clip=True))
        out[name] = {"flatness": float(np.nanmean(np.concatenate(flat))),
                     "inconsistency": float(np.mean(np.concatenate(inc)))}
    return out


def _flatness(mag: torch.Tensor, per_clip: bool = False) -> Any:
    """Spectral flatness (geometric / arithmetic mean over bins) averaged over the frames
    within 60 dB of each clip's loudest; ``mag (B, T, F)``."""
    p = mag.double().pow(2) + 1e-20  # (B, T, F)
    sf = p.log().mean(dim=-1).exp() / p.mean(dim=-1)  # (B, T)
    energy = p.sum(dim=-1)  # (B, T)
    keep = energy >= energy.amax(dim=1, keepdim=True) * 1e-6
    vals = torch.where(keep, sf, torch.full_like(sf, float("nan")))
    clip = torch.nanmean(vals, dim=1).numpy()
    return clip if per_clip else float(np.nanmean(clip))


# --------------------------------------------------------------------------- ranking
def mean_ranks(table: dict[str, dict[tuple[str, str, str], float]],
               metrics: dict[tuple[str, str], int], ckpts: list[str]) -> dict[str, float]:
    """``table[candidate][(ckpt, set, metric)]`` -> mean rank (1 = best, ties averaged)."""
    names = list(table)
    total, n = np.zeros(len(names)), 0
    for ck in ckpts:
        for (s, m), sign in metrics.items():
            vals = np.array([-sign * _num(table[c].get((ck, s, m))) for c in names])
            vals = np.where(np.isnan(vals), np.inf, vals)  # a missing value ranks last
            order = vals.argsort(kind="stable")
            r = np.empty(len(names))
            r[order] = np.arange(1, len(names) + 1)
            for v in np.unique(vals):
                r[vals == v] = r[vals == v].mean()
            total += r
            n += 1
    return {c: float(total[i] / n) for i, c in enumerate(names)}


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) else float("nan")


def run_kind(ckpts: dict[str, str], sets: tuple[str, ...], metrics: dict[tuple[str, str], int],
             log: Any) -> dict[str, Any]:
    """Steps 1-2 of the rule for one recipe kind (synthetic or ESC-10)."""
    data = {(ck, s): valid_set(path, CONTAMINATION[s]) for ck, path in ckpts.items() for s in sets}
    rows: dict[str, dict[str, Any]] = {}
    baselines: dict[str, Any] = {}

    def evaluate(cands: dict[str, MaskConfig], prefix: str) -> dict[str, dict]:
        table: dict[str, dict] = {prefix + c: {} for c in cands}
        for (ck, s), d in data.items():
            t0 = time.perf_counter()
            res = score(d, cands, baselines=(ck, s) not in baselines)
            log(f"{prefix}{ck}/{s}: {len(cands)} masks in {time.perf_counter() - t0:.0f} s")
            for name, agg in res.items():
                if name in cands:
                    for m, v in agg.items():
                        table[prefix + name][(ck, s, m)] = v
                else:
                    baselines.setdefault((ck, s), {})[name] = agg
        return table

    def best_of(table: dict, keep: str) -> tuple[str, dict]:
        ranks = mean_ranks(table, metrics, list(ckpts))
        order = list(table)
        win = min(order, key=lambda c: (ranks[c] - (1e-9 if c == keep else 0), order.index(c)))
        return win, ranks

    step1 = step1_candidates()
    t1 = evaluate(step1, "")
    best1, r1 = best_of(t1, "")
    var = step2_variants(step1[best1])
    t2 = {f"variant:{best1}": t1[best1], **evaluate(var, "variant:")}
    best2, r2 = best_of(t2, f"variant:{best1}")
    cfg2 = step1[best1] if best2 == f"variant:{best1}" else var[best2.split(":", 1)[1]]
    step3 = step3_candidates(cfg2)
    t3 = {"sharpen:off": t2[best2],
          **evaluate({k: v for k, v in step3.items() if k != "off"}, "sharpen:")}
    best3, r3 = best_of(t3, "sharpen:off")
    chosen = step3[best3.split(":", 1)[1]]
    clean = next(d for (ck, s), d in data.items() if s == "clean")
    listen = listenability(clean, {"paper": MaskConfig(), "step2 winner": cfg2,
                                   **{f"sharpen:{k}": v for k, v in step3.items()
                                      if k != "off"}})
    for table, ranks, step in ((t1, r1, 1), (t2, r2, 2), (t3, r3, 3)):
        for c, vals in table.items():
            row = rows.setdefault(f"step{step}:{c}", {"step": step, "candidate": c})
            row["mean_rank"] = round(ranks[c], 3)
            row.update({f"{ck}/{s}/{m}": _round(v) for (ck, s, m), v in vals.items()})
    return {"checkpoints": ckpts, "valid_folds": {ck: data[(ck, sets[0])]["folds"] for ck in ckpts},
            "step1_winner": best1, "step2_winner": best2, "step3_winner": best3,
            "chosen": to_dict(chosen),
            "listenability": listen, "rows": list(rows.values()),
            "baselines": {f"{ck}/{s}": {n: {m: _round(v) for m, v in a.items()}
                                        for n, a in b.items()}
                          for (ck, s), b in baselines.items()}}


def _round(v: Any) -> Any:
    return round(float(v), 4) if isinstance(v, (int, float)) else v


TABLE_COLS = {
    "synthetic": [("loc AUC", "clean/loc_auc"), ("loc IoU", "clean/loc_iou"), ("AI", "clean/AI"),
                  ("AD", "clean/AD"), ("FF", "clean/FF"), ("Fid-In", "clean/Fid-In"),
                  ("SPS", "clean/SPS")],
    "esc10": [("AI", "clean/AI"), ("AD", "clean/AD"), ("FF", "clean/FF"),
              ("Fid-In", "clean/Fid-In"), ("mix AI", "mixtures/AI"), ("mix AD", "mixtures/AD"),
              ("mix FF", "mixtures/FF"), ("mix Fid-In", "mixtures/Fid-In"),
              ("noise SPS", "white_noise/SPS")],
}


def compact_tables(result: dict[str, Any], out: str) -> None:
    """``OUT_synthetic.json`` / ``OUT_esc10.json``: one row per candidate (first checkpoint)
    and baseline, for tools/gen_docs.py."""
    import json

    for kind, cols in TABLE_COLS.items():
        if kind not in result:
            continue
        r = result[kind]
        ck = next(iter(r["checkpoints"]))
        rows = []
        for row in r["rows"]:
            winner = row["candidate"] in (r["step1_winner"], r["step2_winner"], r["step3_winner"])
            rows.append({"step": row["step"], "mask": row["candidate"],
                         "mean rank": row["mean_rank"],
                         **{n: row.get(f"{ck}/{k}") for n, k in cols},
                         "kept": "yes" if winner else ""})
        for b in ("energy", "ones", "random"):
            vals = {n: r["baselines"].get(f"{ck}/{k.split('/')[0]}", {}).get(b, {})
                    .get(k.split("/")[1]) for n, k in cols}
            rows.append({"step": "–", "mask": f"baseline {b}", "mean rank": None, **vals,
                         "kept": ""})
        table = {"command": result["command"], "machine": result["machine"], "rows": rows}
        Path(f"{out.removesuffix('.json')}_{kind}.json").write_text(json.dumps(table, indent=2)
                                                                   + "\n")


def _named(specs: list[str]) -> dict[str, str]:
    return dict(s.split("=", 1) if "=" in s else (Path(s).parent.name, s) for s in specs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--synthetic", action="append", default=[], help="NAME=l2i.ckpt (demo data)")
    ap.add_argument("--esc10", action="append", default=[], help="NAME=l2i.ckpt (ESC-10)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--limit", type=int, default=0, help="first N clips only (smoke test)")
    ap.add_argument("--merge", nargs="+", default=None, help="combine earlier --out JSONs")
    args = ap.parse_args(argv)
    global LIMIT
    LIMIT = args.limit
    torch.set_num_threads(1)
    t0 = time.time()
    result: dict[str, Any] = {
        "command": "python benchmarks/select_masks.py " + " ".join(argv or sys.argv[1:]),
        "machine": "2-core CPU, shared (validation metrics; no timing)",
        "rule": "see the script's docstring"}

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:6.0f} s] {msg}", file=sys.stderr, flush=True)

    if args.merge:
        import json

        parts = [json.loads(Path(p).read_text()) for p in args.merge]
        result["command"] = " && ".join(p["command"] for p in parts)
        for p in parts:
            result.update({k: v for k, v in p.items() if k in TABLE_COLS})
    if args.synthetic:
        result["synthetic"] = run_kind(_named(args.synthetic), ("clean",), SYNTH_METRICS, log)
    if args.esc10:
        result["esc10"] = run_kind(_named(args.esc10), ("clean", "mixtures", "white_noise"),
                                   ESC_METRICS, log)
    if args.out:
        compact_tables(result, args.out)
    return emit(result, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
