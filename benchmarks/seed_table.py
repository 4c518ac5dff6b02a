"""Runs of one recipe with different seeds, side by side: fidelities from each run's
``metrics.json`` and the test-fold faithfulness of ``l2i evaluate`` (clean and mixtures).

    .venv/bin/python benchmarks/seed_table.py 'SEED=RUN[:EVAL_PREFIX]' [...] \\
        --command 'how the runs were made' --out benchmarks/results/recipe_seeds.json

``RUN`` is an ``l2i train`` output folder; its evaluations are ``EVAL_PREFIX_eval_none`` and
``EVAL_PREFIX_eval_mixtures`` (default ``EVAL_PREFIX`` = ``RUN``). Prints one JSON object whose
``rows`` (one per run, then the mean and standard deviation) docs/benchmarks.md shows.
Reporting only: nothing is chosen from it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emit import emit  # noqa: E402

MEANS = ("valid fid@1", "test fid@1", "AI", "AD", "FF", "Fid-In", "SPS", "mix fid@1", "mix AI",
         "mix AD", "mix Fid-In")


def _l2i(folder: str) -> dict[str, Any]:
    return json.loads((Path(folder) / "metrics.json").read_text())["explainers"]["l2i"]


def run_row(seed: str, run: str, evals: str) -> dict[str, Any]:
    m = json.loads((Path(run) / "metrics.json").read_text())
    clean, mix = _l2i(f"{evals}_eval_none"), _l2i(f"{evals}_eval_mixtures")
    return {"seed": seed, "best epoch (stopped)": f"{m['best_epoch']} ({m['epochs']})",
            "valid fid@1": m["valid/fid_top1"], "test fid@1": m["test/fid_top1"],
            "AI": round(clean["AI"], 1), "AD": round(clean["AD"], 2),
            "FF": round(clean["FF"], 3), "Fid-In": round(clean["Fid-In"], 3),
            "SPS": round(clean["SPS"], 3), "mix fid@1": round(mix["fidelity_top1"] / 100, 4),
            "mix AI": round(mix["AI"], 1),
            "mix AD": round(mix["AD"], 2), "mix Fid-In": round(mix["Fid-In"], 3),
            "train s": round(m["seconds"])}


def mean_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"seed": "mean (sd)", "best epoch (stopped)": None, "train s": None}
    for k in MEANS:
        v = [r[k] for r in rows]
        out[k] = f"{statistics.mean(v):.3g} ({statistics.stdev(v):.2g})"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="SEED=RUN[:EVAL_PREFIX]")
    ap.add_argument("--command", default="", help="how the runs were trained and evaluated")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    rows = []
    for spec in args.runs:
        seed, _, rest = spec.partition("=")
        run, _, evals = rest.partition(":")
        rows.append(run_row(seed, run, evals or run))
    rows.append(mean_row(rows))
    table = "python benchmarks/seed_table.py " + shlex.join(argv or sys.argv[1:])
    return emit({"command": f"{args.command}; table: {table}" if args.command else table,
                 "machine": "2-core CPU (test-fold metrics; train s: training + test)",
                 "rows": rows}, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
