"""Benchmark: peak host memory and time of each stage at 1k and 20k synthetic clips.

The issue-17 "done when": one L2I epoch (``recipes/demo/l2i.yaml``) on 1,000 and on 20,000
``l2i synth`` clips (demo settings: 10 classes, 5 folds, 5 s at 16 kHz) with peak host memory
within 20 % of each other. Stages, each a child process ``l2i ... --threads 1``:

1. ``synth`` N clips; 2. ``prepare`` them into shards (the one decoded copy every stage reads);
3. on the 1k set only: ``train-classifier`` (``recipes/demo/classifier.yaml``) and
   ``train-nmf`` (``recipes/demo/nmf.yaml``), reused for 20k;
4. ``train`` (``recipes/demo/l2i.yaml``, ``--trainer.epochs 1``) from the shards, with the
   classifier's maps recomputed each batch (``--cache_maps false``: the map cache, issue 17
   item 2, is measured in benchmarks/cost_model.py), then the valid and test evaluation.

Peak memory of a stage: ``peak_tree_rss_mb``, the largest sum of VmRSS over the child and all
its descendants (DataLoader workers), polled from ``/proc`` every 0.1 s, with its anonymous
part ``peak_tree_anon_mb`` (RssAnon: what the process itself holds, not file pages), and
``max_rss_mb`` (``ru_maxrss`` of the stage's process from ``os.wait4``: exact, the largest
single process). Outputs of a finished stage are reused on a re-run (its figures read back from
``WORK/<stage>.json``; ``--fresh`` removes WORK first). Prints JSON and writes
``benchmarks/results/scale.json``.

    python benchmarks/scale.py [--work /tmp/l2i-scale] [--sizes 1000 20000] [--workers 0]
        [--shuffle_buffer 2048] [--fresh] [--out benchmarks/results/scale.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
L2I = [sys.executable, "-m", "l2i.cli"]
FOLDS = ["--data.train_folds", "1,2,3", "--data.valid_folds", "4", "--data.test_folds", "5"]


def _status_kb(pid: int) -> tuple[int, int]:
    """``(VmRSS, RssAnon)`` of ``pid`` in kB (0, 0 once it is gone)."""
    rss = anon = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("RssAnon:"):
                anon = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return rss, anon


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``/proc/*/stat`` parent links)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += [c for c, pp in parent.items() if pp == p]
    return out


def run_stage(name: str, args: list[str], work: Path, done: Path) -> dict:
    """Run ``l2i ARGS`` (or reuse its earlier figures when ``done`` exists)."""
    record = work / f"{name}.json"
    if done.exists() and record.is_file():
        return {**json.loads(record.read_text()), "reused": True}
    t0 = time.perf_counter()
    log = (work / f"{name}.log").open("w")
    proc = subprocess.Popen([*L2I, *args, "--threads", "1"], stdout=log,
                            stderr=subprocess.STDOUT, cwd=ROOT)
    peak = peak_anon = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # usage: of this child only
        if pid:
            break
        tree = [_status_kb(p) for p in _tree(proc.pid)]
        peak = max(peak, sum(r for r, _ in tree))
        peak_anon = max(peak_anon, sum(a for _, a in tree))
        time.sleep(0.1)
    log.close()
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = (work / f"{name}.log").read_text()[-3000:]
        raise SystemExit(f"stage {name} failed (exit {code}):\n{tail}")
    result = {"stage": name, "wall_s": round(wall, 1),
              "peak_tree_rss_mb": round(peak / 1024, 1),
              "peak_tree_anon_mb": round(peak_anon / 1024, 1),
              "max_rss_mb": round(usage.ru_maxrss / 1024, 1), "reused": False}
    record.write_text(json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/l2i-scale")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 20000])
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers of L2I training")
    ap.add_argument("--shuffle_buffer", type=int, default=2048)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scale.json"))
    args = ap.parse_args(argv)
    work = Path(args.work)
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    rec = ROOT / "recipes" / "demo"
    small = min(args.sizes)
    stages, rows = [], []
    for n in sorted(args.sizes):
        data, shards = work / f"synth-{n}", work / f"shards-{n}"
        stages.append(run_stage(f"synth-{n}", [
            "synth", "--output_folder", str(data), "--n_per_class", str(n // 10)],
            work, data / "meta" / "esc50.csv"))
        stages.append(run_stage(f"prepare-{n}", [
            "prepare", str(data), "--output_folder", str(shards), "--sample_rate", "16000",
            "--data.duration_s", "5", *FOLDS, "--progress", "false"], work, shards / "index.json"))
        if n == small:
            clf, nmf = work / "classifier", work / "nmf"
            stages.append(run_stage("train-classifier", [
                "train-classifier", str(rec / "classifier.yaml"), "--data_folder", str(shards),
                "--output_folder", str(clf), "--trainer.progress", "false"],
                work, clf / "classifier.ckpt"))
            stages.append(run_stage("train-nmf", [
                "train-nmf", str(rec / "nmf.yaml"), "--data_folder", str(shards),
                "--output_folder", str(nmf)], work, nmf / "nmf.pt"))
        out = work / f"l2i-{n}"
        st = run_stage(f"l2i-epoch-{n}", [
            "train", str(rec / "l2i.yaml"), "--data_folder", str(shards),
            "--output_folder", str(out), "--classifier_ckpt", str(work / "classifier" /
                                                                   "classifier.ckpt"),
            "--nmf", str(work / "nmf" / "nmf.pt"), "--trainer.epochs", "1",
            "--cache_maps", "false", "--trainer.num_workers", str(args.workers),
            "--data.shuffle_buffer", str(args.shuffle_buffer), "--trainer.progress", "false"],
            work, out / "l2i.ckpt")
        stages.append(st)
        metrics = json.loads((out / "metrics.json").read_text())
        rows.append({"clips": n, "train_clips": metrics["n_train"],
                     "peak_tree_rss_mb": st["peak_tree_rss_mb"],
                     "peak_tree_anon_mb": st["peak_tree_anon_mb"],
                     "max_rss_mb": st["max_rss_mb"], "epoch_wall_s": st["wall_s"],
                     "fit_s": metrics.get("fit_seconds")})
    big, base = rows[-1], rows[0]
    ratio = big["peak_tree_rss_mb"] / base["peak_tree_rss_mb"]
    result = {
        "command": "python benchmarks/scale.py" + (f" --workers {args.workers}"
                                                   if args.workers else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (loaded), --threads 1",
        "rows": rows, "stages": stages,
        "peak_ratio_largest_vs_smallest": round(ratio, 3),
        "within_20_percent": bool(abs(ratio - 1) <= 0.2),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
