"""Benchmark: our NMF solver vs scikit-learn's NMF ('mu', 'cd') and MiniBatchNMF.

Same frames for every solver: log1p|STFT| frames (16 kHz, the reference STFT, 513 bins) of the
ESC-10 training folds 1, 2 when ``/work/shared/data/esc10`` exists (else of a synthetic dataset
made on the fly), K = 100, no sparsity (sklearn's Frobenius objective), the same ``max_iter`` and
``tol``, 2 threads for everyone (torch and the BLAS/OpenMP pools sklearn uses). Prints JSON:
wall time and relative reconstruction error ``||V - WH||_F / ||V||_F`` per solver, and the
ratios ours / sklearn.

    python benchmarks/nmf.py [--data D] [--max-frames N] [--max-iter 200] [--tol 1e-4]
                             [--threads 2] [--skip mu,cd,minibatch] [--out result.json]

On processors where OPENBLAS_CORETYPE is set (older OpenBLAS workaround), unset it together with
OPENBLAS_L2_SIZE for this command so numpy/sklearn get their fastest kernel; the JSON records the
BLAS kernel threadpoolctl sees.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from l2i.audio import load_audio
from l2i.config import FeaturesConfig, NMFConfig, SynthRecipe
from l2i.features import log1p_magnitude, stft
from l2i.nmf import fit_nmf

ESC10 = Path("/work/shared/data/esc10")


def esc50_files(root: Path, folds: list[int]) -> list[Path]:
    """Audio files of ``folds`` listed in ``root/meta/esc50.csv`` (sorted, deterministic)."""
    with open(root / "meta" / "esc50.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["fold"]) in folds]
    return sorted(root / "audio" / r["filename"] for r in rows)


def frames_of(files: list[Path], features: FeaturesConfig, duration_s: float = 5.0,
              batch: int = 32) -> np.ndarray:
    """log1p|STFT| frames of every clip, stacked: ``(N, F)`` float32."""
    out = []
    for i in range(0, len(files), batch):
        wavs = np.stack([load_audio(f, features.sample_rate, duration_s)
                         for f in files[i:i + batch]])  # (B, S)
        mag = log1p_magnitude(stft(torch.from_numpy(wavs), features))  # (B, T, F)
        out.append(mag.reshape(-1, mag.shape[-1]).numpy())  # (B * T, F)
    return np.concatenate(out)


def load_frames(data: Path | None, features: FeaturesConfig) -> tuple[np.ndarray, str]:
    if data is not None and (data / "meta" / "esc50.csv").is_file():
        return frames_of(esc50_files(data, [1, 2]), features), f"{data} folds 1,2"
    from l2i.synthetic import synthesize_dataset

    tmp = tempfile.mkdtemp(prefix="l2i_nmf_bench_")
    synthesize_dataset(SynthRecipe(output_folder=tmp, n_per_class=16, n_folds=4, seed=0,
                                   sample_rate=features.sample_rate))
    return frames_of(esc50_files(Path(tmp), [1, 2]), features), f"synthetic ({tmp}) folds 1,2"


def rel_error(X: np.ndarray, A: np.ndarray, B: np.ndarray) -> float:
    """``||X - A B||_F / ||X||_F`` computed block-wise in float64."""
    num = 0.0
    for i in range(0, len(X), 20000):
        R = X[i:i + 20000].astype(np.float64) - A[i:i + 20000].astype(np.float64) @ B
        num += float(np.square(R).sum())
    return float(np.sqrt(num / np.square(X.astype(np.float64)).sum()))


def run_ours(X: np.ndarray, K: int, max_iter: int, tol: float, seed: int) -> dict:
    cfg = NMFConfig(n_components=K, n_iter=max_iter, tol=tol, seed=seed, device="cpu")
    t0, c0 = time.perf_counter(), time.process_time()
    res = fit_nmf(torch.from_numpy(X), cfg, device="cpu", progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    err = rel_error(X, res.H.T.numpy(), res.W.T.numpy().astype(np.float64))
    return {"wall_s": wall, "cpu_s": cpu, "rel_error": err, "n_iter": res.n_iter,
            "rel_error_reported": res.rel_error,
            "rel_error_per_iter": [round(float(np.sqrt(h)), 5) for h in res.history]}


def iterations_to_reach(curve: list[float], target: float) -> int | None:
    """First iteration (1-based) whose relative error is <= ``target``."""
    return next((i + 1 for i, e in enumerate(curve) if e <= target), None)


def run_sklearn(X: np.ndarray, K: int, max_iter: int, tol: float, seed: int, which: str) -> dict:
    import warnings

    from sklearn.decomposition import NMF, MiniBatchNMF
    from sklearn.exceptions import ConvergenceWarning

    if which == "minibatch":
        model = MiniBatchNMF(n_components=K, beta_loss="frobenius", max_iter=max_iter, tol=tol,
                             random_state=seed, batch_size=2048)
    else:
        model = NMF(n_components=K, solver=which, beta_loss="frobenius", max_iter=max_iter,
                    tol=tol, random_state=seed)
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        A = model.fit_transform(X)  # (N, K)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"wall_s": wall, "cpu_s": cpu,
            "rel_error": rel_error(X, A, model.components_.astype(np.float64)),
            "n_iter": int(model.n_iter_)}


def _log(name: str, res: dict) -> None:
    short = {k: v for k, v in res.items() if not isinstance(v, list)}
    print(f"{name}: {json.dumps(short)}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ESC10), help="ESC-50-layout folder (folds 1,2 used)")
    ap.add_argument("--max-frames", type=int, default=None, help="seeded frame subsample")
    ap.add_argument("--max-iter", type=int, default=200)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--components", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", default="", help="comma list of ours,mu,cd,minibatch to skip")
    ap.add_argument("--cache", default=None, help="a .npy to keep the frames in between runs")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)

    from threadpoolctl import threadpool_info, threadpool_limits

    torch.set_num_threads(args.threads)
    features = FeaturesConfig()  # 16 kHz, n_fft 1024, 372/186 samples, Hamming
    if args.cache and Path(args.cache).is_file():
        X, source = np.load(args.cache), f"cache {args.cache}"
    else:
        X, source = load_frames(Path(args.data) if args.data else None, features)
        if args.cache:
            np.save(args.cache, X)
    if args.max_frames and args.max_frames < len(X):
        idx = np.sort(np.random.default_rng(args.seed).choice(len(X), args.max_frames, False))
        X = X[idx]
    X = np.ascontiguousarray(X, dtype=np.float32)
    out: dict = {"data": source, "frames": list(X.shape), "K": args.components,
                 "max_iter": args.max_iter, "tol": args.tol, "threads": args.threads,
                 "blas": [{k: i.get(k) for k in ("internal_api", "architecture", "num_threads")}
                          for i in threadpool_info()],
                 "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}
    skip = {s for s in args.skip.split(",") if s}
    with threadpool_limits(limits=args.threads):
        if "ours" not in skip:
            out["ours"] = run_ours(X, args.components, args.max_iter, args.tol, args.seed)
            _log("ours", out["ours"])
        for which in ("mu", "cd", "minibatch"):
            if which not in skip:
                out[f"sklearn_{which}"] = run_sklearn(X, args.components, args.max_iter,
                                                      args.tol, args.seed, which)
                _log(f"sklearn_{which}", out[f"sklearn_{which}"])
    ours = out.get("ours")
    for key in [k for k in out if k.startswith("sklearn_") and ours]:
        sk = out[key]
        # also: how many of our iterations reach 1.02x sklearn's error, and their share of time
        n_match = iterations_to_reach(ours["rel_error_per_iter"], 1.02 * sk["rel_error"])
        per_iter = ours["wall_s"] / max(ours["n_iter"], 1)
        out[f"ratio_{key}"] = {
            "speedup": sk["wall_s"] / ours["wall_s"],
            "cpu_speedup": sk["cpu_s"] / ours["cpu_s"],
            "rel_error_ours_over_sklearn": ours["rel_error"] / sk["rel_error"],
            "ours_iters_to_1.02x_sklearn_error": n_match,
            "speedup_to_1.02x_error_est": (sk["wall_s"] / (per_iter * n_match)
                                           if n_match else None)}
    if ours:
        ours["rel_error_per_iter"] = ours["rel_error_per_iter"][:: max(1, ours["n_iter"] // 20)]
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return out


if __name__ == "__main__":
    main()
