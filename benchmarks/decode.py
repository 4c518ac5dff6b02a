"""Benchmark: decode + resample throughput of the data layer (clips/s).

Indexes ESC-10 (``/work/shared/data/esc10`` or ``--data``; folds 1-4, esc10 filter) and runs
:func:`l2i.data.load_split` on every split into a fresh cache folder (cold: decode, mix to mono,
resample 44.1 -> 16 kHz with soxr, crop/pad to 5 s, peak-normalise, write the memmap), then
again (warm: the cache is reused). Also times a single-thread ``load_audio`` loop. Prints JSON.

    python benchmarks/decode.py [--data D] [--sample-rate 16000] [--workers 4] [--out r.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from _emit import emit

from l2i.audio import load_audio
from l2i.config import DataConfig
from l2i.data import SPLITS, load_dataset, load_split

ESC10 = Path("/work/shared/data/esc10")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ESC10))
    ap.add_argument("--sample-rate", type=int, default=16000)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if not Path(args.data).is_dir():
        print(json.dumps({"skipped": f"{args.data} not found"}))
        return 0
    cfg = DataConfig(train_folds=[1, 2], valid_folds=[3], test_folds=[4], esc10=True)
    index = load_dataset(args.data, cfg)
    n = sum(len(index.split(s)) for s in SPLITS)
    with tempfile.TemporaryDirectory(prefix="l2i-decode-") as cache:
        t0 = time.perf_counter()
        for s in SPLITS:
            load_split(index, s, cfg, args.sample_rate, cache, workers=args.workers,
                       progress=False)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        for s in SPLITS:
            arr = load_split(index, s, cfg, args.sample_rate, cache, progress=False)
            float(arr.wavs[:, ::1000].sum())  # touch the memmap
        warm = time.perf_counter() - t0
    clips = index.test
    t0 = time.perf_counter()
    for c in clips:
        load_audio(c.path, args.sample_rate, cfg.duration_s)
    single = time.perf_counter() - t0
    result = {
        "benchmark": "decode+resample (l2i.data.load_split)",
        "data": args.data, "clips": n, "sample_rate": args.sample_rate,
        "duration_s": cfg.duration_s,
        "workers": args.workers or min(4, os.cpu_count() or 1),
        "cold_s": round(cold, 3), "cold_clips_per_s": round(n / cold, 1),
        "warm_cache_s": round(warm, 4), "warm_clips_per_s": round(n / warm, 1),
        "single_thread_clips_per_s": round(len(clips) / single, 1),
        "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
        "machine": platform.machine(),
        "command": "python benchmarks/decode.py " + " ".join(argv or sys.argv[1:]),
    }
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
