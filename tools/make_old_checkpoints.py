"""Write tiny checkpoints of every l2i format, and what they compute, with the l2i on the path.

Run with the PREVIOUS l2i to refresh ``tests/data/checkpoints/`` before a format version bump
(``tests/test_checkpoints.py`` then loads them with the new code and checks that they load,
migrate and compute the same numbers)::

    git archive <commit before the bump> src | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old/src python tools/make_old_checkpoints.py tests/data/checkpoints/v1

The files (a few KB each): ``classifier.ckpt`` (conv2d of width 2), ``nmf.pt`` (K = 4),
``l2i.ckpt`` (psi/theta of width 4 on that classifier), ``lmac.ckpt`` (decoder of width 2),
``code_record.pt`` (the record of ``tests/data/checkpoints/tiny_code_model.py:build``) and
``expected.pt``: the outputs the writing l2i computed from each on :func:`probe_clip`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parents[1] / "tests" / "data" / "checkpoints"
CLASSES = ["a", "b", "c"]


def probe_clip() -> torch.Tensor:
    """The input of ``expected.pt``: 0.5 s of a 440 Hz tone at 8 kHz, ``(1, 4000)``."""
    return 0.5 * torch.sin(torch.arange(4000) * 2 * torch.pi * 440 / 8000)[None]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    import l2i
    from l2i import features as feats
    from l2i.config import (
        ClassifierModelConfig,
        ClassifierSpec,
        FeaturesConfig,
        L2ILossConfig,
        LMACConfig,
        PsiConfig,
        ThetaConfig,
    )
    from l2i.explainers.lmac import lmac_record, save_lmac
    from l2i.interpreter import Interpreter, save_interpreter
    from l2i.models import build_classifier, classifier_dict, save_classifier
    from l2i.models.hooked import build_hooked, code_record
    from l2i.models.lmac import LMACDecoder
    from l2i.models.psi import Psi, probe_map_bins
    from l2i.models.theta import Theta
    from l2i.nmf import save_dictionary

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    f = FeaturesConfig(sample_rate=8000, n_fft=64, win_ms=8.0, hop_ms=4.0, n_mels=16)
    mc = ClassifierModelConfig(arch="conv2d", width=2, embed_dim=4)
    clf = build_classifier(mc, f, len(CLASSES)).eval()
    save_classifier(out / "classifier.ckpt", clf, mc, f, CLASSES, {"test_accuracy": 50.0},
                    normalize="peak")
    W = torch.rand(f.n_freq, 4)
    save_dictionary(out / "nmf.pt", W, f, {"rel_error": 0.5})
    bins = probe_map_bins(clf, f.n_freq)
    psi = Psi(clf.map_channels, 4, PsiConfig(hidden=4, n_layers=1), map_bins=bins)
    theta = Theta(4, len(CLASSES), ThetaConfig(hidden=4))
    record = classifier_dict(clf, mc, f, CLASSES, normalize="peak")
    interp = Interpreter(clf, psi, theta, W, f, CLASSES, classifier_record=record).eval()
    save_interpreter(out / "l2i.ckpt", interp, L2ILossConfig(), recipe={}, metrics={})
    lc = LMACConfig(hidden=2, n_up=1)
    dec = LMACDecoder(clf.map_channels, bins, f.n_freq, lc).eval()
    save_lmac(out / "lmac.ckpt", lmac_record(record, dec, f, CLASSES, lc))
    spec = ClassifierSpec(module=f"{HERE / 'tiny_code_model.py'}:build", sample_rate=8000,
                          layers=["conv"])
    torch.save(code_record(build_hooked(spec, f)), out / "code_record.pt")

    wav = probe_clip()  # (1, S)
    mag = feats.magnitude(feats.stft(wav, f))  # (1, T, F)
    with torch.no_grad():
        logits, maps = clf(mag)
        o = interp(mag, return_maps=False)
        lm = dec({k: maps[k] for k in dec.map_names}, mag.shape[1])
    torch.save({"classifier_logits": logits, "H": o.H,
                "theta_logits": o.theta_logits, "lmac_logits": lm, "W": W,
                "l2i_version": l2i.__version__}, out / "expected.pt")
    for p in sorted(out.iterdir()):
        print(f"{p.name}: {p.stat().st_size} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
