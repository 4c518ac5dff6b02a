"""Peak memory and wall time of ``l2i interpret`` on long recordings (streamed in windows).

    .venv/bin/python benchmarks/interpret_long.py [--minutes 30 60] [--window_s 5] [--hop_s 5]
        [--folder /tmp/l2i_long] [--threads N] [--out result.json]

For each length, a recording is synthesised ON DISK first (44.1 kHz mono PCM-16, written block
by block: noise with a tone event every 20 s, so the model resamples it to 16 kHz), then a
fresh Python process streams it through the command's path
(:func:`l2i.interpret.explain_recording`: read blocks, soxr stream resampling, windows,
overlap-add wav written as it grows, timeline csv/png, json) with a randomly initialised
interpreter as costly as a trained one: the demo recipe's narrow conv2d (recipes/demo,
the ESC-50 STFT at 16 kHz) with the esc50 conv2d psi/theta, K=100, 10 classes. Each child
reports its peak RSS (``ru_maxrss``), its RSS after loading (before the file), and its wall
time; the real-time factor is audio seconds / wall seconds. Peak memory should not grow with
the length (the issue asks < 2 GB for an hour). ``load_avg_1min`` says how loaded the machine was.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SR_FILE = 44100


def synthesise(path: Path, minutes: float, block_s: float = 10.0) -> Path:
    """Noise + a 1 s tone every 20 s (frequency cycling), written block by block."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    n_total = int(minutes * 60 * SR_FILE)
    block = int(block_s * SR_FILE)
    with sf.SoundFile(str(path), "w", samplerate=SR_FILE, channels=1, subtype="PCM_16") as f:
        for start in range(0, n_total, block):
            n = min(block, n_total - start)
            t = (start + np.arange(n)) / SR_FILE
            x = 0.05 * rng.standard_normal(n)
            hz = 300.0 * (1 + (start // block) % 8)
            on = (t % 20.0) < 1.0
            x[on] += 0.5 * np.sin(2 * np.pi * hz * t[on])
            f.write(x.astype(np.float32))
    return path


def child(path: str, window_s: float, hop_s: float, out: str, threads: int | None) -> None:
    """Stream one file through explain_recording; print one JSON line."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import soundfile as sf
    from interpret import random_interpreter

    from l2i.config import InterpretRecipe
    from l2i.explain import Explainer
    from l2i.interpret import explain_recording

    explainer = Explainer(random_interpreter(
        classifier_recipe=str(ROOT / "recipes/demo/classifier.yaml"),
        l2i_recipe=str(ROOT / "recipes/esc50/l2i_conv2d.yaml")))
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    info = sf.info(path)
    cfg = InterpretRecipe(files=[path], output_folder=out, window_s=window_s, hop_s=hop_s)
    Path(out).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    entry = explain_recording(explainer, Path(path), info.samplerate, info.frames,
                              Path(path).stem, [None], cfg, Path(out))
    wall = time.perf_counter() - t0
    print(json.dumps({"wall_s": wall, "peak_rss_mb": resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_after_load_mb": rss_loaded,
        "n_windows": entry["n_windows"], "audio_s": info.frames / info.samplerate,
        "torch_threads": torch.get_num_threads()}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[30.0, 60.0])
    ap.add_argument("--window_s", type=float, default=5.0)
    ap.add_argument("--hop_s", type=float, default=5.0)
    ap.add_argument("--folder", default="/tmp/l2i_long_bench")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.window_s, args.hop_s, str(Path(args.folder) / "out"),
              args.threads)
        return 0
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _emit import emit

    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    runs = []
    for minutes in args.minutes:
        path = folder / f"long_{minutes:g}min.wav"
        t0 = time.perf_counter()
        synthesise(path, minutes)
        synth_s = time.perf_counter() - t0
        load = os.getloadavg()[0]
        cmd = [sys.executable, __file__, "--child", str(path), "--window_s", str(args.window_s),
               "--hop_s", str(args.hop_s), "--folder", str(folder)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        res.update(minutes=minutes, file_mb=round(path.stat().st_size / 2**20, 1),
                   synth_s=round(synth_s, 1), real_time_factor=round(res["audio_s"]
                                                                     / res["wall_s"], 1),
                   load_avg_1min_before=round(load, 1), load_avg_1min_after=round(
                       os.getloadavg()[0], 1))
        res["wall_s"] = round(res["wall_s"], 1)
        res["peak_rss_mb"] = round(res["peak_rss_mb"], 1)
        res["rss_after_load_mb"] = round(res["rss_after_load_mb"], 1)
        runs.append(res)
        path.unlink()
    return emit({"benchmark": "interpret_long", "window_s": args.window_s,
                 "hop_s": args.hop_s, "file_rate": SR_FILE, "cpu_cores": os.cpu_count(),
                 "model": "random conv2d, recipes/demo (16 kHz), K=100, 10 classes",
                 "runs": runs}, args.out)


if __name__ == "__main__":
    sys.exit(main())
