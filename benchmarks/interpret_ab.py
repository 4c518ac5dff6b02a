"""Explain time of two source trees, measured in alternation (A, B, A, B, ...) on one machine.

    .venv/bin/python benchmarks/interpret_ab.py OLD_TREE NEW_TREE --rounds 8 -- CKPT \
        --threads 1 --repeats 40 --mask '{...}' [--out result.json]

Each round runs ``benchmarks/interpret.py`` (the arguments after ``--``) once from each tree,
with that tree's ``src`` first on ``PYTHONPATH``; alternation puts both under the same
machine load, which on a shared 2-core machine moves a single run's median by +-20 %.
Prints one JSON object: per tree, the median and range of the runs' median explain times, the
fastest run's minimum, the classifier-alone and 44.1 kHz medians, and the ratio old / new
(and writes it to ``--out``). Every run's JSON is kept under ``runs``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path


def run_once(tree: Path, args: list[str]) -> dict:
    """One ``interpret.py`` run from ``tree``; its JSON output."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    out = subprocess.run([sys.executable, str(tree / "benchmarks" / "interpret.py"), *args],
                         cwd=tree, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def summarise(rows: list[dict]) -> dict:
    """Medians over runs of ``interpret.py`` results."""
    med = [r["explain_at_model_rate"]["median_ms"] for r in rows]
    return {"runs": len(rows), "median_ms": round(statistics.median(med), 2),
            "median_range_ms": [min(med), max(med)],
            "min_ms": min(r["explain_at_model_rate"]["min_ms"] for r in rows),
            "p90_ms_median": round(statistics.median(
                r["explain_at_model_rate"]["p90_ms"] for r in rows), 2),
            "classifier_only_median_ms": round(statistics.median(
                r["classifier_forward_only"]["median_ms"] for r in rows), 2),
            "from_44k1_median_ms": round(statistics.median(
                r["explain_from_44k1"]["median_ms"] for r in rows), 2)}


def main() -> None:
    argv = sys.argv[1:]
    rest = argv[argv.index("--") + 1:] if "--" in argv else []
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    rows: dict[str, list[dict]] = {"old": [], "new": []}
    for i in range(args.rounds):
        for name in ("old", "new"):
            rows[name].append(run_once(getattr(args, name).resolve(), rest))
        print(f"round {i + 1}/{args.rounds}: old {rows['old'][-1]['explain_at_model_rate']}"
              f" new {rows['new'][-1]['explain_at_model_rate']}", file=sys.stderr)
    old, new = summarise(rows["old"]), summarise(rows["new"])
    result = {"benchmark": "interpret_ab", "interpret_args": rest, "rounds": args.rounds,
              "old_tree": str(args.old), "new_tree": str(args.new), "old": old, "new": new,
              "ratio_old_over_new": round(old["median_ms"] / new["median_ms"], 3),
              "runs": rows}
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}))


if __name__ == "__main__":
    main()
