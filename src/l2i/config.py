"""Configs are data: YAML recipes loaded into typed dataclasses.

A recipe is a YAML file whose keys mirror one of the ``*Recipe`` dataclasses below. A recipe may
start with ``base: other.yaml`` (a path relative to the recipe) and then only list what differs.
Every key can be overridden from the command line: ``--data_folder D`` for a top-level key,
``--trainer.lr 1e-3`` for a nested one. Values are converted to the dataclass field's type
(lists ``1,2,3``, ``null`` for None; docs/cli.md) or rejected with a ConfigError naming the key,
the value and the type; an unknown key is an error naming the likeliest keys (the same name in
another section first: ``--train_folds`` -> ``data.train_folds``).

Fields that take one of a fixed set of strings are ``Literal[...]`` types. They are checked
here, once, whenever a config dataclass is built (loaded or constructed in Python), so the
modules that use them need no checks of their own.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from l2i.errors import ConfigError

T = TypeVar("T")


# --------------------------------------------------------------------------- sections
@dataclass
class FeaturesConfig:
    """STFT and classifier-input settings, shared by NMF, classifier and interpreter.

    Times are in milliseconds and turned into samples with ``round(sample_rate * ms / 1000)``
    (reference: 372 / 186 samples at 16 kHz).
    """

    sample_rate: int = 16000
    n_fft: int = 1024
    win_ms: float = 23.2199
    hop_ms: float = 11.6099
    window: Literal["hamming", "hann"] = "hamming"
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float | None = None  # None = sample_rate / 2

    @property
    def win_length(self) -> int:
        return int(round(self.sample_rate * self.win_ms / 1000.0))

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000.0))

    @property
    def n_freq(self) -> int:
        return self.n_fft // 2 + 1


@dataclass
class DataConfig:
    """Where clips come from and how they are cut.

    ``format``: ``esc50`` (``meta/esc50.csv`` + ``audio/``), ``csv`` (a manifest
    ``path,label[,fold]``, given by ``manifest``) or ``folders`` (one sub-folder per class).
    """

    format: Literal["esc50", "csv", "folders"] = "esc50"
    manifest: str | None = None
    train_folds: list[int] = field(default_factory=lambda: [1, 2, 3])
    valid_folds: list[int] = field(default_factory=lambda: [4])
    test_folds: list[int] = field(default_factory=lambda: [5])
    esc10: bool = False
    duration_s: float | None = 5.0  # clip length after crop/pad; None keeps each file's length
    crop: Literal["start", "center", "random"] = "start"  # how longer files are cut
    normalize: Literal["peak", "none"] = "peak"  # peak: x / (max|x| + eps)
    cache: bool = True  # decode + resample once (into shards, l2i.shards.training_index)
    # training order: 0 = one global permutation per epoch; N > 0 = shard order permuted, clips
    # permuted in each shard, then a shuffle buffer of N clips (reads stay within a few shards)
    shuffle_buffer: int = 0


# field metadata: keys that only the interpreter's training reads; `l2i train-classifier
# --help` leaves them out (they are still accepted there, and do nothing)
L2I_ONLY = {"unused_by": ("ClassifierRecipe",)}


@dataclass
class TrainerConfig:
    """The training loop (Lightning), shared by classifier and interpreter training."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    scheduler: Literal["cosine", "plateau", "none"] = "cosine"
    plateau_patience: int = 3
    plateau_factor: float = 0.5
    warmup_epochs: int = 0
    grad_clip: float = 5.0
    seed: int = 1234
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    devices: int = 1  # processes/GPUs per node (DDP when > 1)
    strategy: str = "auto"  # auto | ddp | ddp_spawn | ...
    precision: str = "32-true"  # 32-true | 16-mixed | bf16-mixed
    num_workers: int = 0
    progress: bool = True
    tensorboard: bool = False
    resume: bool = False
    restart: bool = False  # discard an earlier run in output_folder (checkpoints) and start afresh
    patience: int = 0  # early stopping: epochs without a better monitored metric (0 = off)
    min_delta: float = 0.0  # early stopping: smallest gain of the monitored metric that counts
    deterministic: bool = True
    limit_batches: float | None = None  # debug: fraction or count of batches per epoch
    # `l2i train`'s map cache (cache_maps, docs/scaling.md): `auto` caches up to cache_auto_gb
    # and recomputes the classifier's maps each epoch above it; past cache_limit_gb it stops
    # and asks for --cache_maps true (cache anyway) or false (recompute)
    cache_auto_gb: float = field(default=10.0, metadata=L2I_ONLY)
    cache_limit_gb: float = field(default=100.0, metadata=L2I_ONLY)
    cache_dtype: Literal["float16", "float32"] = field(  # the cached maps (logits: float32)
        default="float16", metadata=L2I_ONLY)
    cache_shard_clips: int = field(default=1024, metadata=L2I_ONLY)  # clips per cache shard


@dataclass
class ClassifierModelConfig:
    """Which classifier to build (arch) and what it reads (input); see docs/pretrained.md."""

    arch: Literal["conv2d", "cnn14", "sb_conv2d"] = "conv2d"
    input: Literal["log1p_mel", "log1p_mag", "log1p_mel_sb"] = "log1p_mel"
    width: int = 12  # conv2d: channels of the first block (doubles per block)
    embed_dim: int = 256
    dropout: float = 0.2
    pretrained: str | None = None  # SpeechBrain CNN14 pair folder or PANNs .pth (cnn14 only)
    # arch sb_conv2d: SpeechBrain's PIQ-ESC50 conv2d (input log1p_mag, pretrained = its folder);
    # input log1p_mel_sb: SpeechBrain's mel filterbank (for its CNN14 pair)
    allow_partial: bool = False  # accept dropping a head / normalisation layer of `pretrained`
    lin_neurons: int = 192  # sb_conv2d: width of the ECAPA cosine head


@dataclass
class AugmentConfig:
    """Training-time augmentation (all off when zero)."""

    time_shift: float = 0.0  # max circular shift, fraction of the clip
    gain_db: float = 0.0  # random gain in +-gain_db
    mixup_alpha: float = 0.0
    freq_masks: int = 0  # SpecAugment masks on the classifier input
    freq_mask_width: int = 8
    time_masks: int = 0
    time_mask_width: int = 20
    noise_folder: str | None = None  # WHAM!-style noise corpus: any folder of audio files
    noise_prob: float = 1.0
    snr_db: list[float] = field(default_factory=lambda: [0.0, 0.0])  # [low, high]
    # l2i train: mix this share of the training clips with another clip of the same batch
    # (0 = off), at an SNR drawn in mix_snr_db; 12 dB is l2i evaluate's mixtures (0.8 s + 0.2 n)
    mix_prob: float = 0.0
    mix_snr_db: list[float] = field(default_factory=lambda: [6.0, 18.0])  # [low, high] dB

    def __post_init__(self) -> None:
        snr = list(self.mix_snr_db)
        bad = [f"augment.{k} = {v} ({rule})" for k, v, ok, rule in (
            ("mix_prob", self.mix_prob, 0 <= self.mix_prob <= 1, "a share in [0, 1], 0 = off"),
            ("mix_snr_db", snr, len(snr) in (1, 2) and all(map(math.isfinite, snr))
             and snr[0] <= snr[-1], "[low, high] in dB, low <= high"),
        ) if not ok]
        if bad:
            raise ConfigError("; ".join(bad))


@dataclass
class NMFConfig:
    """Dictionary learning on log1p magnitude frames (L2I_SPEC §4)."""

    n_components: int = 100
    sparsity: float = 0.0  # L1 weight on H
    n_iter: int = 200
    tol: float = 1e-4
    batch_frames: int | None = None  # None: full batch; else mini-batch size in frames
    max_frames: int | None = None  # subsample training frames (None = all)
    seed: int = 1234
    device: str = "auto"
    solver: Literal["hals", "mu"] = "hals"  # hals: exact coordinate descent | mu: multiplicative
    inner_iter: int = 2  # HALS sweeps on H and on W per pass over the frames
    extrapolate: bool = True  # hals, full batch: extrapolated iterates (Ang & Gillis 2019)
    forget_factor: float = 0.7  # mini-batch: weight of last epoch's statistics


@dataclass
class PsiConfig:
    """psi: the classifier's hidden maps -> NMF activations H (B, K, T), any T."""

    maps: list[str] = field(default_factory=list)  # empty = the classifier's default maps
    hidden: int = 256
    n_layers: int = 3
    kernel_size: int = 3  # odd; temporal context of the residual Conv1d blocks
    dropout: float = 0.0
    activation: Literal["relu", "softplus"] = "relu"  # (H >= 0)
    # time_resolution output: blocks at the STFT frame rate | maps: at the maps'
    time_resolution: Literal["output", "maps"] = "output"
    # freq_reduce meanmax: pool maps over frequency | flatten: bins -> channels
    freq_reduce: Literal["meanmax", "flatten"] = "meanmax"
    # input_map: psi also reads the input's log1p magnitude (its F bins as channels, at the
    # STFT frame rate) next to the classifier's maps (issue 14: psi's reconstruction)
    input_map: bool = False


@dataclass
class ThetaConfig:
    """theta: time pooling of H, then Linear(K, C, bias=False)."""

    pooling: Literal["attention", "mean", "max"] = "attention"
    hidden: int = 64  # attention scorer width
    normalize: bool = True  # logits from z / mean(z) per clip (same relevance, faster training)


@dataclass
class L2ILossConfig:
    """loss = alpha * MSE(W H, log1p|X|) + beta * mean|H| + fid_weight * soft-CE(theta, f/temp)
    + faith_in * CE(f(M |X|), c) + faith_out * -log(1 - p_c(f((1 - M) |X|))) + mask_l1 * mean M.

    ``M`` is the differentiable training mask (``training.interpreter.training_mask``: the ratio
    mask with weights ``relu(relevance)``), ``c`` the classifier's prediction on ``|X|``. The
    faithfulness weights 0 (the default) leave the paper's objective exactly.
    """

    alpha: float = 10.0
    beta: float = 0.8
    fid_weight: float = 1.0
    classifier_temp: float = 1.0
    relevance_th: float = 0.2
    faith_in: float = 0.0  # masked-in M |X| must keep the classifier's decision (CE to c)
    faith_out: float = 0.0  # masked-out (1 - M) |X| must lose it: -log(1 - p_c)
    mask_l1: float = 0.0  # mask size: mean M over (batch, time, freq)
    faith_clips: int = 0  # the faithfulness terms on the first n clips of each (shuffled)
    #                       batch only (0 = all): two classifier passes on n clips, not B
    # the faithfulness terms train psi too (true, as before) or only theta (false: they see
    # psi's H detached, so psi keeps to reconstruction and theta's fidelity, and the terms
    # decide which components explain the decision, through theta's weights and attention)
    faith_psi: bool = True


@dataclass
class MaskConfig:
    """How an L2I explanation mask is built (:func:`l2i.explain.explanation_mask`,
    docs/method.md "What changed from the paper and why").

    The defaults are the paper's mask (old checkpoints explain exactly as before): clip-pooled
    relevance ``r_k = w_ck z_k / max_j |w_cj z_j|``, the components with ``r_k > relevance_th``
    (or the ``top_k``), ``M = W_L H_L / (W H + eps)``. Recipes choose other defaults.
    """

    # relevance per clip (r_k from theta's pooled z, weights (B, K)) or per frame
    # (frame: r_k(t) = w_ck h_k(t) / max_{j,s} |w_cj h_j(s)|, weights (B, K, T); frame_attention:
    # the same with theta's attention weights, w_ck a_k(t) h_k(t))
    resolution: Literal["clip", "frame", "frame_attention"] = "clip"
    # threshold: 0/1 weights r > relevance_th (or top_k); soft: weights max(r, 0) ** power
    weights: Literal["threshold", "soft"] = "threshold"
    power: float = 1.0  # soft weights only
    # none | median: each component's activation minus its median over the clip's frames
    # (a component active all the time keeps only what rises above it) | spread: weights
    # times the component's temporal peakiness 1 - mean_t h_k / max_t h_k (flat ones -> 0)
    background: Literal["none", "median", "spread"] = "none"
    # model: divide by psi's reconstruction W H (the paper); input: by log1p|X| (what W H
    # models), clamped to [0, 1]
    denominator: Literal["model", "input"] = "model"
    rescale: bool = False  # divide the mask by its maximum over the clip (the peak bin -> 1)
    sharpen: float = 1.0  # mask ** sharpen (> 1 sharpens, < 1 widens, 1 = off)
    binarize: float = 0.0  # > 0: mask >= binarize * max(mask) -> 1, else 0 (0 = off)
    # > 0: last, the mask times |X| / (|X| + N_f), N_f the floor_gate quantile of the input's
    # magnitude over the clip's frames at frequency f (its noise floor): bins near or below
    # the floor are attenuated, loud ones kept (0 = off)
    floor_gate: float = 0.0
    # > 0: last, zero the faintest bins of M|X| while the classifier's log1p filterbank input
    # moves by at most this much (log1p units) in every frame and band
    # (l2i.explain.prune_mask; 0 = off)
    prune: float = 0.0

    def __post_init__(self) -> None:
        bad = [f"mask.{k} = {v} ({rule})" for k, v, ok, rule in (
            ("power", self.power, self.power > 0, "must be > 0"),
            ("sharpen", self.sharpen, self.sharpen > 0, "must be > 0"),
            ("binarize", self.binarize, 0 <= self.binarize < 1, "must be in [0, 1)"),
            ("floor_gate", self.floor_gate, 0 <= self.floor_gate < 1,
             "a quantile in (0, 1), or 0 = off"),
            ("prune", self.prune, 0 <= self.prune < math.inf, "must be a number >= 0, 0 = off"),
        ) if not ok]
        if bad:
            raise ConfigError("; ".join(bad))


def _overrides_of(cls: type, name: str) -> type:
    """A dataclass with ``cls``'s fields, each optional and None by default (= keep the value
    stored in the checkpoint): the ``mask`` section of ``l2i evaluate`` / ``l2i interpret``."""
    hints = get_type_hints(cls)
    out = dataclasses.make_dataclass(
        name, [(f.name, hints[f.name] | None, None) for f in dataclasses.fields(cls)])
    out.__module__ = __name__
    out.__doc__ = (f"Overrides of :class:`{cls.__name__}` (every field None = the checkpoint's "
                   "value; a checkpoint without one: the dataclass defaults).")
    return out


MaskOverrides = _overrides_of(MaskConfig, "MaskOverrides")


@dataclass
class ClassifierSpec:
    """A classifier given as code (docs/custom_classifier.md): any ``torch.nn.Module``.

    ``module`` is ``path/to/file.py:callable`` or ``dotted.module:callable``; the callable
    returns an ``nn.Module`` (or ``(module, class_names)``); it is called as
    ``callable(checkpoint, **kwargs)`` when ``checkpoint`` is set, else ``callable(**kwargs)``.
    Its forward takes waveforms ``(B, S)`` float32 in [-1, 1] at ``sample_rate`` Hz. Empty
    ``module``: the classifier is l2i's own, from ``classifier_ckpt``. Importing a file runs it.
    """

    module: str = ""  # "my_models.py:build" | "pkg.models:build"; empty = use classifier_ckpt
    sample_rate: int = 16000  # Hz of the waveforms the model's forward takes
    output: int | str | None = None  # null: forward returns logits (B, C); else the tuple
    #                                  index / dict key of the item that holds them
    layers: list[str] = field(default_factory=list)  # named_modules() names read with hooks
    activation: Literal["softmax", "sigmoid"] = "softmax"  # single-label | multi-label
    scores: Literal["logits", "probabilities"] = "logits"  # probabilities: already (soft/sig)moided
    threshold: float = 0.5  # sigmoid: a class is "on" when its probability exceeds this
    class_names: str | None = None  # text file, one name per line; default: the builder's or
    #                                 class_0..class_{C-1}
    checkpoint: str | None = None  # passed to the builder as its first argument
    kwargs: dict[str, Any] = field(default_factory=dict)  # more keyword arguments of the builder


@dataclass
class LMACConfig:
    """L-MAC (Paissan et al. 2024): a decoder on the classifier's hidden maps -> mask logits.

    loss = l_in * CE(f(M |X|), y) - l_out * CE(f((1 - M) |X|), y) + l_l1 * mean|M|, y the
    classifier's prediction (SpeechBrain's lmac_cnn14.yaml: 4 / 0.2 / 0.4).
    """

    maps: list[str] = field(default_factory=list)  # empty = the classifier's default maps
    hidden: int = 64  # decoder channels
    n_up: int = 2  # x2 upsampling stages (time and freq) after merging the maps
    l_in: float = 4.0
    l_out: float = 0.2
    l_l1: float = 0.4


# --------------------------------------------------------------------------- recipes
@dataclass
class SynthRecipe:
    """``l2i synth OUT``: a procedural sound-event dataset in the ESC-50 layout."""

    output_folder: str = "synth"
    n_per_class: int = 40
    n_folds: int = 5
    seed: int = 0
    sample_rate: int = 16000
    duration_s: float = 5.0
    snr_db: list[float] = field(default_factory=lambda: [0.0, 15.0])  # event vs background
    n_classes: int = 10  # the first n of the 10 built-in event classes


@dataclass
class PrepareRecipe:
    """``l2i prepare DATA --output_folder SHARDS``: decode a dataset once into shards."""

    data_folder: str = ""
    output_folder: str = "shards"
    data: DataConfig = field(default_factory=DataConfig)
    sample_rate: int = 16000  # the features' sample rate of the models that will read them
    clips_per_shard: int = 512
    dtype: Literal["float16", "float32"] = "float16"
    progress: bool = True


@dataclass
class ClassifierRecipe:
    """``l2i train-classifier``."""

    data_folder: str = ""
    output_folder: str = "runs/classifier"
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    model: ClassifierModelConfig = field(default_factory=ClassifierModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class EvaluateClassifierRecipe:
    """``l2i evaluate-classifier CKPT``."""

    ckpt: str = ""
    data_folder: str = ""
    output_folder: str | None = None  # default: next to the checkpoint
    data: DataConfig = field(default_factory=DataConfig)
    test_folds: list[int] | None = None  # shortcut for data.test_folds
    batch_size: int = 32
    device: str = "auto"


@dataclass
class NMFRecipe:
    """``l2i train-nmf``."""

    data_folder: str = ""
    output_folder: str = "runs/nmf"
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    data: DataConfig = field(default_factory=DataConfig)
    nmf: NMFConfig = field(default_factory=NMFConfig)
    init: str | None = None  # import an existing dictionary (.npy (F, K) or SpeechBrain ckpt)
    # what an imported .npy / SpeechBrain / raw dictionary was learnt with (it records nothing);
    # checked against `features`; None = not stated (a loud warning: the features are assumed)
    init_sample_rate: int | None = None  # Hz
    init_n_fft: int | None = None


@dataclass
class L2IRecipe:
    """``l2i train``: the interpreter on a frozen classifier and a fixed dictionary.

    ``method: lmac`` trains an L-MAC decoder instead (section ``lmac``; ``nmf``, ``psi``,
    ``theta`` and ``loss`` are then unused).
    """

    method: Literal["l2i", "lmac"] = "l2i"  # what `l2i train` trains (training/dispatch.py)
    data_folder: str = ""
    output_folder: str = "runs/l2i"
    classifier_ckpt: str = ""
    nmf: str = ""
    # a .npy / SpeechBrain `nmf` records no STFT settings: what it was learnt with (checked
    # against the classifier's features); None = not stated (a loud warning)
    nmf_sample_rate: int | None = None  # Hz
    nmf_n_fft: int | None = None
    classifier: ClassifierSpec = field(default_factory=ClassifierSpec)  # a model given as code
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    psi: PsiConfig = field(default_factory=PsiConfig)
    theta: ThetaConfig = field(default_factory=ThetaConfig)
    loss: L2ILossConfig = field(default_factory=L2ILossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    lmac: LMACConfig = field(default_factory=LMACConfig)  # method lmac only
    # without augmentation: run the classifier once per clip and cache its outputs (true),
    # recompute them each epoch (false), or auto: cache while the cache fits
    # trainer.cache_auto_gb (docs/scaling.md)
    cache_maps: bool | Literal["auto"] = "auto"
    mask: MaskConfig = field(default_factory=MaskConfig)  # how explanations are masked (stored)
    noise_folder: str | None = None  # shortcut for augment.noise_folder (turns noise mixing on)
    # `l2i run` only: recipes of the earlier stages (paths relative to this recipe's folder),
    # used when classifier_ckpt / nmf are empty.
    classifier_recipe: str | None = None
    nmf_recipe: str | None = None


@dataclass
class InterpretRecipe:
    """``l2i interpret CKPT FILE...``."""

    ckpt: str = ""
    files: list[str] = field(default_factory=list)
    output_folder: str = "explanations"
    target: str | None = None  # class name or index; None = the classifier's prediction
    relevance_th: float | None = None  # None = the checkpoint's
    top_k: int | None = None  # keep the k most relevant components instead of a threshold
    device: str = "auto"
    max_memory_mb: float = 4096.0  # refuse a file whose explanation needs more (0: no limit)
    # several targets: target "all" = every class with probability >= target_min_prob, or the
    # top_classes most probable; target "a,b" = the named classes
    top_classes: int | None = None
    target_min_prob: float = 0.1
    # long recordings: streamed in windows (default: the classifier's training clip length)
    window_s: float | None = None
    hop_s: float | None = None  # default: half a window
    stream: str = "auto"  # auto (files longer than 2 windows) | always | never
    min_confidence: float | None = None  # None: the checkpoint's calibration (see docs/cli.md)
    components: bool = True  # write NAME.components/k{K}.wav and NAME.components.png
    mask: MaskOverrides = field(default_factory=MaskOverrides)  # None = the checkpoint's


@dataclass
class EvaluateRecipe:
    """``l2i evaluate CKPT``: faithfulness metrics on the TEST folds of a dataset.

    ``data_folder`` (when empty) and ``data`` (when left at its defaults) come from the
    checkpoint's training recipe. Contaminated sets are built from the test clips, seeded.
    """

    ckpt: str = ""
    extra_ckpts: list[str] = field(default_factory=list)  # more l2i.ckpt / lmac.ckpt to compare
    data_folder: str = ""  # default: the checkpoint's training data folder
    output_folder: str = "runs/eval"
    data: DataConfig = field(default_factory=DataConfig)  # default: the checkpoint's
    test_folds: list[int] | None = None  # shortcut for data.test_folds (taken out of train/valid)
    contamination: Literal["none", "white_noise", "mixtures", "noise_folder"] = "none"
    noise_folder: str | None = None  # noise corpus for contamination noise_folder (0 dB)
    relevance_th: float | None = None  # None = the checkpoint's (loss.relevance_th)
    top_k: int | None = None  # keep the k most relevant components instead of a threshold
    batch_size: int = 16
    seed: int = 0  # contamination draws and the random-component control
    device: str = "auto"
    n_examples: int = 8  # clips whose explanation wav/png are written for the report
    # explainers scored next to the checkpoints': saliency, ig, smoothgrad, gradcam (captum),
    # energy, ones, random (trivial baselines)
    baselines: list[str] = field(default_factory=lambda: ["energy", "ones", "random"])
    gradcam_layer: str | None = None  # default: the classifier's last hidden map
    ig_steps: int = 32  # Integrated Gradients: steps from silence
    smoothgrad_samples: int = 16  # SmoothGrad: noisy copies per clip
    metric_compat: str | None = None  # speechbrain: also AD with SpeechBrain's double softmax
    mask: MaskOverrides = field(default_factory=MaskOverrides)  # None = the checkpoint's


@dataclass
class ReportRecipe:
    """``l2i report RUN_FOLDER``: an ``l2i evaluate`` output or a demo/run folder."""

    run_folder: str = ""
    n_examples: int = 8  # example clips shown per evaluation
    output: str | None = None  # default RUN_FOLDER/report.html


@dataclass
class DemoRecipe:
    """``l2i demo``: synth -> classifier -> NMF -> L2I -> evaluate -> report."""

    output_folder: str = "runs/demo"
    n_per_class: int = 40  # 400 clips (240 train / 80 valid / 80 test): recipes/demo/*.yaml
    seed: int = 0
    device: str = "auto"


# --------------------------------------------------------------------------- loading
def load_config(cls: type[T], path: str | os.PathLike | None = None,
                overrides: dict[str, Any] | list[str] | None = None) -> T:
    """Build ``cls`` from a YAML recipe (with ``base:`` inheritance) plus overrides.

    ``overrides`` is either a mapping of dotted keys to values, or a command-line style list
    (``["--trainer.lr", "1e-3", "--resume"]``; a flag without a value means ``true``).
    Raises ConfigError naming the key and the closest valid keys.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml_with_base(Path(path), seen=())
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    problems: list[ConfigError] = []
    for dotted, value in (overrides or {}).items():
        try:
            _set_dotted(raw, dotted, value, cls)
        except ConfigError as err:
            problems.append(err)
    try:
        cfg = from_dict(cls, raw)
    except ConfigError as err:
        problems.append(err)
    _raise_all(problems)
    return cfg


def parse_overrides(argv: list[str]) -> dict[str, Any]:
    """``["--a.b", "3", "--flag"]`` -> ``{"a.b": "3", "flag": "true"}`` (values still strings)."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        tok = argv[i]
        if not tok.startswith("--") or len(tok) <= 2:
            raise ConfigError(f"unexpected argument {tok!r}: overrides are written --key value "
                              "(nested keys dotted, e.g. --trainer.lr 1e-3)")
        key = tok[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        elif i + 1 < len(argv) and not (argv[i + 1].startswith("--") and len(argv[i + 1]) > 2):
            value = argv[i + 1]
            i += 2
        else:
            value, i = "true", i + 1
        out[key] = value
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as plain data (for YAML/JSON/checkpoints)."""
    return asdict(cfg)


def save_config(cfg: Any, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML (atomically: temp file, then rename)."""
    from l2i.fileio import write_text

    return write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def from_dict(cls: type[T], raw: dict[str, Any], prefix: str = "", *,
              root: type | None = None) -> T:
    """Build dataclass ``cls`` from a (nested) dict, type-checking every value.

    ``prefix`` is the dotted path of ``cls`` inside ``root`` (the recipe class), used in messages.
    """
    root = root or cls
    if not isinstance(raw, dict):
        err = _bad_value(prefix.rstrip(".") or "config", cls, raw)
        if prefix:
            err.args = (f"{err} (its keys are set one by one: --{prefix}KEY VALUE)",)
        raise err
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    problems: list[ConfigError] = []  # every bad key and value, reported together
    for key, value in raw.items():
        try:
            if key not in hints:
                raise ConfigError(_unknown_key_message(prefix + str(key), root, prefix))
            kwargs[key] = _coerce(value, hints[key], prefix + key, root)
        except ConfigError as err:
            problems.append(err)
    _raise_all(problems)
    return cls(**kwargs)


def _raise_all(problems: list[ConfigError]) -> None:
    """Raise the one problem as it is, or several as one ConfigError (``a; b``)."""
    if len(problems) == 1:
        raise problems[0]
    if problems:
        flat = [p for err in problems for p in getattr(err, "problems", [err])]
        err = ConfigError(f"{len(flat)} bad config values: " + "; ".join(map(str, flat)))
        err.problems = flat  # type: ignore[attr-defined]
        raise err


def _read_yaml_with_base(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"recipe {path} not found: give the path of a YAML recipe "
                          "(see recipes/)")
    if path.resolve() in seen:
        raise ConfigError(f"recipe {path}: 'base:' chain loops back on itself")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path}: expected a mapping of keys at the top level")
    for key, value in data.items():  # `*_recipe` paths are relative to the recipe file
        if key.endswith("_recipe") and isinstance(value, str) and not os.path.isabs(value):
            data[key] = str(path.resolve().parent / value)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"recipe {path}: 'base' expected the path of another recipe (a "
                          f"string), got {base!r}")
    merged = _read_yaml_with_base((path.parent / base), seen + (path.resolve(),))
    return _deep_merge(merged, data)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


class _Text(str):
    """A value typed on the command line: text until its field's type is known.

    A string field keeps it as typed (``--ckpt 0123`` stays ``'0123'``); other fields parse it.
    """


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any, cls: type) -> None:
    parts = dotted.split(".")
    node, node_cls, prefix = raw, cls, ""
    for part in parts[:-1]:
        hints = _hints(node_cls)
        if part not in hints:
            raise ConfigError(_unknown_key_message(prefix + part, cls, prefix))
        if not dataclasses.is_dataclass(hints[part]):
            raise ConfigError(f"unknown config key '{dotted}': '{prefix + part}' takes a value "
                              f"and has no keys under it: write --{prefix + part} VALUE")
        if node.get(part) is None:
            node[part] = {}
        elif not isinstance(node[part], dict):
            raise _bad_value(prefix + part, hints[part], node[part])
        node, node_cls, prefix = node[part], hints[part], prefix + part + "."
    node[parts[-1]] = _Text(value) if isinstance(value, str) else value


# --------------------------------------------------------------------------- unknown keys
def _unknown_key_message(key: str, root: type, prefix: str) -> str:
    """``unknown config key 'k': did you mean a.k?``: the same name in another section first,
    then close names in this section, then close names anywhere; else every key of the section.
    """
    leaf = key[len(prefix):]
    everywhere = _dotted_keys(root)
    here = [prefix + f.name for f in dataclasses.fields(_section_class(root, prefix))]
    by_leaf: dict[str, list[str]] = {}
    for k in everywhere:
        by_leaf.setdefault(k.rsplit(".", 1)[-1], []).append(k)
    suggest = by_leaf.get(leaf, [])
    if not suggest:
        local = {k[len(prefix):]: k for k in here}
        suggest = [local[m] for m in difflib.get_close_matches(leaf, list(local), n=3,
                                                                cutoff=0.5)]
    if not suggest:
        suggest = [k for m in difflib.get_close_matches(leaf, list(by_leaf), n=3, cutoff=0.75)
                   for k in by_leaf[m]]
    if suggest:
        hint = f"did you mean {', '.join(suggest[:4])}?"
    else:
        hint = f"valid keys here: {', '.join(here) or '(none)'}"
    return f"unknown config key '{key}': {hint}"


@functools.cache
def _dotted_keys(cls: type, prefix: str = "") -> tuple[str, ...]:
    """Every key of a recipe, dotted: sections and the leaves inside them."""
    out: list[str] = []
    for name, tp in _hints(cls).items():
        out.append(prefix + name)
        if dataclasses.is_dataclass(tp):
            out += _dotted_keys(tp, prefix + name + ".")
    return tuple(out)


def _section_class(root: type, prefix: str) -> type:
    cls = root
    for part in prefix.rstrip(".").split(".") if prefix else ():
        cls = _hints(cls)[part]
    return cls


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """Resolved field types of a dataclass, in field order (cached: classes do not change)."""
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


# --------------------------------------------------------------------------- values
_NONE_WORDS = ("none", "null", "~", "")
_TRUE_WORDS = ("true", "yes", "1", "on")
_FALSE_WORDS = ("false", "no", "0", "off")


def _coerce(value: Any, tp: Any, key: str, root: type | None = None) -> Any:
    """``value`` (YAML data, or :class:`_Text` from the command line) as type ``tp``.

    Raises ConfigError ``config key 'KEY': expected TYPE, got VALUE`` when it does not fit.
    """
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return _coerce_union(value, tp, key, root)
    if origin is Literal:
        return _coerce_choice(value, tp, key)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, {} if value is None else value, key + ".", root=root)
    if origin in (list, tuple):
        return _coerce_list(value, tp, key, root)
    if origin is dict:
        if isinstance(value, _Text):  # command line: --classifier.kwargs "{scale: 40.0}"
            value = _parse_yaml(value)
        if not isinstance(value, dict):
            raise _bad_value(key, tp, value)
        ktp, vtp = get_args(tp) or (Any, Any)
        return {_coerce(k, ktp, f"{key}.{k}"): _coerce(v, vtp, f"{key}.{k}", root)
                for k, v in value.items()}
    if tp is Any:
        return _parse_yaml(value) if isinstance(value, _Text) else value
    scalar = _SCALARS.get(tp)
    if scalar is None:  # a type this parser does not know: passed through (as plain text)
        return str(value) if isinstance(value, _Text) else value
    try:
        return scalar(value)
    except (TypeError, ValueError, OverflowError):
        raise _bad_value(key, tp, value) from None


def _coerce_union(value: Any, tp: Any, key: str, root: type | None) -> Any:
    args = get_args(tp)
    optional = type(None) in args
    if optional and (value is None or (isinstance(value, str)
                                       and value.strip().lower() in _NONE_WORDS)):
        return None
    members = [a for a in args if a is not type(None)]
    errors = []
    for arg in members:
        try:
            return _coerce(value, arg, key, root)
        except ConfigError as err:
            errors.append(err)
    if len(errors) == 1 and getattr(errors[0], "key", key) != key:
        raise errors[0]  # the one type fits, an item inside it does not: name the item
    raise _bad_value(key, tp, value)


def _coerce_choice(value: Any, tp: Any, key: str) -> Any:
    choices = get_args(tp)
    for choice in choices:
        if type(value) is type(choice) and value == choice:
            return choice
    if isinstance(value, str):  # the command line is case-insensitive; stored canonical
        for choice in choices:
            if isinstance(choice, str) and value.strip().lower() == choice.lower():
                return choice
    raise _bad_value(key, tp, value)


def _coerce_list(value: Any, tp: Any, key: str, root: type | None) -> list[Any]:
    (item,) = get_args(tp)[:1] or (Any,)
    if isinstance(value, str):
        text = value.strip()
        if isinstance(value, _Text) and text.startswith(("[", "{")):
            value = _parse_yaml(value)
        else:  # "1,2,3" (numbers may also be split by spaces; strings only by commas)
            sep = text.split(",") if item is str else text.replace(",", " ").split()
            value = [type(value)(v.strip()) for v in sep if v.strip()]
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise _bad_value(key, tp, value)
    return [_coerce(v, item, f"{key}[{i}]", root) for i, v in enumerate(value)]


def _parse_yaml(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return str(text)


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS + _FALSE_WORDS:
        return value.strip().lower() in _TRUE_WORDS
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(value)


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            value = float(value)  # "3.0" is 3; "3.5" and "abc" are errors below
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(value)


def _to_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(value)
    return float(value)


def _to_str(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(value)
    return str(value)


_SCALARS = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}


def _bad_value(key: str, tp: Any, value: Any) -> ConfigError:
    err = ConfigError(f"config key '{key}': expected {_expected(tp)}, got {value!r}")
    err.key = key  # type: ignore[attr-defined]
    return err


def _expected(tp: Any) -> str:
    """What a type accepts, in words: ``an integer or null``, ``one of 'a', 'b'``."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        words = [_expected(a) for a in args if a is not type(None)]
        return " or ".join(words + (["null"] if type(None) in args else []))
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in get_args(tp))
    if origin in (list, tuple):
        item = (get_args(tp) or (Any,))[0]
        plural = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}
        return f"a list of {plural.get(item, 'values')} (e.g. 1,2,3 or [1, 2, 3])"
    if dataclasses.is_dataclass(tp) or origin is dict:
        return "a mapping of keys"
    words = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    return words.get(tp, getattr(tp, "__name__", str(tp)))


# --------------------------------------------------------------------------- choices
def _check_choices(cfg: Any) -> None:
    """Every ``Literal`` field of ``cfg`` holds one of its values (ConfigError naming the key).

    Runs whenever a config dataclass of this module is built, from a recipe or in Python, so no
    other module needs to check these fields again.
    """
    cls = type(cfg)
    problems = []
    for name, tp in _hints(cls).items():
        choice = tp if get_origin(tp) is Literal else None
        if choice is None and get_origin(tp) in (Union, types.UnionType):
            choice = next((a for a in get_args(tp) if get_origin(a) is Literal), None)
        value = getattr(cfg, name)
        if choice is None or (value is None and type(None) in get_args(tp)):
            continue
        if any(type(value) is a for a in get_args(tp) if isinstance(a, type)):
            continue  # e.g. ``bool | Literal["auto"]`` holding a bool
        if not any(type(value) is type(c) and value == c for c in get_args(choice)):
            problems.append(_bad_value(_section_names().get(cls, "") + name, tp, value))
    _raise_all(problems)


@functools.cache
def _section_names() -> dict[type, str]:
    """Section class -> its dotted prefix in the recipes (``ThetaConfig`` -> ``theta.``)."""
    out: dict[type, str] = {}
    for cls in _config_classes():
        for name, tp in _hints(cls).items():
            if dataclasses.is_dataclass(tp):
                out.setdefault(tp, name + ".")
    return out


def _config_classes() -> list[type]:
    return [c for c in globals().values() if isinstance(c, type)
            and dataclasses.is_dataclass(c) and c.__module__ == __name__]


def _checking_choices(cls: type) -> None:
    """Make ``cls(...)`` (and ``dataclasses.replace``) run :func:`_check_choices`.

    Wraps the generated ``__init__`` rather than adding ``__post_init__`` to every class, so a
    class that defines its own ``__post_init__`` keeps it.
    """
    generated = cls.__init__

    @functools.wraps(generated)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        generated(self, *args, **kwargs)
        _check_choices(self)

    cls.__init__ = __init__  # type: ignore[misc]


for _cls in _config_classes():
    _checking_choices(_cls)
del _cls


__all__ = [n for n in dir() if n.endswith(("Config", "Recipe"))] + [
    "load_config", "parse_overrides", "from_dict", "to_dict", "save_config"]
_ = typing  # typing kept for forward-ref resolution in get_type_hints
