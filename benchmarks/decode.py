"""Benchmark: decode + resample throughput of the data layer (clips/s).

Indexes ESC-10 (``/work/shared/data/esc10`` or ``--data``; folds 1-4, esc10 filter) and runs
:func:`l2i.data.load_split` on every split into a fresh cache folder (cold: decode, mix to mono,
resample 44.1 -> 16 kHz with soxr, crop/pad to 5 s, peak-normalise, write the memmap), then
again (warm: the cache is reused). Also times a single-thread ``load_audio`` loop, and the
one-pass dataset check of :func:`l2i.data.load_dataset`: rows + file headers only, then with the
up-front decode (cold: it fills the audio cache, then ``load_split`` decodes nothing; warm: cache
hit), counting ``load_audio`` calls to show that no file is decoded twice. Prints JSON.

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

import l2i.data as data_mod
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
    check = time_check(args.data, cfg, args.sample_rate)
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
        "single_thread_clips_per_s": round(len(clips) / single, 1), **check,
        "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
        "machine": platform.machine(),
        "command": "python benchmarks/decode.py " + " ".join(argv or sys.argv[1:]),
    }
    return emit(result, args.out)


def time_check(data: str, cfg: DataConfig, sample_rate: int) -> dict:
    """Seconds of the one-pass dataset check (headers only / + decode cold / warm)."""
    calls = []
    real = data_mod.load_audio
    data_mod.load_audio = lambda p, *a, **k: calls.append(p) or real(p, *a, **k)
    try:
        t0 = time.perf_counter()
        load_dataset(data, cfg)
        headers = time.perf_counter() - t0
        with tempfile.TemporaryDirectory(prefix="l2i-check-") as cache:
            t0 = time.perf_counter()
            index = load_dataset(data, cfg, sample_rate=sample_rate, cache_dir=cache)
            for s in SPLITS:
                load_split(index, s, cfg, sample_rate, cache, progress=False)
            cold, cold_calls = time.perf_counter() - t0, len(calls)
            t0 = time.perf_counter()
            index = load_dataset(data, cfg, sample_rate=sample_rate, cache_dir=cache)
            for s in SPLITS:
                load_split(index, s, cfg, sample_rate, cache, progress=False)
            warm = time.perf_counter() - t0
    finally:
        data_mod.load_audio = real
    return {"check_rows_headers_s": round(headers, 3),
            "check_decode_cold_plus_load_split_s": round(cold, 3),
            "check_warm_plus_load_split_s": round(warm, 3),
            "decodes_cold": cold_calls, "decodes_warm": len(calls) - cold_calls}


if __name__ == "__main__":
    sys.exit(main())
