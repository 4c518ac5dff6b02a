"""The harness table of the chosen mask defaults on the TEST folds (reporting only: the
defaults were chosen on validation folds by benchmarks/select_masks.py).

    .venv/bin/python benchmarks/mask_test_table.py NAME=EVAL_FOLDER ... \\
        --out benchmarks/results/select_masks_test.json

Each ``EVAL_FOLDER`` is an ``l2i evaluate`` output; ``NAME`` labels its rows (e.g.
``ESC-10 clean, chosen``). One row per explainer of its ``metrics.json`` ("explainers"), the
L2I row first (``--only l2i,lmac``: those explainers only). Prints the JSON (``rows``) that
tools/gen_docs.py renders.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emit import emit  # noqa: E402

COLS = ("AI", "AD", "FF", "Fid-In", "SPS", "COMP", "mask_mean", "loc_auc", "loc_iou",
        "fidelity_top1")


def rows_of(name: str, folder: Path, baselines: bool,
            only: list[str] | None = None) -> list[dict]:
    data = json.loads((folder / "metrics.json").read_text())
    out = []
    for ex, agg in data["explainers"].items():
        if (not ex.startswith("l2i") and not baselines) or (only and ex not in only):
            continue
        out.append({"set": name, "explainer": ex,
                    **{c: (round(agg[c], 3) if isinstance(agg.get(c), (int, float)) else None)
                       for c in COLS}})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="NAME=EVAL_FOLDER[:baselines]")
    ap.add_argument("--only", default=None, help="comma-separated explainers to keep")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    only = args.only.split(",") if args.only else None
    rows = []
    for spec in args.runs:
        name, folder = spec.split("=", 1)
        with_b = folder.endswith(":baselines")
        rows += rows_of(name, Path(folder.removesuffix(":baselines")), with_b, only)
    result = {"command": "python benchmarks/mask_test_table.py " + " ".join(argv or sys.argv[1:]),
              "machine": "2-core CPU, shared (test-fold metrics; no timing)", "rows": rows}
    return emit(result, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
