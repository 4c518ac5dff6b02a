"""One clip explained with the paper's mask and with another ``MaskConfig``, side by side
(docs/method.md, "What changed from the paper and why").

    .venv/bin/python benchmarks/mask_figure.py CKPT CLIP.wav \\
        --mask 'per frame={"resolution": "frame"}' [--mask 'NAME=JSON' ...] \\
        --out docs/figures/mask_before_after.png

Panels: the input spectrogram and, when the clip's dataset has ``events/`` (``l2i synth``),
the event's ideal binary mask; then for each mask the mask itself and the explanation
``M * |X|`` (dB re the input's max). The titles give the classifier's probability of the
explained class on the explanation (masked-in) and on the rest (masked-out). Prints JSON.
The PNG is quantised to 256 colours (PIL) to keep the repository small.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emit import emit  # noqa: E402

from l2i import features as feats  # noqa: E402
from l2i.config import MaskConfig, from_dict  # noqa: E402
from l2i.explain import Explainer  # noqa: E402
from l2i.figures import DB_RANGE, _extent, _mpl, plot_spectrogram, save_figure, to_db  # noqa: E402


def truth_of(clip: Path, fcfg, n_frames: int) -> np.ndarray | None:
    """The event's ideal binary mask ``(T, F)``, when the dataset keeps it."""
    from l2i.synthetic import ideal_mask, load_events

    root = clip.parent.parent
    if not (root / "meta" / "events.csv").is_file():
        return None
    events = load_events(str(root))
    if clip.name not in events:
        return None
    try:
        return np.asarray(ideal_mask(str(root), clip.name, fcfg, n_frames,
                                     event=events[clip.name]))
    except Exception:  # noqa: BLE001 - a figure without the truth panel is still useful
        return None


def probs_in_out(ex: Explainer, mag: torch.Tensor, mask: torch.Tensor, target: int) -> tuple:
    from l2i.explainers.base import class_probs, reclassify

    act = ex.interpreter_activation
    clf = ex.interpreter.classifier
    p_in = class_probs(reclassify(clf, mask * mag, None, None)[0], act)[0, target]
    p_out = class_probs(reclassify(clf, (1 - mask) * mag, None, None)[0], act)[0, target]
    return float(p_in), float(p_out)


def main(argv: list[str] | None = None) -> int:
    import soundfile as sf

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ckpt")
    ap.add_argument("clip")
    ap.add_argument("--mask", action="append", default=[],
                    help="NAME=JSON: a MaskConfig drawn under the paper's (repeatable)")
    ap.add_argument("--ckpt_for", action="append", default=[],
                    help="NAME=CKPT: draw mask NAME with another interpreter (e.g. one trained "
                         "with the faithfulness terms: the 'after' of the method's figure)")
    ap.add_argument("--out", default="docs/figures/mask_before_after.png")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    news = {n: from_dict(MaskConfig, json.loads(j), "mask.")
            for n, j in (m.split("=", 1) for m in args.mask)}
    clip = Path(args.clip)
    x, sr = sf.read(clip, dtype="float32")
    paper = Explainer.load(args.ckpt, mask=MaskConfig())
    fcfg = paper.features
    e_old = paper.explain(x, sr)[0]  # one clip of the returned batch
    others = dict(m.split("=", 1) for m in args.ckpt_for)
    # another checkpoint with '{}' as its mask: the mask its recipe stored
    explainers = {n: (Explainer.load(others[n], mask=c if c != MaskConfig() else None)
                      if n in others else
                      Explainer(paper.interpreter, relevance_th=paper.relevance_th, mask=c))
                  for n, c in news.items()}
    rows = [("paper's mask", paper, e_old)] + [(n, ex, ex.explain(x, sr)[0])
                                               for n, ex in explainers.items()]
    mag = e_old.input_magnitude
    truth = truth_of(clip, fcfg, mag.shape[0])
    plt = _mpl()
    ext = _extent(mag.shape[0], mag.shape[1], fcfg.hop_length, fcfg.sample_rate)
    fig, axes = plt.subplots(len(rows), 3, figsize=(13, 3.2 * len(rows)), layout="constrained",
                             sharex=True, sharey=True, squeeze=False)
    ref = float(mag.max()) or 1.0
    plot_spectrogram(axes[0, 0], to_db(mag, ref), ext, "input |X|", vmin=-DB_RANGE, vmax=0.0,
                     label="dB re input max")
    if truth is not None:
        plot_spectrogram(axes[1, 0], truth.astype(float), ext, "event (ideal binary mask)",
                         vmin=0.0, vmax=1.0, label="")
    else:
        axes[1, 0].set_visible(False)
    for ax in axes[2:, 0]:
        ax.set_visible(False)
    info = {}
    m_t = torch.from_numpy(mag)[None]
    for row, (name, ex, e) in enumerate(rows):
        p_in, p_out = probs_in_out(ex, m_t, torch.from_numpy(e.mask)[None], e.target)
        plot_spectrogram(axes[row, 1], e.mask, ext, f"{name}: M (mean {e.mask.mean():.2f})",
                         vmin=0.0, vmax=1.0, label="mask")
        plot_spectrogram(axes[row, 2], to_db(e.explanation_magnitude, ref), ext,
                         f"{name}: M·|X|  p(in) {p_in:.2f}, p(out) {p_out:.2f}",
                         vmin=-DB_RANGE, vmax=0.0, label="dB re input max")
        info[name] = {"mask_mean": float(e.mask.mean()), "p_in": p_in, "p_out": p_out,
                      "selected": len(e.selected)}
        if truth is not None:
            from l2i.metrics import roc_auc

            info[name]["roc_auc"] = roc_auc(torch.from_numpy(e.mask).reshape(-1),
                                            torch.from_numpy(truth).reshape(-1))
    fig.suptitle(f"{clip.name}: explaining '{e_old.target_name}' (classifier p = "
                 f"{e_old.classifier_probs[e_old.target]:.2f})", fontsize=12)
    save_figure(fig, args.out)
    from PIL import Image  # 256 colours: a third of the size, no visible change

    Image.open(args.out).convert("RGB").quantize(256, Image.Quantize.MEDIANCUT).save(
        args.out, optimize=True)
    _ = feats
    return emit({"clip": str(clip), "figure": args.out, "masks": args.mask, **info}, None)


if __name__ == "__main__":
    raise SystemExit(main())
