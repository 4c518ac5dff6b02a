"""psi: a frozen classifier's hidden maps -> NMF time activations ``H (B, K, T) >= 0``, any T.

One design for every classifier that exposes named maps ``(B, C_i, T_i, F_i)``. Maps of other
layouts -- ``(B, C, T')`` (1-D convs), ``(B, T', D)`` (transformer tokens), ``(B, C, F', T')`` --
are brought to that one by :func:`canonical_map`, with the time axis that
:func:`find_time_axis` found by probing the model with two clip lengths (the axis whose size
scales with the input):

1. :meth:`Psi.reduce` removes each map's frequency axis without parameters, so its output
   can be cached once per clip: ``freq_reduce: flatten`` folds the ``F_i`` bins into the
   channels, ``(B, C_i * F_i, T_i)`` (keeps *where* in frequency the classifier saw energy,
   which the reconstruction W H needs); ``meanmax`` pools with mean and max, ``(B, 2 C_i, T_i)``.
2. per map, a 1x1 ``Conv1d`` projects to ``hidden`` channels, and linear interpolation along time
   brings it to ``T`` frames (any number of STFT frames); the maps are summed. With
   ``input_map``, the input's own ``log1p|X| (B, T, F)`` is one more map (its ``F`` bins as
   channels, already at ``T`` frames): psi then sees the frequency detail the classifier's
   pooled maps lost, for a reconstruction ``W H`` closer to the dictionary's own.
3. ``n_layers`` residual blocks ``Conv1d(k) -> LayerNorm(channels) -> ReLU (-> dropout)``.
4. a 1x1 ``Conv1d(hidden, K)`` and a ReLU (or softplus) give ``H >= 0``.

With ``time_resolution: maps`` steps 2-4 run at the finest map's frame rate and only the K
output channels are interpolated to T (before the ReLU): several times cheaper, smoother H.

Which maps are read and the width are configuration (:class:`l2i.config.PsiConfig`), not code.
Imports only torch and :mod:`l2i.config`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from l2i.config import PsiConfig


def reduce_maps(maps: Mapping[str, Tensor], names: list[str] | None = None,
                mode: str = "meanmax") -> dict[str, Tensor]:
    """Remove the frequency axis of each map, ``(B, C, T_i, F_i)`` -> ``(B, C', T_i)``.

    ``mode="meanmax"``: mean and max over frequency, ``C' = 2C``; ``mode="flatten"``: the bins
    become channels, ``C' = C * F_i``. A 3-D map ``(B, C, T_i)`` is treated as ``F_i = 1``.
    ``names`` restricts (and orders) the maps kept; ``None`` keeps all.
    """
    out: dict[str, Tensor] = {}
    for name in names if names is not None else list(maps):
        m = maps[name]
        if m.dim() == 3:
            m = m.unsqueeze(-1)  # (B, C, T_i, 1)
        if m.dim() != 4:
            raise ValueError(f"map {name!r}: expected (B, C, T, F), got shape {tuple(m.shape)}")
        m = m.float()
        if mode == "flatten":
            b, c, t, f = m.shape
            out[name] = m.permute(0, 1, 3, 2).reshape(b, c * f, t)  # (B, C*F_i, T_i)
        else:
            out[name] = torch.cat([m.mean(dim=-1), m.amax(dim=-1)], dim=1)  # (B, 2C, T_i)
    return out


def _key(name: str) -> str:
    """A map name as a ModuleDict key (``encoder.block3`` -> ``encoder__block3``)."""
    return name.replace(".", "__")


class _ChannelNorm(nn.Module):
    """LayerNorm over channels at each frame of ``(B, C, T)`` (independent of batch and T)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)  # (B, C, T)


class _Block(nn.Module):
    """Residual ``x + dropout(relu(norm(conv(x))))`` on ``(B, C, T)``."""

    def __init__(self, channels: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.norm = _ChannelNorm(channels)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop(F.relu(self.norm(self.conv(x))))


class Psi(nn.Module):
    """Hidden maps -> ``H (B, K, T) >= 0`` for any number of frames ``T``.

    Args:
        map_channels: channels ``C_i`` of every map the classifier exposes, by name (an
            empty ``cfg.maps`` reads all of them; training passes the classifier's
            :func:`l2i.models.default_maps`).
        n_components: K, the number of NMF components.
        map_bins: frequency bins ``F_i`` of each map (needed by ``freq_reduce: flatten``;
            :func:`probe_map_bins` measures them).
        cfg: its :class:`l2i.config.PsiConfig`; the dataclass holds the only defaults.
    """

    def __init__(self, map_channels: Mapping[str, int], n_components: int, cfg: PsiConfig,
                 map_bins: Mapping[str, int] | None = None, n_freq: int | None = None) -> None:
        super().__init__()
        if not isinstance(cfg, PsiConfig):
            raise TypeError(f"Psi takes a PsiConfig, got {type(cfg).__name__}")
        names = list(cfg.maps) if cfg.maps else list(map_channels)
        unknown = [n for n in names if n not in map_channels]
        if unknown:
            raise ValueError(f"psi.maps names {unknown} that the classifier does not expose; "
                             f"it has {list(map_channels)}")
        if not names:
            raise ValueError("psi needs at least one hidden map; the classifier exposes none")
        if cfg.kernel_size % 2 != 1:
            raise ValueError(f"psi.kernel_size must be odd, got {cfg.kernel_size}")
        self.config = cfg
        self.map_names = names
        self.map_channels = {n: int(map_channels[n]) for n in names}
        self.n_components = int(n_components)
        self.activation = cfg.activation
        self.time_resolution = cfg.time_resolution
        self.freq_reduce = cfg.freq_reduce
        if self.freq_reduce == "flatten":
            missing = [n for n in names if not map_bins or n not in map_bins]
            if missing:
                raise ValueError(f"psi.freq_reduce flatten needs the frequency bins of maps "
                                 f"{missing}")
            self.map_bins = {n: int(map_bins[n]) for n in names}  # type: ignore[index]
            width = {n: c * self.map_bins[n] for n, c in self.map_channels.items()}
        else:
            self.map_bins = {n: int(map_bins[n]) for n in names if n in map_bins} \
                if map_bins else {}
            width = {n: 2 * c for n, c in self.map_channels.items()}
        self.proj = nn.ModuleDict({  # ModuleDict keys cannot hold dots (layer names can)
            _key(n): nn.Conv1d(w, cfg.hidden, kernel_size=1) for n, w in width.items()})
        self.input_map = bool(getattr(cfg, "input_map", False))
        if self.input_map:
            if not n_freq:
                raise ValueError("psi.input_map needs the STFT's number of bins (n_freq)")
            self.input_proj = nn.Conv1d(int(n_freq), cfg.hidden, kernel_size=1)
        self.blocks = nn.Sequential(*[_Block(cfg.hidden, cfg.kernel_size, cfg.dropout)
                                      for _ in range(cfg.n_layers)])
        self.out = nn.Conv1d(cfg.hidden, self.n_components, kernel_size=1)

    def reduce(self, maps: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The parameter-free part: ``{name: (B, C_i, T_i, F_i)}`` -> ``{name: (B, C', T_i)}``."""
        missing = [n for n in self.map_names if n not in maps]
        if missing:
            raise KeyError(f"psi expects maps {missing}; got {list(maps)}")
        return reduce_maps(maps, self.map_names, self.freq_reduce)

    def forward_reduced(self, reduced: Mapping[str, Tensor], n_frames: int,
                        log_mag: Tensor | None = None) -> Tensor:
        """``{name: (B, C', T_i)}`` (from :meth:`reduce`) -> ``H (B, K, n_frames)`` >= 0.

        ``log_mag (B, n_frames, F)``: the input's ``log1p|X|``, read with ``input_map``."""
        n_frames = int(n_frames)
        # "output": the blocks run at the STFT frame rate; "maps": at the finest map's rate,
        # and only the K output channels are interpolated (cheaper, smoother in time)
        t_work = n_frames if self.time_resolution == "output" else max(
            reduced[n].shape[-1] for n in self.map_names)
        x: Tensor | None = None
        for name in self.map_names:
            r = self.proj[_key(name)](reduced[name].float())  # (B, hidden, T_i)
            if r.shape[-1] != t_work:
                r = F.interpolate(r, size=t_work, mode="linear",
                                  align_corners=False)  # (B, hidden, t_work)
            x = r if x is None else x + r
        assert x is not None
        if self.input_map:
            x = x + self._input(log_mag, n_frames, t_work)  # (B, hidden, t_work)
        x = self.blocks(x)  # (B, hidden, t_work)
        h = self.out(x)  # (B, K, t_work)
        if t_work != n_frames:
            h = F.interpolate(h, size=n_frames, mode="linear", align_corners=False)  # (B, K, T)
        return F.relu(h) if self.activation == "relu" else F.softplus(h)

    def _input(self, log_mag: Tensor | None, n_frames: int, t_work: int) -> Tensor:
        """``input_map``'s term: ``log1p|X| (B, n_frames, F)`` -> ``(B, hidden, t_work)``."""
        if log_mag is None or log_mag.dim() != 3 or log_mag.shape[1] != n_frames:
            got = None if log_mag is None else tuple(log_mag.shape)
            raise ValueError(f"psi.input_map needs the input's log1p magnitude (B, {n_frames}, "
                             f"F), got {got}")
        r = self.input_proj(log_mag.float().transpose(1, 2))  # (B, hidden, n_frames)
        if t_work != n_frames:
            r = F.interpolate(r, size=t_work, mode="linear", align_corners=False)
        return r

    def forward(self, maps: Mapping[str, Tensor], n_frames: int,
                log_mag: Tensor | None = None) -> Tensor:
        """``{name: (B, C_i, T_i, F_i)}`` -> ``H (B, K, n_frames)`` >= 0 (``log_mag`` as in
        :meth:`forward_reduced`)."""
        return self.forward_reduced(self.reduce(maps), n_frames, log_mag)


@torch.no_grad()
def probe_map_bins(classifier: nn.Module, n_freq: int, n_frames: int = 64) -> dict[str, int]:
    """Frequency bins ``F_i`` of each hidden map, from one forward pass on silence.

    ``classifier(mag (1, n_frames, n_freq)) -> (logits, {name: (1, C_i, T_i, F_i)})``.
    """
    was_training = classifier.training
    classifier.eval()
    param = next(classifier.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    _, maps = classifier(torch.zeros(1, n_frames, n_freq, device=device))
    classifier.train(was_training)
    return {name: (int(m.shape[-1]) if m.dim() == 4 else 1) for name, m in maps.items()}


# ---------------------------------------------------------------------- any map layout
def find_time_axis(short: tuple[int, ...], long: tuple[int, ...]) -> int | None:
    """The axis (>= 1) of a map whose size grows with the clip length.

    ``short`` / ``long``: the map's shape for a short and a longer probe clip (same batch).
    Returns None when no axis grows (a pooled output: no time axis); when several grow, the
    one that grows most (relative), the earliest on ties.
    """
    if len(short) != len(long):
        raise ValueError(f"map rank changes with the clip length: {short} vs {long}")
    grow = [(long[d] / max(short[d], 1), d) for d in range(1, len(short)) if long[d] > short[d]]
    if not grow:
        return None
    best = max(r for r, _ in grow)
    return min(d for r, d in grow if r == best)


def canonical_map(m: Tensor, time_axis: int) -> Tensor:
    """A map of any layout -> ``(B, C, T, F)`` (4-D input) or ``(B, C, T)`` (2-/3-D input).

    ``time_axis`` (>= 1, from :func:`find_time_axis`) moves to position 2; the other non-batch
    axes keep their order as channels then frequency. ``(B, T', D)`` tokens become
    ``(B, D, T')``; ``(B, T')`` becomes ``(B, 1, T')``.
    """
    if not 1 <= time_axis < m.dim():
        raise ValueError(f"time axis {time_axis} out of range for a map of shape {tuple(m.shape)}")
    if m.dim() == 2:
        return m.unsqueeze(1)  # (B, 1, T)
    if m.dim() == 3:
        return m if time_axis == 2 else m.transpose(1, 2)  # (B, C, T)
    if m.dim() == 4:
        rest = [d for d in (1, 2, 3) if d != time_axis]
        return m.permute(0, rest[0], time_axis, rest[1])  # (B, C, T, F)
    raise ValueError(f"maps must have 2 to 4 axes (B, ...), got shape {tuple(m.shape)}")
