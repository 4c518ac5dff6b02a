"""Benchmark: the cost model of docs/scaling.md, measured at several dataset sizes and checked.

For each size N (synthetic clips, ``l2i synth`` with the demo settings: 10 classes, 5 s at
16 kHz, 5 folds: train 1-3 / valid 4 / test 5) it runs every stage as the user would, one
``l2i ... --threads 1`` process per stage, and records CPU seconds (user + system of the
stage's process; the split of ``l2i train`` into cache / epoch / rest from the
``*_cpu_seconds`` of its ``metrics.json``), wall seconds and bytes written. The model is fitted
on CPU seconds: with one thread they are the wall time of an idle core, and unlike wall time
on this shared machine they do not follow the other users' load (a first try on wall times
missed by 36-190 %: the load average went from 8 to 14 between the sizes):

    synth (N clips) -> prepare (shards) -> train-classifier (1 epoch, recipes/demo) ->
    train-nmf (recipes/demo) -> train (1 epoch, cache_maps true: cache build + cached epoch) ->
    train (1 epoch, cache_maps false: recomputed epoch) -> evaluate (test fold) ->
    interpret (N / 10 of the test fold's files)

The model: each stage costs ``a + b * n`` CPU seconds, ``n`` the clips that stage touches (synth,
prepare and the cache: N; classifier epoch: train; L2I epoch: train + valid; evaluate and
interpret: test), ``a`` the fixed cost (process start, imports, model building, NMF solver on
its capped frame count). ``a`` and ``b`` are fitted on the two smaller sizes and the largest is
predicted: ``error`` = predicted / measured - 1 of that held-out size (the 30 % check). Storage
is ``bytes per clip * n`` (+ a constant). All sizes run back to back in one process tree under
the same machine load.

    python benchmarks/cost_model.py [--sizes 100,200,400] [--work /tmp/cost] [--keep]
        [--out benchmarks/results/cost_model.json] [--from_json EARLIER.json (refit only)]

Prints JSON ``{"command", "machine", "rows": [...], "stages": {...}}``: ``rows`` one line per
stage (docs/scaling.md renders them), ``stages`` the fitted ``a``, ``b``, bytes per clip and
every measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _emit import emit

ROOT = Path(__file__).resolve().parents[1]
L2I = [sys.executable, "-m", "l2i.cli"]
TOL = 0.30
MEASURED_S = 5.0  # clip length of the measured runs (the demo settings)
# (clips: train, valid, test; clip length in s) of the datasets the model is extrapolated to:
# ESC-50 5 folds as 3/1/1; FSD50K dev (train/val) and eval, clips cut or padded to 10 s;
# AudioSet balanced + unbalanced train, 20k valid held out, the 20k eval set, 10 s
DATASETS = {"ESC-50": ((1200, 400, 400), 5.0), "FSD50K": ((36796, 4170, 10231), 10.0),
            "AudioSet": ((2_000_000, 20_000, 20_000), 10.0)}
# which clips each stage touches: "all", "train", "train+valid", "test"
TOUCHES = {"synth": "all", "prepare": "all", "classifier epoch": "train", "nmf": "train",
           "map cache": "all", "l2i epoch cached": "train+valid",
           "l2i epoch recomputed": "train+valid", "l2i run, other": "all", "evaluate": "test",
           "interpret": "test"}


def folder_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (a file: its size; absent: 0)."""
    if path.is_file():
        return path.stat().st_size
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def cpu_children() -> float:
    """CPU seconds (user + system) of the finished child processes so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(args: list[str], log: Path) -> tuple[float, float]:
    """Run ``l2i ARGS --threads 1``; ``(CPU seconds, wall seconds)``. Raises on failure."""
    t0, c0 = time.perf_counter(), cpu_children()
    with open(log, "a") as f:
        proc = subprocess.run([*L2I, *args, "--threads", "1"], stdout=f, stderr=subprocess.STDOUT,
                              cwd=ROOT, env={**os.environ, "TQDM_DISABLE": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"cost_model: 'l2i {' '.join(args)}' failed (see {log})")
    return cpu_children() - c0, time.perf_counter() - t0


def measure(n: int, work: Path) -> dict[str, dict]:
    """Every stage at ``n`` clips: ``{stage: {"n": clips, "s": seconds, "bytes": bytes}}``."""
    d = work / f"n{n}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    log = d / "log.txt"
    n_train, n_valid, n_test = 3 * n // 5, n // 5, n // 5
    out: dict[str, dict] = {}
    demo = ROOT / "recipes" / "demo"
    common = ["--data_folder", str(d / "shards")]
    steps = [
        ("synth", n, ["synth", str(d / "synth"), "--n_per_class", str(n // 10)], d / "synth"),
        ("prepare", n, ["prepare", str(d / "synth"), "--output_folder", str(d / "shards"),
                        "--progress", "false"], d / "shards"),
        ("classifier epoch", n_train, ["train-classifier", str(demo / "classifier.yaml"),
                                       *common, "--output_folder", str(d / "clf"),
                                       "--trainer.epochs", "1", "--trainer.progress", "false"],
         d / "clf" / "classifier.ckpt"),
        ("nmf", n_train, ["train-nmf", str(demo / "nmf.yaml"), *common,
                          "--output_folder", str(d / "nmf")], d / "nmf" / "nmf.pt"),
    ]
    for stage, count, argv, written in steps:
        cpu, wall = run(argv, log)
        out[stage] = {"n": count, "s": cpu, "wall_s": wall, "bytes": folder_bytes(written)}
    l2i = ["train", str(demo / "l2i.yaml"), *common, "--classifier_ckpt",
           str(d / "clf" / "classifier.ckpt"), "--nmf", str(d / "nmf" / "nmf.pt"),
           "--trainer.epochs", "1", "--trainer.progress", "false"]
    for mode in ("true", "false"):
        folder = d / f"l2i_{mode}"
        cpu, wall = run([*l2i, "--output_folder", str(folder), "--cache_maps", mode], log)
        m = json.loads((folder / "metrics.json").read_text())
        epoch = {"n": n_train + n_valid, "s": m["fit_cpu_seconds"],
                 "wall_s": m["fit_seconds"], "bytes": 0}
        if mode == "true":
            out["map cache"] = {"n": n, "s": m["cache_cpu_seconds"],
                                "wall_s": m["cache_seconds"],
                                "bytes": folder_bytes(folder / "cache") -
                                folder_bytes(folder / "cache" / "audio")}
            out["l2i epoch cached"] = epoch
            out["l2i run, other"] = {
                "n": n, "s": cpu - m["fit_cpu_seconds"] - m["cache_cpu_seconds"],
                "wall_s": wall - m["fit_seconds"] - m["cache_seconds"],
                "bytes": folder_bytes(folder / "l2i.ckpt")}
        else:
            out["l2i epoch recomputed"] = epoch
    ckpt = str(d / "l2i_true" / "l2i.ckpt")
    cpu, wall = run(["evaluate", ckpt, *common, "--output_folder", str(d / "eval"),
                     "--n_examples", "0"], log)
    out["evaluate"] = {"n": n_test, "s": cpu, "wall_s": wall, "bytes": folder_bytes(d / "eval")}
    files = sorted(str(p) for p in (d / "synth" / "audio").glob("5-*.wav"))[:max(1, n // 10)]
    cpu, wall = run(["interpret", ckpt, *files, "--output_folder", str(d / "expl")], log)
    out["interpret"] = {"n": len(files), "s": cpu, "wall_s": wall,
                        "bytes": folder_bytes(d / "expl")}
    return out


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """``(a, b)`` of ``y = a + b x`` through two points, both kept >= 0: a stage neither gets
    cheaper with more clips (a negative slope is measurement noise on a fixed cost: then
    ``b = 0`` and ``a`` the mean) nor starts below zero (then ``a = 0``, ``b`` through the
    larger point)."""
    (x0, y0), (x1, y1) = points
    b = (y1 - y0) / (x1 - x0) if x1 != x0 else y1 / max(x1, 1)
    a = y0 - b * x0
    if b < 0:
        a, b = (y0 + y1) / 2, 0.0
    if a < 0:
        a, b = 0.0, y1 / x1
    return a, b


def model(results: dict[int, dict[str, dict]]) -> tuple[dict, list[dict]]:
    """Fit ``a + b n`` (seconds) and bytes per clip on the smaller sizes; check the largest."""
    sizes = sorted(results)
    small, big = sizes[:-1][-2:], sizes[-1]
    stages, rows = {}, []
    for stage in results[sizes[0]]:
        pts = [(results[s][stage]["n"], results[s][stage]["s"]) for s in small]
        a, b = fit(pts)
        m = results[big][stage]
        pred = a + b * m["n"]
        bpts = [(results[s][stage]["n"], results[s][stage]["bytes"]) for s in small]
        ba, bb = fit(bpts)
        bpred = ba + bb * m["n"]
        err = pred / m["s"] - 1 if m["s"] > 0 else 0.0
        stages[stage] = {"a_s": round(a, 3), "b_s_per_clip": round(b, 5),
                         "bytes_const": int(ba), "bytes_per_clip": round(bb, 1),
                         "measured": {str(s): results[s][stage] for s in sizes}}
        rows.append({"stage": stage, "clips (largest run)": m["n"],
                     **{f"CPU s at N={s}": round(results[s][stage]["s"], 1) for s in sizes},
                     "wall s (largest)": round(m["wall_s"], 1),
                     "a (s)": round(a, 2), "b (ms/clip)": round(1000 * b, 1),
                     "predicted s": round(pred, 1), "error": f"{100 * err:+.0f} %",
                     "within 30 %": abs(err) <= TOL,
                     "MB written": round(m["bytes"] / 2**20, 1),
                     "predicted MB": round(bpred / 2**20, 1)})
    return stages, rows


def extrapolate(stages: dict) -> list[dict]:
    """Predicted hours and GB of each stage on :data:`DATASETS` (same classifier, CPU, load).

    Per-clip terms scale with the clip length (STFT frames and samples are linear in it);
    the fixed terms do not.
    """
    rows = []
    for stage, st in stages.items():
        row: dict = {"stage": stage, "per": TOUCHES[stage].replace("all", "every clip")}
        for name, ((tr, va, te), length) in DATASETS.items():
            n = {"all": tr + va + te, "train": tr, "train+valid": tr + va, "test": te}[
                TOUCHES[stage]]
            scale = length / MEASURED_S
            row[f"{name} h"] = round((st["a_s"] + st["b_s_per_clip"] * n * scale) / 3600, 2)
            row[f"{name} GB"] = round(max(0.0, st["bytes_const"]
                                          + st["bytes_per_clip"] * n * scale) / 1e9, 2)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100,200,400", help="clips per run, comma separated")
    ap.add_argument("--work", default="/tmp/l2i_cost_model")
    ap.add_argument("--keep", action="store_true", help="keep the runs under --work")
    ap.add_argument("--out", default="")
    ap.add_argument("--from_json", default="",
                    help="refit the model on the measurements of an earlier --out (no runs)")
    args = ap.parse_args(argv)
    t0 = time.time()
    command = "python benchmarks/cost_model.py " + " ".join(sys.argv[1:] if argv is None
                                                             else argv)
    if args.from_json:
        old = json.loads(Path(args.from_json).read_text())
        results = {int(n): {st: v["measured"][n] for st, v in old["stages"].items()}
                   for n in next(iter(old["stages"].values()))["measured"]}
        sizes = sorted(results)
        machine = old["machine"]
        command = f"{old['command']} (refit: {command})"
    else:
        sizes = sorted(int(s) for s in args.sizes.split(","))
        if len(sizes) < 3:
            ap.error("give at least 3 sizes: two to fit the model, one to check it")
        results = {n: measure(n, Path(args.work)) for n in sizes}
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        machine = (f"{platform.machine()}, {os.cpu_count()} cores, --threads 1 per stage, "
                   f"loaded (load average {load:.1f} at the end; every size measured back to "
                   "back in the same conditions)")
    stages, rows = model(results)
    if args.out:
        ext = Path(args.out).with_name(Path(args.out).stem + "_extrapolated.json")
        ext.write_text(json.dumps({"command": command, "machine": machine + "; extrapolated",
                                   "datasets": {k: {"clips": v[0], "clip_s": v[1]}
                                                for k, v in DATASETS.items()},
                                   "rows": extrapolate(stages)}, indent=2) + "\n")
    return emit({"benchmark": "cost_model", "command": command, "machine": machine,
                 "sizes": sizes, "fit_on": sizes[:-1][-2:], "checked_on": sizes[-1],
                 "all_within_30_percent": all(r["within 30 %"] for r in rows),
                 "total_s": round(time.time() - t0, 1), "rows": rows, "stages": stages},
                args.out)


if __name__ == "__main__":
    sys.exit(main())
