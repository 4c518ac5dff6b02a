"""Benchmark: classifier training-step and inference cost per batch (conv2d, CNN14).

Random 5 s waveforms at 16 kHz go through the same path as training (STFT on the device, the
model's frontend, forward, backward, AdamW step) and as inference (no grad, eval mode). Prints
one JSON object per architecture: median / min seconds per batch, clips per second, peak RSS,
parameter count, and the CPU seconds the process used (on a shared machine the wall time
depends on the load; CPU seconds do not).

    .venv/bin/python benchmarks/classifier.py [--arch conv2d cnn14] [--batch_size 32]
        [--steps 5] [--threads 2] [--device cpu] [--recipe_dir recipes/esc50]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from l2i.config import ClassifierRecipe, load_config
from l2i.features import stft
from l2i.models import build_classifier
from l2i.training.classifier import peak_rss_mb


def bench(arch: str, recipe_dir: Path, batch_size: int, steps: int, device: str) -> dict:
    cfg = load_config(ClassifierRecipe, recipe_dir / f"classifier_{arch}.yaml")
    torch.manual_seed(0)
    model = build_classifier(cfg.model, cfg.features, 10).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    n = int(round((cfg.data.duration_s or 5.0) * cfg.features.sample_rate))
    wav = (torch.rand(batch_size, n, device=device) - 0.5)  # (B, S)
    y = torch.randint(0, 10, (batch_size,), device=device)

    def train_step() -> None:
        logits, _ = model(stft(wav, cfg.features).abs())
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    @torch.no_grad()
    def infer() -> None:
        model(stft(wav, cfg.features).abs())

    out = {"arch": arch, "batch_size": batch_size, "device": device,
           "n_params": sum(p.numel() for p in model.parameters())}
    for name, fn, train in (("train_step", train_step, True), ("inference", infer, False)):
        model.train(train)
        fn()  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times = []
        cpu0 = time.process_time()
        for _ in range(steps):
            t0 = time.perf_counter()
            fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        out[name] = {"median_s": statistics.median(times), "min_s": min(times),
                     "clips_per_s": batch_size / statistics.median(times),
                     "cpu_s_per_batch": (time.process_time() - cpu0) / steps}
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="+", default=["conv2d", "cnn14"])
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--recipe_dir", type=Path,
                    default=Path(__file__).resolve().parents[1] / "recipes" / "esc50")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    for arch in args.arch:
        res = bench(arch, args.recipe_dir, args.batch_size, args.steps, args.device)
        res["threads"] = args.threads
        print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
