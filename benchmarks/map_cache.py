"""Benchmark: L2I training with the map cache (float16 / float32) or recomputing the maps.

Runs ``train_interpreter`` on one recipe three times, the same seed and epochs, differing only
in the map cache: ``cache_maps true`` with ``trainer.cache_dtype float16`` (the default) and
``float32``, and ``cache_maps false`` (the classifier runs on every batch of every epoch). Per
mode: seconds per epoch (``fit_seconds / epochs``, training + validation), the one-off cache
build, the cache's size on disk against :func:`l2i.training.map_cache.estimate_bytes`, and the
validation fidelity / loss of the trained interpreter (the effect of float16 maps).

With ``--l2i_ckpt`` it also scores an already trained interpreter on the validation split from
float16 and from float32 maps (the same weights; only the stored maps differ).

    python benchmarks/map_cache.py --recipe R --data_folder D --classifier_ckpt C --nmf N
        [--epochs E] [--l2i_ckpt L] [--threads 1] [--out benchmarks/results/X.json]

Prints JSON ``{"command", "machine", "rows": [...]}`` (docs/scaling.md renders it).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch
from _emit import emit

from l2i.config import L2IRecipe, load_config

MODES = {"cache float16": {"cache_maps": "true", "trainer.cache_dtype": "float16"},
         "cache float32": {"cache_maps": "true", "trainer.cache_dtype": "float32"},
         "recompute": {"cache_maps": "false"}}


def train_row(args: argparse.Namespace, mode: str, out: Path) -> dict:
    """One training run in ``mode``; its timings, cache size and validation scores."""
    from l2i.training.interpreter import train_interpreter

    over = {"data_folder": args.data_folder, "classifier_ckpt": args.classifier_ckpt,
            "nmf": args.nmf, "output_folder": str(out), "trainer.epochs": str(args.epochs),
            "trainer.progress": "false", "trainer.patience": "0", **MODES[mode]}
    cfg = load_config(L2IRecipe, args.recipe, over)
    train_interpreter(cfg)
    m = json.loads((out / "metrics.json").read_text())
    epochs = max(1, int(m["epochs"]))
    return {"mode": mode, "epochs": epochs, "n_train": m["n_train"],
            "s_per_epoch": round(m["fit_seconds"] / epochs, 2),
            "cache_build_s": round(m["cache_seconds"], 2) if m["cache"] else 0.0,
            "cache_mb": m["cache_mb"], "estimate_mb": m["cache_estimate_mb"],
            "valid_fid_top1": round(m["valid/fid_top1"], 4),
            "valid_loss": round(m["valid/loss"], 4), "valid_rec_rel": round(m["valid/rec_rel"], 4),
            "peak_rss_mb": m["peak_rss_mb"]}


def eval_rows(args: argparse.Namespace, tmp: Path) -> list[dict]:
    """A trained interpreter scored on the validation split from float16 / float32 maps."""
    from l2i.config import TrainerConfig
    from l2i.data import load_dataset, load_split
    from l2i.interpreter import load_interpreter
    from l2i.training.interpreter import L2IModule, evaluate_split, make_loader
    from l2i.training.map_cache import CachedSplit, build_cache

    cfg = load_config(L2IRecipe, args.recipe, {"data_folder": args.data_folder})
    interp = load_interpreter(args.l2i_ckpt, "cpu")
    index = load_dataset(args.data_folder, cfg.data, progress=False)
    arr = load_split(index, "valid", cfg.data, interp.features.sample_rate,
                     cache_dir=tmp / "audio", progress=False)
    module = L2IModule(interp, cfg.loss, TrainerConfig())
    rows = []
    for dtype in ("float32", "float16"):
        folder = build_cache(interp, arr.wavs, arr.labels, tmp / dtype, dtype, 16,
                             torch.device("cpu"), dtype=dtype)
        loader = make_loader(CachedSplit(folder, arr.wavs, interp.features), 16, False, 0)
        r = evaluate_split(module, loader, torch.device("cpu"))
        rows.append({"mode": f"trained ckpt, valid from {dtype} maps", "n_clips": r["n_clips"],
                     "valid_fid_top1": round(r["fid_top1"], 4),
                     "valid_loss": round(r["loss"], 5), "valid_rec_rel": round(r["rec_rel"], 5)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", required=True)
    ap.add_argument("--data_folder", required=True)
    ap.add_argument("--classifier_ckpt", required=True)
    ap.add_argument("--nmf", required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--l2i_ckpt", default="")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="l2i_map_cache_") as tmp:
        for mode in args.modes.split(","):
            rows.append(train_row(args, mode, Path(tmp) / mode.replace(" ", "_")))
        if args.l2i_ckpt:
            rows += eval_rows(args, Path(tmp) / "eval")
    command = "python benchmarks/map_cache.py " + " ".join(sys.argv[1:] if argv is None
                                                            else argv)
    machine = (f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), "
               "loaded (5 engineers on 2 cores)")
    return emit({"benchmark": "map_cache", "command": command, "machine": machine,
                 "rows": rows}, args.out)


if __name__ == "__main__":
    sys.exit(main())
