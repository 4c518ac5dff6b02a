"""Recordings of any length: windows, overlap-add stitching, timelines (library, no files).

A long recording is explained window by window (``window`` samples, ``hop`` apart, at the
model's rate): windows start at ``0, hop, 2 hop, ...`` until one reaches the end (the last may be
shorter; :meth:`l2i.explain.Explainer.explain` pads a window under 1 s for the classifier).
:func:`iter_windows` cuts them out of a stream of blocks holding at most ``window + block``
samples, so memory does not grow with the recording.

Each window's explanation audio (scaled back by the window's normalisation gain, so it is the
mask applied to the recording itself) is stitched by :class:`OverlapAdd`: a weighted average
``sum_i w_i(t) e_i(t) / sum_i w_i(t)`` with a Hann taper ``w`` floored at ``OLA_FLOOR`` (every
sample has a positive weight, overlaps cross-fade). Finished samples are handed to a ``write``
callback as soon as no later window can touch them, so the stitched wav is written as it grows.

:class:`Timeline` holds one row per window (classifier and theta probabilities, pooled
activations ``z``) and the segments where each class dominates: each window owns the span
``[centre - hop/2, centre + hop/2]`` (clipped; the first starts at 0, the last ends at the
recording's end), consecutive windows predicting the same class merge.

Written by hand (no library does windowed explanation); soxr's ``ResampleStream`` resamples
the blocks (:func:`resampled_blocks`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

OLA_FLOOR = 1e-3  # smallest overlap-add weight (window edges), relative to the taper's peak


def n_windows(n_samples: int, window: int, hop: int) -> int:
    """How many windows :func:`iter_windows` cuts from ``n_samples`` samples."""
    if n_samples <= window:
        return 1
    return 1 + int(np.ceil((n_samples - window) / hop))


def iter_windows(blocks: Iterable[np.ndarray], window: int, hop: int
                 ) -> Iterator[tuple[int, np.ndarray]]:
    """``(start_sample, samples (<= window,))`` for each window of a stream of ``(n,)`` blocks.

    Full windows start at ``0, hop, 2 hop, ...``; when samples remain after the last full one,
    a last window ends at the recording's end (``window`` long, or the whole recording when it
    is shorter than one window). Holds at most ``2 window + len(block)`` samples. Raises
    ValueError unless ``1 <= hop <= window`` (a larger hop would skip samples).
    """
    if hop < 1 or window < 1 or hop > window:
        raise ValueError(f"need 1 <= hop <= window, got window={window}, hop={hop}")
    buf = np.zeros(0, dtype=np.float32)
    start = 0  # sample index of buf[0]
    last: np.ndarray | None = None  # the last full window
    last_end = 0
    for block in blocks:
        buf = np.concatenate([buf, np.asarray(block, dtype=np.float32).reshape(-1)])
        while buf.shape[0] >= window:
            last = buf[:window].copy()
            yield start, last
            last_end = start + window
            buf = buf[hop:]
            start += hop
    total = start + buf.shape[0]
    if total <= last_end:
        return
    if last is None:
        yield 0, buf.copy()
        return
    tail = np.concatenate([last, buf[last_end - start:]])[-window:]  # (window,)
    yield total - window, tail


def taper(n: int) -> np.ndarray:
    """``(n,)`` overlap-add weight: Hann, floored at ``OLA_FLOOR``."""
    if n <= 1:
        return np.ones(max(n, 0), dtype=np.float64)
    w = 0.5 - 0.5 * np.cos(2 * np.pi * (np.arange(n) + 0.5) / n)
    return np.maximum(w, OLA_FLOOR)


class OverlapAdd:
    """Stitch window signals into one, writing finished samples through ``write(samples)``.

    ``add(start, x)`` adds window ``x (n,)`` starting at sample ``start`` (starts must not
    decrease); everything before ``start`` is final and written then. ``finish(total)`` writes
    the rest, ``total`` samples in all. Holds at most one window's span plus one hop.
    """

    def __init__(self, write: Callable[[np.ndarray], Any]) -> None:
        self.write = write
        self.offset = 0  # sample index of acc[0]
        self.acc = np.zeros(0, dtype=np.float64)
        self.wsum = np.zeros(0, dtype=np.float64)

    def _flush(self, upto: int) -> None:
        n = min(max(upto - self.offset, 0), self.acc.shape[0])
        if n:
            self.write((self.acc[:n] / np.maximum(self.wsum[:n], 1e-300)).astype(np.float32))
            self.acc, self.wsum = self.acc[n:], self.wsum[n:]
            self.offset += n

    def add(self, start: int, x: np.ndarray) -> None:
        if start < self.offset:
            raise ValueError(f"window at {start} starts before the written part ({self.offset})")
        self._flush(start)
        end = start - self.offset + x.shape[0]
        if end > self.acc.shape[0]:
            grow = end - self.acc.shape[0]
            self.acc = np.concatenate([self.acc, np.zeros(grow)])
            self.wsum = np.concatenate([self.wsum, np.zeros(grow)])
        w = taper(x.shape[0])
        i = start - self.offset
        self.acc[i:i + x.shape[0]] += w * x
        self.wsum[i:i + x.shape[0]] += w

    def finish(self, total: int) -> None:
        self._flush(total)


def resampled_blocks(blocks: Iterable[np.ndarray], sr_in: int, sr_out: int
                     ) -> Iterator[np.ndarray]:
    """Resample a stream of mono ``(n,)`` float32 blocks with soxr's ``ResampleStream`` (HQ)."""
    if sr_in == sr_out:
        yield from blocks
        return
    import soxr

    stream = soxr.ResampleStream(sr_in, sr_out, 1, dtype="float32", quality="HQ")
    for block in blocks:
        out = stream.resample_chunk(np.ascontiguousarray(block, dtype=np.float32))
        if out.size:
            yield out
    tail = stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
    if tail.size:
        yield tail


def array_blocks(x: np.ndarray, block: int) -> Iterator[np.ndarray]:
    """``x (N,)`` as consecutive blocks of ``block`` samples (views, no copy)."""
    for i in range(0, x.shape[0], block):
        yield x[i:i + block]


@dataclass
class Timeline:
    """One row per window of a long recording.

    ``start_s``, ``end_s``, ``predicted`` ``(W,)``; ``classifier_probs``, ``theta_probs``
    ``(W, C)``; ``z (W, K)`` theta's time-pooled activations; ``selected`` one list of component
    indices per window; ``duration_s`` of the recording; ``hop_s``, ``window_s``.
    """

    class_names: list[str]
    window_s: float
    hop_s: float
    duration_s: float = 0.0
    start_s: list[float] = field(default_factory=list)
    end_s: list[float] = field(default_factory=list)
    classifier_probs: list[np.ndarray] = field(default_factory=list)
    theta_probs: list[np.ndarray] = field(default_factory=list)
    z: list[np.ndarray] = field(default_factory=list)
    selected: list[list[int]] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)

    def append(self, start_s: float, end_s: float, expl: Any) -> None:
        """Add one window's :class:`l2i.explain.Explanation` (keeps only its small facts)."""
        self.start_s.append(float(start_s))
        self.end_s.append(float(end_s))
        # copies: a view would keep the window's tensors (and the allocator's arenas) alive,
        # and memory would grow with the recording (measured: ~1 MB per window)
        self.classifier_probs.append(np.array(expl.classifier_probs, dtype=np.float32))
        self.theta_probs.append(np.array(expl.theta_probs, dtype=np.float32))
        self.z.append(np.array(np.asarray(expl.H, dtype=np.float32).mean(axis=1)))  # (K,)
        self.selected.append(list(expl.selected))
        self.targets.append(int(expl.target))

    def __len__(self) -> int:
        return len(self.start_s)

    @property
    def predicted(self) -> np.ndarray:
        """``(W,)`` the classifier's class per window."""
        return np.array([int(np.argmax(p)) for p in self.classifier_probs], dtype=np.int64)

    def probs(self, which: str = "classifier") -> np.ndarray:
        """``(W, C)`` probabilities of the classifier (``classifier``) or theta (``theta``)."""
        rows = self.classifier_probs if which == "classifier" else self.theta_probs
        return np.stack(rows) if rows else np.zeros((0, len(self.class_names)), np.float32)

    def spans(self) -> np.ndarray:
        """``(W, 2)`` the part of the recording each window owns (seconds), tiling [0, end]."""
        starts, ends = np.asarray(self.start_s), np.asarray(self.end_s)
        centre = (starts + ends) / 2
        lo = np.maximum(centre - self.hop_s / 2, 0.0)
        hi = np.minimum(centre + self.hop_s / 2, self.duration_s)
        if len(lo):
            lo[0] = 0.0
            hi[-1] = self.duration_s
            lo[1:] = np.maximum(lo[1:], hi[:-1])  # no overlap where the last window is short
        return np.stack([lo, hi], axis=1) if len(lo) else np.zeros((0, 2))

    def segments(self) -> list[dict[str, Any]]:
        """Consecutive windows where the same class dominates (the classifier's top class):
        ``{"class", "index", "start_s", "end_s", "n_windows", "mean_prob"}``."""
        out: list[dict[str, Any]] = []
        spans, pred, probs = self.spans(), self.predicted, self.probs()
        for i, c in enumerate(pred):
            if out and out[-1]["index"] == int(c):
                seg = out[-1]
                seg["end_s"] = float(spans[i, 1])
                seg["_p"].append(float(probs[i, c]))
            else:
                out.append({"class": self.class_names[c], "index": int(c),
                            "start_s": float(spans[i, 0]), "end_s": float(spans[i, 1]),
                            "_p": [float(probs[i, c])]})
        for seg in out:
            p = seg.pop("_p")
            seg["n_windows"], seg["mean_prob"] = len(p), float(np.mean(p))
        return out

    def csv_header(self) -> list[str]:
        """``start_s,end_s,predicted,`` then ``p_<class>`` for every class (the classifier),
        then ``theta_<class>`` (theta)."""
        return (["start_s", "end_s", "predicted"] + [f"p_{n}" for n in self.class_names]
                + [f"theta_{n}" for n in self.class_names])

    def csv_rows(self) -> Iterator[list[Any]]:
        for i in range(len(self)):
            pc, pt = self.classifier_probs[i], self.theta_probs[i]
            yield ([f"{self.start_s[i]:.3f}", f"{self.end_s[i]:.3f}",
                    self.class_names[int(np.argmax(pc))]]
                   + [f"{v:.6f}" for v in pc] + [f"{v:.6f}" for v in pt])

    def summary(self) -> dict[str, Any]:
        """JSON-ready: settings, segments, the share of windows each class dominates."""
        pred = self.predicted
        counts = {self.class_names[c]: int((pred == c).sum()) for c in np.unique(pred)}
        return {"duration_s": self.duration_s, "window_s": self.window_s, "hop_s": self.hop_s,
                "n_windows": len(self), "segments": self.segments(),
                "windows_per_class": counts}


@dataclass
class LongExplanation:
    """What :meth:`l2i.explain.Explainer.explain_long` returns: the per-window ``timeline``,
    the stitched explanation ``audio (N,)`` at ``sample_rate`` and the warnings (each with the
    number of windows it fired on)."""

    timeline: Timeline
    audio: np.ndarray
    sample_rate: int
    warnings: list[dict[str, Any]] = field(default_factory=list)


def count_warnings(per_window: list[list[dict[str, str]]], n: int) -> list[dict[str, Any]]:
    """Merge the windows' warnings: one per code, with the first message and a count."""
    merged: dict[str, dict[str, Any]] = {}
    for ws in per_window:
        for w in ws:
            m = merged.setdefault(w["code"], {**w, "windows": 0})
            m["windows"] += 1
    for m in merged.values():
        m["message"] = f"{m['windows']}/{n} windows: {m['message']}"
    return list(merged.values())


__all__ = ["OLA_FLOOR", "n_windows", "iter_windows", "taper", "OverlapAdd", "resampled_blocks",
           "array_blocks", "Timeline", "LongExplanation", "count_warnings"]
