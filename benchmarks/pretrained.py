"""Benchmark: inference cost of the published classifiers at full size, per 5 s clip.

``sb_conv2d`` (SpeechBrain PIQ-ESC50 layout, 16 kHz, l2i's STFT + log1p) and ``panns`` (PANNs
Cnn14, 32 kHz waveform, its own Conv1d front end). Weights are random (the layouts are the
published ones; timing does not depend on the values). Prints one JSON object: per model the
median / min seconds per batch, the CPU seconds per batch (on a shared machine the wall time
depends on the load; CPU seconds much less), parameter count and peak RSS.

    .venv/bin/python benchmarks/pretrained.py [--models sb_conv2d panns] [--batch_size 1]
        [--steps 3] [--threads 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emit import emit  # noqa: E402

from l2i.config import ClassifierModelConfig, FeaturesConfig  # noqa: E402
from l2i.features import magnitude, stft  # noqa: E402
from l2i.models import build_classifier  # noqa: E402
from l2i.models.panns import Cnn14  # noqa: E402
from l2i.training.common import peak_rss_mb  # noqa: E402


def _model(name: str, batch: int) -> tuple[torch.nn.Module, Callable[[], object]]:
    torch.manual_seed(0)
    if name == "panns":
        model = Cnn14().eval()
        wav = torch.rand(batch, 5 * 32000) - 0.5  # (B, S) at 32 kHz
        return model, lambda: model(wav)
    feat = FeaturesConfig()
    cfg = ClassifierModelConfig(arch="sb_conv2d", input="log1p_mag")
    model = build_classifier(cfg, feat, 50).eval()
    wav = torch.rand(batch, 5 * feat.sample_rate) - 0.5  # (B, S) at 16 kHz
    return model, lambda: model(magnitude(stft(wav, feat)))


def bench(name: str, batch: int, steps: int) -> dict:
    model, run = _model(name, batch)
    with torch.no_grad():
        run()  # warm-up
        times, cpu0 = [], time.process_time()
        for _ in range(steps):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times),
            "cpu_s_per_batch": (time.process_time() - cpu0) / steps,
            "n_params": sum(p.numel() for p in model.parameters())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["sb_conv2d", "panns"],
                    choices=["sb_conv2d", "panns"])
    ap.add_argument("--batch_size", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"batch_size": args.batch_size, "clip_s": 5.0, "threads": args.threads,
              "load_avg_1min": os.getloadavg()[0]}
    for name in args.models:
        result[name] = bench(name, args.batch_size, args.steps)
    result["peak_rss_mb"] = peak_rss_mb()
    return emit(result, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
