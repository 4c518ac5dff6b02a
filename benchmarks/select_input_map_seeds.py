"""psi reading the input's log1p magnitude (``psi.input_map``), judged over four seeds on the
VALIDATION fold (issue 14: "psi that reconstructs as well as the dictionary does ... input
maps").

    .venv/bin/python benchmarks/select_input_map_seeds.py \\
        --run recipe=runs/clf80/l2i_seed1234,runs/clf80/l2i_seed1,... \\
        --run input=runs/inmap/input_seed1234,runs/inmap/input_seed1,... \\
        --out benchmarks/results/select_input_map_seeds.json

Why: psi's validation reconstruction error ``rec_rel`` is 0.71 with today's ESC-10 recipe,
against the dictionary's own ~0.25-0.3; psi sees only the classifier's maps (T/8 frames, 5-10
pooled mel bins). Candidate ``input``: ``--psi.input_map true`` (the input's ``log1p|X|`` as one
more map, its 513 bins projected to psi's width at the STFT frame rate), everything else the
recipe's (``recipes/esc50/l2i_conv2d.yaml`` on the 80-epoch classifier
``runs/clfsel/e80_seed1234/classifier.ckpt``, NMF ``runs/sel/nmf/nmf.pt``), seeds 1234, 1,
2, 3, two runs at a time, ``--threads 1``; the recipe's four runs are ``runs/clf80/l2i_seedS``.

Rule, written and committed before any run of the candidate: ``input`` replaces the recipe's
psi if (1) its mean validation ``rec_rel`` is lower by at least 0.05, (2) its mean validation
top-1 fidelity, clean and on mixtures, is each not lower by more than one clip (0.0125),
(3) its mean validation faithfulness keeps issue 14's floors (AI >= 40, AD <= 10, Fid-In >=
0.85, clean and mixtures; each run scored with its checkpoint's mask as the recipe's mask
``binarize 0.25`` by ``l2i.scoring``), (4) its mean clean validation AI is not lower by more
than 5 points and (5) at least three of the four clean validation means AI, AD, FF, Fid-In
are no worse. Test-fold figures are read back from each run's ``metrics.json`` for reporting
only.

Prints one JSON object; ``rows`` (one per run, then one mean per candidate) for
docs/benchmarks.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from select_fid_seeds import MAX_AI_LOSS, MIN_FIDELITY_GAIN, floors_hold, run_row, run_rule  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MIN_REC_GAIN = 0.05
HIGHER_IS_BETTER = {"AI": True, "AD": False, "FF": True, "Fid-In": True}


def row(name: str, folder: str) -> dict[str, Any]:
    """:func:`select_fid_seeds.run_row`, scored with the recipe's mask (the recipe's runs
    were trained when it was ``sharpen 0.5``; the mask is not part of training), plus psi's
    validation and test ``rec_rel``."""
    from l2i.config import L2IRecipe, load_config

    mask = load_config(L2IRecipe, ROOT / "recipes/esc50/l2i_conv2d.yaml").mask  # today's
    m = json.loads((Path(folder) / "metrics.json").read_text())
    return {**run_row(name, folder, mask), "valid rec_rel": round(m["valid/rec_rel"], 4),
            "test rec_rel": round(m["test/rec_rel"], 4)}


def decide(means: dict[str, dict[str, Any]], base: str,
           runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The rule of the docstring for each candidate against ``base`` (on the means only)."""
    out = {}
    b = means[base]
    for name, m in means.items():
        if name == base:
            continue
        floors = floors_hold(m)
        rec_gain = b["valid rec_rel"] - m["valid rec_rel"]
        clean_loss = b["valid fid@1"] - m["valid fid@1"]
        mix_loss = b["valid mix fid@1"] - m["valid mix fid@1"]
        ai_loss = b["valid AI"] - m["valid AI"]
        no_worse = [k for k, up in HIGHER_IS_BETTER.items()
                    if (m[f"valid {k}"] >= b[f"valid {k}"]) == up
                    or m[f"valid {k}"] == b[f"valid {k}"]]
        out[name] = {"rec_rel_gain": round(rec_gain, 4),
                     "clean_fidelity_loss": round(clean_loss, 4),
                     "mix_fidelity_loss": round(mix_loss, 4), "floors": floors,
                     "ai_loss": round(ai_loss, 2), "no_worse": no_worse,
                     "adopted": rec_gain >= MIN_REC_GAIN - 1e-9
                     and clean_loss <= MIN_FIDELITY_GAIN + 1e-9
                     and mix_loss <= MIN_FIDELITY_GAIN + 1e-9 and floors
                     and ai_loss <= MAX_AI_LOSS and len(no_worse) >= 3}
    return out


def main(argv: list[str] | None = None) -> int:
    return run_rule(argv, decide, "benchmarks/select_input_map_seeds.py", __doc__, row=row)


if __name__ == "__main__":
    raise SystemExit(main())
