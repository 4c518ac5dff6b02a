"""PANNs ``Cnn14`` (Kong et al. 2020) as published: its own front end and its AudioSet head.

A plain waveform model, for interpreting the released AudioSet tagger (``Cnn14_mAP=0.431.pth``)
frozen, with no fine-tuning: give ``l2i.models.panns:build`` as a classifier module (the
classifier-as-code mechanism) with ``sample_rate: 32000``, ``output: logits`` and ``activation:
sigmoid``. The layout and parameter names are those of ``audioset_tagging_cnn/pytorch/models.py``
and torchlibrosa, so the 84 keys of the release load strictly::

    wav (B, S) at 32 kHz
    spectrogram_extractor  reflect-pad 512 | Conv1d STFT kernels stft.conv_{real,imag}
                           (513, 1, 1024) = cos / -sin(2 pi k n / 1024) * hann(1024, periodic),
                           stride 320 -> power re^2 + im^2                     (B, T, 513)
    logmel_extractor       @ melW (513, 64): Slaney mel, 50-14000 Hz, Slaney-normalised;
                           10 * log10(max(., 1e-10))  (ref 1, no top_db)        (B, T, 64) dB
    bn0                    BatchNorm over the 64 mel bins
    conv_block1..6         [conv3x3 -> bn -> ReLU] x 2, avg-pool 2x2 (block 6: none);
                           64, 128, 256, 512, 1024, 2048 channels; dropout 0.2 (training only)
    pooling                mean over frequency, max + mean over time            (B, 2048)
    fc1                    Linear(2048, 2048) -> ReLU                           "embedding"
    fc_audioset            Linear(2048, 527) -> "logits"; sigmoid -> "clipwise_output"

``T = 1 + S // 320``. ``forward`` returns a dict with ``clipwise_output``, ``logits`` and
``embedding`` (``(B, 527)``, ``(B, 527)``, ``(B, 2048)``). The front end runs as the published
Conv1d (not an FFT) so the checkpoint's own kernels are used bit for bit; the model computes
identical kernels itself when built without a checkpoint. Imports only torch.
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from l2i.models.cnn14 import CHANNELS, Cnn14ConvBlock

SAMPLE_RATE = 32000
N_FFT = 1024
HOP = 320
N_MELS = 64
F_MIN = 50.0
F_MAX = 14000.0
N_AUDIOSET = 527
AMIN = 1e-10


def slaney_hz_to_mel(hz: Tensor) -> Tensor:
    """Slaney's mel scale (librosa ``htk=False``): linear below 1 kHz, logarithmic above."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    lin = hz / f_sp
    return torch.where(hz >= min_log_hz,
                       min_log_mel + torch.log(hz.clamp(min=1e-10) / min_log_hz) / logstep, lin)


def slaney_mel_to_hz(mel: Tensor) -> Tensor:
    """Inverse of :func:`slaney_hz_to_mel`."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return torch.where(mel >= min_log_mel,
                       min_log_hz * torch.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def slaney_mel_filters(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                       f_min: float = F_MIN, f_max: float = F_MAX) -> Tensor:
    """``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax).T`` (Slaney scale and area norm),
    ``(n_fft // 2 + 1, n_mels)`` float32, computed in float64."""
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)  # (F,)
    lims = slaney_hz_to_mel(torch.tensor([f_min, f_max], dtype=torch.float64))
    pts = slaney_mel_to_hz(torch.linspace(float(lims[0]), float(lims[1]), n_mels + 2,
                                          dtype=torch.float64))  # (n_mels + 2,)
    diff = pts[1:] - pts[:-1]  # (n_mels + 1,)
    ramps = pts[:, None] - freqs[None, :]  # (n_mels + 2, F)
    lower = -ramps[:-2] / diff[:-1, None]  # (n_mels, F)
    upper = ramps[2:] / diff[1:, None]
    weights = torch.clamp(torch.minimum(lower, upper), min=0.0)
    weights = weights * (2.0 / (pts[2:] - pts[:-2]))[:, None]  # Slaney area normalisation
    return weights.T.contiguous().float()  # (F, n_mels)


def stft_kernels(n_fft: int = N_FFT) -> tuple[Tensor, Tensor]:
    """torchlibrosa's Conv1d STFT kernels: ``(re, im)``, each ``(n_fft // 2 + 1, 1, n_fft)``."""
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)  # (n_fft,)
    angle = 2 * math.pi * k[:, None] * n[None, :] / n_fft  # (F, n_fft)
    re = torch.cos(angle) * window
    im = -torch.sin(angle) * window
    return re.float()[:, None, :], im.float()[:, None, :]


class _STFT(nn.Module):
    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        re, im = stft_kernels(n_fft)
        self.conv_real = nn.Conv1d(1, n_fft // 2 + 1, n_fft, stride=hop, bias=False)
        self.conv_imag = nn.Conv1d(1, n_fft // 2 + 1, n_fft, stride=hop, bias=False)
        with torch.no_grad():
            self.conv_real.weight.copy_(re)
            self.conv_imag.weight.copy_(im)
        self.n_fft = n_fft


class Spectrogram(nn.Module):
    """``wav (B, S)`` -> power spectrogram ``(B, T, n_fft // 2 + 1)`` (reflect-padded frames)."""

    def __init__(self, n_fft: int = N_FFT, hop: int = HOP) -> None:
        super().__init__()
        self.stft = _STFT(n_fft, hop)
        self.requires_grad_(False)

    def forward(self, wav: Tensor) -> Tensor:
        pad = self.stft.n_fft // 2
        if wav.shape[-1] <= pad:
            raise ValueError(f"PANNs Cnn14 needs more than {pad} samples, got {wav.shape[-1]}")
        x = F.pad(wav[:, None, :], (pad, pad), mode="reflect")  # (B, 1, S + n_fft)
        re, im = self.stft.conv_real(x), self.stft.conv_imag(x)  # (B, F, T)
        return (re ** 2 + im ** 2).transpose(1, 2)  # (B, T, F)


class LogmelFilterBank(nn.Module):
    """Power ``(B, T, F)`` -> log-mel ``10 log10(max(P @ melW, 1e-10))`` ``(B, T, n_mels)``."""

    def __init__(self, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                 f_min: float = F_MIN, f_max: float = F_MAX) -> None:
        super().__init__()
        self.melW = nn.Parameter(slaney_mel_filters(sample_rate, n_fft, n_mels, f_min, f_max),
                                 requires_grad=False)

    def forward(self, power: Tensor) -> Tensor:
        return 10.0 * torch.log10(torch.clamp(power @ self.melW, min=AMIN))


class Cnn14(nn.Module):
    """See the module docstring. ``forward(wav (B, S) at 32 kHz) -> dict``."""

    sample_rate = SAMPLE_RATE
    activation = "sigmoid"

    def __init__(self, n_classes: int = N_AUDIOSET, channels: tuple[int, ...] = CHANNELS
                 ) -> None:
        super().__init__()
        self.spectrogram_extractor = Spectrogram()
        self.logmel_extractor = LogmelFilterBank()
        self.bn0 = nn.BatchNorm2d(N_MELS)
        c_in = 1
        for k, c_out in enumerate(channels, start=1):
            pool = (1, 1) if k == 6 else (2, 2)
            setattr(self, f"conv_block{k}", Cnn14ConvBlock(c_in, c_out, pool, norm="bn"))
            c_in = c_out
        self.fc1 = nn.Linear(c_in, c_in)
        self.fc_audioset = nn.Linear(c_in, n_classes)

    def logmel(self, wav: Tensor) -> Tensor:
        """``wav (B, S)`` -> log-mel ``(B, T, 64)`` in dB (PANNs' network input)."""
        return self.logmel_extractor(self.spectrogram_extractor(wav))

    def forward(self, wav: Tensor) -> dict[str, Tensor]:
        x = self.logmel(wav)[:, None]  # (B, 1, T, 64)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # per-mel-bin BatchNorm
        for k in range(1, 7):
            x = getattr(self, f"conv_block{k}")(x)  # (B, C_k, T_k, F_k)
            x = F.dropout(x, p=0.2, training=self.training)
        h = x.mean(dim=3)  # (B, 2048, T_6)
        x = h.amax(dim=2) + h.mean(dim=2)  # (B, 2048)
        x = F.dropout(x, p=0.5, training=self.training)
        x = F.relu(self.fc1(x))  # (B, 2048)
        logits = self.fc_audioset(x)  # (B, 527)
        return {"clipwise_output": torch.sigmoid(logits), "logits": logits,
                "embedding": F.dropout(x, p=0.5, training=self.training)}


def build(checkpoint: str | os.PathLike, class_names: str | os.PathLike | None = None
          ) -> tuple[Cnn14, list[str]]:
    """``(Cnn14 in eval mode with the release's weights, class names)``.

    ``checkpoint`` (required, so random weights are never explained by mistake; ``Cnn14()``
    builds fresh ones): a PANNs ``Cnn14`` ``.pth`` (``{"model": state_dict}``, 84 keys, loaded
    strictly; the load report goes to stderr). The widths and the class count are read from the
    file's shapes (the release: 64..2048 channels, 527 classes). ``class_names``: a text file
    (one name per line) or AudioSet's ``class_labels_indices.csv``; default
    ``class_0 .. class_{C-1}``.
    """
    import sys

    from l2i.models.pretrained import load_panns, read_class_names, read_panns_state

    sd = read_panns_state(checkpoint)
    model = Cnn14(*_layout(sd, str(checkpoint)))
    print(load_panns(model, sd, str(checkpoint)).summary(), file=sys.stderr, flush=True)
    n = model.fc_audioset.out_features
    names = (read_class_names(class_names, n) if class_names is not None
             else [f"class_{i}" for i in range(n)])
    return model.eval(), names


def _layout(sd: dict[str, Tensor], source: str) -> tuple[int, tuple[int, ...]]:
    """(classes, channels of the 6 blocks) from a PANNs state dict's shapes."""
    from l2i.errors import L2IError

    try:
        channels = tuple(int(sd[f"conv_block{k}.conv1.weight"].shape[0]) for k in range(1, 7))
        return int(sd["fc_audioset.weight"].shape[0]), channels
    except KeyError as err:
        raise L2IError(f"{source}: not a PANNs Cnn14 state dict (no {err.args[0]})") from None


__all__ = ["Cnn14", "build", "slaney_mel_filters", "stft_kernels", "Spectrogram",
           "LogmelFilterBank"]
