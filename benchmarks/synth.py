"""Benchmark: time to synthesise the procedural dataset (``l2i synth``), default 500 clips.

Runs :func:`l2i.synthetic.synthesize_dataset` with the default recipe (10 classes, 5 s clips
at 16 kHz, 5 folds) and ``n_per_class = clips / 10`` into a temporary folder, ``--repeats``
times. Prints JSON (best and mean wall time, clips/s).

    python benchmarks/synth.py [--clips 500] [--repeats 1] [--sample-rate 16000] [--out r.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from _emit import emit

from l2i.config import SynthRecipe
from l2i.synthetic import CLASS_NAMES, synthesize_dataset


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--sample-rate", type=int, default=16000)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    per_class = max(1, args.clips // len(CLASS_NAMES))
    times = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="l2i-synth-") as out:
            cfg = SynthRecipe(output_folder=out, n_per_class=per_class, seed=0,
                              sample_rate=args.sample_rate, duration_s=args.duration)
            t0 = time.perf_counter()
            synthesize_dataset(cfg)
            times.append(time.perf_counter() - t0)
    n = per_class * len(CLASS_NAMES)
    result = {
        "benchmark": "l2i synth (synthesize_dataset)", "clips": n,
        "sample_rate": args.sample_rate, "duration_s": args.duration,
        "best_s": round(min(times), 3), "mean_s": round(sum(times) / len(times), 3),
        "clips_per_s": round(n / min(times), 1), "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "command": "python benchmarks/synth.py " + " ".join(argv or sys.argv[1:]),
    }
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
