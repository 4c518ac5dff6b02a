"""Sparse NMF dictionary learning on spectrogram frames, and the fixed decoder ``W @ H``.

Model (L2I_SPEC §4): frames ``V (F, N) >= 0`` (log1p magnitudes, one column per STFT frame) are
approximated by ``W H`` with a dictionary ``W (F, K) >= 0`` whose columns have unit L2 norm and
activations ``H (K, N) >= 0``, minimising::

    f(W, H) = ||V - W H||_F^2 + sparsity * sum(H)

Solvers (``NMFConfig.solver``):

- ``hals`` (default): exact block-coordinate descent (hierarchical alternating least squares).
  Each row of H and each column of W is updated in closed form; for a unit-norm column the
  minimiser is ``w_k = [R_k h_k^T]_+ / ||[R_k h_k^T]_+||`` (R_k: the residual without atom k), so
  the unit-norm constraint is exact and f never increases. ``inner_iter`` cheap sweeps are run
  on the K x K / K x N Gram quantities per pass over the data (Gillis & Glineur 2012). With
  ``extrapolate`` (default, full batch) each block update starts from an extrapolated point
  ``X_n + beta (X_n - X_{n-1})`` with an adaptive ``beta`` (Ang & Gillis 2019): 2-4x fewer
  passes for the same error; f may then tick up at a restart.
- ``mu``: multiplicative updates (Lee & Seung) with column renormalisation (f non-increasing when
  ``sparsity == 0``).

Full batch (``batch_frames=None``) keeps V and H on the device. Mini-batch / online mode
(``batch_frames=B``) streams frames B at a time and keeps only the sufficient statistics
``A = sum H H^T (K, K)`` and ``B = sum V H^T (F, K)`` (Mairal et al. 2010, as sklearn's
MiniBatchNMF), so memory is bounded whatever N.

``history`` holds ``f / ||V||_F^2`` per iteration (epoch in mini-batch mode): with no sparsity it
is the squared relative reconstruction error.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from l2i import checkpoints as CK
from l2i.config import FeaturesConfig, NMFConfig
from l2i.device import resolve_device
from l2i.errors import ConfigError, L2IError
from l2i.features import features_match
from l2i.fileio import save_torch

FORMAT = CK.NMF
VERSION = CK.CURRENT[FORMAT]
EPS = 1e-12
SOLVERS = ("hals", "mu")
NO_FLOAT64_DEVICES = ("mps",)  # devices without float64: exact sums fall back to float32 there
_CHUNK = 2048  # frames per block in the H sweeps (keeps a (K, chunk) block in cache)
_INIT_FRAMES = 20000  # frames used by the NNDSVD initialisation
_SMALL_FLOPS = 2.0**26  # below this, a matrix product runs faster on one thread


@dataclass
class NMFResult:
    """What :func:`fit_nmf` returns.

    ``W (F, K)`` float32 on the CPU, unit-L2 columns; ``H (K, N)`` float32 on the CPU in full-batch
    mode (None in mini-batch mode); ``history`` the objective ``f / ||V||^2`` per iteration;
    ``rel_error = ||V - W H||_F / ||V||_F`` on the training frames and ``objective`` ``f / ||V||^2``
    of the returned pair (H refitted with W fixed in mini-batch mode).
    """

    W: Tensor
    history: list[float] = field(default_factory=list)
    rel_error: float = float("nan")
    n_iter: int = 0
    seconds: float = 0.0
    H: Tensor | None = None
    objective: float = float("nan")


# --------------------------------------------------------------------------- small helpers
def _as_frames(frames: Tensor | np.ndarray) -> Tensor:
    """Frames ``(N, F)`` as a float32 CPU/device tensor (NumPy arrays and memmaps are wrapped)."""
    if isinstance(frames, np.ndarray):
        with warnings.catch_warnings():  # a read-only memmap is fine: frames are only read
            warnings.simplefilter("ignore", UserWarning)
            frames = torch.from_numpy(np.asarray(frames, dtype=np.float32))
    if frames.dim() != 2:
        raise ValueError(f"NMF frames must be (N, F), got shape {tuple(frames.shape)}")
    return frames.float()


def _check_frames(frames: Tensor) -> None:
    """Non-empty, finite, >= 0; checked block-wise (frames may be a memmap larger than RAM)."""
    if frames.shape[0] == 0:
        raise L2IError("NMF: no training frames (the training split is empty): check the data "
                       "folder and data.train_folds")
    for c0 in range(0, frames.shape[0], 65536):
        block = frames[c0:c0 + 65536]  # (b, F)
        if not bool(torch.isfinite(block).all()):
            raise L2IError("NMF: training frames contain NaN or infinite values: check the "
                           "audio")
        if float(block.min()) < 0:
            raise L2IError("NMF: training frames must be non-negative (log1p magnitudes)")


def _hals_h(H: Tensor, WtV: Tensor, WtW: Tensor, sparsity: float, n_sweeps: int) -> Tensor:
    """HALS sweeps on ``H (K, N)`` in place for fixed W, given ``WtV (K, N)`` and ``WtW (K, K)``.

    Row update: ``h_k <- max(0, h_k + (WtV_k - sparsity/2 - WtW_k H) / WtW_kk)``, which is the
    exact minimiser of f over row k. Frames are processed in cache-sized blocks.
    """
    K, N = H.shape
    diag = WtW.diagonal()
    inv = torch.where(diag > EPS, 1.0 / diag.clamp_min(EPS), torch.zeros_like(diag))  # (K,)
    inv_l = inv.tolist()
    rows = [WtW[k] for k in range(K)]  # (K,) each
    with _sweep_threads(H.device):
        _hals_h_sweeps(H, WtV, rows, inv_l, sparsity, n_sweeps)
    return H


def _hals_h_sweeps(H: Tensor, WtV: Tensor, rows: list[Tensor], inv_l: list[float],
                   sparsity: float, n_sweeps: int) -> None:
    K, N = H.shape
    chunk = _CHUNK if H.device.type == "cpu" else max(N, 1)  # GPU: fewer, larger kernels
    for _ in range(n_sweeps):
        for c0 in range(0, N, chunk):
            Hc = H[:, c0:c0 + chunk]  # (K, n) view
            Rc = WtV[:, c0:c0 + chunk]  # (K, n)
            if sparsity:
                Rc = Rc - sparsity / 2
            HcT = Hc.T  # (n, K) view
            for k in range(K):
                if inv_l[k] == 0.0:
                    Hc[k].zero_()
                    continue
                g = torch.addmv(Rc[k], HcT, rows[k], alpha=-1.0)  # (n,)
                Hc[k].add_(g, alpha=inv_l[k]).clamp_(min=0.0)


def _hals_w(W: Tensor, VHt: Tensor, HHt: Tensor, n_sweeps: int,
            reseed: Tensor | None = None) -> Tensor:
    """HALS sweeps on unit-norm columns of ``W (F, K)`` in place; ``VHt (F, K)``, ``HHt (K, K)``.

    ``a = VHt_k - W HHt_k + w_k HHt_kk`` (= R_k h_k^T); ``w_k <- [a]_+ / ||[a]_+||``. An unused atom
    (``HHt_kk == 0``) does not affect f and is replaced by the matching column of ``reseed (F, K)``
    (random data frames), so it can be used again.
    """
    with _sweep_threads(W.device):
        _hals_w_sweeps(W, VHt, HHt, n_sweeps, reseed)
    return W


def _hals_w_sweeps(W: Tensor, VHt: Tensor, HHt: Tensor, n_sweeps: int,
                   reseed: Tensor | None) -> None:
    K = W.shape[1]
    diag = HHt.diagonal().tolist()
    for sweep in range(n_sweeps):
        for k in range(K):
            if diag[k] <= EPS:
                if reseed is not None and sweep == 0:
                    W[:, k] = reseed[:, k] / reseed[:, k].norm().clamp_min(EPS)
                continue
            a = torch.addmv(VHt[:, k], W, HHt[:, k], alpha=-1.0)  # (F,)
            a.add_(W[:, k], alpha=diag[k]).clamp_(min=0.0)
            n = float(a.norm())
            if n > EPS:
                W[:, k] = a / n
            else:  # no positive direction: the best unit vector is one coordinate
                best = torch.argmax(torch.addmv(VHt[:, k], W, HHt[:, k], alpha=-1.0)
                                    + W[:, k] * diag[k])
                W[:, k] = 0.0
                W[best, k] = 1.0


def _exact(t: Tensor) -> torch.dtype:
    """The dtype of sums that should be exact: float64, float32 on MPS (it has no float64)."""
    return torch.float32 if t.device.type in NO_FLOAT64_DEVICES else torch.float64


def _objective(v_sq: float, WtV: Tensor, H: Tensor, WtW: Tensor, HHt: Tensor,
               sparsity: float) -> float:
    """``||V - W H||^2 + sparsity * sum(H)`` from Gram quantities: ``v_sq = ||V||^2``,
    ``WtV (K, N)``, ``H (K, N)``, ``WtW (K, K)``, ``HHt (K, K)``; O(K N), no pass over V."""
    acc = _exact(H)
    cross = float(torch.linalg.vecdot(WtV, H).sum(dtype=acc))
    quad = float((WtW.to(acc) * HHt.to(acc)).sum())
    l1 = float(H.sum(dtype=acc)) if sparsity else 0.0
    return max(v_sq - 2.0 * cross + quad, 0.0) + sparsity * l1


_user_threads = 0  # the caller's torch thread count while a fit runs on one thread


@contextlib.contextmanager
def _sweep_threads(device: torch.device):
    """Run small ops (the HALS sweeps, W-side updates, a whole small problem) on one CPU thread.

    With several threads, each tiny op pays a synchronisation that dominates (100x slower when
    the cores are shared). Matrix products of more than ``_SMALL_FLOPS`` go through :func:`_mm`,
    which gives them the caller's threads back.
    """
    global _user_threads
    n = torch.get_num_threads()
    if device.type != "cpu" or n == 1:
        yield
        return
    outer = _user_threads
    _user_threads = n
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
        _user_threads = outer


def _mm(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b``; a large product on the CPU gets the caller's threads (see _sweep_threads)."""
    if (_user_threads > 1 and a.device.type == "cpu"
            and a.shape[0] * a.shape[1] * b.shape[1] > _SMALL_FLOPS):
        torch.set_num_threads(_user_threads)
        try:
            return a @ b
        finally:
            torch.set_num_threads(1)
    return a @ b


def _converged(history: list[float], tol: float, window: int = 5) -> bool:
    """True when the best objective fell by less than ``tol`` (relative) per iteration, on
    average over the last ``window`` iterations (robust to the restarts of extrapolation)."""
    if len(history) <= window:
        return False
    before = min(history[:-window])
    return before - min(history) < window * tol * before


def _normalize_columns(W: Tensor) -> Tensor:
    return W / W.norm(dim=0, keepdim=True).clamp_min(EPS)


def _nndsvd_w(frames: Tensor, K: int, gen: torch.Generator, device: torch.device) -> Tensor:
    """NNDSVD-style dictionary ``(F, K)`` from the leading singular vectors of a frame subsample.

    The Gram ``V V^T (F, F)`` of at most ``_INIT_FRAMES`` random frames gives the left singular
    vectors; for each, the positive or negative part (whichever carries more energy, with the
    right singular vector) becomes an atom. Missing atoms (K > rank) are random frames; every
    atom gets a little positive noise so that multiplicative updates can use every bin.
    """
    N, F = frames.shape
    idx = torch.randperm(N, generator=gen)[:_INIT_FRAMES].sort().values
    Vs = frames[idx].to(device)  # (n, F)
    G = _mm(Vs.T.to(_exact(Vs)), Vs.to(_exact(Vs)))  # (F, F)
    with _sweep_threads(G.device):  # LAPACK on a small matrix: threads only add waiting
        evals, U = torch.linalg.eigh(G)  # ascending
    r = min(K, F)
    U = U[:, -r:].flip(1).to(Vs.dtype)  # (F, r) leading first
    S = evals[-r:].flip(0).clamp_min(0).sqrt()  # (r,)
    P = _mm(Vs, U)  # (n, r) = s * v
    Wn = torch.empty(F, K, device=device)
    for k in range(r):
        u, p = U[:, k], P[:, k]
        up, un = u.clamp(min=0), (-u).clamp(min=0)
        pp, pn = p.clamp(min=0), (-p).clamp(min=0)
        mp, mn = float(up.norm() * pp.norm()), float(un.norm() * pn.norm())
        Wn[:, k] = up if mp >= mn else un
        if S[k] <= EPS or float(Wn[:, k].norm()) <= EPS:
            Wn[:, k] = Vs[int(torch.randint(len(Vs), (1,), generator=gen))]
    if K > r:
        pick = torch.randint(len(Vs), (K - r,), generator=gen)
        Wn[:, r:] = Vs[pick.to(device)].T
    Wn = _normalize_columns(Wn)
    noise = torch.rand(F, K, generator=gen).to(device)
    Wn = Wn + 0.01 * noise / math.sqrt(F)
    return _normalize_columns(Wn)


def _random_frames(frames: Tensor, K: int, gen: torch.Generator, device: torch.device) -> Tensor:
    """``K`` random frames as columns ``(F, K)`` (used to re-seed dead atoms)."""
    pick = torch.randint(frames.shape[0], (K,), generator=gen)
    return frames[pick].to(device).T.contiguous() + 1e-3


# --------------------------------------------------------------------------- public API
def fit_nmf(frames: Tensor | np.ndarray, cfg: NMFConfig, device: str | torch.device | None = None,
            progress: bool = True) -> NMFResult:
    """Learn ``W (F, K)`` from ``frames (N, F) >= 0`` (e.g. log1p magnitudes).

    ``cfg``: ``n_components`` K, ``sparsity`` (L1 weight on H), ``n_iter`` (passes / epochs),
    ``tol`` (stop when f fell by less than this fraction per iteration over the last 5), ``solver``,
    ``inner_iter`` (HALS sweeps per pass), ``batch_frames`` (None: full batch), ``seed``.
    ``device`` overrides ``cfg.device``. Deterministic for a seed on a given device.
    """
    if cfg.n_components < 1:
        raise ConfigError(f"nmf.n_components must be >= 1, got {cfg.n_components}")
    if cfg.sparsity < 0:
        raise ConfigError(f"nmf.sparsity must be >= 0, got {cfg.sparsity}")
    if cfg.batch_frames is not None and cfg.batch_frames < 1:
        raise ConfigError(f"nmf.batch_frames must be >= 1 or null, got {cfg.batch_frames}")
    frames = _as_frames(frames)
    _check_frames(frames)
    dev = resolve_device(device if device is not None else cfg.device)
    gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.perf_counter()
    full = cfg.batch_frames is None or cfg.batch_frames >= frames.shape[0]
    with _sweep_threads(dev):
        W = _nndsvd_w(frames, cfg.n_components, gen, dev)
        if full and cfg.solver == "hals" and cfg.extrapolate:
            res = _fit_full_extrapolated(frames, W, cfg, dev, gen, progress)
        elif full:
            res = _fit_full(frames, W, cfg, dev, gen, progress)
        else:
            res = _fit_minibatch(frames, W, cfg, dev, gen, progress)
    res.seconds = time.perf_counter() - t0
    return res


def _fit_full(frames: Tensor, W: Tensor, cfg: NMFConfig, dev: torch.device,
              gen: torch.Generator, progress: bool) -> NMFResult:
    from tqdm.auto import tqdm

    V = frames.to(dev).T.contiguous()  # (F, N)
    v_sq = float(V.square().sum(dtype=_exact(V)))
    K, N = cfg.n_components, V.shape[1]
    lam = float(cfg.sparsity)
    inner = max(1, cfg.inner_iter)
    H = torch.zeros(K, N, device=dev)
    if cfg.solver == "mu":  # MU cannot leave zeros: start from a scaled positive projection
        H = _mm(W.T, V).clamp_min(0)  # (K, N)
        WH = W @ H
        H *= float((V * WH).sum() / WH.square().sum().clamp_min(EPS))
        H += 1e-4 * float(H.mean())
        del WH
    history: list[float] = []
    bar = tqdm(range(cfg.n_iter), desc="NMF", disable=not progress, leave=False)
    it = 0
    for it in bar:
        WtW = W.T @ W  # (K, K)
        WtV = _mm(W.T, V)  # (K, N)
        if cfg.solver == "hals":
            _hals_h(H, WtV, WtW, lam, inner if it else inner + 2)
        else:
            H.mul_(WtV / (WtW @ H + lam / 2).clamp_min(EPS))
        HHt = _mm(H, H.T)  # (K, K)
        history.append(_objective(v_sq, WtV, H, WtW, HHt, lam) / v_sq)
        del WtV
        VHt = _mm(V, H.T)  # (F, K)
        if cfg.solver == "hals":
            reseed = _random_frames(frames, K, gen, dev) if bool(
                (HHt.diagonal() <= EPS).any()) else None
            _hals_w(W, VHt, HHt, inner, reseed)
        else:
            W.mul_(VHt / (W @ HHt).clamp_min(EPS))
            norms = W.norm(dim=0).clamp_min(EPS)  # (K,)
            W.div_(norms)
            H.mul_(norms[:, None])
        bar.set_postfix(objective=f"{history[-1]:.5f}")
        if _converged(history, cfg.tol):
            break
    bar.close()
    rel, obj = _rel_error(V, W, H, lam)
    return NMFResult(W=W.float().cpu().contiguous(), history=history, rel_error=rel,
                     n_iter=it + 1, H=H.float().cpu(), objective=obj)


def _fit_full_extrapolated(frames: Tensor, W: Tensor, cfg: NMFConfig, dev: torch.device,
                           gen: torch.Generator, progress: bool) -> NMFResult:
    """Full-batch HALS with extrapolation (Ang & Gillis 2019, E-A-HALS).

    After each block update the next one starts from ``Y = X_n + beta (X_n - X_{n-1})``
    (projected: >= 0, unit atoms). ``beta`` grows while f decreases and shrinks (with a restart
    from the plain iterate) when it increases, so f is non-increasing except at a restart.
    ``history[n] = f(Wy_{n-1}, H_n) / ||V||^2``, a feasible pair. 2-4x fewer passes than HALS.

    Long: one iteration couples eight iterates (W, H, their previous values, the extrapolated
    points, beta and its bound); split up, they would all be passed back and forth.
    """
    from tqdm.auto import tqdm

    V = frames.to(dev).T.contiguous()  # (F, N)
    v_sq = float(V.square().sum(dtype=_exact(V)))
    K, N = cfg.n_components, V.shape[1]
    lam = float(cfg.sparsity)
    inner = max(1, cfg.inner_iter)
    beta, beta_max = 0.5, 1.0
    grow, grow_max, shrink = 1.05, 1.01, 1.5
    Hy = torch.zeros(K, N, device=dev)  # the point the next H update starts from
    H_prev: Tensor | None = None
    Wy, W_prev = W, W.clone()
    history: list[float] = []
    best = float("inf")
    bar = tqdm(range(cfg.n_iter), desc="NMF", disable=not progress, leave=False)
    for it in bar:
        WtW = Wy.T @ Wy  # (K, K)
        WtV = _mm(Wy.T, V)  # (K, N)
        H = _hals_h(Hy, WtV, WtW, lam, inner if it else inner + 2)  # in place: Hy is consumed
        HHt = _mm(H, H.T)  # (K, K)
        f = _objective(v_sq, WtV, H, WtW, HHt, lam) / v_sq
        del WtV
        history.append(f)
        restart = f > best
        if restart:  # the extrapolated W hurt: go back to the plain iterate, damp beta
            beta_max, beta = beta, beta / shrink
            Wy = W_prev.clone()
        else:
            beta, beta_max = min(beta_max, grow * beta), min(1.0, grow_max * beta_max)
        if H_prev is None or restart:
            Hy_w = H
        else:
            Hy_w = (H + beta * (H - H_prev)).clamp_(min=0)  # (K, N)
            HHt = _mm(Hy_w, Hy_w.T)  # (K, K)
        H_prev = H.clone()
        VHt = _mm(V, Hy_w.T)  # (F, K)
        reseed = _random_frames(frames, K, gen, dev) if bool(
            (HHt.diagonal() <= EPS).any()) else None
        Wn = _hals_w(Wy.clone(), VHt, HHt, inner, reseed)
        Wy = _normalize_columns((Wn + beta * (Wn - W_prev)).clamp_(min=0)) if not restart else Wn
        W_prev = Wn
        Hy = Hy_w if Hy_w is not H else H
        bar.set_postfix(objective=f"{f:.5f}", beta=f"{beta:.2f}")
        best = min(best, f)
        if _converged(history, cfg.tol):
            break
    bar.close()
    W = W_prev
    H = H_prev if H_prev is not None else Hy
    _hals_h(H, _mm(W.T, V), W.T @ W, lam, inner + 1)  # H for the final (plain) W
    rel, obj = _rel_error(V, W, H, lam)
    return NMFResult(W=W.float().cpu().contiguous(), history=history, rel_error=rel,
                     n_iter=len(history), H=H.float().cpu(), objective=obj)


def _fit_minibatch(frames: Tensor, W: Tensor, cfg: NMFConfig, dev: torch.device,
                   gen: torch.Generator, progress: bool) -> NMFResult:
    from tqdm.auto import tqdm

    N, F = frames.shape
    K, bsz, lam = cfg.n_components, int(cfg.batch_frames), float(cfg.sparsity)
    inner = max(1, cfg.inner_iter)
    rho = cfg.forget_factor ** (bsz / N)  # weight of the past per batch
    A = torch.zeros(K, K, device=dev)  # sum H H^T
    B = torch.zeros(F, K, device=dev)  # sum V H^T
    history: list[float] = []
    bar = tqdm(range(cfg.n_iter), desc="NMF (mini-batch)", disable=not progress, leave=False)
    for _ in bar:
        perm = torch.randperm(N, generator=gen)
        f_sum, v_sum = 0.0, 0.0
        for b0 in range(0, N, bsz):
            idx = perm[b0:b0 + bsz].sort().values
            Vb = frames[idx].to(dev).T.contiguous()  # (F, b)
            vb_sq = float(Vb.to(_exact(Vb)).square().sum())
            WtW = W.T @ W  # (K, K)
            WtV = _mm(W.T, Vb)  # (K, b)
            Hb = torch.zeros(K, Vb.shape[1], device=dev)
            _hals_h(Hb, WtV, WtW, lam, 4 * inner)
            HHt = _mm(Hb, Hb.T)  # (K, K)
            f_sum += _objective(vb_sq, WtV, Hb, WtW, HHt, lam)
            v_sum += vb_sq
            A.mul_(rho).add_(HHt)
            B.mul_(rho).add_(_mm(Vb, Hb.T))
            reseed = _random_frames(frames, K, gen, dev) if bool(
                (A.diagonal() <= EPS).any()) else None
            if cfg.solver == "hals":
                _hals_w(W, B, A, inner, reseed)
            else:
                W.mul_(B / (W @ A).clamp_min(EPS))
                W.copy_(_normalize_columns(W))
        history.append(f_sum / max(v_sum, EPS))
        bar.set_postfix(objective=f"{history[-1]:.5f}")
        if _converged(history, cfg.tol, window=2):
            break
    bar.close()
    W = W.float().cpu().contiguous()
    rel, obj = relative_error(frames, W, lam, n_iter=30, device=dev, objective=True)
    return NMFResult(W=W, history=history, rel_error=rel, n_iter=len(history), H=None,
                     objective=obj)


def _rel_error(V: Tensor, W: Tensor, H: Tensor, sparsity: float = 0.0) -> tuple[float, float]:
    """``(||V - W H||_F / ||V||_F, f / ||V||_F^2)`` for ``V (F, N)``, block-wise, float64 sums."""
    num, den = 0.0, 0.0
    for c0 in range(0, V.shape[1], 4 * _CHUNK):
        Vc = V[:, c0:c0 + 4 * _CHUNK]  # (F, n)
        R = Vc - _mm(W, H[:, c0:c0 + 4 * _CHUNK])  # (F, n)
        num += float(R.square().sum(dtype=_exact(R)))
        den += float(Vc.square().sum(dtype=_exact(Vc)))
    l1 = float(H.sum(dtype=_exact(H))) if sparsity else 0.0
    return math.sqrt(num / max(den, EPS)), (num + sparsity * l1) / max(den, EPS)


def nmf_transform(frames: Tensor | np.ndarray, W: Tensor, sparsity: float = 0.0,
                  n_iter: int = 100, device: str | torch.device | None = None,
                  tol: float = 1e-4) -> Tensor:
    """Activations ``H (K, N) >= 0`` of ``frames (N, F)`` for a fixed dictionary ``W (F, K)``.

    Minimises ``||V - W H||^2 + sparsity * sum(H)`` over H by HALS sweeps (at most ``n_iter``,
    stopping when the largest change of H in a sweep is below ``tol`` times its largest value).
    W need not have unit columns (imported dictionaries). Returns float32 on ``device`` (default:
    W's device).
    """
    frames = _as_frames(frames)
    if W.dim() != 2 or W.shape[0] != frames.shape[1]:
        raise ValueError(f"W {tuple(W.shape)} does not match frames {tuple(frames.shape)}: "
                         "W must be (F, K) with F = frames.shape[1]")
    dev = torch.device(device) if device is not None and str(device) != "auto" else W.device
    with _sweep_threads(dev):
        return _transform(frames, W, float(sparsity), n_iter, dev, tol)


def _transform(frames: Tensor, W: Tensor, sparsity: float, n_iter: int, dev: torch.device,
               tol: float) -> Tensor:
    Wd = W.to(dev).float()
    WtW = Wd.T @ Wd  # (K, K)
    out = torch.empty(W.shape[1], frames.shape[0], device=dev)
    step = 4 * _CHUNK
    for c0 in range(0, frames.shape[0], step):
        V = frames[c0:c0 + step].to(dev).T  # (F, n)
        WtV = _mm(Wd.T, V)  # (K, n)
        H = torch.zeros(W.shape[1], V.shape[1], device=dev)
        for _ in range(max(1, n_iter)):
            prev = H.clone()
            _hals_h(H, WtV, WtW, float(sparsity), 1)
            if float((H - prev).abs().max()) <= tol * max(float(H.max()), EPS):
                break
        out[:, c0:c0 + step] = H
    return out


def relative_error(frames: Tensor | np.ndarray, W: Tensor, sparsity: float = 0.0,
                   n_iter: int = 100, device: str | torch.device | None = None,
                   objective: bool = False) -> float | tuple[float, float]:
    """``||V - W H||_F / ||V||_F`` of ``frames (N, F)`` with H from :func:`nmf_transform`.

    Streams the frames in blocks (memory bounded). With ``objective=True`` also returns
    ``(||V - W H||^2 + sparsity * sum(H)) / ||V||^2`` (the ``history`` scale of fit_nmf).
    """
    frames = _as_frames(frames)
    dev = torch.device(device) if device is not None and str(device) != "auto" else W.device
    with _sweep_threads(dev):
        return _relative_error(frames, W, sparsity, n_iter, dev, objective)


def _relative_error(frames: Tensor, W: Tensor, sparsity: float, n_iter: int, dev: torch.device,
                    objective: bool) -> float | tuple[float, float]:
    Wd = W.to(dev).float()
    num = den = l1 = 0.0
    step = 4 * _CHUNK
    for c0 in range(0, frames.shape[0], step):
        Vb = frames[c0:c0 + step].to(dev)  # (b, F)
        Hb = nmf_transform(Vb, Wd, sparsity, n_iter=n_iter, device=dev)  # (K, b)
        R = Vb.T - _mm(Wd, Hb)  # (F, b)
        num += float(R.square().sum(dtype=_exact(R)))
        den += float(Vb.square().sum(dtype=_exact(Vb)))
        l1 += float(Hb.sum(dtype=_exact(Hb)))
    rel = math.sqrt(num / max(den, EPS))
    if objective:
        return rel, (num + sparsity * l1) / max(den, EPS)
    return rel


def reconstruct(W: Tensor, H: Tensor) -> Tensor:
    """The fixed decoder: ``W (F, K)``, ``H (B, K, T)`` -> ``(W H)^T (B, T, F)``, differentiable."""
    if H.dim() != 3 or W.dim() != 2 or H.shape[1] != W.shape[1]:
        raise ValueError(f"reconstruct expects W (F, K) and H (B, K, T), got {tuple(W.shape)} "
                         f"and {tuple(H.shape)}")
    return torch.matmul(W.to(H.dtype), H).transpose(1, 2)  # (B, F, T) -> (B, T, F)


# --------------------------------------------------------------------------- files
def save_dictionary(path: str | os.PathLike, W: Tensor, features: FeaturesConfig | dict,
                    stats: dict[str, Any] | None = None) -> Path:
    """Write ``nmf.pt`` atomically: ``{"format": "l2i-nmf", "version": 2, "l2i_version",
    "W" (F, K) float32, "features": asdict(FeaturesConfig), "stats": {...}}`` (loadable with
    ``weights_only=True``)."""
    path = Path(path)
    feats = asdict(features) if is_dataclass(features) else dict(features)
    if W.dim() != 2:
        raise ValueError(f"W must be (F, K), got shape {tuple(W.shape)}")
    from l2i import __version__

    payload = {"format": FORMAT, "version": VERSION, "l2i_version": __version__,
               "W": W.detach().float().cpu().contiguous(), "features": feats,
               "stats": dict(stats or {})}
    return save_torch(path, payload)


def load_dictionary(path: str | os.PathLike, features: FeaturesConfig | dict | None = None, *,
                    sample_rate: int | None = None, n_fft: int | None = None,
                    option: str = "init") -> tuple[Tensor, dict | None]:
    """Load a dictionary: ``(W (F, K) float32 >= 0, features dict or None)``.

    Accepts our ``nmf.pt``, a NumPy ``.npy`` of shape ``(freq, K)``, a SpeechBrain
    ``NMFDecoderAudio`` state dict (``{"W": (513, 100)}``, ReLU applied as the decoder does) or a
    raw tensor saved with ``torch.save``. With ``features``, a dictionary learnt with other STFT
    settings, or with another number of frequency bins, raises L2IError.

    Only ``nmf.pt`` records its STFT settings. For the other formats ``sample_rate`` (Hz) and
    ``n_fft`` state what the dictionary was learnt with (the user's word, recipe keys
    ``{option}_sample_rate`` / ``{option}_n_fft``, named in the messages); with ``features`` a
    stated mismatch raises L2IError, and no statement gives a loud warning: the same bin count
    at another sample rate (a 44.1 kHz dictionary, 513 bins over 0-22 kHz, for 16 kHz features)
    cannot be detected from the array (L2I_SPEC §8.4). A statement that contradicts an nmf.pt's
    own record raises too.
    """
    path = Path(path)
    if not path.is_file():
        raise L2IError(f"NMF dictionary {path} not found: give the nmf.pt written by "
                       "`l2i train-nmf`, a .npy of shape (freq, K) or a SpeechBrain "
                       "nmf_decoder.ckpt")
    found: dict | None = None
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as err:
            raise L2IError(f"cannot read NMF dictionary {path} as a NumPy array ({err})"
                           ) from None
        W = torch.from_numpy(np.asarray(arr, dtype=np.float32))
        kind = "NumPy array"
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise L2IError(f"cannot read NMF dictionary {path} ({type(err).__name__}: {err}): "
                           "expected an nmf.pt from `l2i train-nmf`, a SpeechBrain state dict "
                           "{'W': tensor} or a .npy file") from None
        W, found, kind = _dictionary_from_object(obj, path)
    if W.dim() != 2 or min(W.shape) == 0:
        raise L2IError(f"NMF dictionary {path} ({kind}) has shape {tuple(W.shape)}: expected a "
                       "2-D (freq, K) matrix")
    W = W.float()
    if not bool(torch.isfinite(W).all()):
        raise L2IError(f"NMF dictionary {path} contains NaN or infinite values: retrain it")
    if found is None:
        if bool((W < 0).any()):
            warnings.warn(f"NMF dictionary {path} has negative entries: applying ReLU, as "
                          "SpeechBrain's NMFDecoderAudio does", stacklevel=2)
        W = W.clamp(min=0)
    if features is not None:
        _check_compatible(path, W, found, features)
        check_stated_features(path, W, found, features, sample_rate, n_fft, option)
    return W.contiguous(), found


def _dictionary_from_object(obj: Any, path: Path) -> tuple[Tensor, dict | None, str]:
    if isinstance(obj, Tensor):
        return obj, None, "raw tensor"
    if isinstance(obj, dict):
        if obj.get("format") == FORMAT:
            obj = CK.migrate(obj, FORMAT, f"NMF dictionary {path}")
            if (obj.get("stats") or {}).get("features_source") == "assumed":
                warnings.warn(f"NMF dictionary {path} was imported from a file without STFT "
                              "settings, which were ASSUMED (not stated) to be its features "
                              f"{obj.get('features')}: if it was learnt at another sample rate "
                              "its atoms are at the wrong frequencies; import it again with "
                              "--init_sample_rate and --init_n_fft", stacklevel=3)
            return torch.as_tensor(obj["W"]), dict(obj.get("features") or {}) or None, "l2i nmf.pt"
        if isinstance(obj.get("W"), Tensor):
            return obj["W"], None, "SpeechBrain state dict"
        cands = [v for k, v in obj.items() if isinstance(v, Tensor) and str(k).endswith(".W")]
        if len(cands) == 1:
            return cands[0], None, "SpeechBrain state dict"
        if "format" in obj:
            raise L2IError(f"{path} is a {obj['format']!r} file, not an NMF dictionary: give the "
                           "nmf.pt written by `l2i train-nmf`")
    raise L2IError(f"{path} holds no NMF dictionary: expected an nmf.pt from `l2i train-nmf`, a "
                   "SpeechBrain state dict {'W': (freq, K)}, a raw (freq, K) tensor or a .npy")


def _check_compatible(path: Path, W: Tensor, found: dict | None,
                      features: FeaturesConfig | dict) -> None:
    feats = asdict(features) if is_dataclass(features) else dict(features)
    want = FeaturesConfig(**{k: v for k, v in feats.items()
                             if k in FeaturesConfig.__dataclass_fields__})
    if found is not None:
        diffs = features_match(found, want)
        if diffs:
            raise L2IError(
                f"NMF dictionary {path} was learnt with other STFT settings than the ones in use "
                f"(dictionary vs expected: {'; '.join(diffs)}): retrain it with the same "
                f"features, e.g. `l2i train-nmf RECIPE --features.sample_rate {want.sample_rate}"
                f" --features.n_fft {want.n_fft}`, or use a classifier trained with the "
                "dictionary's features")
    if W.shape[0] != want.n_freq:
        hint = (" (it looks transposed: save it as (freq, K))"
                if W.shape[1] == want.n_freq else "")
        raise L2IError(
            f"NMF dictionary {path} has {W.shape[0]} frequency bins but features.n_fft="
            f"{want.n_fft} gives {want.n_freq}{hint}: retrain the dictionary with "
            f"`l2i train-nmf RECIPE --features.n_fft {want.n_fft} --features.sample_rate "
            f"{want.sample_rate}` or set features.n_fft to {2 * (W.shape[0] - 1)}")


def dictionary_features_source(found: dict | None, sample_rate: int | None = None,
                               n_fft: int | None = None) -> str:
    """How a dictionary's STFT settings are known: ``"file"`` (an nmf.pt records them),
    ``"stated"`` (the user's ``sample_rate`` / ``n_fft``) or ``"assumed"`` (neither)."""
    if found is not None:
        return "file"
    return "assumed" if sample_rate is None and n_fft is None else "stated"


def check_stated_features(path: str | os.PathLike, W: Tensor, found: dict | None,
                          features: FeaturesConfig | dict, sample_rate: int | None = None,
                          n_fft: int | None = None, option: str = "init") -> str:
    """Check the user's statement of a dictionary's STFT settings against the features in use.

    Args:
        path: the dictionary file (for messages).
        W: ``(F, K)`` the dictionary.
        found: the settings the file records (``nmf.pt``) or None (``.npy``, SpeechBrain, raw).
        features: the STFT settings in use.
        sample_rate, n_fft: the statement (None = not stated); ``option`` the recipe-key prefix.
    Returns:
        where the dictionary's features come from: ``"file"``, ``"stated"`` or ``"assumed"``
        (no statement: a loud warning).
    Raises:
        L2IError: a stated value differs from the features in use, from the file's record, or
        (``n_fft``) from W's number of bins.
    """
    feats = asdict(features) if is_dataclass(features) else dict(features)
    want = {"sample_rate": int(feats["sample_rate"]), "n_fft": int(feats["n_fft"])}
    stated = {k: int(v) for k, v in (("sample_rate", sample_rate), ("n_fft", n_fft))
              if v is not None}
    keys = f"--{option}_sample_rate / --{option}_n_fft"
    if found is not None:
        clash = [f"{k}: {v} stated vs {found.get(k)} recorded" for k, v in stated.items()
                 if found.get(k) is not None and int(found[k]) != v]
        if clash:
            raise L2IError(f"NMF dictionary {path} records its own STFT settings, which differ "
                           f"from the ones stated with {keys} ({'; '.join(clash)}): drop the "
                           "statement (an nmf.pt describes itself) or give the right file")
        return dictionary_features_source(found)
    if "n_fft" in stated and stated["n_fft"] // 2 + 1 != W.shape[0]:
        raise L2IError(f"NMF dictionary {path} has {W.shape[0]} frequency bins but the stated "
                       f"n_fft {stated['n_fft']} ({keys}) gives {stated['n_fft'] // 2 + 1}: "
                       f"state the n_fft it was learnt with ({2 * (W.shape[0] - 1)} for "
                       f"{W.shape[0]} bins)")
    if not stated:
        warnings.warn(
            f"WARNING: NMF dictionary {path} carries no STFT settings; ASSUMING it was learnt with "
            f"the features in use (sample_rate {want['sample_rate']} Hz, n_fft {want['n_fft']}: "
            f"{W.shape[0]} bins over 0-{want['sample_rate'] / 2:g} Hz). A dictionary learnt at "
            "another sample rate has the same bin count for the same n_fft (SpeechBrain's "
            "PIQ-ESC50 nmf_decoder.ckpt was learnt at 44.1 kHz) and would be used at the wrong "
            f"frequencies (L2I_SPEC 8.4). State its features with {keys}.", stacklevel=3)
    diffs = [f"{k} {v} vs {want[k]}" for k, v in stated.items() if v != want[k]]
    if diffs:
        sr = stated.get("sample_rate", want["sample_rate"])
        nf = stated.get("n_fft", want["n_fft"])
        raise L2IError(
            f"NMF dictionary {path} was learnt with other STFT settings than the ones in use "
            f"(stated with {keys} vs features: {'; '.join(diffs)}): its {W.shape[0]} bins span "
            f"0-{sr / 2:g} Hz, not 0-{want['sample_rate'] / 2:g} Hz. Learn a dictionary on "
            "these features (`l2i train-nmf RECIPE` without --init), or use the dictionary's "
            f"features throughout (--features.sample_rate {sr} --features.n_fft {nf}, and a "
            "classifier trained with them)")
    return dictionary_features_source(None, sample_rate, n_fft)
