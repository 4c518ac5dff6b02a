"""Benchmark: L2I training throughput (clips/s) with and without the classifier-output cache.

Same clips, same frozen classifier, same psi/theta, same batch size; the only difference is
where a training batch comes from:

- ``no_cache``: waveforms -> STFT -> frozen classifier (no_grad) -> ``Psi.reduce`` -> psi/theta
  (what every epoch costs with noise augmentation, and what the reference pays every epoch);
- ``cache``: float16 memmaps written once by :func:`l2i.training.interpreter.build_cache`,
  then psi/theta only. The one-off cache build time is reported separately.

Each timed epoch runs forward + backward + Adam step over all training clips. With
``--classifier_ckpt``/``--nmf``/``--data_folder`` it uses real artefacts (e.g. ESC-10);
otherwise it synthesises 5-s clips at 16 kHz and uses a fresh conv2d classifier (width 16, as in
recipes/esc50/classifier_conv2d.yaml) and a random K=100 dictionary. Prints JSON.

    python benchmarks/l2i_train.py [--data_folder D --classifier_ckpt C --nmf N]
        [--n_clips 64] [--batch_size 32] [--epochs 2] [--hidden 256]
        [--time_resolution output|maps] [--out result.json]
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _emit import emit

from l2i.config import (
    ClassifierModelConfig,
    DataConfig,
    FeaturesConfig,
    L2ILossConfig,
    PsiConfig,
    SynthRecipe,
    ThetaConfig,
    TrainerConfig,
)
from l2i.interpreter import Interpreter
from l2i.models.psi import Psi
from l2i.models.theta import Theta
from l2i.training.interpreter import (
    CachedSplit,
    L2IModule,
    WaveSplit,
    build_cache,
    folder_size,
    make_loader,
)


def _artefacts(args: argparse.Namespace, tmp: Path):
    """(interpreter, wavs (N, S), labels (N,)) from real files or synthetic stand-ins."""
    from l2i.data import load_dataset, load_split

    if args.classifier_ckpt:
        from l2i.models import load_classifier
        from l2i.nmf import load_dictionary

        clf, info = load_classifier(args.classifier_ckpt)
        W, _ = load_dictionary(args.nmf)
        features, names = info.features, info.class_names
        data_cfg = DataConfig(train_folds=[1, 2], valid_folds=[3], test_folds=[4],
                              duration_s=5.0)
        data = args.data_folder
    else:
        from l2i.models import build_classifier
        from l2i.synthetic import synthesize_dataset

        features = FeaturesConfig()
        data = str(tmp / "synth")
        synthesize_dataset(SynthRecipe(output_folder=data, n_per_class=max(1, args.n_clips // 10),
                                       n_folds=1, seed=0, sample_rate=features.sample_rate))
        data_cfg = DataConfig(train_folds=[1], valid_folds=[], test_folds=[], duration_s=5.0)
        names = None
        clf = build_classifier(ClassifierModelConfig(arch="conv2d", width=16), features, 10)
        W = torch.rand(features.n_freq, 100, generator=torch.Generator().manual_seed(0))
    index = load_dataset(data, data_cfg)
    arrays = load_split(index, "train", data_cfg, features.sample_rate, tmp / "audio",
                        progress=False)
    n = min(args.n_clips, len(arrays))
    names = names or index.class_names
    psi = Psi(clf.map_channels, W.shape[1], PsiConfig(
        maps=args.maps or [], hidden=args.hidden, time_resolution=args.time_resolution))
    theta = Theta(W.shape[1], len(names), ThetaConfig())
    interp = Interpreter(clf, psi, theta, W, features, names)
    return interp, np.asarray(arrays.wavs[:n]), arrays.labels[:n]


def _epochs(module: L2IModule, loader, epochs: int) -> float:
    """Seconds per epoch (median) of forward + backward + Adam over ``loader``."""
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-3)
    module.train()
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for batch in loader:
            terms, _ = module.shared_step(batch, train=True)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data_folder", default="")
    ap.add_argument("--classifier_ckpt", default="")
    ap.add_argument("--nmf", default="")
    ap.add_argument("--maps", nargs="*", default=None)
    ap.add_argument("--hidden", type=int, default=256, help="psi.hidden")
    ap.add_argument("--time_resolution", default="output", help="psi.time_resolution")
    ap.add_argument("--n_clips", type=int, default=64)
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    if args.classifier_ckpt and not (args.nmf and args.data_folder):
        ap.error("--classifier_ckpt needs --nmf and --data_folder")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="l2i_bench_") as tmp_:
        tmp = Path(tmp_)
        interp, wavs, labels = _artefacts(args, tmp)
        n = len(labels)
        module = L2IModule(interp, L2ILossConfig(), TrainerConfig())
        raw = make_loader(WaveSplit(wavs, labels), args.batch_size, True, 0)
        t0 = time.perf_counter()
        folder = build_cache(interp, wavs, labels, tmp / "cache", "bench", args.batch_size,
                             torch.device("cpu"))
        cache_s = time.perf_counter() - t0
        cached = make_loader(CachedSplit(folder, wavs, interp.features), args.batch_size, True,
                             0)
        no_cache_s = _epochs(module, raw, args.epochs)
        cache_epoch_s = _epochs(module, cached, args.epochs)
        result = {
            "benchmark": "l2i_train",
            "data": args.data_folder or "synthetic 5 s / 16 kHz",
            "n_clips": n, "batch_size": args.batch_size, "epochs_timed": args.epochs,
            "frames": int(CachedSplit(folder, wavs, interp.features).meta["frames"]),
            "K": interp.n_components, "psi_maps": interp.psi.map_names,
            "psi_time_resolution": args.time_resolution,
            "psi_params": sum(p.numel() for p in interp.psi.parameters()),
            "no_cache_clips_per_s": round(n / no_cache_s, 2),
            "cache_clips_per_s": round(n / cache_epoch_s, 2),
            "speedup": round(no_cache_s / cache_epoch_s, 2),
            "cache_build_s": round(cache_s, 2),
            "cache_build_clips_per_s": round(n / cache_s, 2),
            "cache_mb": round(folder_size(folder) / 2**20, 2),
            "cache_mb_per_clip": round(folder_size(folder) / 2**20 / n, 4),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "torch_threads": torch.get_num_threads(),
            "python": sys.version.split()[0], "torch": torch.__version__,
            "machine": platform.machine(),
        }
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
