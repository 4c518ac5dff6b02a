"""A longer epoch cap for the ESC-10 recipe, judged over four seeds on the VALIDATION fold
(issue 14's top-1 fidelity goal).

    .venv/bin/python benchmarks/select_epochs_seeds.py \\
        --run recipe=runs/mixseeds/mix50_seed1234,runs/mixseeds/mix50_seed1,... \\
        --run e60=runs/mixseeds/e60_seed1234,runs/mixseeds/e60_seed1,... \\
        --out benchmarks/results/select_epochs_seeds.json

Why: with ``augment.mix_prob`` 0.5 (the recipe since benchmarks/select_mix_seeds.py), three of
the four seeds found their best validation epoch at 34-39 of the 40 allowed
(``benchmarks/results/recipe_seeds_mix50.json``): training on mixtures had not converged when
the cap stopped it, and the test top-1 fidelity (0.884 clean, 0.869 mixtures) is below issue
14's 0.90. Candidate ``e60``: ``--trainer.epochs 60``, everything else the recipe's (early
stopping, patience 10, unchanged). Each e60 run continues its recipe run from its
``last.ckpt`` (``--trainer.resume true --trainer.epochs 60``, allowed by
:func:`l2i.training.common.resume_checkpoint`): the plateau scheduler and early stopping do not
depend on the cap, so the first 40 epochs are the recipe run's; a run that stopped early
before 40 is its own e60 run. Seeds 1234, 1, 2, 3; two runs at a time, one thread each.

Rule, written before any run of either arm: ``e60`` replaces the recipe's 40 if (1) the mean
of its mean validation top-1 fidelities on clean clips and on mixtures is higher by at least
one clip (0.0125), (2) neither of the two is lower by more than one clip, (3) its mean
validation faithfulness keeps issue 14's floors (AI >= 40, AD <= 10, Fid-In >= 0.85, clean
and mixtures) and (4) its mean clean validation AI is not lower by more than 5 points. The
price, up to 1.5 times the training time, is reported. Test-fold figures are read back from
each run's ``metrics.json`` for reporting only.

Prints one JSON object; ``rows`` (one per run, then one mean per candidate) for
docs/benchmarks.md.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from select_fid_seeds import MAX_AI_LOSS, MIN_FIDELITY_GAIN, floors_hold, run_rule  # noqa: E402


def decide(means: dict[str, dict[str, Any]], base: str,
           runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The rule of the docstring for each candidate against ``base`` (on the means only)."""
    out = {}
    b = means[base]
    for name, m in means.items():
        if name == base:
            continue
        floors = floors_hold(m)
        gains = {p: m[f"valid {p}fid@1"] - b[f"valid {p}fid@1"] for p in ("", "mix ")}
        gain = (gains[""] + gains["mix "]) / 2
        ai_loss = b["valid AI"] - m["valid AI"]
        out[name] = {"fidelity_gain": round(gain, 4),
                     "clean_fidelity_gain": round(gains[""], 4),
                     "mix_fidelity_gain": round(gains["mix "], 4), "floors": floors,
                     "ai_loss": round(ai_loss, 2),
                     "adopted": gain >= MIN_FIDELITY_GAIN - 1e-9
                     and min(gains.values()) >= -MIN_FIDELITY_GAIN - 1e-9 and floors
                     and ai_loss <= MAX_AI_LOSS}
    return out


def main(argv: list[str] | None = None) -> int:
    return run_rule(argv, decide, "benchmarks/select_epochs_seeds.py", __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
