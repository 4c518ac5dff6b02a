"""Throughput on one device (clips/s): classifier forward, L2I training, batched explanations.

    .venv/bin/python benchmarks/gpu.py --device cuda [--n_clips 512] [--batch_size 64]
        [--seconds 5] [--arch conv2d|cnn14] [--precisions fp32 bf16] [--out result.json]
    .venv/bin/python benchmarks/gpu.py --device cpu --n_clips 16 --batch_size 8 --threads 1

Random-weight models built from the esc50 recipes (``benchmarks/interpret.py``'s
``random_interpreter``: K=100, 10 classes; ``--arch cnn14`` swaps the classifier), as costly as
trained ones. Random ``--seconds`` clips at the model's sample rate, made on the device.
Measured, each after one warm-up pass, as clips / median seconds over ``--repeats`` passes
over the ``--n_clips`` clips in batches of ``--batch_size``:

- ``classifier_forward``: magnitudes -> frozen classifier (logits + maps), no_grad;
- ``explain``: waveforms -> STFT -> :meth:`l2i.explain.Explainer.explain_batch` (classifier,
  psi, theta, relevance, mask) -> masked inverse STFT, no_grad;
- ``lmac_explain``: the same with L-MAC (``l2i.explainers.lmac``, a random decoder), when that
  module exists in this checkout;
- ``l2i_train_no_cache`` / ``l2i_train_cache``: one epoch of forward + backward + Adam on psi +
  theta, from waveforms (STFT + classifier every batch) or from the map cache
  (:func:`l2i.training.interpreter.build_cache`, built once on the device, build time reported).

Each inference figure is taken in fp32 and under ``torch.autocast`` bf16 (``--precisions``);
a precision the device cannot run is reported as ``{"skipped": reason}``. Training is fp32.
Prints JSON (``--out FILE`` writes it too). On CUDA the timings synchronise the device.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from _emit import emit
from interpret import ROOT, random_interpreter

from l2i.config import L2ILossConfig, TrainerConfig
from l2i.errors import L2IError
from l2i.features import istft, stft
from l2i.training.interpreter import (
    CachedSplit,
    L2IModule,
    WaveSplit,
    _to,
    build_cache,
    folder_size,
    make_loader,
)

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, precision: str) -> Any:
    dtype = DTYPES[precision]
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def _rate(run: Callable[[], None], n_clips: int, repeats: int,
          device: torch.device) -> dict[str, float]:
    """``{"clips_per_s", "median_s"}`` of ``run`` (one pass over ``n_clips``), after a warm-up."""
    run()
    _sync(device)
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"clips_per_s": round(n_clips / med, 2), "median_s": round(med, 4)}


def _per_precision(make_run: Callable[[str], Callable[[], None]], args: argparse.Namespace,
                   n: int, device: torch.device) -> dict[str, Any]:
    """One :func:`_rate` per precision; a precision the device refuses becomes ``skipped``."""
    out: dict[str, Any] = {}
    for p in args.precisions:
        try:
            out[p] = _rate(make_run(p), n, args.repeats, device)
        except (RuntimeError, TypeError, ValueError, L2IError) as err:  # e.g. no bf16 kernels
            out[p] = {"skipped": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
    return out


def _batches(x: torch.Tensor, bs: int) -> list[torch.Tensor]:
    return [x[i:i + bs] for i in range(0, x.shape[0], bs)]


def _inference(interp: Any, wavs: torch.Tensor, args: argparse.Namespace,
               device: torch.device) -> dict[str, Any]:
    """classifier_forward, explain and (when available) lmac_explain, per precision."""
    from l2i.explain import Explainer

    feats, n = interp.features, wavs.shape[0]
    explainer = Explainer(interp)
    with torch.no_grad():
        mags = [stft(w, feats).abs() for w in _batches(wavs, args.batch_size)]  # (B, T, F)

    def forward(p: str) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad(), _autocast(device, p):
                for mag in mags:
                    interp.classify(mag)
        return run

    def explain(p: str) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad(), _autocast(device, p):
                for w in _batches(wavs, args.batch_size):
                    spec = stft(w, feats)  # (B, T, F) complex
                    ex = explainer.explain_batch(spec.abs())
                    istft(spec * ex.mask.float(), feats, length=w.shape[-1])  # (B, S)
        return run

    out = {"classifier_forward": _per_precision(forward, args, n, device),
           "explain": _per_precision(explain, args, n, device)}
    lmac = _lmac(interp, device)
    if isinstance(lmac, str):
        out["lmac_explain"] = {"skipped": lmac}
    else:
        def lmac_run(p: str) -> Callable[[], None]:
            def run() -> None:
                with torch.no_grad(), _autocast(device, p):
                    for w in _batches(wavs, args.batch_size):
                        spec = stft(w, feats)  # (B, T, F) complex
                        mask = lmac.attribute((spec.abs(), spec.angle())).mask  # (B, T, F)
                        istft(spec * mask.float(), feats, length=w.shape[-1])  # (B, S)
            return run
        out["lmac_explain"] = _per_precision(lmac_run, args, n, device)
    return out


def _lmac(interp: Any, device: torch.device) -> Any:
    """A random-decoder LMACExplainer on ``interp``'s classifier, or why there is none."""
    from importlib import import_module

    from l2i import config
    from l2i.models.psi import probe_map_bins

    try:  # L-MAC is being added on another branch: measured once it is merged
        explainer_cls = import_module("l2i.explainers.lmac").LMACExplainer
        decoder_cls = import_module("l2i.models.lmac").LMACDecoder
        lmac_cfg = config.LMACConfig()
    except (ImportError, AttributeError) as err:
        return f"L-MAC not in this checkout ({err})"
    clf, n_freq = interp.classifier, interp.features.n_freq
    decoder = decoder_cls(clf.map_channels, probe_map_bins(clf, n_freq), n_freq, lmac_cfg)
    return explainer_cls(clf, decoder.to(device), interp.features, interp.class_names)


def _train_epoch(module: L2IModule, loader: Any, device: torch.device) -> Callable[[], None]:
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-3)

    def run() -> None:
        module.train()
        for batch in loader:
            terms, _ = module.shared_step(_to(batch, device), train=True)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
    return run


def _training(interp: Any, wavs: torch.Tensor, args: argparse.Namespace,
              device: torch.device) -> dict[str, Any]:
    """L2I training clips/s from waveforms and from the map cache (+ the cache build)."""
    n = wavs.shape[0]
    labels = torch.zeros(n, dtype=torch.long).numpy()
    cpu_wavs = wavs.cpu().numpy()
    module = L2IModule(interp, L2ILossConfig(), TrainerConfig()).to(device)
    raw = make_loader(WaveSplit(cpu_wavs, labels), args.batch_size, True, 0)
    out: dict[str, Any] = {"l2i_train_no_cache": _rate(_train_epoch(module, raw, device), n,
                                                      args.repeats, device)}
    with tempfile.TemporaryDirectory(prefix="l2i_gpu_bench_") as tmp:
        t0 = time.perf_counter()
        folder = build_cache(interp, cpu_wavs, labels, Path(tmp) / "cache", "bench",
                             args.batch_size, device)
        build_s = time.perf_counter() - t0
        interp.to(device)  # build_cache may hand the model back on another device
        cached = make_loader(CachedSplit(folder, cpu_wavs, interp.features), args.batch_size,
                             True, 0)
        out["l2i_train_cache"] = _rate(_train_epoch(module, cached, device), n, args.repeats,
                                       device)
        out["cache_build"] = {"clips_per_s": round(n / build_s, 2), "seconds": round(build_s, 3),
                              "mb_per_clip": round(folder_size(folder) / 2**20 / n, 4)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | mps")
    ap.add_argument("--n_clips", type=int, default=256)
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    ap.add_argument("--arch", default=None, help="conv2d (recipe) | cnn14")
    ap.add_argument("--no_train", action="store_true", help="skip the training figures")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    interp = random_interpreter(
        classifier_recipe=str(ROOT / "recipes/esc50/classifier_conv2d.yaml"),
        l2i_recipe=str(ROOT / "recipes/esc50/l2i_conv2d.yaml"), arch=args.arch).to(device)
    sr = interp.features.sample_rate
    gen = torch.Generator(device=device).manual_seed(0)
    wavs = 0.3 * torch.randn(args.n_clips, int(args.seconds * sr), generator=gen,
                             device=device)  # (N, S)
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "gpu", "device": str(device), "device_name": _device_name(device),
        "classifier": type(interp.classifier).__name__, "clip_s": args.seconds,
        "sample_rate": sr, "n_clips": args.n_clips, "batch_size": args.batch_size,
        "repeats": args.repeats, "n_components": int(interp.n_components),
        "classifier_params": int(sum(p.numel() for p in interp.classifier.parameters())),
        **_inference(interp, wavs, args, device)}
    if not args.no_train:
        result.update(_training(interp, wavs, args, device))
    result.update({"seconds": round(time.perf_counter() - t0, 2),
                   "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                   "python": sys.version.split()[0], "machine": platform.machine()})
    return emit(result, args.out)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    sys.exit(main())
