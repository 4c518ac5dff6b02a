"""Configs are data: YAML recipes loaded into typed dataclasses.

A recipe is a YAML file whose keys mirror one of the ``*Recipe`` dataclasses below. A recipe may
start with ``base: other.yaml`` (a path relative to the recipe) and then only list what differs.
Every key can be overridden from the command line: ``--data_folder D`` for a top-level key,
``--trainer.lr 1e-3`` for a nested one. Values are type-checked against the dataclass field; an
unknown key is an error naming the closest valid keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

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
    window: str = "hamming"  # hamming | hann
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

    format: str = "esc50"  # esc50 | csv | folders
    manifest: str | None = None
    train_folds: list[int] = field(default_factory=lambda: [1, 2, 3])
    valid_folds: list[int] = field(default_factory=lambda: [4])
    test_folds: list[int] = field(default_factory=lambda: [5])
    esc10: bool = False
    duration_s: float | None = 5.0  # clip length after crop/pad; None keeps each file's length
    crop: str = "start"  # start | center | random  (how longer files are cut)
    normalize: str = "peak"  # peak (x / (max|x| + eps)) | none
    cache: bool = True  # decode + resample once into memory-mapped arrays


@dataclass
class TrainerConfig:
    """The training loop (Lightning), shared by classifier and interpreter training."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # adam | adamw | sgd
    scheduler: str = "cosine"  # cosine | plateau | none
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
    deterministic: bool = True
    limit_batches: float | None = None  # debug: fraction or count of batches per epoch


@dataclass
class ClassifierModelConfig:
    """Which classifier to build. ``input``: log1p_mel | log1p_mag."""

    arch: str = "conv2d"  # conv2d | cnn14
    input: str = "log1p_mel"
    width: int = 12  # conv2d: channels of the first block (doubles per block)
    embed_dim: int = 256
    dropout: float = 0.2
    pretrained: str | None = None  # SpeechBrain CNN14 pair folder or PANNs .pth (cnn14 only)


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
    solver: str = "hals"  # hals (exact block coordinate descent) | mu (multiplicative updates)
    inner_iter: int = 2  # HALS sweeps on H and on W per pass over the frames
    extrapolate: bool = True  # hals, full batch: extrapolated iterates (Ang & Gillis 2019)
    forget_factor: float = 0.7  # mini-batch: weight of last epoch's statistics


@dataclass
class PsiConfig:
    """psi: the classifier's hidden maps -> NMF activations H (B, K, T), any T."""

    maps: list[str] = field(default_factory=list)  # empty = every map the classifier exposes
    hidden: int = 256
    n_layers: int = 3
    kernel_size: int = 3  # odd; temporal context of the residual Conv1d blocks
    dropout: float = 0.0
    activation: str = "relu"  # relu | softplus (H >= 0)
    time_resolution: str = "output"  # output: blocks at the STFT frame rate | maps: at the maps'
    freq_reduce: str = "meanmax"  # meanmax: pool maps over frequency | flatten: bins -> channels


@dataclass
class ThetaConfig:
    """theta: time pooling of H, then Linear(K, C, bias=False)."""

    pooling: str = "attention"  # attention | mean | max
    hidden: int = 64  # attention scorer width
    normalize: bool = True  # logits from z / mean(z) per clip (same relevance, faster training)


@dataclass
class L2ILossConfig:
    """loss = alpha * MSE(W H, log1p|X|) + beta * mean|H| + fid_weight * soft-CE(theta, f/temp)."""

    alpha: float = 10.0
    beta: float = 0.8
    fid_weight: float = 1.0
    classifier_temp: float = 1.0
    relevance_th: float = 0.2


@dataclass
class LMACConfig:
    """L-MAC (Paissan et al. 2024): a decoder on the classifier's hidden maps -> mask logits.

    loss = l_in * CE(f(M |X|), y) - l_out * CE(f((1 - M) |X|), y) + l_l1 * mean|M|, y the
    classifier's prediction (SpeechBrain's lmac_cnn14.yaml: 4 / 0.2 / 0.4).
    """

    maps: list[str] = field(default_factory=list)  # empty = every map the classifier exposes
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


@dataclass
class L2IRecipe:
    """``l2i train``: the interpreter on a frozen classifier and a fixed dictionary.

    ``method: lmac`` trains an L-MAC decoder instead (section ``lmac``; ``nmf``, ``psi``,
    ``theta`` and ``loss`` are then unused).
    """

    method: str = "l2i"  # l2i | lmac
    data_folder: str = ""
    output_folder: str = "runs/l2i"
    classifier_ckpt: str = ""
    nmf: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    psi: PsiConfig = field(default_factory=PsiConfig)
    theta: ThetaConfig = field(default_factory=ThetaConfig)
    loss: L2ILossConfig = field(default_factory=L2ILossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    lmac: LMACConfig = field(default_factory=LMACConfig)  # method lmac only
    cache_maps: bool = True  # without augmentation: run the classifier once per clip
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
    contamination: str = "none"  # none | white_noise | mixtures | noise_folder
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
    n_per_class: int = 60  # 600 clips: ~1 min here; 30 halves it, localisation is noisier
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
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value, cls)
    return from_dict(cls, raw)


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


def from_dict(cls: type[T], raw: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) dict, type-checking every value."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {raw!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in names:
            raise ConfigError(_unknown_key_message(prefix + str(key), names, prefix))
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    return cls(**kwargs)


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


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any, cls: type) -> None:
    parts = dotted.split(".")
    node, node_cls, prefix = raw, cls, ""
    for part in parts[:-1]:
        names = {f.name: f for f in dataclasses.fields(node_cls)}
        sub = get_type_hints(node_cls).get(part)
        if part not in names or not dataclasses.is_dataclass(sub):
            sections = [n for n, t in get_type_hints(node_cls).items()
                        if dataclasses.is_dataclass(t)]
            raise ConfigError(_unknown_key_message(prefix + part, sections, prefix))
        node = node.setdefault(part, {})
        node_cls, prefix = sub, prefix + part + "."
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value) if value != "" else value
        except yaml.YAMLError:
            pass
    node[parts[-1]] = value


def _unknown_key_message(key: str, valid: list[str], prefix: str) -> str:
    leaf = key[len(prefix):]
    close = difflib.get_close_matches(leaf, valid, n=3, cutoff=0.5)
    hint = (f"did you mean {', '.join(prefix + c for c in close)}?" if close
            else f"valid keys here: {', '.join(prefix + v for v in valid)}")
    return f"unknown config key '{key}': {hint}"


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise errors[0] if len(errors) == 1 else ConfigError(
            f"config key '{key}': {value!r} fits none of {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, key + ".")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split()]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        (item,) = get_args(tp)[:1] or (Any,)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no",
                                                         "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        if value in (0, 1):
            return bool(value)
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


__all__ = [n for n in dir() if n.endswith(("Config", "Recipe"))] + [
    "load_config", "parse_overrides", "from_dict", "to_dict", "save_config"]
_ = typing  # typing kept for forward-ref resolution in get_type_hints
